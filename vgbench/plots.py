"""Figures: learning curves (the course project's 2x2), gradient flow, weight change."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vgbench import files  # noqa: E402
from vgbench.history import History  # noqa: E402

CURVES = (("train_loss", "Training Loss", "Loss"), ("val_loss", "Validation Loss", "Loss"),
          ("train_acc", "Training Accuracy", "Accuracy"),
          ("val_acc", "Validation Accuracy", "Accuracy"))


def _layer_names(n: int) -> list[str]:
    return [f"L{i}" for i in range(1, n)] + ["out"]


def _nan(values) -> list[float]:
    """None (a diverged epoch's null) and infinities as NaN, which matplotlib leaves as a
    gap."""
    return [v if v is not None and np.isfinite(v) else float("nan") for v in values]


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}"


def _draw_curves(axes, h: History, label: str | None = None) -> None:
    epochs = range(1, len(h.train_loss) + 1)
    for ax, (key, title, ylabel) in zip(axes.flat, CURVES):
        ax.plot(epochs, _nan(getattr(h, key)), label=label)
        ax.set(xlabel="Epoch", ylabel=ylabel, title=title)


def learning_curves(h: History, path: str | Path) -> Path:
    """The 2x2 figure of the course project: train/val loss and accuracy per epoch."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    _draw_curves(axes, h)
    fig.suptitle(f"{h.name}: " + (f"diverged at epoch {h.diverged_epoch} ({h.diverged_reason})"
                                  if h.diverged else f"test accuracy {h.test_acc:.4f}"))
    return _save(fig, path)


def _snapshots(h: History, n_between: int = 3) -> list[int]:
    n = len(h.diagnostics["epoch"])
    picks = {0, n - 1} | {round(i * (n - 1) / (n_between + 1)) for i in range(1, n_between + 1)}
    return sorted(picks)


def _draw_flow(ax, h: History, points: list[int]) -> None:
    d = h.diagnostics
    names = _layer_names(len(d["grad_norm"][0]))
    for p in points:
        style = "-o" if p in (0, len(d["epoch"]) - 1) else ":."
        ax.semilogy(names, _nan(d["grad_norm"][p]), style, label=f"epoch {d['epoch'][p]}")
    ax.set(xlabel="layer (input -> output)", ylabel="weight-gradient norm",
           title=f"{h.name}: gradient flow (ratio init {_fmt(h.grad_ratio_init)}, "
                 f"final {_fmt(h.grad_ratio_final)})")
    ax.legend(fontsize="small")


def _draw_theory(ax, h: History) -> None:
    """At init: the per-example RMS gradient norms (float64) and mean field's line."""
    names = _layer_names(len(h.diagnostics["grad_norm"][0]))
    if h.init_profile:
        ax.semilogy(names, _nan(h.init_profile["grad_rms"]), "kx", ms=7,
                    label="init, per-example RMS")
    if h.theory and h.theory.get("grad_rms"):
        ax.semilogy(names, _nan(h.theory["grad_rms"]), "k--", lw=1,
                    label="mean-field prediction")


def _draw_diagnosis(ax, h: History) -> None:
    """The verdict at init and at the end, with the layer where it starts marked."""
    lines = []
    for moment, style in (("init", ":"), ("end", "--")):
        v = h.diagnosis.get(moment)
        if v is None:
            continue
        where = f" from layer {v['layer']}" if v["layer"] else ""
        lines.append(f"{moment}: {v['verdict']}{where}")
        if v["layer"]:  # Linear index, 1-based: the x position of its name
            ax.axvline(v["layer"] - 1, color="tab:red", ls=style, lw=1)
    if lines:
        ax.text(0.5, 0.98, "\n".join(lines), transform=ax.transAxes, fontsize="small",
                color="tab:red", va="top", ha="center")


def gradient_flow(h: History, path: str | Path) -> Path:
    """Per-layer gradient norm (log scale) at init, a few epochs between, and at the end;
    at init also the per-example RMS norms and the mean-field prediction; the diagnosis at
    init and at the end, its layer marked (red lines)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    with warnings.catch_warnings():  # every gradient 0 (all units dead): nothing to log-scale
        warnings.filterwarnings("ignore", "Data has no positive values")
        _draw_flow(ax, h, _snapshots(h))
        _draw_theory(ax, h)
        _draw_diagnosis(ax, h)
        ax.legend(fontsize="small")
        return _save(fig, path)


def weight_change(h: History, path: str | Path) -> Path:
    """Per-layer relative weight change ||W - W0|| / ||W0|| after the last epoch."""
    d = h.diagnostics
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.bar(_layer_names(len(d["weight_change"][-1])), d["weight_change"][-1])
    ax.set(xlabel="layer (input -> output)", ylabel="||W - W0|| / ||W0||",
           title=f"{h.name}: relative weight change after epoch {d['epoch'][-1]}")
    return _save(fig, path)


def run_figures(h: History, out: str | Path) -> list[Path]:
    """Every figure for one run, written into out; returns the paths."""
    out = Path(out)
    paths = [learning_curves(h, out / "learning_curves.png")]
    if h.diagnostics is not None:
        paths += [gradient_flow(h, out / "gradient_flow.png"),
                  weight_change(h, out / "weight_change.png")]
    return paths


def compare(histories: list[History], path: str | Path) -> Path:
    """One figure over several runs: learning curves overlaid, gradient flow side by side."""
    with_diag = [h for h in histories if h.diagnostics is not None]
    n = max(len(with_diag), 1)
    fig = plt.figure(figsize=(max(12, 5 * n), 14))
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1, 1])
    curves = grid[0:2].subgridspec(2, 2).subplots()
    for h in histories:
        _draw_curves(curves, h, label=h.name)
    curves[0, 0].legend(fontsize="small")
    flows = grid[2].subgridspec(1, n).subplots(sharey=True, squeeze=False)[0]
    for ax, h in zip(flows, with_diag):
        last = len(h.diagnostics["epoch"]) - 1
        _draw_flow(ax, h, [0, last])
    return _save(fig, path)


def _profile(record: dict) -> tuple[list, list | None]:
    """(measured per-example RMS at init, predicted or None) from a record's history."""
    h = History.from_json(record["history_json"])
    measured = h.init_profile["grad_rms"] if h.init_profile else []
    return measured, (h.theory or {}).get("grad_rms")


def depth_profiles(records: list[dict], path: str | Path) -> Path:
    """Per remedy one panel: log gradient norm vs layer at init, measured (dots: per-example
    RMS, float64, seed mean) and predicted by mean field (line), each depth its color."""
    names = list(dict.fromkeys(r["remedy"] for r in records))
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows), squeeze=False)
    depths = sorted({r["depth"] for r in records})
    colors = {d: plt.cm.viridis(i / max(1, len(depths) - 1)) for i, d in enumerate(depths)}
    for ax, name in zip(axes.flat, names):
        for d in depths:
            rs = [r for r in records if r["remedy"] == name and r["depth"] == d]
            if not rs:
                continue
            profiles = [_profile(r) for r in rs]
            measured = [p[0] for p in profiles if p[0]]
            if measured:
                geo = 10 ** np.mean([np.log10(_nan(m)) for m in measured], axis=0)
                ax.semilogy(range(1, len(geo) + 1), geo, "o", ms=3, color=colors[d],
                            label=f"depth {d}")
            if profiles[0][1]:
                ax.semilogy(range(1, len(profiles[0][1]) + 1), _nan(profiles[0][1]), "-",
                            lw=1, color=colors[d])
        ax.set(title=name, xlabel="Linear layer (input -> output)",
               ylabel="weight-gradient norm at init")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="x-small")
    fig.suptitle("gradient profile at init: measured (dots), mean field (lines)")
    return _save(fig, path)


