"""Command line: `python -m vgbench run|list|plot|inspect|report` (also the `vgbench`
console script)."""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from vgbench import files, registry
from vgbench.config import option_type

DEFAULT_OUT = "runs"


def _load_remedies(paths: list[str]) -> None:
    for path in paths or []:
        registry.register(registry.load_file(path), path)


def _run(args) -> int:
    import torch

    from vgbench import data, diagnose, machine, plots, train

    _load_remedies(args.remedies)
    remedy = registry.get(args.remedy)
    changes = {"seed": args.seed}
    for key in ("epochs", "stage_epochs", "limit"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.depth is not None:
        changes["n_layer"] = args.depth
    if args.no_diagnostics:
        changes["diagnostics"] = False
    cfg = replace(remedy.config, **changes)
    if cfg.limit is not None and cfg.limit < cfg.batch_size:
        raise ValueError(f"--limit {cfg.limit} is below the batch size {cfg.batch_size}; "
                         f"use --limit {cfg.batch_size} or more")
    name = remedy.name if args.depth is None else f"{remedy.name}-depth{cfg.n_layer}"
    out = files.check_writable(Path(args.out), "--out") / f"{name}-seed{cfg.seed}"
    device = machine.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load_cached(args.data_dir, device=device)
    splits = data.split(ds, cfg.seed, cfg.val_fraction, cfg.limit)
    print(f"{remedy.name}: {remedy.description}")
    print(f"device {device}, data {ds.source}, depth {cfg.n_layer}, train "
          f"{len(splits.train_y)}, val {len(splits.val_y)}, test {len(splits.test_y)}, "
          f"epochs {cfg.total_epochs}")
    h = train.train(cfg, splits, name, parts=remedy.parts,
                    on_epoch=lambda r: print(train.format_epoch(r), flush=True))
    out.mkdir(parents=True, exist_ok=True)
    h.to_json(out / "history.json")
    paths = plots.run_figures(h, out)
    print("Evaluation on test set:")
    if h.diverged:
        print(f"diverged at epoch {h.diverged_epoch} ({h.diverged_reason}): no test accuracy")
    else:
        print(f"Accuracy: {h.test_acc:.4f}")
    if h.grad_ratio_init is not None:
        final = "-" if h.grad_ratio_final is None else f"{h.grad_ratio_final:.3g}"
        print(f"grad ratio (first / output layer): init {h.grad_ratio_init:.3g}, "
              f"final {final}")
    for moment, label in (("init", "at init"), ("epoch1", "after epoch 1"),
                          ("end", "at the end")):
        if moment in h.diagnosis:
            print(f"diagnosis {label}: {diagnose.Verdict.from_dict(h.diagnosis[moment])}")
    print(f"wrote {out / 'history.json'}, " + ", ".join(str(p) for p in paths))
    return 0


def _list(args) -> int:
    _load_remedies(args.remedies)
    names = registry.names()
    width = max(len(n) for n in names)
    for r in (registry.get(n) for n in names):
        source = r.source if r.set != "user" else r.origin
        print(f"{r.name:<{width}}  {r.set:<10}  {r.description}  [{source}]")
    return 0


def _plot(args) -> int:
    from vgbench import plots
    from vgbench.history import History

    histories = []
    for d in args.run_dirs:
        path = Path(d) / "history.json" if Path(d).is_dir() else Path(d)
        if not path.is_file():
            raise SystemExit(f"vgbench plot: {d} has no history.json; "
                             "pass run folders written by `vgbench run`")
        try:
            histories.append(History.from_json(path))
        except ValueError as exc:
            raise SystemExit(f"vgbench plot: {exc}") from None
    out = plots.compare(histories, Path(args.out) / "compare.png")
    print(f"wrote {out}")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise SystemExit(f"vgbench inspect: --input-shape {text!r} is not a shape: give one "
                         "input's sizes, comma-separated, e.g. 1,28,28 (or 784, or 100 for "
                         "100 tokens)")
    return shape


def _raised(path: Path, factory: str, exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    line = f", line {frames[-1].lineno}" if frames else ""
    return f"vgbench inspect: {factory}() in {path}{line} raised {type(exc).__name__}: {exc}"


def _inspect(args) -> int:
    import torch

    from vgbench import data, inspection, machine
    from vgbench.registry import import_file

    file, _, factory = args.target.rpartition(":")
    if not file or not factory:
        raise SystemExit(f"vgbench inspect: {args.target!r} is not FILE.py:FACTORY, e.g. "
                         "models.py:make_cnn (a function that returns the nn.Module)")
    path = Path(file)
    if not path.is_file():
        raise SystemExit(f"vgbench inspect: no such file {path}")
    shape = _shape(args.input_shape)
    out = Path(args.out)
    try:
        files.check_writable(out, "--out")  # before any work
    except ValueError as exc:
        raise SystemExit(f"vgbench inspect: {exc}") from None
    sys.path.insert(0, str(path.resolve().parent))  # the factory's sibling modules import
    make = getattr(import_file(path), factory, None)
    if not callable(make):
        raise SystemExit(f"vgbench inspect: {path} defines no function {factory!r}")
    try:
        model = make()
    except TypeError as exc:
        if len(traceback.extract_tb(exc.__traceback__)) <= 1:  # the call itself: arguments
            raise SystemExit(f"vgbench inspect: {factory}() cannot be called without "
                             f"arguments ({exc}): give it defaults, or add a function that "
                             "takes none and returns the model") from None
        raise SystemExit(_raised(path, factory, exc)) from None
    except Exception as exc:  # noqa: BLE001 - the user's factory: named with its line
        raise SystemExit(_raised(path, factory, exc)) from None
    if not isinstance(model, torch.nn.Module):
        raise SystemExit(f"vgbench inspect: {factory}() returned {type(model).__name__}, "
                         "not an nn.Module: return the model itself")
    torch.manual_seed(args.seed)
    if args.input_dtype == "long" and args.data != "random":
        raise SystemExit("vgbench inspect: --input-dtype long feeds random tokens; it does not "
                         "go with --data fashion-mnist (images): drop one of them")
    if args.input_dtype == "long":
        x = torch.randint(0, args.vocab, (args.batch, *shape))
        y = torch.randint(0, args.classes, (args.batch,))
        where = (f"{args.batch} random token sequences of shape {shape}, vocabulary "
                 f"{args.vocab}, {args.classes} classes")
    elif args.data == "fashion-mnist":
        ds = data.load_cached(args.data_dir, device="cpu")
        s = data.split(ds, args.seed, limit=max(args.batch, 512))
        x, y = s.train_x[:args.batch], s.train_y[:args.batch]
        if math.prod(shape) != x.shape[1]:
            raise SystemExit(f"vgbench inspect: --input-shape {args.input_shape} holds "
                             f"{math.prod(shape)} values, a Fashion-MNIST image 784: use "
                             "784 or 1,28,28")
        x = x.reshape(len(x), *shape)
        where = f"{args.batch} Fashion-MNIST training images"
    else:
        x = torch.randn(args.batch, *shape)
        y = torch.randint(0, args.classes, (args.batch,))
        where = f"{args.batch} random inputs of shape {shape}, {args.classes} classes"
    device = machine.resolve_device(args.device)
    model, x, y = model.to(device), x.to(device), y.to(device)
    try:
        report = inspection.inspect(model, x, y, lr=args.lr, trial=args.trial)
    except inspection.InspectError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:  # the model's own forward or loss
        raise SystemExit(f"vgbench inspect: {args.target} failed on a batch of shape "
                         f"{tuple(x.shape)}: {exc}\n(is that the input it expects? set "
                         "--input-shape, e.g. 1,28,28 for images)") from exc
    print(f"{args.target} on {where}, device {device}\n")
    print(report)
    report.to_json(out / "inspect.json")
    fig = report.figure(out / "inspect.png")
    print(f"\nwrote {out / 'inspect.json'}, {fig}")
    return 0


def _report(args) -> int:
    from vgbench import report, watch_report

    folder = Path(args.dir)
    if not (folder / "summary.json").is_file() and (folder / "history.json").is_file():
        try:  # a watched run's folder (vgbench.watch(..., out=DIR))
            path = watch_report.write(folder, figures_too=not args.no_figures)
        except (ValueError, KeyError) as exc:
            raise SystemExit(f"vgbench report: {folder / 'history.json'} is not a watched "
                             f"run's history ({exc}); pass a test session's --vg-out folder "
                             "or a vgbench.watch out= folder") from None
        print(f"wrote {path}")
        return 0
    if not (folder / "summary.json").is_file():
        raise SystemExit(f"vgbench report: {folder} has no summary.json; pass the --vg-out "
                         "folder of a test session (default vg-out) or the out= folder of "
                         "vgbench.watch")
    try:
        path = report.write(folder, figures=not args.no_figures)
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"vgbench report: {folder / 'summary.json'} is not a vgbench "
                         f"summary ({type(exc).__name__}: {exc}); rerun the session") from None
    print(f"wrote {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser (choices come from the registry)."""
    p = argparse.ArgumentParser(prog="vgbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    remedies = dict(action="append", metavar="FILE",
                    help="also load the remedies of this Python file (its REMEDIES list)")
    run = sub.add_parser("run", help="train one experiment and write its history and figures")
    run.add_argument("remedy", help="experiment name (see `vgbench list`)")
    run.add_argument("--epochs", type=option_type(int, lo=0),
                     help="epochs (per stage for layerwise; 0: evaluate the untrained net); "
                          "default 100")
    run.add_argument("--stage-epochs", type=option_type(int, lo=1),
                     help="layerwise: epochs per stage")
    run.add_argument("--depth", type=option_type(int, lo=1),
                     help="hidden layers (default: the remedy's own, 7 for the protocol)")
    run.add_argument("--seed", type=int, default=42, help="seed for split, init, shuffling")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                     help="auto | cpu | cuda (default auto)")
    run.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    run.add_argument("--threads", type=option_type(int, lo=1),
                     help="torch CPU threads (default: torch's)")
    run.add_argument("--no-diagnostics", action="store_true", help="skip per-layer probing")
    run.add_argument("--limit", type=option_type(int, lo=1),
                     help="cap each data split at N samples, at least the batch size (smoke "
                          "tests)")
    run.add_argument("--remedies", **remedies)
    run.set_defaults(fn=_run)

    lst = sub.add_parser("list", help="list every experiment: name, set, description, source")
    lst.add_argument("--remedies", **remedies)
    lst.set_defaults(fn=_list)

    plot = sub.add_parser("plot", help="compare several runs in one figure")
    plot.add_argument("run_dirs", nargs="+", help="folders written by `vgbench run`")
    plot.add_argument("--out", default=".", help="folder for compare.png (default .)")
    plot.set_defaults(fn=_plot)

    ins = sub.add_parser("inspect", help="probe and diagnose your own model on one batch")
    ins.add_argument("target", metavar="FILE.py:FACTORY",
                     help="a Python file and a function in it that returns the nn.Module")
    ins.add_argument("--input-shape", default="784",
                     help="one input's shape, comma-separated (default 784; 1,28,28 for a CNN)")
    ins.add_argument("--data", choices=["random", "fashion-mnist"], default="random",
                     help="random normal inputs (default) or Fashion-MNIST images, reshaped "
                          "to --input-shape")
    ins.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    ins.add_argument("--batch", type=option_type(int, lo=2), default=64,
                     help="batch size (default 64)")
    ins.add_argument("--classes", type=option_type(int, lo=2), default=10,
                     help="classes of the random targets (default 10)")
    ins.add_argument("--input-dtype", choices=["float", "long"], default="float",
                     help="float inputs (default) or integer tokens in [0, --vocab) for a "
                          "model that starts with an Embedding")
    ins.add_argument("--vocab", type=option_type(int, lo=2), default=100,
                     help="with --input-dtype long: the token range (default 100)")
    ins.add_argument("--lr", type=option_type(float, lo=0, lo_open=True), default=None,
                     help="SGD learning rate for the update ratios (default 0.01)")
    ins.add_argument("--trial", action="store_true",
                     help="also take 30 real steps on the batch (put back) and read the loss")
    ins.add_argument("--seed", type=int, default=0, help="seed of the random batch")
    ins.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ins.add_argument("--out", default=".", help="folder for inspect.json and inspect.png")
    ins.set_defaults(fn=_inspect)

    rep = sub.add_parser("report", help="write DIR/report.html from a test session's folder "
                         "or a watched run's")
    rep.add_argument("dir", nargs="?", default="vg-out",
                     help="the session's --vg-out folder (default vg-out)")
    rep.add_argument("--no-figures", action="store_true", help="a report without figures")
    rep.set_defaults(fn=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors a user can fix are printed without a traceback."""
    from vgbench.data import DataError

    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (DataError, ValueError, RuntimeError) as exc:  # UnknownRemedy, RemedyError too
        print(f"vgbench: error: {exc}", file=sys.stderr)
        return 2
