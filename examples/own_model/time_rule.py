"""Calibration of the verdict's rule for time (vgbench.diagnose.VANISH_TIME): recurrent
nets on the Recall task at two lengths, each inspected at init (the loss's gradient with
respect to the first step's input over the last step's) and trained (Adam, lr 1e-3, 400
steps of 64 sequences), on several seeds. Prints one row per run.

    python examples/own_model/time_rule.py [--seeds 0,1,2] [--lengths 30,100]
"""

from __future__ import annotations

import argparse
import functools

import torch
from tabulate import tabulate

import twins
import vgbench

VARIANTS = [("rnn", None), ("rnn", "orthogonal"), ("gru", None), ("lstm", None),
            ("lstm", "forget1"), ("lstm", "chrono")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lengths", default="30,100")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for length in map(int, args.lengths.split(",")):
        for kind, init in VARIANTS:
            for seed in map(int, args.seeds.split(",")):
                factory = functools.partial(twins.Sequence, kind, init, length)
                model, (x, y), opt = twins.at_init(factory, "recall", twins.adam, seed, length)
                report = vgbench.inspect(model, x, y, optimizer=opt)
                ratio = report.through_time["rnn"]["ratio"]
                acc = twins.train(factory, "recall", twins.adam, 400, seed, length)
                rows.append([length, kind, init or "default", seed, f"{ratio:.2g}",
                             report.verdict["verdict"], f"{acc:.3f}",
                             "yes" if acc >= twins.TRAINABLE_ACC else "no"])
                print(*rows[-1], flush=True)
    print(tabulate(rows, headers=["steps", "net", "init", "seed", "first/last", "verdict",
                                  "accuracy", "learned"], disable_numparse=True))


if __name__ == "__main__":
    main()
