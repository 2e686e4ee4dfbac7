"""Expected outcomes: a Check compares one metric of a finished run with a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vgbench.diagnose import MOMENTS, VERDICTS, Verdict
from vgbench.history import History

METRICS = {
    "test_acc": "test accuracy after the last epoch",
    "best_val_acc": "highest validation accuracy over all epochs",
    "whole_val_acc": "highest validation accuracy while the whole network trained (layerwise: "
                     "its last stage; else every epoch)",
    "final_val_acc": "validation accuracy after the last epoch",
    "max_train_acc": "highest train accuracy over all epochs",
    "final_train_loss": "train loss of the last epoch (mean over its batches)",
    "grad_ratio_init": "first-layer / output-layer weight-gradient norm at init",
    "grad_ratio_init_rms": "the same ratio of per-example RMS norms at init, in float64 (deep "
                           "sigmoid nets' first layers underflow float32 near 40 layers)",
    "grad_ratio_final": "first-layer / output-layer weight-gradient norm after the last epoch",
    "grad_gain_init": "grad_ratio_init over the baseline's, same seed and probe batch",
    "first_layer_change": "||W1 - W1_0|| / ||W1_0|| after the last epoch",
    "output_layer_change": "||Wout - Wout_0|| / ||Wout_0|| after the last epoch",
    "saturation_init": "mean fraction of saturated hidden activations at init (probe batch; "
                       "diagnostics.SLOPE_FRACTION)",
    "diverged": "1 when the loss or the weights became non-finite (training stopped), else 0",
}
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "==": lambda a, b: a == b}
CHANCE_LOSS = math.log(10)
"""Cross-entropy of a uniform guess over the 10 classes: where a stalled net's loss sits."""


def _last(values: list) -> float | None:
    return values[-1] if values else None


def metrics(h: History, baseline_ratio_init: float | None = None) -> dict[str, float | None]:
    """Every metric of METRICS that this history can give (None: not measured, or the run
    diverged before it could be); the diagnostics ones need probing on."""
    m = {
        "test_acc": h.test_acc,
        "best_val_acc": h.best_val_acc(),
        "whole_val_acc": max((a for a, st in zip(h.val_acc, h.stage)
                              if a is not None and st == max(h.stage)), default=None),
        "final_val_acc": _last(h.val_acc),
        "max_train_acc": max((a for a in h.train_acc if a is not None), default=None),
        "final_train_loss": _last(h.train_loss),
        "diverged": 1.0 if h.diverged else 0.0,
    }
    d = h.diagnostics
    if d is not None:
        m["grad_ratio_init"] = h.grad_ratio_init
        m["grad_ratio_final"] = h.grad_ratio_final
        m["first_layer_change"] = d["weight_change"][-1][0]
        m["output_layer_change"] = d["weight_change"][-1][-1]
        sat = [v for v in d["saturated"][0] if v is not None]
        m["saturation_init"] = sum(sat) / len(sat) if sat else None
        if h.init_profile and h.init_profile["grad_rms"][-1]:
            rms = h.init_profile["grad_rms"]
            m["grad_ratio_init_rms"] = rms[0] / rms[-1]
        if baseline_ratio_init and h.grad_ratio_init is not None:
            m["grad_gain_init"] = h.grad_ratio_init / baseline_ratio_init
    return m


def in_depths(depths: tuple[int | None, int | None], depth: int) -> bool:
    """Whether depth lies in (lowest, highest), either end None: open."""
    lo, hi = depths
    return (lo is None or depth >= lo) and (hi is None or depth <= hi)


@dataclass(frozen=True)
class Check:
    """metric OP value must hold; `why` says which seeds gave it and the margin taken.

    depths: for the depth sweep, the (lowest, highest) depth the check applies to (either
    end None: open); None applies at every depth the budget runs.
    """

    metric: str
    op: str
    value: float
    why: str = ""
    depths: tuple[int | None, int | None] | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; choose from {sorted(OPS)}")
        if self.depths is not None and len(self.depths) != 2:
            raise ValueError(f"depths must be (lowest, highest), got {self.depths!r}")

    def validate(self) -> None:
        """Raise ValueError if the metric is unknown (a remedy calls it, naming itself)."""
        if self.metric not in METRICS:
            raise ValueError(f"check on unknown metric {self.metric!r}; choose from "
                             f"{', '.join(sorted(METRICS))}")

    def applies_at(self, depth: int) -> bool:
        """Whether the check is meant for this depth."""
        return self.depths is None or in_depths(self.depths, depth)

    def __str__(self) -> str:
        value = str(bool(self.value)) if self.metric == "diverged" else f"{self.value:g}"
        text = f"{self.metric} {self.op} {value}"
        if self.depths is not None:
            lo, hi = self.depths
            text += (f" at depth {lo}" if lo == hi else f" at depth >= {lo}" if hi is None
                     else f" at depth <= {hi}" if lo is None else f" at depth {lo}..{hi}")
        return text

    def holds(self, observed: float | None) -> bool:
        """True when observed satisfies the check (None or NaN never does)."""
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return False
        return OPS[self.op](observed, self.value)

    def failure(self, remedy: str, observed: float | None, seed: int) -> str:
        """A finding-style message: remedy, metric, threshold, observed value, seed."""
        seen = "null" if observed is None else f"{observed:.6g}"
        return (f"{remedy} (seed {seed}): expected {self}, observed {seen}"
                + (f"  [{self.why}]" if self.why else ""))


