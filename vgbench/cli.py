"""Command line: `python -m vgbench run|list|plot` (also the `vgbench` console script)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from vgbench import registry

DEFAULT_OUT = "runs"


def _run(args) -> int:
    import torch

    from vgbench import data, plots, train

    remedy = registry.get(args.remedy)
    changes = {"seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    if args.stage_epochs is not None:
        changes["stage_epochs"] = args.stage_epochs
    if args.no_diagnostics:
        changes["diagnostics"] = False
    if args.limit is not None:
        changes["limit"] = args.limit
    cfg = replace(remedy.config, **changes)
    device = train.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load_cached(args.data_dir, device=device)
    splits = data.split(ds, cfg.seed, cfg.val_fraction, cfg.limit)
    out = Path(args.out) / f"{remedy.name}-seed{cfg.seed}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"{remedy.name}: {remedy.description}")
    print(f"device {device}, data {ds.source}, train {len(splits.train_y)}, "
          f"val {len(splits.val_y)}, test {len(splits.test_y)}, epochs {cfg.total_epochs}")
    h = train.train(cfg, splits, remedy.name,
                    on_epoch=lambda r: print(train.format_epoch(r), flush=True))
    h.to_json(out / "history.json")
    paths = plots.run_figures(h, out)
    print("Evaluation on test set:")
    print(f"Accuracy: {h.test_acc:.4f}")
    if h.grad_ratio_init is not None:
        print(f"grad ratio (first / output layer): init {h.grad_ratio_init:.3g}, "
              f"final {h.grad_ratio_final:.3g}")
    print(f"wrote {out / 'history.json'}, " + ", ".join(str(p) for p in paths))
    return 0


def _list(args) -> int:
    width = max(len(n) for n in registry.NAMES)
    for r in registry.REMEDIES.values():
        print(f"{r.name:<{width}}  {r.description}")
    return 0


def _plot(args) -> int:
    from vgbench import plots
    from vgbench.train import History

    histories = []
    for d in args.run_dirs:
        path = Path(d) / "history.json" if Path(d).is_dir() else Path(d)
        if not path.is_file():
            raise SystemExit(f"vgbench plot: {d} has no history.json; "
                             "pass run folders written by `vgbench run`")
        histories.append(History.from_json(path))
    out = plots.compare(histories, Path(args.out) / "compare.png")
    print(f"wrote {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (choices come from the registry)."""
    p = argparse.ArgumentParser(prog="vgbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train one experiment and write its history and figures")
    run.add_argument("remedy", help="experiment name (see `vgbench list`)")
    run.add_argument("--epochs", type=int, help="epochs (per stage for layerwise); default 100")
    run.add_argument("--stage-epochs", type=int, help="layerwise: epochs per stage")
    run.add_argument("--seed", type=int, default=42, help="seed for split, init, shuffling")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    run.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    run.add_argument("--no-diagnostics", action="store_true", help="skip per-layer probing")
    run.add_argument("--limit", type=int, help="cap each data split at N samples (smoke tests)")
    run.set_defaults(fn=_run)

    lst = sub.add_parser("list", help="list every experiment with its description")
    lst.set_defaults(fn=_list)

    plot = sub.add_parser("plot", help="compare several runs in one figure")
    plot.add_argument("run_dirs", nargs="+", help="folders written by `vgbench run`")
    plot.add_argument("--out", default=".", help="folder for compare.png (default .)")
    plot.set_defaults(fn=_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors a user can fix are printed without a traceback."""
    from vgbench.data import DataError

    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (DataError, ValueError, registry.UnknownRemedy, RuntimeError) as exc:
        print(f"vgbench: error: {exc}", file=sys.stderr)
        return 2
