"""Exact per-example weight-gradient norms of convolutions, from a layer's input and the
gradient at its output (diagnostics.layer_gradients takes them as the backward passes)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vgbench import float64

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
    else G_i is formed. A few examples at a time: as many as keep their patches and their
    products within float64.CHUNK values (one at a time where one example's are larger),
    so no batch of per-example gradients or patches is ever held."""
    groups = conv.groups
    p = math.prod(g.shape[2:])
    o = g.shape[1] // groups
    k = x.shape[1] // groups * math.prod(conv.kernel_size)
    gram = p * p <= o * k
    per = max(1, float64.CHUNK // (groups * max(k * p, p * p if gram else o * k)))
    out = []
    for start in range(0, len(x), per):
        xs = conv_patches(conv, x[start:start + per])  # (b, groups, K, P)
        ds = g[start:start + per].reshape(len(xs), groups, o, p)  # (b, groups, O/groups, P)
        if gram:
            both = (ds.transpose(-1, -2) @ ds).mul_(xs.transpose(-1, -2) @ xs)
            out.append(both.sum(dim=(1, 2, 3)).clamp(min=0).sqrt())
        else:
            out.append((ds @ xs.transpose(-1, -2)).flatten(1).norm(dim=1))
    return torch.cat(out)
