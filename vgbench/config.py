"""The experiment config: one frozen dataclass whose defaults are the protocol's baseline."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass

ACTIVATIONS = ("sigmoid", "relu", "tanh", "selu", "leaky_relu", "gelu")
NORMS = (None, "batchnorm", "custom", "layernorm")
GRADNORMS = (None, "post", "pre")
INITS = ("default", "normal", "xavier", "kaiming", "orthogonal")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Config:
    """Everything that defines one training run. Defaults: the baseline of docs/protocol.md."""

    # --- model ---
    n_layer: int = 7
    """Depth: the number of hidden Linear layers (the protocol's 7)."""
    width: int = 128
    """Units per hidden layer."""
    activation: str = "sigmoid"
    """Hidden activation: 'sigmoid', 'relu', 'tanh', 'selu', 'leaky_relu' (slope 0.01) or
    'gelu'."""
    norm: str | None = None
    """Between each hidden Linear and its activation: None, 'batchnorm' (BatchNorm1d),
    'custom' (parameter-free (x - mean) / std over the whole batch tensor) or 'layernorm'
    (LayerNorm over the width, with its affine)."""
    skip: tuple[tuple[int, int], ...] = ()
    """Residual adds as (src, dst) pairs of 1-based hidden layers: h_dst = act(...) + h_src.
    The pairs are a pattern over the first P = max(dst) layers, repeated every P layers
    down the stack while they fit (docs/protocol.md, 'Depth'); see skip_pairs."""
    gradnorm: str | None = None
    """Gradient-normalization layer: None, 'post' (after each hidden activation) or 'pre'
    (between each hidden Linear and its activation)."""
    init: str = "default"
    """Weights of every Linear: 'default' (PyTorch's), 'normal' (N(0, init_std)), 'xavier'
    (Glorot normal, std = init_gain * sqrt(2 / (fan_in + fan_out))), 'kaiming' (std =
    init_gain / sqrt(fan_in): gain sqrt(2) is He's ReLU init, gain 1 LeCun's) or
    'orthogonal' (scaled by init_gain). Biases 0 for every scheme but 'default'."""
    init_std: float = 0.05
    """Weight std for init='normal'."""
    init_gain: float = 1.0
    """Gain for init 'xavier', 'kaiming' and 'orthogonal'."""

    # --- optimization ---
    optimizer: str = "sgd"
    """'sgd' (plain: no momentum, no weight decay) or 'adam'."""
    lr: float = 1e-2
    """Learning rate."""
    batch_size: int = 512
    """Mini-batch size for training and evaluation."""
    epochs: int = 100
    """Training epochs (per stage when layerwise); 0 evaluates the untrained network."""
    seed: int = 42
    """Seeds everything: the train/val split, init, shuffling and the probe batch."""
    clip_norm: float | None = None
    """Clip the global gradient norm to this before every step (None: no clipping)."""

    # --- layerwise ("train layers separately") ---
    layerwise: bool = False
    """Train the hidden stack block by block (see stage_blocks), then the whole network."""
    stage_block: int = 2
    """Hidden layers per layerwise block; the last block holds what remains (at depth 7:
    2, 2, 2, 1). See stage_blocks."""
    stage_epochs: int | None = None
    """Epochs per layerwise stage; None means `epochs` (the seed text's choice)."""

    # --- data and diagnostics ---
    val_fraction: float = 0.1
    """Fraction of the 60,000 training images held out for validation."""
    limit: int | None = None
    """Cap every split at this many samples (smoke tests only; None = full data)."""
    cuda_graph: bool = True
    """On CUDA, capture the training step in a CUDA graph and replay it (see
    train.StepGraph); ignored on the CPU."""
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
        for name in ("n_layer", "width", "batch_size", "probe_size", "stage_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.stage_epochs is not None and self.stage_epochs < 1:
            raise ValueError(f"stage_epochs must be >= 1 (or None), got {self.stage_epochs}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or None), got {self.limit}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("lr", "init_std", "init_gain"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 (or None), got {self.clip_norm}")
        for pair in self.skip:
            if len(pair) != 2 or not 1 <= pair[0] < pair[1]:
                raise ValueError(f"skip pair {pair} must be (src, dst) with 1 <= src < dst")

    @property
    def skip_pairs(self) -> tuple[tuple[int, int], ...]:
        """The residual adds at this depth: the skip pattern repeated every P = max(dst)
        layers, keeping the adds that fit. At n_layer 7, ((1, 3), (4, 7)) stays itself; at
        15 it gives (1, 3), (4, 7), (8, 10), (11, 14)."""
        if not self.skip:
            return ()
        period = max(dst for _, dst in self.skip)
        return tuple((src + k, dst + k)
                     for k in range(0, self.n_layer, period)
                     for src, dst in self.skip if dst + k <= self.n_layer)

    @property
    def stage_blocks(self) -> tuple[int, ...]:
        """Hidden layers per layerwise block: stage_block each, the last what remains."""
        full, rest = divmod(self.n_layer, self.stage_block)
        return (self.stage_block,) * full + ((rest,) if rest else ())

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
        return cls(**d)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {list(choices)}")


def option_type(kind=int, *, lo=None, hi=None, lo_open=False):
    """An argparse `type`: parse `kind`, require lo <= value <= hi (lo < value when lo_open);
    the usage error names the value and the allowed range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        if low_bad or (hi is not None and value > hi):
            if hi is None:
                want = f"{'>' if lo_open else '>='} {lo}"
            else:
                want = f"in {'(' if lo_open else '['}{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse
