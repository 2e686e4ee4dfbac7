"""One probe point: what the probe measured on its batch at one moment, named, and what
diagnose reads. Per weight (input first), per hidden activation (input side first), and for
the batch as a whole. A history keeps its points as one list per metric (Point.at reads
one back); the suite's MLP, `inspect` and the coming monitor all hand diagnose a Point.
No torch here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _per(kind: str):
    """A metric's field: a list per weight or activation, a number (None: not measured) for
    the batch."""
    if kind == "batch":
        return field(default=None, metadata={"per": kind})
    return field(default_factory=list, metadata={"per": kind})


@dataclass
class Point:
    """Every metric of one probe point; `layers` and `activations` name the entries of the
    per-weight and per-activation lists (default: 'layer 1', 'layer 2', ...)."""

    layers: list[str] | None = None
    """The measured weights' names, input first (None: 'layer k')."""
    activations: list[str] | None = None
    """The hidden activations' names, input side first (None: 'layer k')."""
    epoch: int | None = None
    """The epoch after which it was measured (0: at init; None: inspect's one look)."""

    # --- per weight -----------------------------------------------------------------------
    grad_norm: list[float] = _per("layer")
    """Norm of the batch-mean weight gradient (what the optimizer sees)."""
    grad_rms: list[float] = _per("layer")
    """RMS over the probe's examples of each example's own weight-gradient norm (what mean
    field predicts)."""
    weight_change: list[float] = _per("layer")
    """||W - W0|| / ||W0|| since the start (NaN: the start was not kept)."""
    w_abs_mean: list[float] = _per("layer")
    """Mean |w|."""
    w_std: list[float] = _per("layer")
    """Standard deviation of the weight's entries."""
    w_small_frac: list[float] = _per("layer")
    """Share of entries with |w| below probe.SMALL_W."""
    update_ratio: list[float] = _per("layer")
    """||dW|| / ||W|| of the step the run's optimizer (its state, learning rate and
    clipping) would take on the batch's gradient (0: a weight it does not train)."""
    grad_abs_mean: list[float] = _per("layer")
    """Mean |g| of the batch-mean gradient (peer tools' rules read it)."""
    grad_zero_frac: list[float] = _per("layer")
    """Share of exact zeros in the batch-mean gradient."""
    grad_spread: list[float] = _per("layer")
    """95th minus 5th percentile of the batch-mean gradient."""
    grad_cos: list[float] = _per("layer")
    """|cos| of the angle between the weight and its gradient: 0 (to rounding) where the
    loss does not change with the weight's scale, as when a normalization follows it."""
    update_scaled: list[float] = _per("layer")
    """The step's norm over the larger of the weight's norm and the norm PyTorch's default
    init gives a weight of that shape: a weight started small (a head at 0.01, a layer
    scale at 1e-6) is meant to grow, and its first steps are large only next to itself."""

    # --- per hidden activation ------------------------------------------------------------
    saturated: list[float] = _per("activation")
    """Share of (example, unit) entries on a flat tail: slope below
    diagnostics.SLOPE_FRACTION of the activation's largest (a rectifier's zeros excepted)."""
    dead: list[float] = _per("activation")
    """Share of units whose slope is exactly 0 for every example."""
    preact_rms: list[float] = _per("activation")
    """sqrt(mean h^2) of the activation's input: the pre-activation scale (sqrt(q) in
    mean-field terms)."""
    inactive: list[float] = _per("activation")
    """Share of units whose slope is below diagnostics.INACTIVE_SLOPE on at least
    diagnostics.INACTIVE_SHARE of the examples."""

    # --- the batch ------------------------------------------------------------------------
    loss: float | None = _per("batch")
    """The probe batch's loss."""
    loss_after_step: float | None = _per("batch")
    """Its loss once the optimizer's would-be step is taken (above loss: it overshoots)."""
    step_gain: float | None = _per("batch")
    """How much longer that step gets when the gradient is doubled (2 for SGD, about 1 for
    Adam's first step, which normalizes the gradient away)."""

    # --- what the metrics are read with ---------------------------------------------------
    rectifier: list[bool] | None = None
    """Per activation: whether a zero slope is by design (ReLU's off side)."""
    through_time: list[dict] = field(default_factory=list)
    """Per recurrent layer: {'layer' (its 1-based place among the weights), 'steps',
    'ratio' (the first step's input gradient over the last step's), 'signal' (whether the
    gradient that reaches its inputs carries the labels: reach.label_signal; NaN: not
    taken), 'saturated' (the mean share on a flat tail over the nonlinearities inside its
    kernel: kernels.GATES; NaN: not measured), 'name'}."""
    positions: list[dict] = field(default_factory=list)
    """Per first attention (inspect only): {'layer' (its 1-based place among the weights),
    'positions', 'reach' (the loss's gradient at the median position of the stream it adds
    to over the largest: reach.across_positions), 'signal' (whether the output layer's
    gradient carries the labels; NaN: not taken), 'name'}."""
    attention: list[dict] = field(default_factory=list)
    """Per attention module (inspect only): {'name', 'saturated' (the share of its softmax
    rows on a flat tail), 'gain' (its output's RMS over its input's: layout.gains)}."""

    def layer_name(self, i: int) -> str:
        """The i-th (0-based) weight's name."""
        return self.layers[i] if self.layers and i < len(self.layers) else f"layer {i + 1}"

    def activation_name(self, i: int) -> str:
        """The i-th (0-based) hidden activation's name."""
        return (self.activations[i] if self.activations and i < len(self.activations)
                else f"layer {i + 1}")

    def metrics(self) -> dict:
        """{metric: value} for every metric (lists per weight / activation, batch scalars)."""
        return {k: getattr(self, k) for k in METRICS}

    def select(self, weights: list[int], names: list[str] | None = None) -> "Point":
        """The same point with only these weights (indices, in this order) and their names
        (default: their names here); activations and the batch unchanged."""
        keep = {k: [getattr(self, k)[i] for i in weights] for k in LAYER_METRICS
                if len(getattr(self, k)) > max(weights, default=-1)}
        if names is None:
            names = [self.layer_name(i) for i in weights]
        return dataclasses.replace(self, layers=names, **keep)

    @classmethod
    def at(cls, diagnostics: dict, index: int) -> "Point":
        """Probe point `index` of a history's diagnostics (one list per metric, a value per
        point); metrics an older history lacks stay empty (None for the batch's)."""
        values = {k: diagnostics[k][index] for k in METRICS
                  if isinstance(diagnostics.get(k), list) and len(diagnostics[k]) > index}
        return cls(epoch=diagnostics["epoch"][index], **values,
                   rectifier=(diagnostics.get("activations") or {}).get("rectifier"))


def _names(per: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(Point) if f.metadata.get("per") == per)


LAYER_METRICS = _names("layer")
"""The per-weight metrics, in the order a history stores them."""
HIDDEN_METRICS = _names("activation")
"""The per-hidden-activation metrics."""
STEP_METRICS = _names("batch")
"""The batch's metrics."""
METRICS = LAYER_METRICS + HIDDEN_METRICS + STEP_METRICS
