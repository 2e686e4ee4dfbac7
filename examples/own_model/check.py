"""Check each verdict by training: every model of examples/own_model, on several seeds, is
inspected at init (vgbench.inspect, with the optimizer it is trained with) and then trained
for its pair's budget; one row per model and seed. A verdict holds when a flagged model
stays below TRAINABLE_ACC and a healthy one reaches it.

    python examples/own_model/check.py [--seeds 0,1,2,3,4] [--models tanh_rnn,lstm]
"""

from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

import twins
import vgbench


def runs():
    """(model name, task, optimizer, steps, expected verdict or None for a control)."""
    for p in twins.PAIRS.values():
        yield p.flagged.__name__, p.task, p.optimizer, p.steps, p.verdict
        yield p.healthy.__name__, p.task, p.optimizer, p.steps, "healthy"
    for name, (task, optimizer, steps) in twins.CONTROLS.items():
        yield name, task, optimizer, steps, None


def check(name: str, task: str, optimizer, steps: int, seed: int) -> dict:
    """The verdict at init and the accuracy after training, for one model and seed."""
    factory = twins.FACTORIES[name]
    model, (x, y), opt = twins.at_init(factory, task, optimizer, seed)
    report = vgbench.inspect(model, x, y, optimizer=opt)
    start = time.perf_counter()
    acc = twins.train(factory, task, optimizer, steps, seed)
    return {"verdict": report.verdict["verdict"], "where": report.verdict.get("layer_name"),
            "accuracy": acc, "seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--models", default=None, help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wanted = args.models.split(",") if args.models else None
    rows = []
    for name, task, optimizer, steps, expected in runs():
        if wanted and name not in wanted:
            continue
        for seed in map(int, args.seeds.split(",")):
            r = check(name, task, optimizer, steps, seed)
            learned = r["accuracy"] >= twins.TRAINABLE_ACC
            holds = ("control" if expected is None else
                     "yes" if r["verdict"] == expected and learned == (expected == "healthy")
                     else "NO")
            rows.append([name, seed, r["verdict"] + (f" ({r['where']})" if r["where"] else ""),
                         f"{r['accuracy']:.3f}", "yes" if learned else "no", holds,
                         f"{r['seconds']:.1f}"])
            print(*rows[-1], sep="  ", flush=True)
    print(tabulate(rows, headers=["model", "seed", "verdict at init", "accuracy", "learned",
                                  "verdict holds", "train s"], disable_numparse=True))


if __name__ == "__main__":
    main()
