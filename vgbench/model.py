"""The MLP of the protocol and every remedy's building blocks."""

from __future__ import annotations

import torch
from torch import nn

from vgbench.config import Config

IN_DIM = 28 * 28
N_CLASS = 10
GRADNORM_EPS = 1e-6


class _GradNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        # whole-tensor statistics, as in the seed text (not per sample)
        return (g - g.mean()) / (g.std() + GRADNORM_EPS)


class GradNorm(nn.Module):
    """Identity forward; backward replaces g by (g - mean(g)) / (std(g) + 1e-6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GradNormFn.apply(x)


class BatchStandardize(nn.Module):
    """Parameter-free (x - x.mean()) / x.std() over the whole batch tensor (train and eval)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean()) / x.std()


def _activation(name: str) -> nn.Module:
    return nn.Sigmoid() if name == "sigmoid" else nn.ReLU()


class Hidden(nn.Module):
    """One hidden layer: Linear -> [gradnorm pre] -> [norm] -> act -> [gradnorm post]."""

    def __init__(self, in_dim: int, cfg: Config):
        super().__init__()
        self.linear = nn.Linear(in_dim, cfg.width)
        self.pre = GradNorm() if cfg.gradnorm == "pre" else nn.Identity()
        if cfg.norm == "batchnorm":
            self.norm = nn.BatchNorm1d(cfg.width)
        elif cfg.norm == "custom":
            self.norm = BatchStandardize()
        else:
            self.norm = nn.Identity()
        self.act = _activation(cfg.activation)
        self.post = GradNorm() if cfg.gradnorm == "post" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.act(self.norm(self.pre(self.linear(x)))))


class MLP(nn.Module):
    """784 -> n_layer hidden layers of `width` -> 10 logits, with optional residual adds."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.hidden = nn.ModuleList(
            Hidden(IN_DIM if i == 0 else cfg.width, cfg) for i in range(cfg.n_layer)
        )
        self.out = nn.Linear(cfg.width, N_CLASS)
        self.activation = cfg.activation
        # dst (1-based) -> src (1-based): h_dst = layer_dst(h_dst-1) + h_src
        self.skip_from = {dst: src for src, dst in cfg.skip}

    def features(self, x: torch.Tensor, n: int | None = None, acts: list | None = None):
        """Run the first n hidden layers (all when None); append each activation to acts."""
        h = [x.flatten(1)]  # h[i] is the output of hidden layer i (h[0] the input)
        for i, layer in enumerate(self.hidden[:n], start=1):
            a = layer(h[-1])
            if acts is not None:
                acts.append(a)
            src = self.skip_from.get(i)
            h.append(a + h[src] if src is not None else a)
        return h[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))

    def linears(self) -> list[nn.Linear]:
        """Every Linear layer from input to output (the diagnostics' layer order)."""
        return [layer.linear for layer in self.hidden] + [self.out]


class Stage(nn.Module):
    """Layerwise training: the first n hidden layers of a shared MLP plus a fresh head."""

    def __init__(self, mlp: MLP, n: int, head: nn.Linear):
        super().__init__()
        self.mlp, self.n, self.head = mlp, n, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp.features(x, self.n))


def init_weights(model: nn.Module, cfg: Config) -> None:
    """Apply cfg.init to every Linear (default: leave PyTorch's init as built)."""
    if cfg.init == "normal":
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
                nn.init.zeros_(m.bias)


def build(cfg: Config) -> MLP:
    """Build and initialize the MLP for cfg (uses the global torch RNG: seed it first)."""
    model = MLP(cfg)
    init_weights(model, cfg)
    return model
