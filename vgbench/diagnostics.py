"""Per-layer signs of vanishing gradients, measured on a fixed probe batch.

Probing must not change training: gradients come from torch.autograd.grad (no .grad
written, no optimizer touched), BatchNorm running statistics are restored afterwards, and
nothing here draws from any random generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vgbench.model import MLP

SMALL_W = 1e-3
"""|w| below this counts as 'near zero' in w_small_frac."""
SIGMOID_LOW, SIGMOID_HIGH = 0.05, 0.95
"""A sigmoid output outside (0.05, 0.95) counts as saturated (derivative < 0.048)."""

LAYER_METRICS = ("grad_norm", "weight_change", "w_abs_mean", "w_std", "w_small_frac")
"""Per-Linear-layer metrics (input layer first, output layer last)."""
HIDDEN_METRICS = ("saturation",)
"""Per-hidden-layer metrics."""


def saturation(a: torch.Tensor, activation: str) -> torch.Tensor:
    """Fraction of saturated units: sigmoid outside (0.05, 0.95); ReLU exactly 0."""
    if activation == "sigmoid":
        return ((a < SIGMOID_LOW) | (a > SIGMOID_HIGH)).float().mean()
    return (a == 0).float().mean()


def _bn_buffers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (buf, buf.detach().clone())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for buf in m.buffers()
    ]


class Probe:
    """Measures a model on a fixed batch; remembers the initial weights for weight_change."""

    def __init__(self, model: MLP, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.w0 = [lin.weight.detach().clone() for lin in model.linears()]
        self.points: dict[str, list] = {"epoch": []}
        for key in LAYER_METRICS + HIDDEN_METRICS:
            self.points[key] = []

    def measure(self, model: MLP, epoch: int) -> None:
        """Record every metric for `epoch` (0 = at init), in train mode, leaving no trace."""
        was_training = model.training
        saved = _bn_buffers(model)
        model.train()
        weights = [lin.weight for lin in model.linears()]
        flags = [w.requires_grad for w in weights]  # layerwise freezes some layers
        acts: list[torch.Tensor] = []
        with torch.enable_grad():
            for w in weights:
                w.requires_grad_(True)
            logits = model.out(model.features(self.x, acts=acts))
            loss = F.cross_entropy(logits, self.y)
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
            model.train(was_training)
            rows = []
            for w, g, w0 in zip(weights, grads, self.w0):
                a = w.detach().abs()
                rows.append(torch.stack([
                    g.norm() if g is not None else a.new_zeros(()),
                    (w - w0).norm() / w0.norm(),
                    a.mean(),
                    w.std(),
                    (a < SMALL_W).float().mean(),
                ]))
            layer = torch.stack(rows).T.tolist()  # (metric, layer); one host sync
            sat = torch.stack([saturation(a, model.activation) for a in acts]).tolist()
        self.points["epoch"].append(epoch)
        for key, values in zip(LAYER_METRICS, layer):
            self.points[key].append(values)
        self.points["saturation"].append(sat)


def grad_ratio(grad_norms: list[float]) -> float:
    """First layer's weight-gradient norm over the output layer's."""
    return grad_norms[0] / grad_norms[-1] if grad_norms[-1] > 0 else float("nan")


def probe_batch(train_x, train_y, size: int, generator: torch.Generator):
    """A fixed random subset of the train split (indices drawn on the CPU)."""
    n = min(size, len(train_y))
    idx = torch.randperm(len(train_y), generator=generator)[:n].to(train_x.device)
    return train_x[idx], train_y[idx]