def depth_sweep(records: list[dict], level: float, path: str | Path) -> Path:
    """Left: test accuracy vs depth per remedy (seed mean, min-max bars) and the trainable
    level; right: R (first/output per-example RMS at init) vs depth, measured (dots) and
    predicted (line)."""
    fig, (acc_ax, r_ax) = plt.subplots(1, 2, figsize=(13, 5))
    names = list(dict.fromkeys(r["remedy"] for r in records))
    for i, name in enumerate(names):
        color = plt.cm.tab20(i % 20)
        rs = [r for r in records if r["remedy"] == name]
        depths = sorted({r["depth"] for r in rs})
        accs = [[r["metrics"]["test_acc"] for r in rs if r["depth"] == d
                 and r["metrics"]["test_acc"] is not None] for d in depths]
        ok = [(d, a) for d, a in zip(depths, accs) if a]
        if ok:
            mean = [np.mean(a) for _, a in ok]
            err = [[m - min(a) for m, (_, a) in zip(mean, ok)],
                   [max(a) - m for m, (_, a) in zip(mean, ok)]]
            acc_ax.errorbar([d for d, _ in ok], mean, yerr=err, marker="o", color=color,
                            label=name, capsize=2)
        measured, predicted = [], []
        for d in depths:
            at = [_profile(r) for r in rs if r["depth"] == d]
            ratios = [m[0] / m[-1] for m, _ in at if m and m[-1] > 0]
            if ratios:
                measured.append((d, 10 ** np.mean(np.log10(ratios))))
            if at and at[0][1]:
                predicted.append((d, at[0][1][0] / at[0][1][-1]))
        if measured:
            r_ax.semilogy(*zip(*measured), "o", color=color, label=name)
        if predicted:
            r_ax.semilogy(*zip(*predicted), "-", color=color, lw=1)
    acc_ax.axhline(level, color="gray", ls=":", lw=1)
    acc_ax.axhline(0.1, color="gray", ls="--", lw=1)
    acc_ax.set(xscale="log", xlabel="depth (hidden layers)", ylabel="test accuracy",
               title=f"accuracy vs depth (dotted: trainable level {level:g}, dashed: chance)")
    r_ax.set(xscale="log", xlabel="depth (hidden layers)",
             ylabel="R = first / output gradient norm at init",
             title="R vs depth: measured (dots), mean field (lines)")
    for ax in (acc_ax, r_ax):
        ax.set_xticks(sorted({r["depth"] for r in records}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    acc_ax.legend(fontsize="x-small", ncol=2)
    return _save(fig, path)


def inspect_figure(report, path: str | Path) -> Path:
    """vgbench.inspect's report: per weight (by name, in call order) the gradient norm and
    the update ratio on log axes, the verdict in the title, its layer marked."""
    rows = report.layers
    names = [r["name"] for r in rows]
    timed = report.through_time  # recurrent modules: a third panel, gradient per time step
    fig, axes = plt.subplots(3 if timed else 2, 1, sharex=False,
                             figsize=(max(6.0, 0.35 * len(rows) + 2), 10 if timed else 7))
    axes[0].sharex(axes[1])
    name = report.verdict.get("layer_name")
    if name not in names:  # a module's name (through time): its first weight
        name = next((n for n in names if n.startswith(f"{name}.")), None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Data has no positive values")
        for ax, key, label in ((axes[0], "grad_norm", "gradient norm (batch mean)"),
                               (axes[1], "update_ratio", "update ratio ||dW|| / ||W||")):
            values = _nan([r[key] if r[key] is not None else float("nan") for r in rows])
            colors = ["tab:blue" if r["in_verdict"] else "tab:gray" for r in rows]
            ax.bar(range(len(rows)), values, color=colors)
            ax.set_yscale("log")
            ax.set_ylabel(label)
            if name in names:
                ax.axvline(names.index(name), color="tab:red", ls="--", lw=1)
        axes[1].set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize="small")
        axes[0].set_title(textwrap.fill(f"verdict: {report.describe()}", 90), fontsize="small")
        for module, t in timed.items():
            axes[2].plot(range(1, t["steps"] + 1), _nan(t["norms"]), label=module)
        if timed:
            axes[2].set_yscale("log")
            axes[2].set_xlabel("time step (input)")
            axes[2].set_ylabel("gradient w.r.t. the step's input")
            axes[2].legend(fontsize="small")
        return _save(fig, path)


def text_image(text: str, path: str | Path) -> Path:
    """A monospace rendering of a text table (the summary as a picture)."""
    lines = text.splitlines()
    width = max((len(line) for line in lines), default=1)
    fig = plt.figure(figsize=(0.085 * width + 0.3, 0.165 * len(lines) + 0.3))
    fig.text(0.01, 0.98, text, family="monospace", fontsize=9, va="top", ha="left")
    try:
        return files.savefig(fig, path, dpi=100)
    finally:
        plt.close(fig)


def _save(fig, path: str | Path) -> Path:
    try:
        fig.tight_layout()
        return files.savefig(fig, path, dpi=80)
    finally:
        plt.close(fig)
