"""The experiment config: one frozen dataclass whose defaults are the protocol's baseline."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

ACTIVATIONS = ("sigmoid", "relu")
NORMS = (None, "batchnorm", "custom")
GRADNORMS = (None, "post", "pre")
INITS = ("default", "normal")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Config:
    """Everything that defines one training run. Defaults: the baseline of PROTOCOL.md."""

    # --- model ---
    n_layer: int = 7
    """Number of hidden Linear layers."""
    width: int = 128
    """Units per hidden layer."""
    activation: str = "sigmoid"
    """Hidden activation: 'sigmoid' or 'relu'."""
    norm: str | None = None
    """Between each hidden Linear and its activation: None, 'batchnorm' (BatchNorm1d) or
    'custom' (parameter-free (x - mean) / std over the whole batch tensor)."""
    skip: tuple[tuple[int, int], ...] = ()
    """Residual adds as (src, dst) pairs of 1-based hidden layers: h_dst = act(...) + h_src."""
    gradnorm: str | None = None
    """Gradient-normalization layer: None, 'post' (after each hidden activation) or 'pre'
    (between each hidden Linear and its activation)."""
    init: str = "default"
    """'default' (PyTorch's Linear init) or 'normal' (weights ~ N(0, init_std), biases 0)."""
    init_std: float = 0.05
    """Weight std for init='normal'."""

    # --- optimization ---
    optimizer: str = "sgd"
    """'sgd' (plain: no momentum, no weight decay) or 'adam'."""
    lr: float = 1e-2
    """Learning rate."""
    batch_size: int = 512
    """Mini-batch size for training and evaluation."""
    epochs: int = 100
    """Training epochs (per stage when layerwise)."""
    seed: int = 42
    """Seeds everything: the train/val split, init, shuffling and the probe batch."""

    # --- layerwise ("train layers separately") ---
    layerwise: bool = False
    """Train the hidden stack block by block (see stage_blocks), then the whole network."""
    stage_blocks: tuple[int, ...] = (2, 2, 2, 1)
    """Hidden layers per block for layerwise training; must sum to n_layer."""
    stage_epochs: int | None = None
    """Epochs per layerwise stage; None means `epochs` (the seed text's choice)."""

    # --- data and diagnostics ---
    val_fraction: float = 0.1
    """Fraction of the 60,000 training images held out for validation."""
    limit: int | None = None
    """Cap every split at this many samples (smoke tests only; None = full data)."""
    diagnostics: bool = True
    """Probe per-layer gradients and weights at init and after every epoch."""
    probe_size: int = 512
    """Samples in the fixed diagnostics probe batch (drawn from the train split)."""

    def __post_init__(self) -> None:
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("gradnorm", self.gradnorm, GRADNORMS)
        _check_choice("init", self.init, INITS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in ("n_layer", "width", "batch_size", "probe_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for src, dst in self.skip:
            if not 1 <= src < dst <= self.n_layer:
                raise ValueError(
                    f"skip ({src}, {dst}) must satisfy 1 <= src < dst <= n_layer={self.n_layer}"
                )
        if self.layerwise and sum(self.stage_blocks) != self.n_layer:
            raise ValueError(
                f"stage_blocks {self.stage_blocks} sum to {sum(self.stage_blocks)}, "
                f"but n_layer is {self.n_layer}; make them match"
            )

    @property
    def n_stages(self) -> int:
        """Training stages: len(stage_blocks) when layerwise, else 1."""
        return len(self.stage_blocks) if self.layerwise else 1

    @property
    def epochs_per_stage(self) -> int:
        """Epochs each stage trains."""
        if self.layerwise and self.stage_epochs is not None:
            return self.stage_epochs
        return self.epochs

    @property
    def total_epochs(self) -> int:
        """Epochs trained in all, over every stage."""
        return self.n_stages * self.epochs_per_stage

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists, as after a JSON round trip)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        """Inverse of to_dict; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(names)}")
        d = dict(d)
        if "skip" in d:
            d["skip"] = tuple(tuple(p) for p in d["skip"])
        if "stage_blocks" in d:
            d["stage_blocks"] = tuple(d["stage_blocks"])
        return cls(**d)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {list(choices)}")
