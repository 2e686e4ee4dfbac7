"""Per-layer signs of vanishing gradients, measured on a fixed probe batch.

Probing must not change training: gradients come from torch.autograd.grad (no .grad
written, no optimizer touched: the update an optimizer would make is taken by a twin of it
on copies of the weights), BatchNorm running statistics are restored afterwards, and
nothing here draws from any random generator.
"""

from __future__ import annotations

import copy
import math
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

SMALL_W = 1e-3
"""|w| below this counts as 'near zero' in w_small_frac."""
SLOPE_FRACTION = 0.005
"""An activation counts as saturated where its slope is positive but below this fraction of
the activation's largest slope: half of LeakyReLU(0.01)'s leak, so a leaky unit's negative
side (a designed linear regime) is not saturation; for the sigmoid (largest slope 1/4) it
means |h| > 6.7, an output outside (0.0012, 0.9988)."""
SLOPE_GRID = (-10.0, 10.0, 20_001)
"""Where an activation's largest slope is looked for (float64, step 1e-3)."""

QUANTILE_MAX = 2 ** 24
"""torch.quantile takes at most this many values: larger weights (a VGG's first fully
connected layer) are sampled evenly for grad_spread."""
INACTIVE_SLOPE = 1e-7
"""A unit passes (almost) no gradient where its slope is below this: the 'vanishing gradient
threshold' from which SageMaker Debugger's SaturatedActivation derives its input ranges
(its docs); with INACTIVE_SHARE, what benchmarks/peers.py needs for its rules."""
INACTIVE_SHARE = 0.99
"""A unit is inactive when its slope is below INACTIVE_SLOPE on at least this share of the
examples (SageMaker Debugger's threshold_inactivity of 1%)."""

LAYER_METRICS = ("grad_norm", "grad_rms", "weight_change", "w_abs_mean", "w_std",
                 "w_small_frac", "update_ratio", "grad_abs_mean", "grad_zero_frac",
                 "grad_spread", "grad_cos", "update_scaled")
"""Per-Linear-layer metrics (input layer first, output layer last). grad_norm: the norm
of the batch-mean weight gradient (what the optimizer sees); grad_rms: the RMS over the
probe's examples of each example's own weight-gradient norm (what mean field predicts);
update_ratio: ||dW|| / ||W|| of the step the run's optimizer (its state, learning rate and
clipping) would take on the probe batch's gradient (0 for a layer it does not train);
grad_abs_mean, grad_zero_frac and grad_spread: the batch-mean weight gradient's mean |g|,
its share of exact zeros, and its 95th minus 5th percentile (the quantities peer tools'
rules read, see benchmarks/peers.py); grad_cos, |cos| of the angle between the weight and
its batch-mean gradient: 0 (to rounding) where the loss does not change with the weight's
scale, as when a normalization follows it; update_scaled, the step's norm over the larger of
the weight's norm and the norm PyTorch's default init gives a weight of that shape (uniform,
variance 1 / (3 fan_in)): a weight started below that scale (a head at 0.01, a layer scale
at 1e-6) is meant to grow, and its first steps are large only next to itself."""
HIDDEN_METRICS = ("saturated", "dead", "preact_rms", "inactive")
"""Per-hidden-layer metrics, from each activation's input h on the probe batch and its slope
phi'(h) taken by autograd through the activation module itself (float64): saturated, the
fraction of (example, unit) entries with |phi'(h)| < SLOPE_FRACTION x its largest slope
(for a rectifier, exact zeros excepted: see slope_profile);
dead, the fraction of units whose slope is exactly 0 for every example of the batch;
preact_rms, sqrt(mean h^2), the pre-activation scale (sqrt(q) in mean-field terms);
inactive, the fraction of units whose slope is below INACTIVE_SLOPE on at least
INACTIVE_SHARE of the examples."""


STEP_METRICS = ("loss", "loss_after_step", "step_gain")
"""Per probe point: the probe batch's loss; its loss once the step the run's optimizer would
take on that batch's gradient is taken (a step that raises it overshoots); and step_gain,
how much longer that step gets when the gradient is doubled (2 for SGD, with or without
momentum; about 1 for Adam's first step, which normalizes the gradient away)."""


