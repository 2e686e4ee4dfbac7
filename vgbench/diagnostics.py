"""The measurements under the probe: per-weight gradients (batch mean and per example, in
one backward), activation slopes and statistics, the forward's calls (which activations and
matrix operations a model runs), the float64 profile at init. Nothing here writes .grad,
steps an optimizer or draws from a random generator; probe.py puts it together."""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from vgbench import float64
from vgbench.convs import CONVS, conv_example_norms
from vgbench.kernels import ATTENTION, attention_scores, recurrent_gates, softmax_stats

SLOPE_FRACTION = 0.005
"""An activation counts as saturated where its slope is positive but below this fraction of
the activation's largest slope: half of LeakyReLU(0.01)'s leak, so a leaky unit's negative
side (a designed linear regime) is not saturation; for the sigmoid (largest slope 1/4) it
means |h| > 6.7, an output outside (0.0012, 0.9988)."""
SLOPE_GRID = (-10.0, 10.0, 20_001)
"""Where an activation's largest slope is looked for (float64, step 1e-3)."""

INACTIVE_SLOPE = 1e-7
"""A unit passes (almost) no gradient where its slope is below this: the 'vanishing gradient
threshold' from which SageMaker Debugger's SaturatedActivation derives its input ranges
(its docs); with INACTIVE_SHARE, what benchmarks/peers.py needs for its rules."""
INACTIVE_SHARE = 0.99
"""A unit is inactive when its slope is below INACTIVE_SLOPE on at least this share of the
examples (SageMaker Debugger's threshold_inactivity of 1%)."""

ACTIVATION_STATS = ("saturated", "dead", "preact_rms", "inactive")
"""What activation_stats returns, in its order (see point.Point for each)."""


