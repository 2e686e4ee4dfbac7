"""Per-layer diagnostics: the measures themselves and that probing changes nothing."""

import copy
import math
from types import SimpleNamespace
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tests.test_train import tiny_splits, without_times
from vgbench import registry, train
from vgbench.config import Config
from vgbench.model import build
from torch import nn

from vgbench.diagnostics import activation_stats, slope_profile, slopes
from vgbench.point import HIDDEN_METRICS, LAYER_METRICS
from vgbench.remedy import BASELINE


def test_saturation_and_dead_units_on_hand_made_inputs():
    sig = torch.tensor([[0.0, 7.0, -7.0, 6.0, 40.0, -800.0]])  # slope/max: 1, <.005 (x2),
    sat, dead, pre, inactive = activation_stats(nn.Sigmoid(), sig, *slope_profile(nn.Sigmoid()))
    assert sat.item() == pytest.approx(4 / 6)  # 7, -7, 40 (rounds to slope 0), -800
    relu = torch.tensor([[-1.0, 0.0, 2.0, 1e-3], [-2.0, 1.0, 3.0, -1.0]])
    sat, dead, pre, inactive = activation_stats(nn.ReLU(), relu, *slope_profile(nn.ReLU()))
    assert sat.item() == 0.0  # a rectifier's zero side is off, not saturated
    assert dead.item() == pytest.approx(1 / 4)  # unit 0 only: off on both examples
    assert inactive.item() == pytest.approx(1 / 4)
    assert pre.item() == pytest.approx(relu.square().mean().sqrt().item())
    leaky = torch.tensor([[-5.0, 5.0]])
    sat, dead, _, _ = activation_stats(nn.LeakyReLU(0.01), leaky,
                                       *slope_profile(nn.LeakyReLU(0.01)))
    assert sat.item() == 0.0 and dead.item() == 0.0  # the leak is a linear regime


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_slopes_without_autograd_are_autograds(inplace):
    """slopes() reads a plain ReLU's slope as h > 0: exactly what autograd gives, h = 0 and
    -0.0 included, so the suite's relu histories stay what they were."""
    h = torch.tensor([[-1.0, 0.0, -0.0, 1e-30, -1e-30, 2.0]], dtype=torch.float32)
    x = h.double().requires_grad_(True)
    (expected,) = torch.autograd.grad(nn.ReLU(inplace=inplace).double()(x.clone()).sum(), x)
    got = slopes(nn.ReLU(inplace=inplace), h)
    assert got.dtype == torch.float64 and torch.equal(got, expected)


@pytest.mark.parametrize("name", ["baseline", "batchnorm", "layerwise", "gradnorm_pre"])
def test_probing_leaves_training_bit_identical(name):
    cfg = replace(registry.get(name).config, epochs=2, stage_epochs=1, batch_size=128)
    on = train.train(cfg, tiny_splits(), name)
    off = train.train(replace(cfg, diagnostics=False), tiny_splits(), name)
    d_on, d_off = without_times(on), without_times(off)
    for key in ("diagnostics", "grad_ratio_init", "grad_ratio_final", "config", "init_profile",
                "theory", "diagnosis"):
        d_on.pop(key), d_off.pop(key)
    assert d_on == d_off
    assert on.diagnostics is not None and off.diagnostics is None


def test_probe_restores_batchnorm_statistics():
    cfg = replace(registry.get("batchnorm").config, epochs=1, batch_size=256)
    run = train.Run(cfg, tiny_splits(), "batchnorm")
    bn = run.mlp.hidden[0].norm
    before = (bn.running_mean.clone(), bn.num_batches_tracked.clone())
    run.probe.measure(run.mlp, 99)
    assert torch.equal(bn.running_mean, before[0]) and bn.num_batches_tracked == before[1]
    assert all(p.grad is None for p in run.mlp.parameters())


def test_history_holds_per_layer_arrays_every_epoch():
    cfg = replace(BASELINE, epochs=3, batch_size=256)
    h = train.train(cfg, tiny_splits(), "baseline")
    d = h.diagnostics
    assert d["epoch"] == [0, 1, 2, 3]
    for key in LAYER_METRICS:
        assert [len(v) for v in d[key]] == [8] * 4  # 7 hidden + output
    for key in HIDDEN_METRICS:
        assert [len(v) for v in d[key]] == [7] * 4
    assert d["weight_change"][0] == [0.0] * 8
    assert h.grad_ratio_init == d["grad_norm"][0][0] / d["grad_norm"][0][-1]
    assert h.grad_ratio_final == d["grad_norm"][-1][0] / d["grad_norm"][-1][-1]


