"""What the benchmark suite does per case and at the end, as plain code (no pytest here).

A case is (remedy, seed). run_case trains it for the session's budget, evaluates the
remedy's declared checks and returns a Record: a plain dict that travels from pytest-xdist
workers to the controller, where summarize() turns the records into one table.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tabulate import tabulate

from vgbench import data, expect, registry, train

BUDGETS = {"full": None, "quick": registry.QUICK_EPOCHS}
"""Epochs per budget (None: the protocol's, from the config)."""
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Settings:
    """One session's choices (from --vg-* options)."""

    budget: str = "full"
    """'full' (the protocol, 100 epochs) or 'quick' (QUICK_EPOCHS); picks the checks."""
    epochs: int | None = None
    """Override the budget's epochs (per stage for layerwise)."""
    n_seeds: int = 1
    """Seeds 42, 43, ... each its own test."""
    device: str = "auto"
    """auto | cpu | cuda."""
    remedies: tuple[str, ...] = ()
    """Only these remedies (empty: all)."""
    out: str = "vg-out"
    """Folder for histories, figures and the summary."""
    target: float = 0.70
    """Validation accuracy whose first epoch the summary reports."""
    limit: int | None = None
    """Cap every data split (smoke tests only)."""
    data_dir: str | None = None
    """Fashion-MNIST folder (else the usual lookup)."""
    figures: bool = True
    """Write each run's PNG figures."""

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose from {list(BUDGETS)}")
        if self.n_seeds < 1:
            raise ValueError(f"--vg-seeds must be >= 1, got {self.n_seeds}")
        for name in self.remedies:
            registry.get(name)  # raises with the valid names

    @property
    def seeds(self) -> list[int]:
        """The seeds this session runs."""
        return [DEFAULT_SEED + i for i in range(self.n_seeds)]

    @property
    def names(self) -> list[str]:
        """The remedies this session runs, in registry order."""
        return [n for n in registry.NAMES if not self.remedies or n in self.remedies]

    def config(self, remedy: registry.Remedy, seed: int):
        """The remedy's config at this budget and seed."""
        changes = {"seed": seed, "limit": self.limit}
        epochs = self.epochs if self.epochs is not None else BUDGETS[self.budget]
        if epochs is not None:
            changes["epochs"] = epochs
        return replace(remedy.config, **changes)


def worker_threads(n_workers: int, cores: int | None = None) -> int:
    """torch threads per worker so that workers x threads <= cores."""
    if cores is None:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    return max(1, cores // max(1, n_workers))


def baseline_ratio_init(splits: data.Splits, seed: int, probe_size: int) -> float:
    """The baseline's first/output gradient ratio at init for this seed and probe batch."""
    cfg = replace(registry.BASELINE, seed=seed, epochs=0, probe_size=probe_size)
    run = train.Run(cfg, splits, "baseline")
    return run.finish().grad_ratio_init


def run_case(name: str, seed: int, settings: Settings, epoch_driver=None) -> dict:
    """Train one case, check it, write its history and figures; return its Record.

    epoch_driver(run) must call run.step() until run.done (a benchmark fixture can time
    each call); by default a plain loop.
    """
    remedy = registry.get(name)
    cfg = settings.config(remedy, seed)
    device = train.resolve_device(settings.device)
    ds = data.load_cached(settings.data_dir, device=device)
    splits = data.split(ds, seed, cfg.val_fraction, cfg.limit)
    run = train.Run(cfg, splits, name)
    if epoch_driver is None:
        while not run.done:
            run.step()
    else:
        epoch_driver(run)
    if not run.done:
        raise RuntimeError(f"epoch driver stopped {name} after {run.epoch_no} of "
                           f"{cfg.total_epochs} epochs")
    h = run.finish()
    base = baseline_ratio_init(splits, seed, cfg.probe_size) if cfg.diagnostics else None
    m = expect.metrics(h, base)
    checks = remedy.checks(settings.budget)
    failures = expect.evaluate(name, checks, m, seed)
    out = Path(settings.out) / f"{name}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    h.to_json(out / "history.json")
    if settings.figures:
        from vgbench import plots

        plots.run_figures(h, out)
    return {
        "remedy": name, "seed": seed, "budget": settings.budget, "device": str(device),
        "epochs": cfg.total_epochs, "metrics": m, "checks": [str(c) for c in checks],
        "failures": failures, "epoch_time": h.epoch_time,
        "epochs_to_target": h.epochs_to(settings.target), "target": settings.target,
        "history": str(out / "history.json"), "torch_threads": torch.get_num_threads(),
    }


# --- the summary -------------------------------------------------------------------------

# two-sided 95% Student t quantiles by degrees of freedom (no scipy in the stack)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width (Student t); half-width 0 for a single value."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, 0.0
    df = n - 1
    # between tabulated df, the next lower one (a slightly wider, conservative interval)
    t = _T95[max(k for k in _T95 if k <= df)] if df <= 30 else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(n)


def _fmt_acc(values: list[float]) -> str:
    mean, half = mean_ci95(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} +- {half:.3f}"


def by_remedy(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped per remedy, remedies in registry order (unknown ones last, sorted),
    each group sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["remedy"], []).append(r)
    names = [n for n in registry.NAMES if n in groups] + sorted(set(groups) - set(registry.NAMES))
    return {n: sorted(groups[n], key=lambda r: r["seed"]) for n in names}


def summarize(records: list[dict]) -> list[dict]:
    """One row per remedy (registry order) aggregating its seeds."""
    rows = []
    for name, rs in by_remedy(records).items():
        ms = [r["metrics"] for r in rs]
        to_target = [r["epochs_to_target"] for r in rs]
        times = [t for r in rs for t in r["epoch_time"]]
        failures = [f for r in rs for f in r["failures"]]
        ratios = [(m.get("grad_ratio_init"), m.get("grad_ratio_final")) for m in ms]
        rows.append({
            "remedy": name,
            "seeds": [r["seed"] for r in rs],
            "epochs": rs[0]["epochs"],
            "test_acc": [m["test_acc"] for m in ms],
            "best_val_acc": [m["best_val_acc"] for m in ms],
            "epochs_to_target": to_target,
            "target": rs[0]["target"],
            "grad_ratio_init": [a for a, _ in ratios],
            "grad_ratio_final": [b for _, b in ratios],
            "median_epoch_s": statistics.median(times) if times else None,
            "checks": rs[0]["checks"],
            "failures": failures,
            "verdict": ("no checks" if not rs[0]["checks"] else
                        "held" if not failures else f"FAILED ({len(failures)})"),
        })
    return rows


def _geo(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in vals)) if vals else None


def table(rows: list[dict], fmt: str = "simple") -> str:
    """The summary as text (tabulate); fmt 'github' gives Markdown."""
    body = []
    for r in rows:
        reached = [e for e in r["epochs_to_target"] if e is not None]
        if not reached:
            to_target = "-"
        elif len(reached) == len(r["epochs_to_target"]):
            to_target = f"{statistics.median(reached):g}"
        else:
            to_target = f"{statistics.median(reached):g} ({len(reached)}/{len(r['seeds'])})"
        gi, gf = _geo(r["grad_ratio_init"]), _geo(r["grad_ratio_final"])
        ratio = f"{gi:.1e} -> {gf:.1e}" if gi is not None and gf is not None else "-"
        t = r["median_epoch_s"]
        body.append([r["remedy"], ",".join(map(str, r["seeds"])), r["epochs"],
                     _fmt_acc(r["test_acc"]),
                     f"{max(r['best_val_acc']):.3f}", to_target, ratio,
                     f"{t:.2f}" if t is not None else "-", r["verdict"]])
    target = rows[0]["target"] if rows else 0.7
    headers = ["remedy", "seeds", "epochs", "test acc (95% CI)", "best val acc",
               f"epochs to val {target:g}", "grad ratio init -> final", "median epoch s",
               "expected outcome"]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def write_summary(rows: list[dict], out: str | Path, header: str = "",
                  image: bool = True) -> list[Path]:
    """summary.json, summary.md and (image) summary.png into out."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "summary.json", out / "summary.md"
    js.write_text(json.dumps({"header": header, "rows": rows}, indent=1))
    failures = [f for r in rows for f in r["failures"]]
    text = f"# vgbench summary\n\n{header}\n\n{table(rows, 'github')}\n"
    if failures:
        text += "\n## Failed expectations\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    md.write_text(text)
    paths = [js, md]
    if image:
        from vgbench import plots

        paths.append(plots.text_image(f"{header}\n\n{table(rows)}", out / "summary.png"))
    return paths
