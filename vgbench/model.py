"""The MLP of the protocol and every remedy's building blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from vgbench.config import Config

IN_DIM = 28 * 28
N_CLASS = 10
GRADNORM_EPS = 1e-6


class _GradNormFn(torch.autograd.Function):
    generate_vmap_rule = True  # under vmap (batched seeds) the statistics stay per model

    @staticmethod
    def forward(x):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

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


ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "selu": nn.SELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01), "gelu": nn.GELU,
}
"""Config.activation -> a factory of its module."""
NORM_MODULES: dict[str | None, Callable[[int], nn.Module]] = {
    None: lambda width: nn.Identity(), "batchnorm": nn.BatchNorm1d,
    "custom": lambda width: BatchStandardize(), "layernorm": nn.LayerNorm,
}
"""Config.norm -> a factory of its module, given the width."""


def _label(fn) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


@dataclass(frozen=True)
class Parts:
    """A remedy's own code, which the one MLP builder and the training loop call in place
    of the config's choice. None (the default everywhere) means: use the config's."""

    activation: Callable[[], nn.Module] | None = None
    """Factory of the hidden activation module, called once per hidden layer (a class such
    as nn.Tanh works). Replaces config.activation; must act elementwise."""
    norm: Callable[[int], nn.Module] | None = None
    """Factory of the layer in the BatchNorm position (between each hidden Linear and its
    activation), given the width. Replaces config.norm."""
    init: Callable[[nn.Linear, Config], None] | None = None
    """init(linear, config) initializes one Linear in place; called for every Linear (and
    each layerwise head) after config.init, with torch's global RNG seeded."""
    optimizer: Callable[[list, Config], torch.optim.Optimizer] | None = None
    """optimizer(params, config) builds the optimizer over the trainable parameters (again at
    each layerwise stage). Replaces config.optimizer and config.lr."""

    def labels(self) -> dict[str, str]:
        """Which parts are user code, as 'module.qualname' (for histories and listings)."""
        return {k: _label(v) for k, v in vars(self).items() if v is not None}


DEFAULT_PARTS = Parts()


class Hidden(nn.Module):
    """One hidden layer: Linear -> [gradnorm pre] -> [norm] -> act -> [gradnorm post]."""

    def __init__(self, in_dim: int, cfg: Config, parts: Parts = DEFAULT_PARTS):
        super().__init__()
        self.linear = nn.Linear(in_dim, cfg.width)
        self.pre = GradNorm() if cfg.gradnorm == "pre" else nn.Identity()
        self.norm = (parts.norm or NORM_MODULES[cfg.norm])(cfg.width)
        self.act = (parts.activation or ACTIVATION_MODULES[cfg.activation])()
        self.post = GradNorm() if cfg.gradnorm == "post" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.act(self.norm(self.pre(self.linear(x)))))


class MLP(nn.Module):
    """784 -> n_layer hidden layers of `width` -> 10 logits, with optional residual adds."""

    def __init__(self, cfg: Config, parts: Parts = DEFAULT_PARTS):
        super().__init__()
        self.hidden = nn.ModuleList(
            Hidden(IN_DIM if i == 0 else cfg.width, cfg, parts) for i in range(cfg.n_layer)
        )
        self.out = nn.Linear(cfg.width, N_CLASS)
        # dst (1-based) -> src (1-based): h_dst = layer_dst(h_dst-1) + h_src
        self.skip_from = {dst: src for src, dst in cfg.skip_pairs}

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

    def activations(self) -> list[nn.Module]:
        """Every hidden activation module, input side first (the diagnostics' order)."""
        return [layer.act for layer in self.hidden]

    def layers(self) -> list[tuple[str, nn.Linear, torch.Tensor]]:
        """What the probe measures (probe.Probe's layout): each Linear's weight, input
        first, named L1, L2, ..., out."""
        lins = self.linears()
        return [(f"L{i + 1}" if i < len(lins) - 1 else "out", lin, lin.weight)
                for i, lin in enumerate(lins)]


class Stage(nn.Module):
    """Layerwise training: the first n hidden layers of a shared MLP plus a fresh head."""

    def __init__(self, mlp: MLP, n: int, head: nn.Linear):
        super().__init__()
        self.mlp, self.n, self.head = mlp, n, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mlp.features(x, self.n))


def init_linear(m: nn.Linear, cfg: Config) -> None:
    """Apply cfg.init to one Linear ('default' leaves PyTorch's init as built)."""
    if cfg.init == "default":
        return
    if cfg.init == "normal":
        nn.init.normal_(m.weight, mean=0.0, std=cfg.init_std)
    elif cfg.init == "xavier":
        nn.init.xavier_normal_(m.weight, gain=cfg.init_gain)
    elif cfg.init == "kaiming":  # std = gain / sqrt(fan_in)
        nn.init.normal_(m.weight, mean=0.0, std=cfg.init_gain / m.in_features ** 0.5)
    elif cfg.init == "orthogonal":
        nn.init.orthogonal_(m.weight, gain=cfg.init_gain)
    nn.init.zeros_(m.bias)


def init_weights(model: nn.Module, cfg: Config, parts: Parts = DEFAULT_PARTS) -> None:
    """Initialize every Linear of model: cfg.init, then the remedy's own init if any."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            init_linear(m, cfg)
            if parts.init is not None:
                parts.init(m, cfg)


def build(cfg: Config, parts: Parts = DEFAULT_PARTS) -> MLP:
    """Build and initialize the MLP for cfg (uses the global torch RNG: seed it first)."""
    model = MLP(cfg, parts)
    init_weights(model, cfg, parts)
    return model


def make_optimizer(params: list, cfg: Config, parts: Parts = DEFAULT_PARTS,
                   capturable: bool = False):
    """The optimizer over params: the remedy's own factory, else cfg.optimizer at cfg.lr.
    capturable: its step will run inside a CUDA graph (Adam keeps its step count on the
    device then)."""
    if parts.optimizer is not None:
        return parts.optimizer(params, cfg)
    # foreach: one kernel call per step for all tensors (bit-identical on CPU, faster)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, capturable=capturable, foreach=True)
    return torch.optim.SGD(params, lr=cfg.lr, foreach=True)