def init_grad_norms(name, splits, seed=42):
    cfg = replace(registry.get(name).config, seed=seed, epochs=0)
    return train.Run(cfg, splits, name).probe.points["grad_norm"][0]


# Thresholds from the real data, probe of 512 train samples, seeds 42-46 (measured
# 2026-11-27, CPU): baseline ratio 3.2e-6..6.1e-6 -> bound 1e-4 (16x margin); relu
# 1.07..1.40 and batchnorm 0.47..0.88 -> bound 1e-2 (47x margin).
@pytest.mark.parametrize("seed", [42, 43, 44])
def test_baseline_gradients_vanish_toward_the_input(real_data, seed):
    from vgbench import data

    g = init_grad_norms("baseline", data.split(real_data, seed), seed)
    assert all(a < b for a, b in zip(g, g[1:])), g  # grows layer by layer to the output
    assert g[0] / g[-1] < 1e-4


@pytest.mark.parametrize("name", ["relu", "batchnorm"])
def test_remedies_keep_the_first_layer_alive(real_splits, name):
    g = init_grad_norms(name, real_splits)
    assert g[0] / g[-1] > 1e-2


def test_per_example_rms_equals_explicit_per_example_gradients():
    """||delta_i|| ||a_i|| is example i's own weight-gradient norm (no batch coupling)."""
    from vgbench.diagnostics import layer_gradients

    torch.manual_seed(0)
    net = build(Config(n_layer=3, width=16)).double()
    x, y = torch.rand(8, 784, dtype=torch.float64), torch.randint(0, 10, (8,))
    rms = layer_gradients(net, x, y).rms
    per_example = []
    for i in range(8):
        loss = torch.nn.functional.cross_entropy(net(x[i:i + 1]), y[i:i + 1])
        grads = torch.autograd.grad(loss, [lin.weight for lin in net.linears()])
        per_example.append([g.norm() for g in grads])
    explicit = torch.tensor(per_example).square().mean(0).sqrt()
    torch.testing.assert_close(torch.stack(rms), explicit, rtol=1e-10, atol=0)


def _trained_optimizer(kind, params):
    """An optimizer of `kind` with state from two real steps on params."""
    make = {"SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                             weight_decay=1e-3),
            "Adam": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
            "AdamW": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
            "RMSprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
            "Adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
            "NAdam": lambda p: torch.optim.NAdam(p, lr=1e-2), "RAdam": lambda p: torch.optim.RAdam(p),
            "Adamax": lambda p: torch.optim.Adamax(p), "Adadelta": lambda p: torch.optim.Adadelta(p),
            "ASGD": lambda p: torch.optim.ASGD(p, lr=1e-2, t0=0),
            "Rprop": lambda p: torch.optim.Rprop(p)}[kind]
    opt = make(params)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    opt.zero_grad(set_to_none=True)
    return opt


@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam",
                                  "RAdam", "Adamax", "Adadelta", "ASGD", "Rprop"])
