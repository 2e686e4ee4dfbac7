"""Whether a run will train, predicted from its verdicts at init and after its first epoch
(diagnose.diagnose_run), without training to the end: benchmarks/peers.py holds vgbench's
prediction to it beside the peers' rules. No torch, no pytest."""

from __future__ import annotations

REACH = 5e-3
"""predict_trainable: within the budget, the slowest layer must be able to move by at least
this share of its norm (the budget's steps x its smallest update ratio after epoch 1)."""

TRAINABLE_ACC = 0.5
"""A run trained when the whole network's validation accuracy reached this (the depth
sweep's trainable-depth level, remedy.TRAINABLE_ACC)."""

LEARNING_ACC = 0.3
"""predict_trainable: a run whose validation accuracy after epoch 1 is halfway from chance
(0.1, 10 balanced classes) to TRAINABLE_ACC is learning, and is predicted to train whatever
its verdict says."""


def predict_trainable(diagnosis: dict[str, dict], val_acc_epoch1: float | None = None,
                      steps: int | None = None) -> bool:
    """Whether a run will reach TRAINABLE_ACC by the end of its budget of `steps` optimizer
    steps, from init and its first epoch only: yes when its validation accuracy after epoch 1
    is already LEARNING_ACC or more (halfway there, whatever the verdict); no when the epoch-1
    verdict (init's for a run of one epoch) is a broken state (diverged, dead units,
    saturated, exploding); else yes when its slowest layer, moving at its epoch-1 rate for
    the whole budget, would move by at least REACH of its norm (without steps: when the
    verdict is healthy)."""
    if val_acc_epoch1 is not None and val_acc_epoch1 >= LEARNING_ACC:
        return True
    v = diagnosis.get("epoch1") or diagnosis.get("init")
    if v is None or v["verdict"] in ("diverged", "dead units", "saturated", "exploding"):
        return False
    if steps is None:
        return v["verdict"] == "healthy"
    return reach(v, steps) >= REACH


def reach(verdict: dict, steps: int) -> float:
    """How far the slowest layer would move, relative to its norm, in `steps` steps at the
    rate the verdict measured: steps x its smallest update ratio."""
    return steps * verdict["evidence"].get("update_min", 0.0)
