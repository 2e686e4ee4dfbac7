"""Float64 arithmetic in pieces of at most CHUNK values: norms, dot products and the
slices the probe and the Updater work through, so that no float64 copy of a whole weight,
gradient or activation is ever made."""

from __future__ import annotations

import torch

CHUNK = 2 ** 20
"""Values per piece (8 MiB in float64): the Updater's step (a weight, its gradient, each
state tensor), an activation's slopes, a weight's norm."""


def pieces(n: int) -> list[slice]:
    """The slices of n flattened elements taken in turn (one when n <= CHUNK)."""
    return [slice(start, min(start + CHUNK, n)) for start in range(0, max(n, 1), CHUNK)]


def joined(norms: list[torch.Tensor]) -> torch.Tensor:
    """The norm of a whole from its pieces' norms."""
    return norms[0] if len(norms) == 1 else torch.stack(norms).norm()


def norm64(t: torch.Tensor) -> torch.Tensor:
    """||t|| in float64, taken CHUNK values at a time."""
    flat = t.detach().reshape(-1)
    return joined([flat[piece].double().norm() for piece in pieces(flat.numel())])


def dot64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of a and b (flattened) in float64, CHUNK values at a time."""
    a, b = a.detach().reshape(-1), b.detach().reshape(-1)
    parts = [a[piece].double() @ b[piece].double() for piece in pieces(a.numel())]
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()
