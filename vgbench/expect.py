"""Expected outcomes: a Check compares one metric of a finished run with a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vgbench.train import History

METRICS = {
    "test_acc": "test accuracy after the last epoch",
    "best_val_acc": "highest validation accuracy over all epochs",
    "final_val_acc": "validation accuracy after the last epoch",
    "max_train_acc": "highest train accuracy over all epochs",
    "grad_ratio_init": "first-layer / output-layer weight-gradient norm at init",
    "grad_ratio_final": "first-layer / output-layer weight-gradient norm after the last epoch",
    "grad_gain_init": "grad_ratio_init over the baseline's, same seed and probe batch",
    "first_layer_change": "||W1 - W1_0|| / ||W1_0|| after the last epoch",
    "saturation_init": "mean fraction of saturated hidden units at init (probe batch)",
}
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def metrics(h: History, baseline_ratio_init: float | None = None) -> dict[str, float]:
    """Every metric of METRICS that this history can give (diagnostics ones need them on)."""
    m = {
        "test_acc": h.test_acc,
        "best_val_acc": h.best_val_acc(),
        "final_val_acc": h.val_acc[-1] if h.val_acc else float("nan"),
        "max_train_acc": max(h.train_acc, default=float("nan")),
    }
    if h.diagnostics is not None:
        m["grad_ratio_init"] = h.grad_ratio_init
        m["grad_ratio_final"] = h.grad_ratio_final
        m["first_layer_change"] = h.diagnostics["weight_change"][-1][0]
        sat = h.diagnostics["saturation"][0]
        m["saturation_init"] = sum(sat) / len(sat)
        if baseline_ratio_init:
            m["grad_gain_init"] = h.grad_ratio_init / baseline_ratio_init
    return m


@dataclass(frozen=True)
class Check:
    """metric OP value must hold; `why` says which seeds gave it and the margin taken."""

    metric: str
    op: str
    value: float
    why: str = ""

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {sorted(METRICS)}")
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; choose from {sorted(OPS)}")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"

    def holds(self, observed: float) -> bool:
        """True when observed satisfies the check (NaN never does)."""
        return not math.isnan(observed) and OPS[self.op](observed, self.value)

    def failure(self, remedy: str, observed: float, seed: int) -> str:
        """A finding-style message: remedy, metric, threshold, observed value, seed."""
        return (f"{remedy} (seed {seed}): expected {self.metric} {self.op} {self.value:g}, "
                f"observed {observed:.6g}" + (f"  [{self.why}]" if self.why else ""))


def evaluate(remedy: str, checks, m: dict[str, float], seed: int) -> list[str]:
    """The failure messages of every check that does not hold (empty: all held)."""
    failures = []
    for c in checks:
        observed = m.get(c.metric, float("nan"))
        if not c.holds(observed):
            failures.append(c.failure(remedy, observed, seed))
    return failures
