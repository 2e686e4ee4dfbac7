"""History: everything one run produced (losses, accuracies, probe points, verdicts), as
JSON that round-trips. Reading one needs neither the model nor the training loop."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from vgbench import files


@dataclass
class History:
    """Everything one run produced; round-trips through JSON."""

    name: str
    config: dict
    device: str
    stage: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    """Seconds per epoch (train + validation + probe), device synchronized."""
    test_loss: float | None = None
    test_acc: float | None = None
    total_epochs: int = 0
    steps_per_epoch: int | None = None
    """Optimizer steps per epoch (batches of the train split)."""
    diagnostics: dict | None = None
    """Per probe point: 'epoch' (0 = init) and per-layer lists (see diagnostics.py)."""
    grad_ratio_init: float | None = None
    grad_ratio_final: float | None = None
    diverged: bool = False
    """True when the loss or the weights became non-finite; training stopped there."""
    diverged_epoch: int | None = None
    """The epoch (1-based, all stages counted) at whose end divergence was found."""
    diverged_reason: str | None = None
    """What was non-finite, e.g. 'train loss nan'."""
    env: dict = field(default_factory=dict)
    """torch version, threads, device, platform: bit-identity holds only for equal ones."""
    parts: dict = field(default_factory=dict)
    """The remedy's own code (see model.Parts), as 'module.qualname' labels."""
    cuda_graph: str | None = None
    """On CUDA: 'captured' (full batches replayed a CUDA graph) or 'eager (...why)'."""
    batched_with: list[str] | None = None
    """The runs trained together with this one as one group (vgbench.batched), each as
    'remedy:seed', this one included; their epoch_time is the whole group's."""
    init_profile: dict | None = None
    """At init, in float64 on the probe batch: per-Linear grad_norm (batch mean) and
    grad_rms (per example); see diagnostics.init_profile."""
    theory: dict | None = None
    """The mean-field prediction for the same batch (theory.Prediction.to_dict()), or
    {'applies': False, 'why': ...} where mean field does not describe the network."""
    self_checks: list[dict] = field(default_factory=list)
    """The GPU fast paths' checks against eager steps that govern this run (CUDA graph,
    batched seeds; selfcheck.Result.to_dict()); empty on the CPU."""
    diagnosis: dict = field(default_factory=dict)
    """{'init' | 'epoch1' | 'end': diagnose.Verdict.to_dict()}: what is wrong and where, at
    init, after the first epoch and after the last (see vgbench/diagnose.py)."""
    watch: dict | None = None
    """A run watched in the user's own loop (vgbench.watch): {'every', 'steps', 'timeline',
    'onsets', 'losses' ([step, loss]), 'layers', 'chain' (the weights the verdict reads),
    'notes'}; its diagnostics' 'epoch' is then the optimizer step. None for the suite's."""

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize as strict JSON (non-finite values become null); write atomically to
        path when given."""
        text = files.dumps(dataclasses.asdict(self), indent=1)
        if path is not None:
            files.write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "History":
        """Inverse of to_json; accepts the JSON text or a file path. A file that is not a
        history is a ValueError naming it."""
        text, where = str(text_or_path), "history text"
        if not text.lstrip().startswith("{"):
            where = str(text_or_path)
            text = Path(text_or_path).read_text()
        try:
            return cls(**json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON ({exc}); it may be truncated: "
                             "rerun the experiment that wrote it") from None
        except TypeError as exc:
            raise ValueError(f"{where} is not a vgbench history ({exc})") from None

    def best_val_acc(self) -> float | None:
        """Highest validation accuracy over all epochs (None: no finite one)."""
        return max((a for a in self.val_acc if a is not None), default=None)

    def epochs_to(self, target: float) -> int | None:
        """First epoch (1-based) whose validation accuracy reaches target, else None."""
        return next((i + 1 for i, a in enumerate(self.val_acc)
                     if a is not None and a >= target), None)
