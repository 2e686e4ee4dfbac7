"""Check the registry's declared thresholds against run folders, with the margin left.

Reads `NAME-seedS/history.json` and `NAME-depthD-seedS/history.json` folders (as
`python -m vgbench run --out DIR` or `pytest benchmarks --vg-out DIR` write them) and, for
every remedy, depth and check of the budget, prints the observed values over seeds, the
threshold and the worst value. Use it when re-deriving thresholds after a change:

    for s in 42 43 44; do python -m vgbench run relu --seed $s --epochs 5 --out runs/q; done
    python benchmarks/thresholds.py runs/q --budget quick   # several folders may be given

With --save-reference FILE it also writes those runs as the budget's section of a
reference file for --vg-compare (the runs must be at the budget's own epochs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tabulate import tabulate

from vgbench import expect, reference, registry, session
from vgbench.history import History


def load_runs(folder: Path) -> dict[tuple[str, int], History]:
    """{(key, seed): history} for every KEY-seedS/history.json under folder (KEY: NAME or
    NAME-depthD)."""
    runs = {}
    for path in sorted(folder.glob("*-seed*/history.json")):
        key, seed = path.parent.name.rsplit("-seed", 1)
        runs[key, int(seed)] = History.from_json(path)
    return runs


def _split_key(key: str) -> tuple[str, int | None]:
    name, _, depth = key.partition("-depth")
    return name, int(depth) if depth else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, nargs="+",
                   help="run folders (grad_gain_init needs the baseline's runs among them)")
    p.add_argument("--budget", choices=list(session.BUDGETS), default="full")
    p.add_argument("--remedies", action="append", metavar="FILE",
                   help="also load the remedies of this file (its REMEDIES)")
    p.add_argument("--save-reference", type=Path, metavar="FILE",
                   help="write the runs as this budget's reference section into FILE")
    args = p.parse_args(argv)
    for path in args.remedies or []:
        registry.register(registry.load_file(path), path)
    runs = {k: h for folder in args.folder for k, h in load_runs(folder).items()}
    if not runs:
        print(f"no NAME-seedS/history.json under {' '.join(map(str, args.folder))}",
              file=sys.stderr)
        return 2
    metrics = {}
    for (key, seed), h in runs.items():
        depth = _split_key(key)[1]
        base = runs.get(("baseline" if depth is None else f"baseline-depth{depth}", seed))
        metrics[key, seed] = expect.metrics(h, base.grad_ratio_init if base else None)
    rows, failed = [], 0
    for key in sorted({k for k, _ in runs}, key=session.key_order):
        name, depth = _split_key(key)
        if name not in registry.REMEDIES:
            continue
        seeds = sorted(s for k, s in runs if k == key)
        n_layer = depth if depth is not None else registry.get(name).config.n_layer
        for check in registry.get(name).checks(args.budget, n_layer):
            values = [metrics[key, s].get(check.metric) for s in seeds]
            held = [check.holds(v) for v in values]
            failed += held.count(False)
            finite = [v for v in values if v is not None]
            worst = (min(finite) if check.op == ">=" else max(finite)) if finite else None
            rows.append([key, str(check), ",".join(map(str, seeds)),
                         " ".join("null" if v is None else f"{v:.3g}" for v in values),
                         "null" if worst is None else f"{worst:.3g}",
                         "ok" if all(held) else "FAILS"])
    print(tabulate(rows, headers=["remedy", "check", "seeds", "observed", "worst", "status"]))
    if args.save_reference:
        settings = session.Settings(budget=args.budget)
        for (key, seed), h in runs.items():
            name, depth = _split_key(key)
            want = settings.config(registry.get(name), seed, depth).total_epochs
            if h.total_epochs != want:
                print(f"{key}-seed{seed} ran {h.total_epochs} epochs, the {args.budget} "
                      f"budget trains {want}: not saved", file=sys.stderr)
                return 2
        records = [{"remedy": _split_key(k)[0], "key": k, "seed": s, "device": h.device,
                    "epochs": h.total_epochs, "metrics": metrics[k, s], "env": h.env}
                   for (k, s), h in sorted(runs.items())]
        reference.save(args.save_reference, records, settings)
        print(f"wrote the {args.budget} budget of {args.save_reference}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
