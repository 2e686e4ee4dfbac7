"""How far the loss's gradient reaches along a sequence, and whether what it reaches carries
the labels: the measurements behind inspect's verdicts through time (recurrent modules) and
across positions (attention), each a forward and a backward or a few, no training.

    across_positions(model, x, targets, loss_fn, layout)   # per first attention: its reach
    label_signal(model, x, targets, loss_fn, weight)       # ~1: no tie to the labels

A network that reads its output from one position (a decoder's last token, a ViT's class
token) learns from the other positions only through what its attention routes to that one.
At the stream of the first attention, the loss's gradient per position says how much: where
the median position gets a tiny share of what the read position gets, the other positions
are out of reach, which is trouble only where the read position alone says nothing of the
labels (label_signal at the output layer's weight)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vgbench.diagnostics import as_it_was, same_draws


def call(model: nn.Module, x):
    """model(x), or model(*x) for a tuple of inputs."""
    return model(*x) if isinstance(x, tuple) else model(x)


def batch_size(x) -> int:
    return len(x[0] if isinstance(x, tuple) else x)


def across_positions(model: nn.Module, x, targets, loss_fn, callers: dict[str, str]) -> dict:
    """For the first module that called an attention kernel (callers: attention module name
    -> the name of the module that called it, in call order; layout.callers): the norm of
    the loss's gradient with respect to the stream at each position (the first input of its
    caller, the block the attention adds to; (batch, positions, features) or (positions,
    batch, features)), and the reach: the median position's norm over the largest.
    {attention name: {'via', 'positions', 'norms', 'reach'}}; {} where there is no attention,
    nothing called it, or its caller's input is not such a tensor. One forward and one
    backward in train mode (the probe's fixed dropout draws, norm statistics restored)."""
    if not callers:
        return {}
    name, via = next(iter(callers.items()))
    if not via:
        return {}
    modules = dict(model.named_modules())
    block = modules.get(via) or (model if via == type(model).__name__ else None)
    attention = modules.get(name)
    n = batch_size(x)
    taps: list = []

    def tap(module, args):
        inp = args[0] if args else None
        if taps or not (torch.is_tensor(inp) and inp.dim() == 3 and inp.is_floating_point()):
            return None  # its first call only; a sequence of vectors only
        first = inp.shape[0] == n and (inp.shape[1] != n or getattr(attention, "batch_first",
                                                                     True))
        if not first and inp.shape[1] != n:
            return None  # no dimension is the batch
        z = torch.zeros_like(inp, requires_grad=True)  # d loss / d z = d loss / d stream
        taps.append((z, first))
        return (inp + z, *args[1:])

    if block is None:
        return {}
    hook = block.register_forward_pre_hook(tap)
    try:
        with as_it_was(model, train=True), torch.enable_grad(), same_draws(x):
            value = loss_fn(call(model, x), targets)
            grads = (torch.autograd.grad(value, [taps[0][0]], allow_unused=True)
                     if taps and value.requires_grad else [None])
    finally:
        hook.remove()
    if grads[0] is None:
        return {}
    g = grads[0] if taps[0][1] else grads[0].transpose(0, 1)  # (batch, positions, features)
    norms = g.detach().double().square().sum(dim=(0, 2)).sqrt().tolist()
    top = max(norms)
    median = sorted(norms)[len(norms) // 2]
    return {name: {"via": via, "positions": len(norms), "norms": norms,
                   "reach": median / top if top > 0 else math.nan}}


def label_signal(model: nn.Module, x, targets, loss_fn, w: torch.Tensor | None) -> float:
    """Whether the gradient that reaches weight w carries the labels: the common part of the
    examples' own gradients g_i of w, B ||mean_i g_i||^2 / mean_i ||g_i||^2 (about 1 for
    noise around zero), with the batch's own labels over the same with each example given
    its neighbour's label (targets rolled by one: the labels' frequencies and the model's
    response to its inputs stay, their tie to the inputs goes). About 1 where what w sees
    says nothing about the label (a memory task whose answer lies beyond the steps the
    gradient reaches); above where it does. Each g_i from a forward and backward of example
    i alone (train mode, the probe's fixed dropout draws, norm statistics restored): 2 B
    passes. NaN where it cannot be taken (no such weight, targets that are not one per
    example, a model that cannot run on one example)."""
    n = batch_size(x)
    if (w is None or not w.requires_grad or not torch.is_tensor(targets)
            or len(targets) != n):
        return math.nan
    common = []
    try:
        for labels in (targets, targets.roll(1, 0)):  # the same dropout draws for both
            with as_it_was(model, train=True), torch.enable_grad(), same_draws(x):
                total, energy = torch.zeros_like(w, dtype=torch.float64), 0.0
                for i in range(n):
                    xi = tuple(t[i:i + 1] for t in x) if isinstance(x, tuple) else x[i:i + 1]
                    (g,) = torch.autograd.grad(loss_fn(call(model, xi), labels[i:i + 1]),
                                               w, allow_unused=True)
                    if g is None:
                        return math.nan
                    g = g.double()
                    total += g
                    energy += float(g.square().sum())
                common.append(n * float((total / n).square().sum()) / (energy / n)
                              if energy else math.nan)
    except (RuntimeError, ValueError):  # e.g. BatchNorm in train mode on one example
        return math.nan
    return common[0] / common[1] if common[1] else math.nan