def slope_profile(act: nn.Module) -> tuple[float, bool]:
    """(largest |slope|, rectifier) of an elementwise activation on a float64 grid
    (SLOPE_GRID). A rectifier's slope is exactly 0 on part of the grid (ReLU's negative
    side): a zero slope is then the unit being off, not saturation. A smooth activation's
    slope reaches exactly 0 only where float64 rounds its output to its limit (tanh beyond
    |h| = 19, the sigmoid beyond 37: outside the grid), which is saturation."""
    lo, hi, n = SLOPE_GRID
    d = slopes(act, torch.linspace(lo, hi, n, dtype=torch.float64))
    return float(d.abs().max()), bool((d == 0).any())


def slopes(act: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """phi'(h) elementwise in float64, by autograd through (a float64 copy of) act; for a
    plain ReLU, (h > 0) directly: the same values (autograd's ReLU slope is 1 where h > 0,
    else 0), without the float64 copy and the backward (a ResNet's activations are large)."""
    if type(act) is nn.ReLU:
        return (h.detach() > 0).double()
    twin = copy.deepcopy(act).double()
    x = h.detach().double().requires_grad_(True)
    with torch.enable_grad():  # through a copy: an in-place activation may not touch a leaf
        (d,) = torch.autograd.grad(twin(x.clone()).sum(), x)
    return d


def activation_stats(act: nn.Module, h: torch.Tensor, top: float,
                     rectifier: bool) -> torch.Tensor:
    """(saturated, dead, preact_rms, inactive) of one activation's input h (examples,
    units...); see HIDDEN_METRICS."""
    d = slopes(act, h)
    flat = d.abs() < SLOPE_FRACTION * top
    if rectifier:
        flat &= d != 0  # a rectifier's zero side is 'off' (dead if always), not saturated
    per_unit = d.flatten(1)  # (examples, units)
    dead = (per_unit == 0).all(0).double().mean()
    quiet = (per_unit.abs() < INACTIVE_SLOPE).double().mean(0) >= INACTIVE_SHARE
    return torch.stack([flat.double().mean(), dead, h.detach().double().square().mean().sqrt(),
                        quiet.double().mean()])


@contextmanager
def as_it_was(model: nn.Module, train: bool = True):
    """model in train (or eval) mode for the block; afterwards its mode and its batch
    norms' running statistics are as before, also when the block raises."""
    was = model.training
    saved = [(buf, buf.detach().clone()) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) for buf in m.buffers()]
    model.train(train)
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy_ in saved:
                buf.copy_(copy_)
        model.train(was)


ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU,
               nn.Softplus, nn.Mish, nn.Hardtanh, nn.ReLU6, nn.CELU, nn.Hardsigmoid,
               nn.Hardswish, nn.Softsign, nn.PReLU)
"""Elementwise activation modules whose inputs are measured (saturated, dead fractions)."""

FUNCTIONAL = {
    "relu": (nn.ReLU, ()), "sigmoid": (nn.Sigmoid, ()), "tanh": (nn.Tanh, ()),
    "gelu": (nn.GELU, ("approximate",)), "silu": (nn.SiLU, ()), "mish": (nn.Mish, ()),
    "leaky_relu": (nn.LeakyReLU, ("negative_slope",)), "elu": (nn.ELU, ("alpha",)),
    "selu": (nn.SELU, ()), "celu": (nn.CELU, ("alpha",)), "relu6": (nn.ReLU6, ()),
    "softplus": (nn.Softplus, ("beta", "threshold")), "softsign": (nn.Softsign, ()),
    "hardtanh": (nn.Hardtanh, ("min_val", "max_val")), "hardswish": (nn.Hardswish, ()),
    "hardsigmoid": (nn.Hardsigmoid, ()),
}
"""Elementwise activations called as functions (F.relu, torch.sigmoid, x.tanh(), their in-place
forms with a trailing '_'): name -> (the module that computes the same, the names of the
arguments after the input that it takes). Measured like the modules, through that module."""
MATRIX_OPS = frozenset({"linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d", "matmul", "mm", "bmm", "einsum",
                        "addmm", "baddbmm", "__matmul__", "__rmatmul__",
                        "multi_head_attention_forward"})
