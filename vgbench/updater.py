"""The step a run's optimizer would take on the probe's gradient, without taking it."""

from __future__ import annotations

import copy
from collections import defaultdict

import torch

from vgbench import float64

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
    at a time (at most float64.CHUNK elements: small parameters together, a large one in parts, each
    with that part of its state): memory beyond the model is a few pieces, whatever its
    size. Any other optimizer (it may couple its
    parameters, as LBFGS does) is deep-copied whole, its parameters and state in float64."""

    def __init__(self, optimizer: torch.optim.Optimizer, clip_norm: float | None = None):
        self.opt, self.clip_norm = optimizer, clip_norm

    @property
    def params(self) -> list[torch.Tensor]:
        """The parameters the real optimizer trains, in its order."""
        return [p for g in self.opt.param_groups for p in g["params"]]

    @property
    def piecewise(self) -> bool:
        """Whether the twin steps a piece at a time (ELEMENTWISE; else the optimizer whole)."""
        return type(self.opt) in ELEMENTWISE

    @torch.no_grad()
    def deltas(self, grads: list[torch.Tensor | None], scale: float = 1.0,
               sample: int | None = None):
        """The change of each of self.params for these gradients (None: no gradient) times
        scale, in float64 (the baseline's first layer moves by 1e-9 of its norm per step,
        below float32's resolution, 6e-8, so a float32 difference would be rounding), piece
        by piece: yields (index into self.params, slice of its flattened elements, the float64
        change of those elements), every element of every parameter once, in order.
        sample: only the first that many elements of each parameter, one piece each (an
        optimizer stepped whole steps all of them)."""
        coef = 1.0
        if self.clip_norm is not None:  # as nn.utils.clip_grad_norm_ does in training
            total = torch.stack([float64.joined([_scaled(g, p, scale, piece).norm()
                                          for piece in float64.pieces(p.numel())])
                                 for g, p in zip(grads, self.params)]).norm()
            coef = (self.clip_norm / (total + 1e-6)).clamp(max=1.0)
        if not self.piecewise:
            yield from self._whole(grads, scale, coef)
            return
        twin = copy.copy(self.opt)  # its own attributes; the real optimizer's are not touched
        for hyper, batch in self._batches(sample):
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

    def _batches(self, sample: int | None = None):
        """(a parameter group's hyperparameters, [(index, parameter, its flattened view,
        piece)]): the pieces of the parameters in order (of each only its first `sample`
        elements where given), as few steps as float64.CHUNK allows, each within one
        group."""
        i = 0
        for group in self.opt.param_groups:
            hyper = {k: v for k, v in group.items() if k != "params"}
            batch, size = [], 0
            for p in group["params"]:
                flat = p.detach().reshape(-1)
                cut = (float64.pieces(p.numel()) if sample is None
                       else [slice(0, min(p.numel(), sample))])
                for piece in cut:
                    n = piece.stop - piece.start
                    if batch and size + n > float64.CHUNK:
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