def test_the_updater_steps_piece_by_piece_as_the_whole_optimizer_would(kind, monkeypatch):
    """The pieced step (every torch elementwise optimizer, state from real steps, a weight of
    five pieces, a channels-last one, clipping, a parameter without gradient) is the
    deep-copied whole optimizer's step (bit for bit in one piece, as the suite's weights
    are), is the real step to float32's rounding, and leaves the real optimizer and weights
    as they were."""
    from vgbench import float64
    from vgbench.updater import Updater
    monkeypatch.setattr(float64, "CHUNK", 7)
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 7)), nn.Parameter(torch.randn(3)),
              nn.Parameter(torch.randn(2, 3, 3, 3).to(memory_format=torch.channels_last))]
    opt = _trained_optimizer(kind, params)
    before = [p.detach().clone() for p in params]
    state = {k: v.clone() if torch.is_tensor(v) else v
             for p in params for k, v in opt.state[p].items()}
    grads = [torch.randn_like(params[0]), None, torch.randn_like(params[2])]
    for clip in (None, 0.5):
        up = Updater(opt, clip_norm=clip)
        pieced = list(up.deltas(grads, scale=2.0))
        with torch.no_grad():
            whole = list(up._whole(grads, 2.0, pieced_coef(up, grads, 2.0)))
        assert [i for i, _, _ in pieced] == [0] * 5 + [1] + [2] * 8  # 35, 3 and 54 values
        real = copy.deepcopy(opt)  # and the real step, taken on copies (float32)
        twins = [p for g in real.param_groups for p in g["params"]]
        for t, g in zip(twins, grads):
            t.grad = torch.zeros_like(t) if g is None else g * 2.0
        if clip is not None:
            nn.utils.clip_grad_norm_(twins, clip)
        real.step()
        for i, _, d in whole:
            got = torch.cat([d for j, _, d in pieced if j == i])
            assert got.dtype == torch.float64
            # one piece: bit for bit; pieces: vectorized and scalar loops may round apart
            assert torch.equal(got, d) if i == 1 else torch.allclose(got, d, rtol=1e-13,
                                                                     atol=0)
            taken = (twins[i] - params[i]).detach().reshape(-1).double()
            assert torch.allclose(got, taken, rtol=1e-4, atol=1e-6)
        assert any(bool(d.any()) for _, _, d in pieced)
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    after = {k: v for p in params for k, v in opt.state[p].items()}
    assert all(torch.equal(v, after[k]) if torch.is_tensor(v) else v == after[k]
               for k, v in state.items())


def pieced_coef(up, grads, scale):
    """The clipping coefficient the Updater applies (1 without clipping)."""
    if up.clip_norm is None:
        return 1.0
    total = torch.stack([torch.zeros(()) if g is None else (g.double() * scale).norm()
                         for g in grads]).norm()
    return (up.clip_norm / (total + 1e-6)).clamp(max=1.0)


def test_another_optimizer_is_copied_whole():
    """An optimizer that is not one of torch's elementwise ones (here a subclass, whose step
    may do anything) gets the whole deep copy: the same step, nothing touched."""
    from vgbench.updater import Updater

    class Mine(torch.optim.SGD):
        def step(self, closure=None):
            for g in self.param_groups:  # couples the parameters: one shared scale
                total = torch.stack([p.grad.norm() for p in g["params"]]).norm()
                for p in g["params"]:
                    p.add_(p.grad / total, alpha=-g["lr"])
    w = [nn.Parameter(torch.ones(4, 4)), nn.Parameter(torch.ones(3))]
    opt = Mine(w, lr=0.1)
    d = list(Updater(opt).deltas([torch.ones(4, 4), torch.ones(3)]))
    assert [(i, s) for i, s, _ in d] == [(0, slice(None)), (1, slice(None))]
    assert torch.allclose(d[0][2], torch.full((16,), -0.1 / 19 ** 0.5, dtype=torch.float64))
    assert all(torch.equal(p, torch.ones_like(p)) for p in w)


@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.ReLU(), nn.LeakyReLU(0.01), nn.GELU(),
                                 nn.Hardtanh()])
def test_activation_statistics_in_pieces_are_the_whole(act, monkeypatch):
    """activation_stats over a few examples at a time gives what one pass over all gives."""
    from vgbench import float64
    torch.manual_seed(0)
    h = torch.randn(64, 6, 5) * 4
    h[:, 0] = -1.0  # a dead unit for the rectifiers
    h[:63, 1] = -1.0  # off on all but one example: inactive, not dead
    shape = slope_profile(act)
    whole = activation_stats(act, h, *shape)
    monkeypatch.setattr(float64, "CHUNK", 61)  # two examples a piece (30 values each)
    pieced = activation_stats(act, h, *shape)
    assert torch.allclose(pieced, whole, rtol=1e-12, atol=0)
    assert pieced[0] == whole[0] and pieced[1] == whole[1] and pieced[3] == whole[3]


class SubReLU(nn.ReLU):
    """A ReLU that is not type nn.ReLU: activation_stats takes its slopes the general way."""