"""Operations whose parameter operands are matrices or filters the signal passes through (a
weight by role, whatever its name)."""
LOOKUPS = frozenset({"embedding", "embedding_bag"})
"""Operations whose parameter is a table of rows looked up, not a layer."""


class ForwardCalls(TorchFunctionMode):
    """Sees every torch function of a forward pass: calls on_activation(module, input,
    inplace) for each elementwise activation called as a function on a tensor in the autograd
    graph (not inside an activation module, whose own call is measured: see
    activation_inputs), and adds to .matrices and .lookups the ids of the parameters passed
    to a MATRIX_OPS or LOOKUPS operation."""

    def __init__(self, on_activation=None):
        super().__init__()
        self.on_activation = on_activation
        self.inside = 0  # > 0 while an activation module's forward runs
        self.matrices: set[int] = set()
        self.lookups: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in MATRIX_OPS or name in LOOKUPS:
            found = self.matrices if name in MATRIX_OPS else self.lookups
            for a in [*args, *kwargs.values()]:
                for t in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(t, nn.Parameter):
                        found.add(id(t))
        base = name.removesuffix("_")
        if (self.on_activation is not None and not self.inside and base in FUNCTIONAL and args
                and torch.is_tensor(args[0]) and args[0].is_floating_point()
                and args[0].requires_grad):
            cls, names = FUNCTIONAL[base]
            given = dict(zip(names, args[1:]))
            given.update({k: v for k, v in kwargs.items() if k in names})
            inplace = name.endswith("_") or bool(kwargs.get("inplace")) or (
                len(args) > 1 + len(names) and args[1 + len(names)] is True)
            self.on_activation(cls(**given), args[0], inplace)
        return func(*args, **kwargs)


@contextmanager
def activation_inputs(layout, record):
    """For the block: record(module, input, inplace) for every activation call of a forward
    pass, in call order: the activation modules layout.activations() names (by hooks) and,
    where the layout has any (layout.functional), the functional ones (ForwardCalls)."""
    modules = list(dict.fromkeys(layout.activations()))  # stand-ins of functional ones: never called
    calls = ForwardCalls(record) if getattr(layout, "functional", False) else None

    def enter(m, i):
        record(m, i[0], getattr(m, "inplace", False))
        if calls is not None:
            calls.inside += 1

    def leave(m, i, o):
        if calls is not None:
            calls.inside -= 1
    with ExitStack() as stack:
        for m in modules:
            stack.callback(m.register_forward_pre_hook(enter).remove)
            stack.callback(m.register_forward_hook(leave).remove)
        if calls is not None:
            stack.enter_context(calls)
        yield


@dataclass
class Gradients:
    """What one forward and backward of the probe batch gives (layer_gradients)."""

    weights: list
    """Each layout weight's batch-mean gradient (None: it got none, it is not used)."""
    rms: list
    """Each weight's per-example RMS gradient norm (None: not measured exactly)."""
    extra: list
    """The gradients of the extra tensors asked for (the optimizer's parameters)."""
    loss: torch.Tensor
    """The loss on the batch (detached)."""


