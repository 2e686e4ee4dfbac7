"""Per-layer signs of vanishing gradients, measured on a fixed probe batch.

Probing must not change training: gradients come from torch.autograd.grad (no .grad
written, no optimizer touched: the update an optimizer would make is taken by a twin of it
on copies of the weights), BatchNorm running statistics are restored afterwards, and
nothing here draws from any random generator.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
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

CHUNK = 2 ** 20
"""Values per piece where the probe works piece by piece in float64 (8 MiB each): the
Updater's step (a weight, its gradient, each state tensor), an activation's slopes."""
QUANTILE_MAX = 2 ** 17
"""grad_spread's percentiles are taken on at most this many values (sorting is the cost):
a larger gradient is sampled evenly, every k-th value. Above the suite's largest layer
(784 x 128), so its values are exact."""
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
        # forward(), not the call: no hooks (the probe's own run during its forward)
        (d,) = torch.autograd.grad(twin.forward(x.clone()).sum(), x)
    return d


def activation_stats(act: nn.Module, h: torch.Tensor, top: float,
                     rectifier: bool) -> torch.Tensor:
    """(saturated, dead, preact_rms, inactive) of one activation's input h (examples,
    units...); see HIDDEN_METRICS. Taken a few examples at a time (at most CHUNK values):
    the float64 slopes of a ResNet's whole activation would be 8 bytes per value."""
    h = h.detach()
    n = len(h)
    per = max(1, CHUNK // max(1, h[0].numel()))
    flat = sq = 0
    zero = quiet = 0  # per unit: examples with slope 0, with slope below INACTIVE_SLOPE
    for start in range(0, n, per):
        part = h[start:start + per]
        d = slopes(act, part)
        f = d.abs() < SLOPE_FRACTION * top
        if rectifier:
            f &= d != 0  # a rectifier's zero side is 'off' (dead if always), not saturated
        per_unit = d.flatten(1)  # (examples, units)
        flat = flat + f.sum()
        zero = zero + (per_unit == 0).sum(0)
        quiet = quiet + (per_unit.abs() < INACTIVE_SLOPE).sum(0)
        sq = sq + part.double().square().sum()
    values = h.numel()
    return torch.stack([flat.double() / values, (zero == n).double().mean(),
                        (sq / values).sqrt(), (quiet.double() / n >= INACTIVE_SHARE).double().mean()])


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
        if calls is not None:  # first: what record computes is not a functional activation
            calls.inside += 1
        record(m, i[0], getattr(m, "inplace", False))

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


def layer_gradients(model, x, y: torch.Tensor, on_activation=None,
                    extra: list | None = None, layout=None, loss_fn=None) -> Gradients:
    """The weight gradients, per-example RMS gradient norms, extra's gradients and the loss
    (a Gradients) of every weight layout.layers() names (default: the model's own, as
    model.MLP has) for the loss loss_fn(output, y) (default: mean cross-entropy) on x (a
    tensor, or a tuple of the model's inputs), in train mode as the model is.
    on_activation(k, input), when given, is called during the forward with the input of
    the k-th activation call (layout.activations(), in call order), before an in-place
    activation overwrites it; nothing of it is kept.

    Example i's own weight gradient in a Linear is the rank-one delta_i a_i^T
    (delta_i = dloss_i/doutput_i, a_i the input), so its norm is ||delta_i|| ||a_i||: no
    per-example gradient tensors are formed. That holds for a Linear called once on a
    (batch, features) input; a Conv1d/2d/3d called once has its exact norms from its
    patches (conv_example_norms), also where an in-place activation then overwrites its
    output (VGG's conv -> ReLU(inplace=True)): the gradient at the conv's output is then the
    activation's output gradient times its slope. For any other weight the RMS is None (not
    measured). (Under BatchNorm and the batch-wide normalizations the examples are coupled;
    this is then each example's term of the batch gradient, times the batch size.) The norms
    are taken by hooks as the backward passes each output, so no output gradient is held
    longer than the backward itself holds it."""
    layers = (layout or model).layers()
    extra = extra or []
    seen: dict[nn.Module, list] = {}
    outputs: dict[int, nn.Module] = {}  # id of a once-called conv/Linear output -> module
    after: dict[nn.Module, tuple] = {}  # module -> (in-place activation, what its slope needs, version)
    calls = [0]

    def keep(module, inputs, output):  # with the output's version: in-place changes show
        seen.setdefault(module, []).append((inputs[0] if inputs else None, output,
                                            output._version))
        outputs[id(output)] = module

    def record(act, h, inplace):  # each call's input, before an in-place activation changes it
        if on_activation is not None:
            on_activation(calls[0], h)
        calls[0] += 1
        m = outputs.get(id(h)) if inplace else None
        if m is not None and seen[m][-1][1] is h and h._version == seen[m][-1][2]:
            # a plain ReLU's slope needs only the input's sign (a byte, not a copy of h)
            kept = (h.detach() > 0) if type(act) is nn.ReLU else h.detach().clone()
            after[m] = (act, kept, h._version)

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
    rms = [seen[m][0][0].new_zeros(()) if ok else None  # stays 0 if no gradient reaches m
           for (_, m, _), ok in zip(layers, exact)]

    def norms_of(i, m):  # a hook on m's output: example norms as the gradient passes
        def hook(g):
            a, act = seen[m][0][0].detach(), changed_by(m)[0]
            if act is not None:  # g is at the activation's output: back through its slope
                g = g * slopes(act[0], act[1]).to(g.dtype)
            # the loss is a mean over the batch: example i's own gradient is n times its term
            if isinstance(m, CONVS):
                per_example = conv_example_norms(m, a, g) * n_batch
            else:
                per_example = g.norm(dim=1) * a.norm(dim=1) * n_batch
            rms[i] = per_example.square().mean().sqrt()
            del seen[m]  # its input and output may go as the backward frees them
            after.pop(m, None)
        return hook

    with ExitStack() as stack:
        for i, ((_, m, _), ok) in enumerate(zip(layers, exact)):
            if ok and seen[m][0][1].requires_grad:
                stack.callback(seen[m][0][1].register_hook(norms_of(i, m)).remove)
        wanted = [w for _, _, w in layers] + extra
        unique = list({id(t): t for t in wanted}.values())
        got = dict(zip(map(id, unique),
                       torch.autograd.grad(loss, unique, allow_unused=True)))
    n = len(layers)
    grads = [got[id(t)] for t in wanted]
    return Gradients(grads[:n], rms, grads[n:], loss.detach())


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
    else G_i is formed (a temporary the size of the weight), one example at a time, its
    patches too: no batch of per-example gradients or patches is ever held."""
    out = []
    for xi, gi in zip(x, g):
        xi = conv_patches(conv, xi[None])[0]  # (groups, K, P)
        di = gi.reshape(conv.groups, -1, xi.shape[-1])  # (groups, O/groups, P)
        o, k, p = di.shape[1], xi.shape[1], di.shape[2]
        if p * p <= o * k:
            gram = (di.transpose(1, 2) @ di).mul_(xi.transpose(1, 2) @ xi)
            out.append(gram.sum().clamp(min=0).sqrt())
        else:
            out.append((di @ xi.transpose(1, 2)).norm())
    return torch.stack(out)


ELEMENTWISE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adamax,
               torch.optim.NAdam, torch.optim.RAdam, torch.optim.RMSprop, torch.optim.Adagrad,
               torch.optim.Adadelta, torch.optim.ASGD, torch.optim.Rprop)
"""torch optimizers whose step treats every element of a parameter alone (given the group's
hyperparameters and the parameter's scalar state, such as Adam's step count): the Updater
steps them a piece of a parameter at a time."""


class Updater:
    """The step a run's optimizer would take, without taking it: a twin of the optimizer
    steps float64 copies of the parameters on the probe's gradient, clipped as training
    clips; the real optimizer, its state and the weights are left alone.

    For torch's elementwise optimizers (ELEMENTWISE) the twin steps a piece of the parameters
    at a time (at most CHUNK elements: small parameters together, a large one in parts, each
    with that part of its state): memory beyond the model is a few pieces, whatever its
    size. Any other optimizer (it may couple its
    parameters, as LBFGS does) is deep-copied whole, its parameters and state in float64."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip_norm: float | None = None):
        self.opt, self.clip_norm = optimizer, clip_norm

    @property
    def params(self) -> list[torch.Tensor]:
        """The parameters the real optimizer trains, in its order."""
        return [p for g in self.opt.param_groups for p in g["params"]]

    @torch.no_grad()
    def deltas(self, grads: list[torch.Tensor | None], scale: float = 1.0):
        """The change of each of self.params for these gradients (None: no gradient) times
        scale, in float64 (the baseline's first layer moves by 1e-9 of its norm per step,
        below float32's resolution, 6e-8, so a float32 difference would be rounding), piece
        by piece: yields (index into self.params, slice of its flattened elements, the float64
        change of those elements), every element of every parameter once, in order."""
        coef = 1.0
        if self.clip_norm is not None:  # as nn.utils.clip_grad_norm_ does in training
            total = torch.stack([_joined([_scaled(g, p, scale, piece).norm()
                                          for piece in _pieces(p.numel())])
                                 for g, p in zip(grads, self.params)]).norm()
            coef = (self.clip_norm / (total + 1e-6)).clamp(max=1.0)
        if type(self.opt) not in ELEMENTWISE:
            yield from self._whole(grads, scale, coef)
            return
        twin = copy.copy(self.opt)  # its own attributes; the real optimizer's are not touched
        for hyper, batch in self._batches():
            ts = [flat[piece].to(torch.float64, copy=True) for _, p, flat, piece in batch]
            for t, (i, p, _, piece) in zip(ts, batch):
                t.grad = _scaled(grads[i], p, scale, piece)
                if self.clip_norm is not None:
                    t.grad.mul_(coef)
            twin.param_groups = [dict(hyper, params=ts)]
            twin.state = defaultdict(dict, {
                t: {k: _piece(v, p, piece) for k, v in self.opt.state.get(p, {}).items()}
                for t, (_, p, _, piece) in zip(ts, batch)})
            type(twin).step(twin)
            for t, (i, _, flat, piece) in zip(ts, batch):
                yield i, piece, torch.sub(t, flat[piece])  # in float64: t's type

    def _batches(self):
        """(a parameter group's hyperparameters, [(index, parameter, its flattened view,
        piece)]): the pieces of the parameters in order, as few steps as CHUNK allows, each
        within one group."""
        i = 0
        for group in self.opt.param_groups:
            hyper = {k: v for k, v in group.items() if k != "params"}
            batch, size = [], 0
            for p in group["params"]:
                flat = p.detach().reshape(-1)
                for piece in _pieces(p.numel()):
                    n = piece.stop - piece.start
                    if batch and size + n > CHUNK:
                        yield hyper, batch
                        batch, size = [], 0
                    batch.append((i, p, flat, piece))
                    size += n
                i += 1
            if batch:
                yield hyper, batch

    def _whole(self, grads, scale, coef):
        twin = copy.deepcopy(self.opt)
        twins = [p for g in twin.param_groups for p in g["params"]]
        for t, g, p in zip(twins, grads, self.params):
            t.data = t.data.double()
            t.grad = _scaled(g, p, scale, slice(None)).view_as(t)
            if self.clip_norm is not None:
                t.grad.mul_(coef)
        for state in twin.state.values():  # Adam's moments, SGD's momentum
            for key, value in state.items():
                if torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0:
                    state[key] = value.double()
        twin.step()
        for i, (t, p) in enumerate(zip(twins, self.params)):
            yield i, slice(None), (t - p.double()).reshape(-1)


def _pieces(n: int) -> list[slice]:
    """The slices of n flattened elements the Updater steps in turn (one when n <= CHUNK)."""
    return [slice(start, min(start + CHUNK, n)) for start in range(0, max(n, 1), CHUNK)]


def _scaled(g, p, scale: float, piece: slice) -> torch.Tensor:
    """The float64 gradient of p's flattened elements in piece, times scale (zeros: none)."""
    if g is None:
        return torch.zeros_like(p.detach().reshape(-1)[piece], dtype=torch.float64)
    out = g.detach().reshape(-1)[piece].to(torch.float64, copy=True)
    return out if scale == 1.0 else out.mul_(scale)


def _piece(value, p, piece: slice):
    """One piece of an optimizer state entry of p, in float64 (a copy): a tensor the shape of
    p is sliced as p is, anything else (a step count) is copied whole."""
    if not torch.is_tensor(value):
        return copy.deepcopy(value)
    if value.dim() > 0 and value.numel() == p.numel():
        value = value.reshape(-1)[piece]
        if value.is_floating_point():
            return value.to(torch.float64, copy=True)
    return value.clone()


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
        self.layout, self.loss_fn = layout or model, loss_fn
        self.w0 = [w.detach().clone() if keep_start else None
                   for _, _, w in self.layout.layers()]
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
        layout_acts = self.layout.activations()
        stats: list[torch.Tensor] = []
        calls = [0]

        def measured(k, h):  # each activation's statistics as the forward passes it
            if k < len(layout_acts):
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
        grads, rms, loss = g.weights, g.rms, g.loss.item()
        self.unused = {i for i, grad in enumerate(grads) if grad is None}
        if calls[0] != len(layout_acts):
            self.notes.add(f"{calls[0]} activation calls in the probe's forward, "
                           f"{len(layout_acts)} when the layout was found: the "
                           "activations are matched in call order as far as they go")
        with torch.no_grad():
            norms = [_norm64(w) for w in weights]  # float64, once: |cos|, the step's ratio
            # every metric but the two of the step, while the gradients are here
            layer = _layer_rows(weights, grads, rms, self.w0, norms)
            hidden = (torch.stack(stats).T.tolist() if stats
                      else [[] for _ in HIDDEN_METRICS])
            update = [math.nan] * len(weights)
            after = gain = math.nan
            if updater is not None:
                index = {id(p): i for i, p in enumerate(trained)}
                extra = list(g.extra)
                del g, grads  # the step releases each gradient once it is used
                try:
                    steps, doubled, after = self.take_step(model, updater, extra)
                except Exception as exc:  # noqa: BLE001 - a user optimizer we cannot twin
                    self.notes.add(f"update_ratio not measured: the optimizer's step could not "
                                   f"be taken on a twin ({type(exc).__name__}: {exc})")
                else:
                    update = [_ratio(steps[index[id(w)]], n) if id(w) in index else 0.0
                              for w, n in zip(weights, norms)]
                    gain = _ratio(torch.stack(doubled), torch.stack(steps).norm())
            scaled = [u * n / max(n, default_norm(w)) if n > 0 else u  # NaN stays NaN
                      for u, n, w in zip(update, map(float, norms), weights)]
            for key, values in (("update_ratio", update), ("update_scaled", scaled)):
                layer.insert(LAYER_METRICS.index(key),  # in each weight's dtype, as the rest
                             [torch.as_tensor(v, dtype=w.dtype).item()
                              for v, w in zip(values, weights)])
        self.points["epoch"].append(epoch)
        for key, values in zip(LAYER_METRICS + HIDDEN_METRICS + STEP_METRICS,
                               layer + hidden + [loss, after, gain]):
            self.points[key].append(values)

    def take_step(self, model, updater: Updater, grads: list) -> tuple[list, list, float]:
        """For these gradients (a list it empties: each gradient is dropped once used): the
        norm of each trained parameter's step (float64), of its step for twice the
        gradients, and the probe batch's loss once the step is taken, with the same dropout
        draws as the measured forward; then every weight and norm statistic is put back
        exactly. The step is applied piece by piece as the updater gives it, and a copy of
        each moved parameter is kept meanwhile: the copies grow as the gradients go."""
        params = updater.params
        steps: list[list] = [[] for _ in params]
        doubled: list[list] = [[] for _ in params]
        kept: dict[int, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for (i, piece, d), (_, _, d2) in zip(updater.deltas(grads),
                                                     updater.deltas(grads, scale=2.0)):
                    steps[i].append(d.norm())
                    doubled[i].append(d2.norm())
                    if bool(d.any()):
                        p = params[i]
                        if i not in kept:
                            kept[i] = p.detach().clone()
                        _add(p, piece, d)
                    if piece.stop is None or piece.stop >= params[i].numel():
                        grads[i] = None  # its last piece: the gradient is done with
            grads.clear()
            with as_it_was(model, train=True), same_draws(self.x), torch.no_grad():
                out = model(*self.x) if isinstance(self.x, tuple) else model(self.x)
                loss = F.cross_entropy(out, self.y) if self.loss_fn is None else \
                    self.loss_fn(out, self.y)
                return [_joined(n) for n in steps], [_joined(n) for n in doubled], float(loss)
        finally:
            with torch.no_grad():
                for i, k in kept.items():
                    params[i].copy_(k)


def _layer_rows(weights, grads, rms, starts, norms) -> list[list[float]]:
    """Per metric of LAYER_METRICS but update_ratio and update_scaled, its value for each
    weight (in the weight's dtype), from the weights, their gradients (None: none), the
    per-example RMS norms, the initial weights (None: not kept) and the weights' float64
    norms (_norm64)."""
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
    return torch.stack(rows).T.tolist()  # (metric, layer); one host sync


def _joined(norms: list[torch.Tensor]) -> torch.Tensor:
    """The norm of a whole from its pieces' norms."""
    return norms[0] if len(norms) == 1 else torch.stack(norms).norm()


def _add(p: torch.Tensor, piece: slice, d: torch.Tensor) -> None:
    """p's flattened elements in piece += d (float64, cast to p's dtype)."""
    if p.is_contiguous():
        p.detach().view(-1)[piece].add_(d.to(p.dtype))
    else:  # channels-last and other strides: flattened as reshape(-1) orders them
        flat = p.detach().reshape(-1)
        flat[piece] += d.to(p.dtype)
        p.detach().copy_(flat.view(p.shape))


def _norm64(t: torch.Tensor) -> torch.Tensor:
    """||t|| in float64, taken CHUNK values at a time (no float64 copy of a whole weight)."""
    flat = t.detach().reshape(-1)
    parts = [flat[piece].double().norm() for piece in _pieces(flat.numel())]
    return _joined(parts)


def _dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of a and b (flattened) in float64, CHUNK values at a time."""
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    parts = [a[piece].double() @ b[piece].double() for piece in _pieces(a.numel())]
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()


def default_norm(w: torch.Tensor) -> float:
    """The norm PyTorch's default init (nn.Linear, nn.Conv*: variance 1 / (3 fan_in)) gives a
    weight of w's shape; fan_in = all dimensions but the first (0 for a vector)."""
    if w.dim() < 2:
        return 0.0
    fan_in = w[0].numel()
    return math.sqrt(w.numel() / (3 * fan_in))


def _cos(g: torch.Tensor, w: torch.Tensor, w_norm: torch.Tensor) -> torch.Tensor:
    """|cos| of the angle between g and w (w_norm = _norm64(w)), in float64 (0 where either is
    all zeros)."""
    norms = _norm64(g) * w_norm
    return _dot64(g, w).abs() / norms if norms > 0 else norms


def _ratio(delta: torch.Tensor, norm: torch.Tensor) -> float:
    """||delta|| / norm (delta may be a norm already; norm a float64 norm, e.g. _norm64 of the
    weight); NaN where norm is 0 (a ratio to nothing)."""
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