@pytest.mark.parametrize("chunk", [None, 61])
def test_a_plain_relus_statistics_without_slopes_are_the_general_ones(chunk, monkeypatch):
    """activation_stats counts a plain nn.ReLU's off units from h > 0 directly (no float64
    slopes): the same numbers, bit for bit, as through its slopes, dead units and inputs at
    exactly 0 included."""
    from vgbench import float64
    if chunk:
        monkeypatch.setattr(float64, "CHUNK", chunk)
    torch.manual_seed(0)
    h = torch.randn(64, 6, 5) * 4
    h[:, 0] = -1.0  # dead
    h[:, 2, 2] = 0.0  # dead too: a ReLU's slope at exactly 0 is 0
    plain = activation_stats(nn.ReLU(), h, *slope_profile(nn.ReLU()))
    general = activation_stats(SubReLU(), h, *slope_profile(SubReLU()))
    assert torch.equal(plain, general) and plain[1] > 0 and plain[3] > 0


def test_the_loss_after_the_step_is_the_stepped_models_and_nothing_stays_moved(monkeypatch):
    """take_step's loss is the loss of a copy of the model that really took the step (the
    weights in pieces, one of them channels-last), and afterwards every weight and norm
    statistic is back bit for bit."""
    from vgbench import float64
    from vgbench.probe import Probe
    from vgbench.updater import Updater
    monkeypatch.setattr(float64, "CHUNK", 50)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 10))
    model[0].weight.data = model[0].weight.data.to(memory_format=torch.channels_last)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    model.load_state_dict(before)  # the forward above moved the running statistics
    nothing = SimpleNamespace(layers=list, activations=list)  # take_step needs no layout
    given = list(grads)
    norms, gain, after = Probe(model, x, y, nothing).take_step(model, Updater(opt), given)
    assert given == []  # each gradient dropped once used
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p, g in zip(twin.parameters(), grads):
            p.add_(g, alpha=-0.5)
    expected = nn.functional.cross_entropy(twin.train()(x), y).item()
    assert after == pytest.approx(expected, rel=1e-5) and after != pytest.approx(
        nn.functional.cross_entropy(copy.deepcopy(model)(x), y).item(), rel=1e-3)
    assert [n.item() for n in norms] == pytest.approx([0.5 * g.norm().item() for g in grads])
    assert gain == pytest.approx(2.0)  # SGD's step doubles with the gradient
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("chunk", [50, 10_000])
def test_the_step_gain_is_taken_on_the_first_elements_of_each_parameter_past_chunk(
        monkeypatch, chunk):
    """Point.step_gain: how much longer the step gets for twice the gradient, over every
    element where the parameters have at most float64.CHUNK, else over the first
    CHUNK / (number of parameters) elements of each; with weight decay the step is
    -lr (g + wd w), so the gain depends on which elements are read."""
    from vgbench import float64
    from vgbench.probe import Probe
    from vgbench.updater import Updater
    monkeypatch.setattr(float64, "CHUNK", chunk)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10))
    x, y = torch.randn(8, 20), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    params = list(model.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
    nothing = SimpleNamespace(layers=list, activations=list)
    _, gain, _ = Probe(model, x, y, nothing).take_step(model, Updater(opt), list(grads))
    cut = -(-chunk // len(params)) if sum(p.numel() for p in params) > chunk else None

    def gain_over(n):  # ||-lr (2g + wd w)|| / ||-lr (g + wd w)|| on each one's first n
        g = torch.cat([t.reshape(-1)[:n] for t in grads]).double()
        w = torch.cat([p.detach().reshape(-1)[:n] for p in params]).double()
        return ((2 * g + 0.5 * w).norm() / (g + 0.5 * w).norm()).item()
    assert gain == pytest.approx(gain_over(cut), rel=1e-9)
    assert (gain == pytest.approx(gain_over(None), rel=1e-9)) == (cut is None)  # a sample


def test_a_softmax_row_is_saturated_when_one_key_takes_nearly_all():
    """A softmax's statistics (kernels.softmax_stats): rows whose largest probability is
    above 1 - SLOPE_FRACTION / 4 are saturated, a spread row is not, a row with one key
    allowed (a causal mask's first query) is left out; a softmax has no dead units;
    preact_rms over the allowed scores."""
    softmax = nn.Softmax(-1)
    assert slope_profile(softmax) == (0.25, False)

    def stats(h):
        return activation_stats(softmax, h, *slope_profile(softmax))
    spread = torch.zeros(4, 2, 5)  # (examples, rows, keys): uniform
    peaked = torch.tensor([0.0, 20.0, 0.0, 0.0, 0.0]).expand(4, 2, 5)  # 1 - p = 8e-9
    sat, dead, pre, inactive = stats(torch.cat([spread, peaked], 1))
    assert (sat.item(), dead.item(), inactive.item()) == (0.5, 0.0, 0.5)
    assert pre.item() == pytest.approx(math.sqrt(8 * 20.0**2 / 80))  # 8 rows hold a 20
    causal = torch.zeros(4, 3, 3).masked_fill(torch.ones(3, 3, dtype=torch.bool).triu(1),
                                              -math.inf)
    assert stats(causal)[0].item() == 0.0  # row 0 has one key: not counted
    almost = torch.tensor([0.0, 7.0, 0.0])  # p = 0.9973: 1 - p = 2.7e-3 > 1.25e-3
    assert stats(almost.expand(2, 1, 3))[0].item() == 0.0


def test_attention_scores_are_those_the_attention_takes_the_softmax_of():
    """The scores ForwardCalls measures for nn.MultiheadAttention (masks of both kinds,
    padding) and F.scaled_dot_product_attention (causal, boolean mask, grouped heads):
    their softmax is the attention's own weights."""
    from vgbench.diagnostics import ForwardCalls

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(3, 5, 16, requires_grad=True)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)
    pad = torch.tensor([[False] * 4 + [True]] * 3)
    for mask in (causal, torch.zeros(5, 5).masked_fill(causal, -math.inf)):
        got = []
        padding = pad if mask.dtype == torch.bool else torch.zeros(3, 5).masked_fill(
            pad, -math.inf)  # of the mask's kind, as MultiheadAttention asks
        with ForwardCalls(lambda m, h, inplace, got=got: got.append((m, h))):
            mha(x, x, x, attn_mask=mask, key_padding_mask=padding, need_weights=False)
        weights = mha(x, x, x, attn_mask=mask, key_padding_mask=padding,
                      average_attn_weights=False)[1]
        assert len(got) == 1 and isinstance(got[0][0], nn.Softmax)
        torch.testing.assert_close(torch.softmax(got[0][1], -1), weights)
    q = torch.randn(2, 4, 6, 8, requires_grad=True)
    k, v = torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    keep = torch.rand(6, 6) > 0.3
    keep.fill_diagonal_(True)
    for kw, allowed in (({"is_causal": True}, ~torch.ones(6, 6, dtype=torch.bool).triu(1)),
                        ({"attn_mask": keep}, keep)):
        got = []
        with ForwardCalls(lambda m, h, inplace, got=got: got.append(h)):
            F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
        kk = k.repeat_interleave(2, dim=1)
        ref = ((q @ kk.transpose(-2, -1)) / math.sqrt(8)).masked_fill(~allowed, -math.inf)
        torch.testing.assert_close(torch.softmax(got[0], -1), torch.softmax(ref, -1))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_the_gates_inside_a_recurrent_kernel_are_computed_again_exactly(kind):
    """recurrent_gates follows the fused kernel: from its gates, the hidden states it gives
    are the module's own output (two layers, batch_first or not, a given initial state)."""
    from vgbench.kernels import GATES, recurrent_gates

    torch.manual_seed(0)
    for batch_first in (True, False):
        m = getattr(nn, kind)(5, 7, num_layers=2, batch_first=batch_first)
        x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
        h0 = torch.randn(2, 3, 7)
        state = (h0, torch.randn(2, 3, 7)) if kind == "LSTM" else h0
        out = m(x, state)[0]
        out = out if batch_first else out.transpose(0, 1)
        got = recurrent_gates(m, (x, state))
        names = [n for n, _, _ in got]
        per = len(GATES[m.mode])
        assert names[:per] == [f"{n}_l0" for n, _ in GATES[m.mode]] and len(got) == 2 * per
        last = {n.rsplit("_l", 1)[0]: h for n, _, h in got[per:]}
        if kind == "LSTM":
            h = torch.sigmoid(last["output_gate"]) * torch.tanh(last["cell"])
            torch.testing.assert_close(h, out)
        elif kind == "RNN":
            torch.testing.assert_close(torch.tanh(last["tanh"]), out)
        assert all(h.shape == (3, 6, 7) for _, _, h in got)
    assert recurrent_gates(nn.LSTM(5, 7, bidirectional=True), (torch.randn(3, 6, 5),)) == []
