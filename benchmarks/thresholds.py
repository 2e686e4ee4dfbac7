"""Check the registry's declared thresholds against run folders, with the margin left.

Reads `NAME-seedS/history.json` folders (as `python -m vgbench run --out DIR` or
`pytest benchmarks --vg-out DIR` write them) and, for every remedy and check of the budget,
prints the observed range over seeds, the threshold and the worst-case margin. Use it when
re-deriving thresholds after a change:

    for s in 42 43 44; do python -m vgbench run relu --seed $s --epochs 5 --out runs/q; done
    python benchmarks/thresholds.py runs/q --budget quick

With --save-reference FILE it also writes those runs as the budget's section of a
reference file for --vg-compare (the runs must be at the budget's own epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from vgbench import expect, harness, reference, registry
from vgbench.train import History


def load_runs(folder: Path) -> dict[tuple[str, int], History]:
    """{(remedy, seed): history} for every NAME-seedS/history.json under folder."""
    runs = {}
    for path in sorted(folder.glob("*-seed*/history.json")):
        name, seed = path.parent.name.rsplit("-seed", 1)
        runs[name, int(seed)] = History.from_json(path)
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--budget", choices=["full", "quick"], default="full")
    p.add_argument("--save-reference", type=Path, metavar="FILE",
                   help="write the runs as this budget's reference section into FILE")
    args = p.parse_args(argv)
    runs = load_runs(args.folder)
    if not runs:
        print(f"no NAME-seedS/history.json under {args.folder}", file=sys.stderr)
        return 2
    metrics = {}
    for (name, seed), h in runs.items():
        base = runs.get(("baseline", seed))
        metrics[name, seed] = expect.metrics(h, base.grad_ratio_init if base else None)
    rows, failed = [], 0
    for name in registry.NAMES:
        seeds = sorted(s for n, s in runs if n == name)
        for check in registry.get(name).checks(args.budget):
            values = [metrics[name, s].get(check.metric, float("nan")) for s in seeds]
            held = [check.holds(v) for v in values]
            failed += held.count(False)
            worst = min(values) if check.op == ">=" else max(values)
            rows.append([name, str(check), ",".join(map(str, seeds)),
                         " ".join(f"{v:.3g}" for v in values), f"{worst:.3g}",
                         "ok" if all(held) else "FAILS"])
    print(tabulate(rows, headers=["remedy", "check", "seeds", "observed", "worst", "status"]))
    if args.save_reference:
        settings = harness.Settings(budget=args.budget)
        for (name, seed), h in runs.items():
            want = settings.config(registry.get(name), seed).total_epochs
            if h.total_epochs != want:
                print(f"{name}-seed{seed} ran {h.total_epochs} epochs, the {args.budget} "
                      f"budget trains {want}: not saved", file=sys.stderr)
                return 2
        records = [{"remedy": n, "seed": s, "device": h.device, "epochs": h.total_epochs,
                    "metrics": metrics[n, s]} for (n, s), h in sorted(runs.items())]
        reference.save(args.save_reference, records, settings)
        print(f"wrote the {args.budget} budget of {args.save_reference}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
