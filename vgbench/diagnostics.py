"""Per-layer signs of vanishing gradients, measured on a fixed probe batch.

Probing must not change training: gradients come from torch.autograd.grad (no .grad
written, no optimizer touched), BatchNorm running statistics are restored afterwards, and
nothing here draws from any random generator.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vgbench.model import MLP

SMALL_W = 1e-3
"""|w| below this counts as 'near zero' in w_small_frac."""
SIGMOID_LOW, SIGMOID_HIGH = 0.05, 0.95
"""A sigmoid output outside (0.05, 0.95) counts as saturated (derivative < 0.048)."""

LAYER_METRICS = ("grad_norm", "grad_rms", "weight_change", "w_abs_mean", "w_std",
                 "w_small_frac")
"""Per-Linear-layer metrics (input layer first, output layer last). grad_norm: the norm
of the batch-mean weight gradient (what the optimizer sees); grad_rms: the RMS over the
probe's examples of each example's own weight-gradient norm (what mean field predicts)."""
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


def layer_gradients(model: MLP, x: torch.Tensor, y: torch.Tensor, acts: list | None = None):
    """(weight gradients, per-example RMS gradient norms) of every Linear for the mean
    cross-entropy on (x, y), in train mode as the model is. Example i's own weight gradient
    in a Linear is the rank-one delta_i a_i^T (delta_i = dloss_i/doutput_i, a_i the input),
    so its norm is ||delta_i|| ||a_i||: no per-example gradient tensors are formed. (Under
    BatchNorm and the batch-wide normalizations the examples are coupled; this is then each
    example's term of the batch gradient, times the batch size.)"""
    linears = model.linears()
    seen: dict[nn.Linear, tuple] = {}

    def keep(module, inputs, output):
        seen[module] = (inputs[0], output)

    hooks = [lin.register_forward_hook(keep) for lin in linears]
    try:
        logits = model.out(model.features(x, acts=acts))
    finally:
        for h in hooks:
            h.remove()
    loss = F.cross_entropy(logits, y)
    outs = [seen[lin][1] for lin in linears]
    grads = torch.autograd.grad(loss, [lin.weight for lin in linears] + outs,
                                allow_unused=True)
    weight_grads, out_grads = grads[:len(linears)], grads[len(linears):]
    rms = []
    for lin, g in zip(linears, out_grads):
        a = seen[lin][0]
        if g is None:
            rms.append(a.new_zeros(()))
            continue
        # the loss is a mean over the batch: example i's own gradient is len(x) times its term
        per_example = g.norm(dim=1) * a.norm(dim=1) * len(x)
        rms.append(per_example.square().mean().sqrt())
    return weight_grads, rms


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
            grads, rms = layer_gradients(model, self.x, self.y, acts)
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)
            model.train(was_training)
            rows = []
            for w, g, r, w0 in zip(weights, grads, rms, self.w0):
                a = w.detach().abs()
                rows.append(torch.stack([
                    g.norm() if g is not None else a.new_zeros(()),
                    r.detach(),
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


def init_profile(model: MLP, x: torch.Tensor, y: torch.Tensor,
                 dtype: torch.dtype = torch.float64) -> dict:
    """Per-Linear gradient norms at init (batch-mean grad_norm and per-example grad_rms) of
    a copy of model in dtype: float64 keeps deep sigmoid nets' first-layer gradients, which
    fall below float32's range near 40 layers. The model itself is left untouched."""
    twin = copy.deepcopy(model).to(dtype).train()
    for p in twin.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        grads, rms = layer_gradients(twin, x.to(dtype), y)
    return {"dtype": str(dtype).removeprefix("torch."),
            "grad_norm": [g.norm().item() for g in grads],
            "grad_rms": [r.item() for r in rms]}


def grad_ratio(grad_norms: list[float]) -> float:
    """First layer's weight-gradient norm over the output layer's."""
    return grad_norms[0] / grad_norms[-1] if grad_norms[-1] > 0 else float("nan")


def probe_batch(train_x, train_y, size: int, generator: torch.Generator):
    """A fixed random subset of the train split (indices drawn on the CPU)."""
    n = min(size, len(train_y))
    idx = torch.randperm(len(train_y), generator=generator)[:n].to(train_x.device)
    return train_x[idx], train_y[idx]
