"""The probe: measures a model on a fixed batch, leaving no trace on training.

Gradients come from torch.autograd.grad (no .grad written, no optimizer touched: the
update an optimizer would make is taken by a twin of it, see updater.py), batch norms'
running statistics are restored afterwards, and nothing here draws from the run's random
generators. Each measurement is a Point (point.py), which diagnose reads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vgbench import float64
from vgbench.diagnostics import (ACTIVATION_STATS, activation_stats, as_it_was, layer_gradients,
                                 same_draws, slope_profile)
from vgbench.point import METRICS, Point
from vgbench.updater import Updater

SMALL_W = 1e-3
"""|w| below this counts as 'near zero' in w_small_frac."""
QUANTILE_MAX = 2 ** 17
"""grad_spread's percentiles are taken on at most this many values (sorting is the cost):
a larger gradient is sampled evenly, every k-th value. Above the suite's largest layer
(784 x 128), so its values are exact."""


class Probe:
    """Measures a model on a fixed batch; remembers the initial weights for weight_change.

    The layout (default: the model itself, as model.MLP) provides layers(), the weights
    measured as (name, module, weight), input first, and activations(), the activation
    modules whose input and slope are measured; vgbench.inspect builds one for any model.
    loss_fn(output, y): the loss (default mean cross-entropy). keep_start=False: no copy of
    the initial weights (a probe that measures once, as inspect's: weight_change is NaN)."""

    def __init__(self, model, x, y: torch.Tensor, layout=None, loss_fn=None,
                 keep_start: bool = True):
        self.x, self.y = x, y
        self.loss_fn, self.keep_start = loss_fn, keep_start
        self.notes: set[str] = set()
        """What could not be measured, and why (once each)."""
        self.points = points_store()
        self.unused: set[int] = set()
        """Indices of the layout's weights that got no gradient at the last measure."""
        self.step_failed: str | None = None
        """Why the optimizer's step could not be taken on a twin at the last measure (its
        update ratios are NaN then), or None."""
        self.taps: dict = {}
        """Where the layout was found by the probe's forward (layout.Discovery): per
        recurrent module, the loss's gradient at its input (Gradients.taps)."""
        self.layout = layout or model
        if not hasattr(self.layout, "discover"):  # else the first measure finds it
            self._adopt(self.layout)

    def _adopt(self, layout) -> None:
        """Measure what layout names: its weights' names (and initial values, if kept) and
        its activations' slope profiles."""
        self.layout = layout
        self.names = [name for name, _, _ in layout.layers()]
        self.w0 = [w.detach().clone() if self.keep_start else None
                   for _, _, w in layout.layers()]
        self.shape = [slope_profile(a) for a in layout.activations()]
        self.activations = {"max_slope": [top for top, _ in self.shape],
                            "rectifier": [rect for _, rect in self.shape]}
        """Per hidden activation: its largest slope and whether it is a rectifier (a zero
        slope by design: see slope_profile)."""

    def measure(self, model, epoch: int, updater: Updater | None = None) -> Point:
        """Every metric at `epoch` (0 = at init), measured in train mode, leaving no trace;
        kept in self.points and returned. updater: the run's optimizer, for update_ratio and
        loss_after_step (None: NaN)."""
        found = hasattr(self.layout, "discover")  # the layout is found by this forward
        weights = [] if found else [w for _, _, w in self.layout.layers()]
        trained = updater.params if updater is not None else []
        flags = [w.requires_grad for w in weights]  # layerwise freezes some layers
        layout_acts = [] if found else self.layout.activations()
        stats: list[torch.Tensor] = []
        calls = [0]
        profiles: dict = {}  # per module called (kept: a key's identity stays its own)

        def measured(k, h, act):  # each activation's statistics as the forward passes it
            if found:  # by the module called (the layout lists the same, in call order)
                if act not in profiles:
                    profiles[act] = slope_profile(act)
                with torch.no_grad():
                    stats.append(activation_stats(act, h, *profiles[act]))
            elif k < len(layout_acts):
                with torch.no_grad():
                    stats.append(activation_stats(layout_acts[k], h, *self.shape[k]))
            calls[0] = k + 1
        with as_it_was(model, train=True), torch.enable_grad(), same_draws(self.x):
            for w in weights:
                w.requires_grad_(True)
            try:
                g = layer_gradients(model, self.x, self.y, measured, trained, self.layout,
                                    self.loss_fn)
            finally:
                for w, flag in zip(weights, flags):
                    w.requires_grad_(flag)
        if found:
            self._adopt(g.layout)
            self.taps = g.taps
            weights = [w for _, _, w in self.layout.layers()]
            layout_acts = self.layout.activations()
            del stats[len(layout_acts):]
        grads, rms, loss = g.weights, g.rms, g.loss.item()
        self.unused = {i for i, grad in enumerate(grads) if grad is None}
        if calls[0] != len(layout_acts):
            self.notes.add(f"{calls[0]} activation calls in the probe's forward, "
                           f"{len(layout_acts)} when the layout was found: the "
                           "activations are matched in call order as far as they go")
        with torch.no_grad():
            norms = [float64.norm64(w) for w in weights]  # float64, once: |cos|, the step's ratio
            # every metric but the two of the step, while the gradients are here
            layer = layer_rows(weights, grads, rms, self.w0, norms)
            hidden = dict(zip(ACTIVATION_STATS, torch.stack(stats).T.tolist())) if stats else {}
            update = [math.nan] * len(weights)
            after = gain = math.nan
            if updater is not None:
                index = {id(p): i for i, p in enumerate(trained)}
                extra = list(g.extra)
                del g, grads  # the step releases each gradient once it is used
                self.step_failed = None
                try:
                    steps, gain, after = self.take_step(model, updater, extra)
                except Exception as exc:  # noqa: BLE001 - a user optimizer we cannot twin
                    self.step_failed = (f"the optimizer's step could not be taken on a twin "
                                        f"({type(exc).__name__}: {exc})")
                    self.notes.add(f"update_ratio not measured: {self.step_failed}")
                else:
                    update = [ratio(steps[index[id(w)]], n) if id(w) in index else 0.0
                              for w, n in zip(weights, norms)]
            layer.update(update_rows(update, weights, norms))
        point = Point(layers=self.names, epoch=epoch, **layer, **hidden, loss=loss,
                      loss_after_step=after, step_gain=gain,
                      rectifier=self.activations["rectifier"])
        keep(self.points, point)
        return point

    def take_step(self, model, updater: Updater, grads: list) -> tuple[list, float, float]:
        """For these gradients (a list it empties: each gradient is dropped once used): the
        norm of each trained parameter's step (float64); how much longer the step gets for
        twice the gradients (Point.step_gain: over every element where the parameters have
        at most float64.CHUNK or the optimizer is stepped whole, else over the first
        CHUNK / (number of parameters) elements of each); and the probe batch's loss once the step is taken, with the same dropout
        draws as the measured forward; then every weight and norm statistic is put back
        exactly. The step is applied piece by piece as the updater gives it, and a copy of
        each moved parameter is kept meanwhile: the copies grow as the gradients go."""
        params = updater.params
        steps: list[list] = [[] for _ in params]
        sample: list[list] = [[] for _ in params]  # the steps of the first twin step's pieces
        doubled: list[list] = [[] for _ in params]
        kept: dict[int, torch.Tensor] = {}
        try:
            with torch.no_grad():
                size = sum(p.numel() for p in params)
                cut = (-(-float64.CHUNK // len(params))
                       if size > float64.CHUNK and updater.piecewise else None)
                for i, piece, d2 in updater.deltas(grads, scale=2.0, sample=cut):
                    doubled[i].append(d2.norm())
                for i, piece, d in updater.deltas(grads):
                    steps[i].append(d.norm())
                    if cut is not None and piece.start == 0:  # the same first elements
                        sample[i].append(d[:cut].norm())
                    if bool(d.any()):
                        p = params[i]
                        if i not in kept:
                            kept[i] = p.detach().clone()
                        _add(p, piece, d)
                    if piece.stop is None or piece.stop >= params[i].numel():
                        grads[i] = None  # its last piece: the gradient is done with
            grads.clear()
            taken = [float64.joined(n) for n in (steps if cut is None else sample) if n]
            gain = ratio(torch.stack([float64.joined(n) for n in doubled if n]),
                         torch.stack(taken).norm()) if taken else math.nan
            with as_it_was(model, train=True), same_draws(self.x), torch.no_grad():
                out = model(*self.x) if isinstance(self.x, tuple) else model(self.x)
                loss = F.cross_entropy(out, self.y) if self.loss_fn is None else \
                    self.loss_fn(out, self.y)
                return [float64.joined(n) for n in steps], gain, float(loss)
        finally:
            with torch.no_grad():
                for i, k in kept.items():
                    params[i].copy_(k)


ROW = ("grad_norm", "grad_rms", "weight_change", "w_abs_mean", "w_std", "w_small_frac",
       "grad_abs_mean", "grad_zero_frac", "grad_spread", "grad_cos")
"""The per-weight metrics layer_rows takes, in the order it stacks them."""


def points_store() -> dict[str, list]:
    """A history's probe points: one list per metric (and 'epoch'), a value per point."""
    return {"epoch": [], **{k: [] for k in METRICS}}


def keep(points: dict[str, list], point: Point) -> None:
    """Append a point to a history's probe points (points_store)."""
    points["epoch"].append(point.epoch)
    for key in METRICS:
        points[key].append(getattr(point, key))


def update_rows(update: list[float], weights, norms) -> dict[str, list[float]]:
    """update_ratio and update_scaled (the step against the larger of the weight's norm and
    the default init's) for each weight, in the weight's dtype as the other metrics."""
    scaled = [u * n / max(n, default_norm(w)) if n > 0 else u  # NaN stays NaN
              for u, n, w in zip(update, map(float, norms), weights)]
    return {key: [torch.as_tensor(v, dtype=w.dtype).item() for v, w in zip(values, weights)]
            for key, values in (("update_ratio", update), ("update_scaled", scaled))}


def layer_rows(weights, grads, rms, starts, norms) -> dict[str, list[float]]:
    """{metric of ROW: its value for each weight (in the weight's dtype)}, from the weights,
    their gradients (None: none), the per-example RMS norms, the initial weights (None: not
    kept) and the weights' float64 norms."""
    rows = []
    for w, g_w, r, w0, w_norm in zip(weights, grads, rms, starts, norms):
        a = w.detach().abs()
        g_w = torch.zeros_like(a) if g_w is None else g_w
        r = a.new_tensor(math.nan) if r is None else r  # not measured
        flat = g_w.flatten().float()
        if flat.numel() > QUANTILE_MAX:  # sorting is the cost: an even sample
            flat = flat[::math.ceil(flat.numel() / QUANTILE_MAX)]
        spread = torch.quantile(flat, torch.tensor([0.05, 0.95], device=g_w.device))
        rows.append(torch.stack([
            g_w.norm(),
            r.detach(),
            (w - w0).norm() / w0.norm() if w0 is not None else a.new_tensor(math.nan),
            a.mean(),
            w.std() if w.numel() > 1 else a.new_zeros(()),
            (a < SMALL_W).float().mean(),
            g_w.abs().mean(),
            (g_w == 0).float().mean(),
            spread[1] - spread[0],
            _cos(g_w, w, w_norm).to(a.dtype),
        ]))
    return dict(zip(ROW, torch.stack(rows).T.tolist()))  # (metric, layer); one host sync


def _add(p: torch.Tensor, piece: slice, d: torch.Tensor) -> None:
    """p's flattened elements in piece += d (float64, cast to p's dtype)."""
    if p.is_contiguous():
        p.detach().view(-1)[piece].add_(d.to(p.dtype))
    else:  # channels-last and other strides: flattened as reshape(-1) orders them
        flat = p.detach().reshape(-1)
        flat[piece] += d.to(p.dtype)
        p.detach().copy_(flat.view(p.shape))


def default_norm(w: torch.Tensor) -> float:
    """The norm PyTorch's default init (nn.Linear, nn.Conv*: variance 1 / (3 fan_in)) gives a
    weight of w's shape; fan_in = all dimensions but the first (0 for a vector)."""
    if w.dim() < 2:
        return 0.0
    fan_in = w[0].numel()
    return math.sqrt(w.numel() / (3 * fan_in))


def _cos(g: torch.Tensor, w: torch.Tensor, w_norm: torch.Tensor) -> torch.Tensor:
    """|cos| of the angle between g and w (w_norm = float64.norm64(w)), in float64 (0 where either is
    all zeros)."""
    norms = float64.norm64(g) * w_norm
    return float64.dot64(g, w).abs() / norms if norms > 0 else norms


def ratio(delta: torch.Tensor, norm: torch.Tensor) -> float:
    """||delta|| / norm (delta may be a norm already; norm a float64 norm, e.g. float64.norm64 of the
    weight); NaN where norm is 0 (a ratio to nothing)."""
    return (delta.norm() / norm).item() if norm > 0 else math.nan