def slope_profile(act: nn.Module) -> tuple[float, bool]:
    """(largest |slope|, rectifier) of an elementwise activation on a float64 grid
    (SLOPE_GRID). A rectifier's slope is exactly 0 on part of the grid (ReLU's negative
    side): a zero slope is then the unit being off, not saturation. A smooth activation's
    slope reaches exactly 0 only where float64 rounds its output to its limit (tanh beyond
    |h| = 19, the sigmoid beyond 37: outside the grid), which is saturation."""
    if isinstance(act, nn.Softmax):  # its largest Jacobian entry, p(1 - p) at p = 1/2
        return 0.25, False
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
    units...); see point.Point. Taken a few examples at a time (at most float64.CHUNK values):
    the float64 slopes of a ResNet's whole activation would be 8 bytes per value. A softmax
    (nn.Softmax: attention, F.softmax) is measured by softmax_stats."""
    if isinstance(act, nn.Softmax):
        return softmax_stats(h, act.dim, SLOPE_FRACTION * top, INACTIVE_SLOPE, INACTIVE_SHARE)
    h = h.detach()
    n = len(h)
    per = max(1, float64.CHUNK // max(1, h[0].numel()))
    flat = sq = 0
    zero = quiet = 0  # per unit: examples with slope 0, with slope below INACTIVE_SLOPE
    plain = type(act) is nn.ReLU and rectifier and SLOPE_FRACTION * top <= 1
    for start in range(0, n, per):
        part = h[start:start + per]
        sq = sq + part.double().square().sum()
        if plain:  # slopes 1 and 0 only, the same counts without the float64 slopes
            off = (part > 0).logical_not_().flatten(1).sum(0)  # slope 0 (NaN inputs too)
            flat, zero, quiet = flat + off.new_zeros(()), zero + off, quiet + off
            continue
        d = slopes(act, part)
        f = d.abs() < SLOPE_FRACTION * top
        if rectifier:
            f &= d != 0  # a rectifier's zero side is 'off' (dead if always), not saturated
        per_unit = d.flatten(1)  # (examples, units)
        flat = flat + f.sum()
        zero = zero + (per_unit == 0).sum(0)
        quiet = quiet + (per_unit.abs() < INACTIVE_SLOPE).sum(0)
    values = h.numel()
    return torch.stack([flat.double() / values, (zero == n).double().mean(),  # ACTIVATION_STATS
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
    activation_inputs), and for each softmax (F.softmax, Tensor.softmax, and the softmax
    inside an attention call: ATTENTION, with its scores) with an nn.Softmax; and adds to
    .matrices and .lookups the ids of the parameters passed to a MATRIX_OPS or LOOKUPS
    operation; on_attention() at each ATTENTION call (the layout notes its module)."""

    quiet = 0
    """While above 0 (ForwardCalls.aside()), every instance lets calls pass unseen: vgbench's
    own computations inside a forward (an activation's statistics, a recurrent kernel's
    gates computed again) are not the model's."""

    def __init__(self, on_activation=None, on_attention=None):
        super().__init__()
        self.on_activation = on_activation
        self.on_attention = on_attention
        self.inside = 0  # > 0 while an activation module's forward runs
        self.matrices: set[int] = set()
        self.lookups: set[int] = set()

    @staticmethod
    @contextmanager
    def aside():
        """For the block, no ForwardCalls sees a call (see quiet)."""
        ForwardCalls.quiet += 1
        try:
            yield
        finally:
            ForwardCalls.quiet -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if ForwardCalls.quiet:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in MATRIX_OPS or name in LOOKUPS:
            found = self.matrices if name in MATRIX_OPS else self.lookups
            for a in [*args, *kwargs.values()]:
                for t in (a if isinstance(a, (list, tuple)) else [a]):
                    if isinstance(t, nn.Parameter):
                        found.add(id(t))
        if self.on_attention is not None and name in ATTENTION:
            self.on_attention()
        if self.on_activation is not None and not self.inside:
            ForwardCalls.quiet += 1  # what is computed here is not the model's (aside())
            try:
                self._seen(func, name, args, kwargs)
            finally:
                ForwardCalls.quiet -= 1
        return func(*args, **kwargs)

    def _seen(self, func, name, args, kwargs):
        """on_activation for a functional activation or a softmax (see the class); called
        with on_activation set, outside an activation module, and aside."""
        base = name.removesuffix("_")
        if (base in FUNCTIONAL and args and torch.is_tensor(args[0])
                and args[0].is_floating_point() and args[0].requires_grad):
            cls, names = FUNCTIONAL[base]
            given = dict(zip(names, args[1:]))
            given.update({k: v for k, v in kwargs.items() if k in names})
            inplace = name.endswith("_") or bool(kwargs.get("inplace")) or (
                len(args) > 1 + len(names) and args[1 + len(names)] is True)
            self.on_activation(cls(**given), args[0], inplace)
        elif name == "softmax" and args and _in_graph([args[0]]):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if isinstance(dim, int) and args[0].dim() >= 2 and dim % args[0].dim() != 0:
                self.on_activation(nn.Softmax(dim % args[0].dim()), args[0], False)
        elif name in ATTENTION and _in_graph([*args, *kwargs.values()]):
            scores = attention_scores(name, func, args, kwargs)
            if scores is not None:
                self.on_activation(nn.Softmax(-1), scores, False)


def _in_graph(values: list) -> bool:
    """Whether one of these is a floating tensor in the autograd graph (an attention's
    input, or its projection's weight where the input is the batch itself)."""
    return any(torch.is_tensor(v) and v.is_floating_point() and v.requires_grad
               for v in values)


