"""Mean-field theory of the gradient profile of a random MLP at init.

Signal propagation through a wide random network (Poole et al. 2016, arXiv 1606.05340;
Schoenholz et al. 2017, arXiv 1611.01232; Glorot & Bengio 2010 for sigmoid nets), in the
conventions of docs/protocol.md ('Mean-field theory'):

- layer l's weights have variance sigma_w^2 / fan_in and its biases variance sigma_b^2;
- forward, per example: q_1 = Var(W_1) ||x||^2 + sigma_b^2 from the real input, then
  q_{l+1} = sigma_w^2 E[phi(h)^2] + sigma_b^2 with h ~ N(0, q_l) (Gauss-Hermite quadrature);
- backward: the squared norm of the error delta_l = dL/dh_l shrinks or grows by
  chi_l = sigma_w(l+1)^2 E[phi'(h_l)^2] per layer; at the fixed point q* of the hidden map
  the depth scale is xi = -1 / ln(chi*);
- a Linear layer's per-example weight gradient is delta_l a_{l-1}^T, so its norm is
  ||delta_l|| ||a_{l-1}||, with ||a_l||^2 = width E[phi(h_l)^2].

Pure functions of (activation, sigma_w, sigma_b, q) and of a config; torch is used only to
evaluate the activation (the very module the model builds) and its derivative. Nothing here
trains or imports pytest; measurement code calls it, never the reverse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from vgbench.config import Config
from vgbench.model import ACTIVATION_MODULES, IN_DIM, N_CLASS, Parts

GH_POINTS = 200
"""Quadrature nodes: even, so no node sits on a kink at 0 (ReLU's derivative there)."""
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(GH_POINTS)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)  # probabilists' weights: a N(0, 1) expectation
SOFTMAX_SAMPLES = 256
"""Monte-Carlo draws (fixed seed) for E||softmax(z) - e_y||^2 with z ~ N(0, q_out I)."""


class NotApplicable(ValueError):
    """The config has parts mean field (as implemented here) does not describe."""


