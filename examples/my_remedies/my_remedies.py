"""Two remedies of a user's own, with their own code, declared the way vgbench declares its
built-in ones: a Config (the baseline with what changes) plus Parts (the user's modules).

pytest picks them up through the hook in conftest.py; `vgbench run` and `vgbench list`
through `--remedies my_remedies.py` (this module's REMEDIES).
"""

from dataclasses import replace

import torch
from torch import nn

from vgbench import BASELINE, SMALL, Check, Parts, Remedy


class ScaledSigmoid(nn.Module):
    """4 * sigmoid(x) - 2 (= 2 tanh(x / 2)): centred at 0, slope 1 at the origin, where the
    plain sigmoid's is 1/4, so each layer no longer shrinks the gradient by 4x."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * torch.sigmoid(x) - 2


class MyLayerNorm(nn.Module):
    """LayerNorm written out: standardize each sample over its units, then a learned gain
    and bias per unit."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.gain + self.bias


# Thresholds: quick budget (5 epochs), seeds 42-44 on CPU, each `why` gives the measured
# range and the margin (see the project's README, 'Bring your own remedy').
REMEDIES = [
    Remedy(
        "scaled_sigmoid", "4 * sigmoid(x) - 2 instead of Sigmoid, LeCun normal init",
        replace(BASELINE, init="kaiming", init_gain=1.0),
        parts=Parts(activation=ScaledSigmoid),
        quick=(
            Check("test_acc", ">=", 0.70, "seeds 42-44: 0.781..0.793; margin 0.081"),
            Check("grad_ratio_init", ">=", 0.3, "seeds 42-44: 2.74..3.36; 9x margin"),
        ),
        source="examples/my_remedies",
    ),
    Remedy(
        "my_layernorm", "a hand-written LayerNorm before each Sigmoid (small init)",
        SMALL,
        parts=Parts(norm=MyLayerNorm),
        # still at chance after 5 epochs (0.100 on every seed): only the gradient checks
        quick=(
            Check("grad_ratio_init", ">=", 5e-4, "seeds 42-44: 1.5e-3..2.3e-3; 3x margin"),
            Check("first_layer_change", ">=", 1e-4, "seeds 42-44: 2.8e-4..3.9e-4; 2.8x"),
        ),
        source="examples/my_remedies",
    ),
]