@dataclass(frozen=True)
class Diagnosis:
    """The verdict (vgbench.diagnose) a remedy's runs must get at a moment, and the
    intervention that proves the cause: the remedies in fixed_by address this cause and
    reach TRAINABLE_ACC at the same depth and budget where this one does not; those in
    not_fixed_by address another cause and do not. `why` says which seeds gave it.

    depths: (lowest, highest) depth it applies to (either end None: open); None: the
    config's own depth only. budgets: where it is asserted (an 'init' or 'epoch1' verdict
    does not depend on the budget; an 'end' one does).
    """

    verdict: str
    moment: str = "init"
    depths: tuple[int | None, int | None] | None = None
    budgets: tuple[str, ...] = ("full", "quick", "sweep")
    fixed_by: tuple[str, ...] = ()
    not_fixed_by: tuple[str, ...] = ()
    why: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; choose from {list(VERDICTS)}")
        if self.moment not in MOMENTS:
            raise ValueError(f"unknown moment {self.moment!r}; choose from {list(MOMENTS)}")
        if self.depths is not None and len(self.depths) != 2:
            raise ValueError(f"depths must be (lowest, highest), got {self.depths!r}")

    def applies(self, budget: str, depth: int, own_depth: int) -> bool:
        """Whether it is asserted at this budget and depth."""
        if budget not in self.budgets:
            return False
        if self.depths is None:
            return depth == own_depth
        return in_depths(self.depths, depth)

    def __str__(self) -> str:
        return f"diagnosis at {self.moment} is {self.verdict}"

    def failure(self, remedy: str, seed: int, diagnosis: dict) -> str | None:
        """None when the run's diagnosis at this moment is the declared verdict; else the
        finding, with the verdict it got and its evidence."""
        got = diagnosis.get(self.moment)
        if got is not None and got["verdict"] == self.verdict:
            return None
        seen = "none (not probed)" if got is None else str(Verdict.from_dict(got))
        return (f"{remedy} (seed {seed}): expected {self}, observed {seen}"
                + (f"  [{self.why}]" if self.why else ""))


def expects_divergence(checks) -> bool:
    """Whether the checks declare that the run diverges (Check('diverged', '==', True))."""
    return any(c.metric == "diverged" and c.op == "==" and c.value for c in checks)


def evaluate(remedy: str, checks, m: dict, seed: int, h: History | None = None,
             diagnoses=()) -> list[str]:
    """The failure messages of every check and declared diagnosis that does not hold
    (empty: all held). A failed check names the run's diagnosis (what is wrong and where).
    A run that diverged without its checks expecting it fails with that one finding."""
    if h is not None and h.diverged and not expects_divergence(checks):
        return [f"{remedy} (seed {seed}): diverged at epoch {h.diverged_epoch} "
                f"({h.diverged_reason})"]
    cause = explain(h.diagnosis) if h is not None else ""
    failures = []
    for c in checks:
        observed = m.get(c.metric)
        if not c.holds(observed):
            text = c.failure(remedy, observed, seed)
            if cause:  # the cause before the threshold's provenance
                head, sep, why = text.partition("  [")
                text = f"{head}; {cause}" + (f"  [{why}" if sep else "")
            failures.append(text)
    for d in diagnoses:
        text = d.failure(remedy, seed, h.diagnosis if h is not None else {})
        if text:
            failures.append(text)
    return failures


def explain(diagnosis: dict) -> str:
    """The run's verdict in words: at the end (and at init when it differs)."""
    if not diagnosis:
        return ""
    last = diagnosis.get("end") or diagnosis.get("init")
    text = str(Verdict.from_dict(last))
    init = diagnosis.get("init")
    if init is not None and last is not init and init["verdict"] != last["verdict"]:
        text += f" (at init: {Verdict.from_dict(init)})"
    return text