def phi_and_derivative(activation: str | Callable[[], torch.nn.Module]):
    """(phi, phi') as numpy functions, from the model's own module (or a user factory)."""
    module = ACTIVATION_MODULES[activation]() if isinstance(activation, str) else activation()

    def both(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.tensor(h, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            y = module(x)
            (dy,) = torch.autograd.grad(y.sum(), x)
        return y.detach().numpy(), dy.numpy()

    return both


def expect(f: Callable[[np.ndarray], np.ndarray], q: np.ndarray | float) -> np.ndarray:
    """E[f(h)], h ~ N(0, q), by Gauss-Hermite quadrature; q may be an array (per example)."""
    q = np.asarray(q, dtype=np.float64)
    h = np.sqrt(q)[..., None] * _NODES  # (..., GH_POINTS)
    return (f(h) * _WEIGHTS).sum(-1)


Q_GAUSS_HERMITE = 10.0
"""Up to this variance the Gauss-Hermite nodes (0.16 sqrt(q) apart near 0) resolve the
activations' kinks and bends, which live on a scale of 1. Beyond it (saturated inits such
as N(0, 10): q ~ 3000) the integral runs on a fine grid in h (step <= 0.05), at a few
dozen values of q between which the moments are interpolated."""
_Q_STEPS = 48


_DENSE_TO = 1000.0
"""The fine grid's uniform part reaches |h| <= 1000; beyond, where every activation is
linear or constant, it steps geometrically (1% apart), so that even an exploding init
(q ~ 1e12) integrates on a few thousand points instead of billions."""


def _fine_moments(both, q: float) -> tuple[float, float]:
    """(E[phi^2], E[phi'^2]) at one large q: trapezoid on h in [-8 sqrt(q), 8 sqrt(q)]."""
    sd = math.sqrt(q)
    reach = 8 * sd
    dense = min(reach, _DENSE_TO)
    h = np.linspace(-dense, dense, int(2 * dense / min(0.05, sd / 50)) + 1)
    if reach > dense:
        tail = np.geomspace(dense, reach, int(math.log(reach / dense) / math.log(1.01)) + 2)[1:]
        h = np.concatenate([-tail[::-1], h, tail])
    density = np.exp(-h ** 2 / (2 * q)) / math.sqrt(2 * math.pi * q)
    y, dy = both(h)
    return (float(np.trapezoid(y ** 2 * density, h)),
            float(np.trapezoid(dy ** 2 * density, h)))


def moments(activation, q: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(E[phi(h)^2], E[phi'(h)^2]) for h ~ N(0, q); q may be an array (per example)."""
    both = phi_and_derivative(activation)
    shape = np.shape(q)
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):  # an exploding net: inf is the answer
        y, dy = both(np.sqrt(q)[..., None] * _NODES)
        e_phi2, e_dphi2 = (y ** 2 * _WEIGHTS).sum(-1), (dy ** 2 * _WEIGHTS).sum(-1)
        large = np.isfinite(q) & (q > Q_GAUSS_HERMITE)
        if large.any():
            lo, hi = q[large].min(), q[large].max()
            grid = np.geomspace(lo, hi, _Q_STEPS) if hi > lo * (1 + 1e-9) else np.array([lo])
            fine = np.array([_fine_moments(both, g) for g in grid])  # (steps, 2)
            for k, out in enumerate((e_phi2, e_dphi2)):
                out[large] = (np.interp(np.log(q[large]), np.log(grid), fine[:, k])
                              if len(grid) > 1 else fine[0, k])
    return e_phi2.reshape(shape), e_dphi2.reshape(shape)


def qmap(activation, sigma_w2: float, sigma_b2: float, q: np.ndarray | float) -> np.ndarray:
    """The next layer's pre-activation variance: sigma_w^2 E[phi(h)^2] + sigma_b^2."""
    return sigma_w2 * moments(activation, q)[0] + sigma_b2


def chi(activation, sigma_w2: float, q: np.ndarray | float) -> np.ndarray:
    """The backward factor of the squared error norm: sigma_w^2 E[phi'(h)^2]."""
    return sigma_w2 * moments(activation, q)[1]


def fixed_point(activation, sigma_w2: float, sigma_b2: float, q0: float = 1.0,
                iters: int = 500) -> float:
    """q* of the hidden layers' q map (iterated from q0)."""
    q = q0
    for _ in range(iters):
        new = float(qmap(activation, sigma_w2, sigma_b2, q))
        if abs(new - q) <= 1e-12 * max(1.0, q):
            return new
        q = new
    return q


def depth_scale(chi_star: float) -> float:
    """xi = -1 / ln(chi*): layers over which the squared gradient norm changes by e
    (inf at chi* = 1; for chi* > 1, where gradients explode, the same formula is negative,
    and its magnitude is the explosion's depth scale)."""
    if abs(chi_star - 1) < 1e-9:  # critical, up to the quadrature's rounding
        return math.inf
    return -1.0 / math.log(chi_star)


def weight_variances(cfg: Config) -> list[tuple[float, float]]:
    """(sigma_w^2, sigma_b^2) of every Linear (input layer first), from cfg's init.

    PyTorch's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), gives sigma_w^2 = 1/3 and
    bias variance 1 / (3 fan_in); the other schemes have zero biases.
    """
    dims = [IN_DIM] + [cfg.width] * cfg.n_layer + [N_CLASS]
    out = []
    for fan_in, fan_out in zip(dims[:-1], dims[1:]):
        if cfg.init == "default":
            out.append((1 / 3, 1 / (3 * fan_in)))
            continue
        if cfg.init == "normal":
            sw2 = fan_in * cfg.init_std ** 2
        elif cfg.init == "xavier":
            sw2 = cfg.init_gain ** 2 * 2 * fan_in / (fan_in + fan_out)
        elif cfg.init == "kaiming":
            sw2 = cfg.init_gain ** 2
        elif cfg.init == "orthogonal":  # unit-norm rows (fan_out <= fan_in) or columns
            sw2 = cfg.init_gain ** 2 * (1.0 if fan_out <= fan_in else fan_in / fan_out)
        else:  # pragma: no cover - Config validates init
            raise NotApplicable(f"no weight variance for init {cfg.init!r}")
        out.append((sw2, 0.0))
    return out


def applicable(cfg: Config, parts: Parts = Parts()) -> str | None:
    """None when mean field describes cfg at init; else why not."""
    if cfg.norm is not None or parts.norm is not None:
        return "normalization layers couple the units (and, for BatchNorm, the examples)"
    if cfg.skip_pairs:
        return "residual adds correlate a layer's input with its output"
    if cfg.gradnorm is not None:
        return "the gradient-normalization layer rescales the backward pass"
    if parts.init is not None:
        return "a user init: its weight variance is not known in closed form"
    return None


def _output_error(q_out: np.ndarray) -> np.ndarray:
    """E||softmax(z) - e_y||^2 for z ~ N(0, q_out I) (the classes are exchangeable, so
    y = 0 wlog), by Monte Carlo with a fixed seed; per example."""
    z = np.random.default_rng(0).standard_normal((SOFTMAX_SAMPLES, N_CLASS))
    z = np.sqrt(q_out)[:, None, None] * z  # (examples, samples, classes)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[..., 0] -= 1.0
    return (p ** 2).sum(-1).mean(-1)


@dataclass
class Prediction:
    """Mean-field predictions at init for one config and one batch of inputs."""

    grad_rms: list[float]
    """Per Linear (input first): RMS over the examples of the per-example weight-gradient
    norm ||delta_l|| ||a_{l-1}||."""
    ratio: float
    """R: the first Linear's grad_rms over the output layer's."""
    q: list[float]
    """Per hidden layer, then the output: pre-activation variance (mean over examples)."""
    chi: list[float]
    """Per hidden layer: sigma_w^2 (of the layer above) E[phi'(h_l)^2] (mean over examples)."""
    q_star: float
    """Fixed point of the hidden layers' q map."""
    chi_star: float
    """chi at the fixed point."""
    xi: float
    """Depth scale -1 / ln(chi*)."""

    @property
    def error_decay_per_layer(self) -> float:
        """Decades by which the backpropagated error ||delta|| shrinks per layer toward the
        input at the fixed point: -log10(chi*) / 2 (negative: it grows). The weight
        gradients follow it only where activations do not shrink too (not for ReLU)."""
        return -math.log10(self.chi_star) / 2 if self.chi_star > 0 else math.inf

    @property
    def decay_per_layer(self) -> float:
        """Decades by which the predicted weight-gradient norms shrink per layer toward the
        input, fitted over the hidden layers like a measurement (fit_decay_per_layer)."""
        return fit_decay_per_layer(self.grad_rms) if len(self.grad_rms) > 3 else math.nan

    def to_dict(self) -> dict:
        """JSON-ready (xi may be inf, which strict JSON writes as null)."""
        return {"grad_rms": self.grad_rms, "ratio": self.ratio, "q": self.q, "chi": self.chi,
                "q_star": self.q_star, "chi_star": self.chi_star, "xi": self.xi,
                "error_decay_per_layer": self.error_decay_per_layer,
                "decay_per_layer": self.decay_per_layer}


def predict(cfg: Config, x: torch.Tensor | np.ndarray, parts: Parts = Parts(),
            variances: list[tuple[float, float]] | None = None) -> Prediction:
    """Mean-field prediction for cfg's network at init on inputs x (n, 784).

    variances overrides weight_variances(cfg) (e.g. to test a hypothesis); NotApplicable
    when applicable() says why not.
    """
    why = applicable(cfg, parts)
    if why is not None:
        raise NotApplicable(why)
    with np.errstate(over="ignore", invalid="ignore"):  # an exploding net predicts inf
        return _predict(cfg, x, parts, variances)


def _predict(cfg: Config, x, parts: Parts, variances) -> Prediction:
    act = parts.activation or cfg.activation
    var = variances or weight_variances(cfg)
    x = np.asarray(x.detach().cpu().double() if isinstance(x, torch.Tensor) else x,
                   dtype=np.float64).reshape(len(x), -1)
    x2 = (x ** 2).sum(1)  # (examples,)
    sw2, sb2 = var[0]
    q = sw2 / IN_DIM * x2 + sb2  # layer 1, per example
    qs, m_phi, m_dphi = [], [], []
    for layer in range(1, cfg.n_layer + 1):
        e_phi2, e_dphi2 = moments(act, q)
        qs.append(q)
        m_phi.append(e_phi2)
        m_dphi.append(e_dphi2)
        sw2, sb2 = var[layer]  # the next Linear (hidden, or the output layer)
        q = sw2 * e_phi2 + sb2
    q_out = q
    # backward: squared error norms, output layer first
    d2 = [_output_error(q_out)]  # ||delta_out||^2
    chis = []
    for layer in range(cfg.n_layer, 0, -1):
        c = var[layer][0] * m_dphi[layer - 1]  # through W_{layer+1}, then phi'(h_layer)
        chis.append(c)
        d2.append(d2[-1] * c)
    d2 = d2[::-1]  # hidden 1..H, then the output
    a2 = [x2] + [cfg.width * m for m in m_phi]  # ||a_{l-1}||^2 for each Linear's input
    rms = [float(np.sqrt(np.mean(d * a))) for d, a in zip(d2, a2)]
    hidden_w2, hidden_b2 = var[1] if cfg.n_layer > 1 else var[0]
    q_star = fixed_point(act, hidden_w2, hidden_b2)
    chi_star = float(chi(act, hidden_w2, q_star))
    return Prediction(
        grad_rms=rms, ratio=rms[0] / rms[-1] if rms[-1] > 0 else math.nan,
        q=[float(np.mean(v)) for v in qs + [q_out]],
        chi=[float(np.mean(c)) for c in chis[::-1]],
        q_star=q_star, chi_star=chi_star, xi=depth_scale(chi_star))


def fit_decay_per_layer(norms: list[float]) -> float:
    """Decades by which measured weight-gradient norms shrink per layer toward the input:
    the least-squares slope of log10(norm) against the layer index over the hidden layers
    (the first and the output layer left out: their inputs differ from the others')."""
    hidden = np.log10(np.asarray(norms[1:-1], dtype=np.float64))
    if len(hidden) < 2:
        raise ValueError("fitting a slope needs at least 2 hidden layers (depth >= 3)")
    if not np.isfinite(hidden).all():
        return math.nan  # a norm of 0 (float32 underflow): no slope
    return float(np.polyfit(np.arange(len(hidden)), hidden, 1)[0])
