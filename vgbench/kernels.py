"""What fused kernels compute and never show, computed again for the probe without
gradients: an attention's scores (whose softmax the probe measures like an activation) and
a recurrent module's gates. diagnostics.py reads them; nothing here writes .grad, steps an
optimizer or draws from a random generator."""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn

from vgbench import float64


def softmax_stats(h: torch.Tensor, dim: int, flat: float, quiet: float,
                  share: float) -> torch.Tensor:
    """diagnostics.activation_stats of a softmax over dim of h (its input: scores, -inf where
    masked), examples along dim 0; a unit is a row (the scores one query spreads over its
    keys). A row is saturated where its largest probability p has 1 - p below `flat`
    (diagnostics.SLOPE_FRACTION of 1/4, the largest Jacobian entry any softmax has: every
    entry of the row's Jacobian, the gradient's way back to its scores, is then below that
    too; p > 0.99875, as for the sigmoid). A row with one key allowed (a causal mask's first
    query) has no choice to make and is left out; a softmax has no off side (dead 0);
    preact_rms is over the allowed scores; inactive where 1 - p is below `quiet` on at least
    `share` of the examples."""
    h = h.detach().movedim(dim, -1)
    n = len(h)
    per = max(1, float64.CHUNK // max(1, h[0].numel()))
    tail = rows = sq = count = 0
    still = 0  # per row: examples with 1 - p below quiet
    for start in range(0, n, per):
        z = h[start:start + per].double()
        allowed = z > -math.inf
        gap = 1 - torch.softmax(z, -1).amax(-1)
        choice = allowed.sum(-1) >= 2
        tail = tail + (choice & (gap < flat)).sum()
        rows = rows + choice.sum()
        still = still + (choice & (gap < quiet)).flatten(1).sum(0)
        sq = sq + z.where(allowed, 0.0).square().sum()
        count = count + allowed.sum()
    saturated = tail / rows if int(rows) else torch.zeros((), dtype=torch.float64)
    rms = (sq / count).sqrt() if int(count) else torch.zeros((), dtype=torch.float64)
    inactive = (torch.as_tensor(still).double() / n >= share).double().mean()
    return torch.stack([saturated.double(), torch.zeros((), dtype=torch.float64),
                        rms.double(), inactive])


def attention_scores(name: str, func, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The scores (batch, heads, queries, keys; -inf where masked) whose softmax an attention
    call takes: F.scaled_dot_product_attention's or F.multi_head_attention_forward's (what
    nn.MultiheadAttention calls), computed again from its arguments without gradients (its
    fused kernels never form them); None for the forms not followed (MultiheadAttention
    with bias_k, add_zero_attn or static keys; unbatched inputs)."""
    with torch.no_grad():
        if name == "scaled_dot_product_attention":
            given = dict(zip(("query", "key", "value", "attn_mask", "dropout_p", "is_causal",
                              "scale", "enable_gqa"), args), **kwargs)
            q, k = given["query"], given["key"]
            if q.dim() < 3:
                return None
            if given.get("enable_gqa") and k.shape[-3] != q.shape[-3]:
                k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
            scale = given.get("scale") or 1 / math.sqrt(q.shape[-1])
            s = (q @ k.transpose(-2, -1)).float() * scale
            mask = given.get("attn_mask")
            if mask is not None:  # True: takes part
                s = s.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else s + mask
            if given.get("is_causal"):
                s = s.masked_fill(_causal(s), -math.inf)
            return s.reshape(-1, *s.shape[-3:]) if s.dim() > 3 else s
        bound = inspect.signature(func).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if (a["bias_k"] is not None or a["add_zero_attn"] or a["static_k"] is not None
                or a["query"].dim() != 3):
            return None
        heads, (t, n, _) = a["num_heads"], a["query"].shape
        if a["use_separate_proj_weight"]:
            wq, wk = a["q_proj_weight"], a["k_proj_weight"]
        else:
            wq, wk, _ = a["in_proj_weight"].chunk(3)
        bq = bk = None
        if a["in_proj_bias"] is not None:
            bq, bk, _ = a["in_proj_bias"].chunk(3)
        q = F.linear(a["query"], wq, bq).reshape(t, n, heads, -1).permute(1, 2, 0, 3)
        k = F.linear(a["key"], wk, bk).reshape(len(a["key"]), n, heads, -1).permute(1, 2, 0, 3)
        s = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.shape[-1])
        mask, pad = a["attn_mask"], a["key_padding_mask"]
        if mask is not None:  # True: masked out
            mask = mask.reshape(n, heads, *mask.shape[-2:]) if mask.dim() == 3 else mask
            s = s.masked_fill(mask, -math.inf) if mask.dtype == torch.bool else s + mask
        elif a["is_causal"]:
            s = s.masked_fill(_causal(s), -math.inf)
        if pad is not None:
            pad = pad[:, None, None, :]
            s = s.masked_fill(pad, -math.inf) if pad.dtype == torch.bool else s + pad
        return s


def _causal(s: torch.Tensor) -> torch.Tensor:
    return torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1)


GATES = {"LSTM": (("input_gate", nn.Sigmoid), ("forget_gate", nn.Sigmoid),
                  ("cell_input", nn.Tanh), ("output_gate", nn.Sigmoid), ("cell", nn.Tanh)),
         "GRU": (("reset_gate", nn.Sigmoid), ("update_gate", nn.Sigmoid),
                 ("candidate", nn.Tanh)),
         "RNN_TANH": (("tanh", nn.Tanh),), "RNN_RELU": (("relu", nn.ReLU),)}
"""The elementwise nonlinearities inside each recurrent module's fused kernel, by its mode."""


def gate_saturation(activations: list[dict], module: str) -> float:
    """A recurrent module's saturated share: the mean over the nonlinearities inside its
    kernel (GATES; inspect's activation rows named 'module:gate'), NaN where none was
    measured (the forms gate_names does not follow)."""
    shares = [a["saturated"] for a in activations if a["name"].startswith(module + ":")]
    return sum(shares) / len(shares) if shares else math.nan


def gate_names(module: nn.RNNBase, args: tuple) -> list[tuple[str, nn.Module]]:
    """(name, stand-in module) of every nonlinearity recurrent_gates gives for this call, in
    its order, without computing them (what the layout lists); [] for the forms not
    followed: bidirectional, LSTM projections, packed or unbatched input."""
    x = args[0] if args else None
    if (not torch.is_tensor(x) or x.dim() != 3 or not x.is_floating_point()
            or module.bidirectional or getattr(module, "proj_size", 0)
            or module.mode not in GATES):
        return []
    layers = module.num_layers
    return [(name + (f"_l{layer}" if layers > 1 else ""), cls())
            for layer in range(layers) for name, cls in GATES[module.mode]]


def recurrent_gates(module: nn.RNNBase, args: tuple) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, stand-in module, its inputs (batch, time, hidden)) for every nonlinearity
    inside a recurrent module's fused kernel (gate_names: GATES, per layer), computed again,
    without gradients, from the call's input, initial state and the module's weights: the
    kernel never shows them. Between stacked layers without the dropout (train mode would
    draw it)."""
    names = gate_names(module, args)
    if not names:
        return []
    x = args[0] if module.batch_first else args[0].transpose(0, 1)
    n, steps, hidden, lstm = len(x), x.shape[1], module.hidden_size, module.mode == "LSTM"
    hx = args[1] if len(args) > 1 else None
    zeros = x.new_zeros(module.num_layers, n, hidden)
    h0, c0 = (hx if lstm else (hx, None)) if hx is not None else (zeros, zeros)
    out = []
    with torch.no_grad():
        for layer in range(module.num_layers):
            w = [getattr(module, f"{k}_l{layer}", None) for k in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            into = F.linear(x, w[0], w[2])  # every step's input part at once
            h, c = h0[layer], c0[layer] if lstm else None
            pre, hs = [], []
            for t in range(steps):
                back = F.linear(h, w[1], w[3])
                if lstm:
                    i, f, g, o = (into[:, t] + back).chunk(4, 1)
                    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = torch.sigmoid(o) * torch.tanh(c)
                    pre.append((i, f, g, o, c))
                elif module.mode == "GRU":
                    (ir, iz, i_n), (hr, hz, h_n) = into[:, t].chunk(3, 1), back.chunk(3, 1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    cand = i_n + r * h_n
                    h = (1 - z) * torch.tanh(cand) + z * h
                    pre.append((ir + hr, iz + hz, cand))
                else:
                    a = into[:, t] + back
                    h = torch.tanh(a) if module.mode == "RNN_TANH" else torch.relu(a)
                    pre.append((a,))
                hs.append(h)
            out += [torch.stack(values, 1) for values in zip(*pre)]
            x = torch.stack(hs, 1)
    return [(name, standin, h) for (name, standin), h in zip(names, out)]


ATTENTION = frozenset({"scaled_dot_product_attention", "multi_head_attention_forward"})
"""Attention calls whose softmax is measured as an activation (nn.Softmax over the scores)."""
