"""Figures: learning curves (the course project's 2x2), gradient flow, weight change."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a screen
import matplotlib.pyplot as plt  # noqa: E402

from vgbench import files  # noqa: E402
from vgbench.train import History  # noqa: E402

CURVES = (("train_loss", "Training Loss", "Loss"), ("val_loss", "Validation Loss", "Loss"),
          ("train_acc", "Training Accuracy", "Accuracy"),
          ("val_acc", "Validation Accuracy", "Accuracy"))


def _layer_names(n: int) -> list[str]:
    return [f"L{i}" for i in range(1, n)] + ["out"]


def _nan(values) -> list[float]:
    """None (a diverged epoch's null) as NaN, which matplotlib leaves as a gap."""
    return [float("nan") if v is None else v for v in values]


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


def gradient_flow(h: History, path: str | Path) -> Path:
    """Per-layer gradient norm (log scale) at init, a few epochs between, and at the end."""
    fig, ax = plt.subplots(figsize=(8, 5))
    _draw_flow(ax, h, _snapshots(h))
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