@contextmanager
def activation_inputs(layout, record):
    """For the block: record(module, input, inplace) for every activation call of a forward
    pass, in call order: the activation modules layout.activations() names (by hooks),
    the nonlinearities inside its recurrent modules (recurrent_gates, after each call) and,
    where the layout has any (layout.functional), the functional ones (ForwardCalls)."""
    modules = list(dict.fromkeys(layout.activations()))  # stand-ins of functional ones: never called
    calls = ForwardCalls(record) if getattr(layout, "functional", False) else None
    recurrent = list(dict.fromkeys(m for _, m, _ in layout.layers()
                                   if isinstance(m, nn.RNNBase)))

    def gates(m, args, output):  # the kernel's nonlinearities, after it ran (recurrent_gates)
        if calls is not None:  # what record computes is not a functional activation
            calls.inside += 1
        try:
            with ForwardCalls.aside():
                for _, standin, h in recurrent_gates(m, args):
                    record(standin, h, False)
        finally:
            if calls is not None:
                calls.inside -= 1

    def enter(m, i):
        if calls is not None:  # first: what record computes is not a functional activation
            calls.inside += 1
        with ForwardCalls.aside():
            record(m, i[0], getattr(m, "inplace", False))

    def leave(m, i, o):
        if calls is not None:
            calls.inside -= 1
    with ExitStack() as stack:
        for m in modules:
            stack.callback(m.register_forward_pre_hook(enter).remove)
            stack.callback(m.register_forward_hook(leave).remove)
        for m in recurrent:
            stack.callback(m.register_forward_hook(gates).remove)
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
    layout: object = None
    """The layout the weights are of: the one given, or the one this forward found."""
    taps: dict = field(default_factory=dict)
    """Where the layout was found: per recurrent module fed a (batch, time, features)
    tensor, the loss's gradient with respect to that input (None: none reached it)."""


def layer_gradients(model, x, y: torch.Tensor, on_activation=None,
                    extra: list | None = None, layout=None, loss_fn=None) -> Gradients:
    """The weight gradients, per-example RMS gradient norms, extra's gradients and the loss
    (a Gradients) of every weight layout.layers() names (default: the model's own, as
    model.MLP has) for the loss loss_fn(output, y) (default: mean cross-entropy) on x (a
    tensor, or a tuple of the model's inputs), in train mode as the model is.
    on_activation(k, input, module), when given, is called during the forward with the
    input of the k-th activation call (layout.activations(), in call order) and its module
    (a stand-in for a functional one), before an in-place activation overwrites it; nothing
    of it is kept. A layout still to be found (layout.Discovery, which has discover()):
    every candidate is hooked, the layout is recorded from this same forward, and
    Gradients.layout is the one found, Gradients.taps the gradients at its recurrent
    modules' inputs.

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
    discover = getattr(layout, "discover", None)
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
            on_activation(calls[0], h, act)
        calls[0] += 1
        m = outputs.get(id(h)) if inplace else None
        if m is not None and seen[m][-1][1] is h and h._version == seen[m][-1][2]:
            # a plain ReLU's slope needs only the input's sign (a byte, not a copy of h)
            kept = (h.detach() > 0) if type(act) is nn.ReLU else h.detach().clone()
            after[m] = (act, kept, h._version)

    def once(layers):  # a Linear's or convolution's weight: exact where it is called once
        return [isinstance(m, (nn.Linear, *CONVS)) and w is m.weight for _, m, w in layers]

    with discover() if discover else nullcontext() as found:
        with ExitStack() as stack:
            for (_, m, _), ok in zip(layers, once(layers)):
                if ok:
                    stack.callback(m.register_forward_hook(keep).remove)
            stack.enter_context(activation_inputs(layout or model, record))
            out = model(*x) if isinstance(x, tuple) else model(x)
        loss = F.cross_entropy(out, y) if loss_fn is None else loss_fn(out, y)
    taps = {}
    if discover:  # the layout this forward found, and the recurrent inputs it tapped
        layout, taps = found.layout, found.taps
        layers = layout.layers()
    exact = once(layers)
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
        unique = list({id(t): t for t in wanted + list(taps.values())}.values())
        got = dict(zip(map(id, unique),
                       torch.autograd.grad(loss, unique, allow_unused=True)))
    n = len(layers)
    grads = [got[id(t)] for t in wanted]
    return Gradients(grads[:n], rms, grads[n:], loss.detach(), layout or model,
                     {m: got[id(z)] for m, z in taps.items()})


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