def layer_gradients(model, x, y: torch.Tensor, acts: list | None = None,
                    extra: list | None = None, layout=None, loss_fn=None) -> Gradients:
    """The weight gradients, per-example RMS gradient norms, extra's gradients and the loss
    (a Gradients) of every weight layout.layers() names (default: the model's own, as
    model.MLP has) for the loss loss_fn(output, y) (default: mean cross-entropy) on x (a
    tensor, or a tuple of the model's inputs), in train mode as the model is. acts, when
    given, receives each activation call's input (layout.activations(), in call order).

    Example i's own weight gradient in a Linear is the rank-one delta_i a_i^T
    (delta_i = dloss_i/doutput_i, a_i the input), so its norm is ||delta_i|| ||a_i||: no
    per-example gradient tensors are formed. That holds for a Linear called once on a
    (batch, features) input; a Conv1d/2d/3d called once has its exact norms from its
    patches (conv_example_norms), also where an in-place activation then overwrites its
    output (VGG's conv -> ReLU(inplace=True)): the gradient at the conv's output is then the
    activation's output gradient times its slope. For any other weight the RMS is None (not
    measured). (Under BatchNorm and the batch-wide normalizations the examples are coupled;
    this is then each example's term of the batch gradient, times the batch size.)"""
    layers = (layout or model).layers()
    extra = extra or []
    seen: dict[nn.Module, list] = {}
    outputs: dict[int, nn.Module] = {}  # id of a once-called conv/Linear output -> module
    after: dict[nn.Module, tuple] = {}  # module -> (in-place activation, its input, version)

    def keep(module, inputs, output):  # with the output's version: in-place changes show
        seen.setdefault(module, []).append((inputs[0] if inputs else None, output,
                                            output._version))
        outputs[id(output)] = module

    def record(act, h, inplace):  # each call's input, before an in-place activation changes it
        h_kept = h.detach().clone() if inplace else h
        if acts is not None:
            acts.append(h_kept)
        m = outputs.get(id(h)) if inplace else None
        if m is not None and seen[m][-1][1] is h and h._version == seen[m][-1][2]:
            after[m] = (act, h_kept, h._version)

    exact = [isinstance(m, (nn.Linear, *CONVS)) and w is m.weight
             for _, m, w in layers]
    with ExitStack() as stack:
        for (_, m, _), ok in zip(layers, exact):
            if ok:
                stack.callback(m.register_forward_hook(keep).remove)
        stack.enter_context(activation_inputs(layout or model, record))
        out = model(*x) if isinstance(x, tuple) else model(x)
    loss = F.cross_entropy(out, y) if loss_fn is None else loss_fn(out, y)
    n_batch = len(x[0] if isinstance(x, tuple) else x)

    def changed_by(m):  # the one in-place activation that overwrote m's output, if that is all
        out_m, version = seen[m][0][1], seen[m][0][2]
        if out_m._version == version:
            return None, True
        act = after.get(m)
        return act, act is not None and out_m._version == act[2] + 1

    exact = [ok and len(seen.get(m, ())) == 1 and torch.is_tensor(seen[m][0][0])
             and seen[m][0][0].dim() == (2 + len(m.kernel_size) if isinstance(m, CONVS)
                                         else 2)
             and changed_by(m)[1]
             for (_, m, _), ok in zip(layers, exact)]
    outs = [seen[m][0][1] for (_, m, _), ok in zip(layers, exact) if ok]
    n = len(layers)
    grads = torch.autograd.grad(loss, [w for _, _, w in layers] + outs + extra,
                                allow_unused=True)
    weight_grads, out_grads, extra_grads = grads[:n], grads[n:n + len(outs)], grads[n + len(outs):]
    rms, out_grads = [], iter(out_grads)
    for (_, m, _), ok in zip(layers, exact):
        if not ok:
            rms.append(None)
            continue
        a, g = seen[m][0][0], next(out_grads)
        if g is None:
            rms.append(a.new_zeros(()))
            continue
        act = changed_by(m)[0]
        if act is not None:  # g is at the activation's output: back through its slope
            g = g * slopes(act[0], act[1]).to(g.dtype)
        # the loss is a mean over the batch: example i's own gradient is n times its term
        if isinstance(m, CONVS):
            per_example = conv_example_norms(m, a.detach(), g) * n_batch
        else:
            per_example = g.norm(dim=1) * a.norm(dim=1) * n_batch
        rms.append(per_example.square().mean().sqrt())
    return Gradients(list(weight_grads), rms, list(extra_grads), loss.detach())


CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Convolutions whose per-example gradient norms are exact (any padding, stride, dilation,
groups; not the transposed ones)."""


def conv_patches(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input patches each output position of conv sees: (batch, groups, C / groups x
    kernel volume, positions), for x (batch, C, *spatial) of a Conv1d, 2d or 3d (padded as
    its forward pads; windows by Tensor.unfold, so any number of spatial dimensions)."""
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
    n = len(conv.kernel_size)
    for dim, (k, s, d) in enumerate(zip(conv.kernel_size, conv.stride, conv.dilation)):
        x = x.unfold(2 + dim, (k - 1) * d + 1, s)  # the window goes last
        if d > 1:
            x = x[..., ::d]
    batch, channels = x.shape[:2]
    positions = math.prod(x.shape[2:2 + n])
    x = x.permute(0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))  # (b, C, *k, *out)
    return x.reshape(batch, conv.groups, -1, positions)


def conv_example_norms(conv: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Each example's own weight-gradient norm of a Conv1d/2d/3d, exactly, from its input x
    (batch, C, *spatial) and the gradient g at its output (batch, O, *spatial'): in each
    group, example i's gradient is G_i = D_i X_i^T (D_i: (O/groups, P) output gradients, X_i:
    (C/groups x kernel volume, P) patches, P positions), ||G_i||^2 summed over the groups.
    ||G_i||^2 = sum((D_i^T D_i) * (X_i^T X_i)) when the P x P Gram matrices are the smaller,
    else G_i is formed, one example at a time (a temporary the size of the weight): no batch
    of per-example gradients is ever held."""
    patches = conv_patches(conv, x)  # (batch, groups, K, P)
    d = g.reshape(len(g), conv.groups, -1, patches.shape[-1])  # (batch, groups, O/groups, P)
    o, k, p = d.shape[2], patches.shape[2], d.shape[3]
    out = []
    for di, xi in zip(d, patches):
        if p * p <= o * k:
            gram = (di.transpose(1, 2) @ di).mul_(xi.transpose(1, 2) @ xi)
            out.append(gram.sum().clamp(min=0).sqrt())
        else:
            out.append((di @ xi.transpose(1, 2)).norm())
    return torch.stack(out)


class Updater:
    """The step a run's optimizer would take, without taking it: a deep copy of the
    optimizer (its parameters, state and hyperparameters copied together) steps on the
    probe's gradient, clipped as training clips; the real optimizer and weights are left
    alone."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip_norm: float | None = None):
        self.opt, self.clip_norm = optimizer, clip_norm

    @property
    def params(self) -> list[torch.Tensor]:
        """The parameters the real optimizer trains, in its order."""
        return [p for g in self.opt.param_groups for p in g["params"]]

    @torch.no_grad()
    def deltas(self, grads: list[torch.Tensor | None], scale: float = 1.0) -> list[torch.Tensor]:
        """The change of each of self.params for these gradients (None: no gradient) times
        scale, in float64: the baseline's first layer moves by 1e-9 of its norm per step,
        below float32's resolution (6e-8), so a float32 difference would be rounding."""
        twin = copy.deepcopy(self.opt)
        twins = [p for g in twin.param_groups for p in g["params"]]
        for t, g in zip(twins, grads):
            t.data = t.data.double()
            t.grad = torch.zeros_like(t) if g is None else g.detach().double() * scale
        for state in twin.state.values():  # Adam's moments, SGD's momentum
            for key, value in state.items():
                if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                    state[key] = value.double()
        if self.clip_norm is not None:  # as nn.utils.clip_grad_norm_ does in training
            total = torch.stack([t.grad.norm() for t in twins]).norm()
            coef = (self.clip_norm / (total + 1e-6)).clamp(max=1.0)
            for t in twins:
                t.grad.mul_(coef)
        twin.step()
        return [t - p.double() for t, p in zip(twins, self.params)]


class Probe:
    """Measures a model on a fixed batch; remembers the initial weights for weight_change.

    The layout (default: the model itself, as model.MLP) provides layers(), the weights
    measured as (name, module, weight), input first, and activations(), the activation
    modules whose input and slope are measured; vgbench.inspect builds one for any model.
    loss_fn(output, y): the loss (default mean cross-entropy)."""

    def __init__(self, model, x, y: torch.Tensor, layout=None, loss_fn=None):
        self.x, self.y = x, y
        self.layout, self.loss_fn = layout or model, loss_fn
        self.w0 = [w.detach().clone() for _, _, w in self.layout.layers()]
        self.shape = [slope_profile(a) for a in self.layout.activations()]
        self.notes: set[str] = set()
        """What could not be measured, and why (once each)."""
        self.points: dict[str, list] = {"epoch": []}
        self.activations = {"max_slope": [top for top, _ in self.shape],
                            "rectifier": [rect for _, rect in self.shape]}
        """Per hidden activation: its largest slope and whether it is a rectifier (a zero
        slope by design: see slope_profile)."""
        for key in LAYER_METRICS + HIDDEN_METRICS + STEP_METRICS:
            self.points[key] = []
        self.unused: set[int] = set()
        """Indices of the layout's weights that got no gradient at the last measure."""

    def measure(self, model, epoch: int, updater: Updater | None = None) -> None:
        """Record every metric for `epoch` (0 = at init), in train mode, leaving no trace.
        updater: the run's optimizer, for update_ratio and loss_after_step (None: recorded
        as null)."""
        weights = [w for _, _, w in self.layout.layers()]
        trained = updater.params if updater is not None else []
        flags = [w.requires_grad for w in weights]  # layerwise freezes some layers
        acts: list[torch.Tensor] = []
        with as_it_was(model, train=True), torch.enable_grad(), same_draws(self.x):
            for w in weights:
                w.requires_grad_(True)
            try:
                g = layer_gradients(model, self.x, self.y, acts, trained, self.layout,
                                    self.loss_fn)
            finally:
                for w, flag in zip(weights, flags):
                    w.requires_grad_(flag)
        grads, rms = g.weights, g.rms
        self.unused = {i for i, grad in enumerate(grads) if grad is None}
        if len(acts) != len(self.layout.activations()):
            self.notes.add(f"{len(acts)} activation calls in the probe's forward, "
                           f"{len(self.layout.activations())} when the layout was found: the "
                           "activations are matched in call order as far as they go")
        with torch.no_grad():
            update = [math.nan] * len(weights)
            after = gain = math.nan
            if updater is not None:
                index = {id(p): i for i, p in enumerate(trained)}
                try:
                    deltas = updater.deltas(list(g.extra))
                    doubled = updater.deltas(list(g.extra), scale=2.0)
                except Exception as exc:  # noqa: BLE001 - a user optimizer we cannot twin
                    self.notes.add(f"update_ratio not measured: the optimizer could not be "
                                   f"copied ({type(exc).__name__}: {exc})")
                else:
                    update = [_ratio(deltas[index[id(w)]], w) if id(w) in index else 0.0
                              for w in weights]
                    after = self.loss_after(model, trained, deltas)
                    gain = _ratio(torch.stack([d.norm() for d in doubled]),
                                  torch.stack([d.norm() for d in deltas]))
            rows = []
            norms = [_norm(w) for w in weights]
            scaled = [u * n / max(n, default_norm(w)) if n > 0 else u  # NaN stays NaN
                      for u, n, w in zip(update, norms, weights)]
            for w, g_w, r, w0, u, s_u in zip(weights, grads, rms, self.w0, update, scaled):
                a = w.detach().abs()
                g_w = torch.zeros_like(a) if g_w is None else g_w
                r = a.new_tensor(math.nan) if r is None else r  # not measured
                flat = g_w.flatten().float()
                if flat.numel() > QUANTILE_MAX:  # torch.quantile's limit: an even sample
                    flat = flat[::math.ceil(flat.numel() / QUANTILE_MAX)]
                spread = torch.quantile(flat, torch.tensor([0.05, 0.95], device=g_w.device))
                rows.append(torch.stack([
                    g_w.norm(),
                    r.detach(),
                    (w - w0).norm() / w0.norm(),
                    a.mean(),
                    w.std() if w.numel() > 1 else a.new_zeros(()),
                    (a < SMALL_W).float().mean(),
                    torch.as_tensor(u, dtype=a.dtype, device=a.device),
                    g_w.abs().mean(),
                    (g_w == 0).float().mean(),
                    spread[1] - spread[0],
                    _cos(g_w, w).to(a.dtype),
                    torch.as_tensor(s_u, dtype=a.dtype, device=a.device),
                ]))
            layer = torch.stack(rows).T.tolist()  # (metric, layer); one host sync
            hidden = (torch.stack([activation_stats(act, h, *shape) for act, h, shape
                                   in zip(self.layout.activations(), acts, self.shape)]
                                  ).T.tolist()
                      if acts else [[] for _ in HIDDEN_METRICS])
        self.points["epoch"].append(epoch)
        for key, values in zip(LAYER_METRICS + HIDDEN_METRICS + STEP_METRICS,
                               layer + hidden + [g.loss.item(), after, gain]):
            self.points[key].append(values)

    def loss_after(self, model, params: list, deltas: list) -> float:
        """The probe batch's loss once the optimizer's step (deltas, float64) is taken, with
        the same dropout draws as the measured forward; then every weight and norm statistic
        is put back exactly (a copy of the stepped parameters is kept meanwhile)."""
        moved = [(p, d) for p, d in zip(params, deltas) if bool(d.any())]
        kept = [p.detach().clone() for p, _ in moved]
        try:
            with as_it_was(model, train=True), same_draws(self.x):
                for p, d in moved:
                    p.add_(d.to(p.dtype))
                out = model(*self.x) if isinstance(self.x, tuple) else model(self.x)
                loss = F.cross_entropy(out, self.y) if self.loss_fn is None else \
                    self.loss_fn(out, self.y)
                return float(loss)
        finally:
            for (p, _), k in zip(moved, kept):
                p.copy_(k)


def _norm(w: torch.Tensor) -> float:
    return float(w.detach().double().norm())


def default_norm(w: torch.Tensor) -> float:
    """The norm PyTorch's default init (nn.Linear, nn.Conv*: variance 1 / (3 fan_in)) gives a
    weight of w's shape; fan_in = all dimensions but the first (0 for a vector)."""
    if w.dim() < 2:
        return 0.0
    fan_in = w[0].numel()
    return math.sqrt(w.numel() / (3 * fan_in))


def _cos(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """|cos| of the angle between g and w, in float64 (0 where either is all zeros)."""
    g, w = g.detach().double().flatten(), w.detach().double().flatten()
    norms = g.norm() * w.norm()
    return (g @ w).abs() / norms if norms > 0 else norms


def _ratio(delta: torch.Tensor, w: torch.Tensor) -> float:
    """||delta|| / ||w||; NaN for a weight that is all zeros (a ratio to nothing)."""
    norm = w.double().norm()
    return (delta.norm() / norm).item() if norm > 0 else math.nan


@contextmanager
def same_draws(x):
    """Every random draw in the block (dropout) from a fixed seed, the generators as before
    afterwards: the probe's two forwards see the same dropout masks and take nothing from the
    run's random streams."""
    first = x[0] if isinstance(x, tuple) else x
    devices = [first.device.index or 0] if first.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(0)  # not torch.manual_seed: other devices stay
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(0)
        yield


def init_profile(model, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype = torch.float64) -> dict:
    """Per-Linear gradient norms at init (batch-mean grad_norm and per-example grad_rms) of
    a copy of model in dtype: float64 keeps deep sigmoid nets' first-layer gradients, which
    fall below float32's range near 40 layers. The model itself is left untouched."""
    twin = copy.deepcopy(model).to(dtype).train()
    for p in twin.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        g = layer_gradients(twin, x.to(dtype), y)
    return {"dtype": str(dtype).removeprefix("torch."),
            "grad_norm": [w.norm().item() for w in g.weights],
            "grad_rms": [r.item() for r in g.rms]}


def grad_ratio(grad_norms: list[float]) -> float:
    """First layer's weight-gradient norm over the output layer's."""
    return grad_norms[0] / grad_norms[-1] if grad_norms[-1] > 0 else float("nan")


def probe_batch(train_x, train_y, size: int, generator: torch.Generator):
    """A fixed random subset of the train split (indices drawn on the CPU)."""
    n = min(size, len(train_y))
    idx = torch.randperm(len(train_y), generator=generator)[:n].to(train_x.device)
    return train_x[idx], train_y[idx]
