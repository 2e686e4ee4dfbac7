"""Where vgbench.assert_trains' MIN_DROP comes from: each model of this example trained for a
few steps under watch, with its own optimizer and task, on several seeds, next to whether it
learns at the pairs' budget (README.md: check.py, 5 seeds; the two controls likewise).

    python examples/own_model/trains.py --seeds 0 1 2 3 4 [--steps 100] [--json out.json]

Prints per model and seed the loss drop over the run (the last tenth of the steps against
the first), the verdict at the end, and whether assert_trains at MIN_DROP would pass it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import twins  # noqa: E402

from vgbench.trains import MIN_DROP, trial  # noqa: E402

LEARNS = {"relu_bn_cnn": True, "residual_30": True, "lstm": True, "alive_mlp": True,
          "sigmoid_cnn": False, "plain_30": False, "tanh_rnn": False, "dead_mlp": False,
          "plain_30_norm": False, "lstm_default": False}
"""Whether each model reaches TRAINABLE_ACC at its pair's budget (README.md's tables)."""


def setup(name: str):
    for pair in twins.PAIRS.values():
        if name in (pair.flagged.__name__, pair.healthy.__name__):
            return pair.task, pair.optimizer
    task, optimizer, _ = twins.CONTROLS[name]
    return task, optimizer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--models", nargs="+", default=list(LEARNS))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        task, optimizer = setup(name)
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = twins.FACTORIES[name]()
            t = twins.Task(task, seed)
            t0 = time.perf_counter()
            r = trial(model, t.batch, args.steps, optimizer)
            end = r["watch"].timeline[-1]["verdict"]
            passes = r["finite"] and r["drop"] >= MIN_DROP and end == "healthy"
            rows.append({"model": name, "seed": seed, "learns": LEARNS[name],
                         "drop": r["drop"], "end": end, "passes": passes,
                         "onsets": r["watch"].onsets,
                         "seconds": time.perf_counter() - t0})
            print(f"{name:14s} seed {seed}  learns {str(LEARNS[name]):5s}  drop "
                  f"{r['drop']:+.3f}  end {end:10s}  assert_trains "
                  f"{'passes' if passes else 'fails'}  ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
    right = sum(r["passes"] == r["learns"] for r in rows)
    print(f"assert_trains agrees with training on {right} of {len(rows)} runs "
          f"(MIN_DROP {MIN_DROP}, {args.steps} steps)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
