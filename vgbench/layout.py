"""The layout of any nn.Module for the probe: its parameters in call order with their roles
(which are weights the signal passes through, and so the verdict's layer chain), and its
activations, found by one forward pass with hooks. model.MLP is its own layout."""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field

import torch
from torch import nn

from vgbench.convs import CONVS
from vgbench.diagnostics import ACTIVATIONS, ForwardCalls
from vgbench.kernels import gate_names

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
         nn.modules.instancenorm._InstanceNorm)
"""Their parameters are reported but stay out of the verdict's layer chain (a scale, not a
layer the gradient passes through), as do embeddings (a lookup whose rows update sparsely)."""
ROLES = ("weight", "norm", "embedding", "zero", "vector")
"""What a parameter is, by what it does in the forward pass: weight, a matrix or filter the
signal passes through (an operand of a linear map, a convolution, a matrix product or
attention, or a recurrent module's matrix), the only role the verdict's layer chain reads;
norm, the scale or shift of a normalization; embedding, a table looked up; zero, a weight
that is all zeros at init (its update ratio has nothing to relate to); vector, anything else
(biases, layer scales, residual gates, class tokens, position embeddings)."""


@dataclass
class ModelLayout:
    """What the probe measures in an arbitrary model: every trainable parameter, in the order
    the forward pass first calls the module that owns it (layers(); a module that is only
    used functionally, as MultiheadAttention's out_proj, goes with its nearest called
    parent), each with its role (ROLES), and the elementwise activations it calls, modules
    and functions alike (activations())."""

    entries: list
    """(name, module, parameter) in call order."""
    acts: list
    """[(name, module)], one per call, in call order (a module called twice is listed
    twice; a functional activation by the module that called it, with a module that
    computes the same)."""
    roles: list[str] = field(default_factory=list)
    """Per entry, its role (ROLES)."""
    functional: bool = False
    """Whether some activations are functional (the probe then watches the forward's
    function calls)."""
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Parameters not measured, with why."""
    called: set[str] = field(default_factory=set)
    """The names of the modules the forward called."""
    gains: dict[str, float] = field(default_factory=dict)
    """Per module that called an attention kernel (kernels.ATTENTION: MultiheadAttention,
    timm's and Hugging Face's attention blocks): the RMS of its output over the RMS of the
    first input of the module that called it (the block whose residual stream it is added
    to; its own input where nothing called it), on the recorded forward (its last call):
    how large what it adds is next to what the skip around it carries."""
    callers: dict[str, str] = field(default_factory=dict)
    """Per module that called an attention kernel, in the order of their first calls: the
    name of the module that called it (the block whose stream it adds to; '' where nothing
    did): reach.across_positions taps that block's input."""

    def layers(self):
        return self.entries

    def activations(self):
        return [m for _, m in self.acts]

    def chain(self, moved: tuple[int, ...] | list[int] = ()) -> list[int]:
        """Indices of the layers the verdict reads: the weights by role, and those of the
        zero ones (role 'zero') that are `moved` (no longer all zeros: in a training run)."""
        return [i for i, role in enumerate(self.roles)
                if role == "weight" or role == "zero" and i in moved]

    def output(self) -> torch.Tensor | None:
        """The weight of the last layer the forward calls (role weight or zero): the one the
        output is read through."""
        return next((w for (_, _, w), role in zip(reversed(self.entries), reversed(self.roles))
                     if role in ("weight", "zero")), None)

    def gated(self, chain: list[int], grad_norm: list[float], zero: list[int]) -> list[int]:
        """The weights of chain that get no gradient while weights that are all zeros
        (`zero`: a ReZero gate, a zero-initialised projection) still are: they learn once
        those move, so the verdict leaves them out (none when that is every weight of
        chain: then nothing flows at all). gated_note() says so."""
        gated = [i for i in chain if grad_norm[i] == 0] if zero else []
        return gated if len(gated) < len(chain) else []

    def gated_note(self, gated: list[int]) -> str:
        return ("no gradient behind the zero weights (they learn once those move), not in "
                f"the verdict: {', '.join(self.entries[i][0] for i in gated)}")

    @classmethod
    @contextlib.contextmanager
    def recording(cls, model: nn.Module):
        """Hooks on model for the block: the layout of the forward passes run inside it is
        the yielded object's .layout once the block ends (inspect records its loss check's
        forward, so finding the layers costs no pass of its own). The forward must run with
        gradients enabled (functional activations count where their input is in the graph)."""
        names = {m: n or type(model).__name__ for n, m in model.named_modules()}
        calls: dict[nn.Module, int] = {}
        first: list[nn.Module] = []  # modules in the order of their first call
        stack: list[nn.Module] = []  # the modules whose forward is running
        acts: list[tuple[str, nn.Module]] = []

        def enter(module, inputs):
            calls[module] = calls.get(module, 0) + 1
            if calls[module] == 1:
                first.append(module)
            stack.append(module)
            entered.append(inputs)
            if isinstance(module, ACTIVATIONS):
                watch.inside += 1
                acts.append((names[module], module))

        def leave(module, inputs, output):
            stack.pop()
            entered.pop()
            if module in attending:  # against its caller's input: the stream
                callers.setdefault(names[module], names[stack[-1]] if stack else "")
                gain = _gain(entered[-1] if entered else inputs, output)
                if gain is not None:
                    gains[names[module]] = gain
            if isinstance(module, ACTIVATIONS):
                watch.inside -= 1
            if isinstance(module, nn.RNNBase):  # its kernel's gates, as the probe sees them
                acts.extend((f"{names[module]}:{name}", standin)
                            for name, standin in gate_names(module, inputs))

        def functional(standin, h, inplace):
            where = names[stack[-1]] if stack else type(model).__name__
            acts.append((f"{where}:{type(standin).__name__}", standin))

        attending: set[nn.Module] = set()  # modules that called an attention kernel
        entered: list[tuple] = []  # the inputs of the modules on the stack
        gains: dict[str, float] = {}
        callers: dict[str, str] = {}

        def attention():
            if stack:
                attending.add(stack[-1])

        watch = ForwardCalls(functional, attention)
        hooks = [h for m in model.modules()
                 for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
        found = types.SimpleNamespace(layout=None)
        try:
            with watch:
                yield found
        finally:
            for h in hooks:
                h.remove()
        found.layout = cls._from_calls(model, names, first, calls, acts, watch)
        found.layout.gains, found.layout.callers = gains, callers

    @classmethod
    def _from_calls(cls, model, names, first, calls, acts, watch) -> "ModelLayout":
        order = {m: k for k, m in enumerate(first)}
        parents = {}
        for m in model.modules():
            for child in m.children():
                parents.setdefault(child, m)

        def place(m):  # a module never called goes with its nearest called parent
            while m not in order and m in parents:
                m = parents[m]
            return order.get(m)

        owners = [m for m in model.modules() if list(m.parameters(recurse=False))]
        placed = sorted((k, i, m) for i, m in enumerate(owners)
                        if (k := place(m)) is not None)
        entries, roles, skipped, notes = [], [], [], []
        for _, _, m in placed:
            for pname, p in m.named_parameters(recurse=False):
                if p.requires_grad:
                    entries.append((pname if m is model else f"{names[m]}.{pname}", m, p))
                    roles.append(_role(m, p, watch))
            if calls.get(m, 0) > 1:
                notes.append(f"{names[m]} is called {calls[m]} times per forward (shared "
                             "weights): its gradient is the sum, no per-example norm")
        for n, p in model.named_parameters():
            if not p.requires_grad:
                skipped.append(f"{n} (frozen: requires_grad is False)")
        count: dict[nn.Module, int] = {}
        named = []
        for name, m in acts:
            count[m] = count.get(m, 0) + 1
            twice = calls.get(m, 0) > 1
            named.append((name + (f" (call {count[m]})" if twice else ""), m))
        return cls(entries, named, roles, any(m not in calls for _, m in acts), notes,
                   skipped, {names[m] for m in calls})


class Discovery:
    """A layout still to be found, for a probe whose own forward finds it (inspect: no
    forward of its own for the layout). Before that forward it names every candidate:
    layers(), each Linear's and convolution's weight and each recurrent module (what the
    probe hooks by module), activations(), every activation module, and functional
    activations are watched; discover() records the layout of the forward run inside it
    (ModelLayout.recording) and taps each recurrent module fed a (batch, time, features)
    tensor: found.taps {module: z}, z a zero tensor added to its input, so
    that the gradient with respect to z is the loss's at each time step (the gradient
    through time). diagnostics.layer_gradients takes one as its layout. check(layout), if
    given, is called with the layout once found (inspect raises its errors there)."""

    functional = True

    def __init__(self, model: nn.Module, check=None):
        self.model, self.check = model, check

    def layers(self):
        return [(name, m, p) for name, m in self.model.named_modules()
                for p in [_candidate(m)] if p is not None]

    def activations(self):
        return [m for m in self.model.modules() if isinstance(m, ACTIVATIONS)]

    @contextlib.contextmanager
    def discover(self):
        taps: dict = {}

        def tap(module, args):
            inp = args[0] if args else None
            if not (torch.is_tensor(inp) and inp.dim() == 3 and inp.is_floating_point()):
                return None  # a PackedSequence or unbatched input: not profiled
            z = torch.zeros_like(inp, requires_grad=True)  # d loss / d z = d loss / d input
            taps[module] = z
            return (inp + z, *args[1:])

        hooks = [m.register_forward_pre_hook(tap) for m in self.model.modules()
                 if isinstance(m, nn.RNNBase)]
        try:
            with ModelLayout.recording(self.model) as found:
                found.taps = taps
                yield found
        finally:
            for h in hooks:
                h.remove()
        if self.check is not None:
            self.check(found.layout)


def _candidate(m: nn.Module):
    """What the probe hooks m by, before the layout is known: a Linear's or convolution's
    weight, a recurrent module's first parameter; None for anything else."""
    if isinstance(m, (nn.Linear, *CONVS)) and isinstance(m.weight, nn.Parameter):
        return m.weight
    if isinstance(m, nn.RNNBase):
        return next(m.parameters(), None)
    return None


def _gain(inputs: tuple, output) -> float | None:
    """RMS of an output (its first tensor) over RMS of the first tensor of inputs; None where
    either is not a floating tensor or the input is all zeros."""
    def first(v):
        if isinstance(v, (tuple, list)):
            return next((t for t in v if torch.is_tensor(t)), None)
        return v if torch.is_tensor(v) else None
    x, y = first(inputs), first(output)
    if x is None or y is None or not (x.is_floating_point() and y.is_floating_point()):
        return None
    with torch.no_grad():
        rms_x = float(x.detach().double().square().mean().sqrt())
        rms_y = float(y.detach().double().square().mean().sqrt())
    return rms_y / rms_x if rms_x > 0 else None


def _role(module: nn.Module, p: torch.Tensor, watch: ForwardCalls) -> str:
    """p's role (ROLES), from what the forward did with it."""
    if isinstance(module, NORMS):
        return "norm"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or id(p) in watch.lookups:
        return "embedding"
    matrix = sum(n > 1 for n in p.shape) >= 2 and (
        id(p) in watch.matrices or isinstance(module, nn.RNNBase))
    if not matrix:
        return "vector"
    return "weight" if bool(p.detach().any()) else "zero"


def unwrap(model: nn.Module) -> nn.Module:
    """The module a wrapper trains: DistributedDataParallel's and DataParallel's .module,
    torch.compile's original module (its layers, names and gradients are the user's)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's
            model = model._orig_mod
        else:
            return model


def compiled(model: nn.Module) -> bool:
    """Whether torch.compile compiled the model: torch.compile(model)'s wrapper, or
    model.compile() on it or on a module inside."""
    return isinstance(getattr(model, "_orig_mod", None), nn.Module) or any(
        getattr(m, "_compiled_call_impl", None) is not None
        for m in unwrap(model).modules())
