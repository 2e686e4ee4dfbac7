"""Any model: vgbench.inspect, vgbench.assert_gradient_flow and the vg_inspect fixture."""

import copy
import json
import math
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vgbench
from tests.test_plugin import not_an_xdist_worker  # noqa: F401 - autouse
from vgbench import model as M
from vgbench import diagnose, registry
from vgbench.probe import Probe
from vgbench.updater import Updater
from vgbench.inspection import InspectError

pytest_plugins = ["pytester"]


def images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def cnn(act, norm: bool, depth: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    layers, c = [], 1
    for _ in range(depth):
        layers += [nn.Conv2d(c, 16, 3, padding=1), *([nn.BatchNorm2d(16)] if norm else []),
                   act()]
        c = 16
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_a_deep_sigmoid_cnn_is_vanishing_and_relu_bn_is_healthy():
    x, y = images()
    bad = vgbench.inspect(cnn(nn.Sigmoid, False), x, y)
    assert bad.verdict["verdict"] == "vanishing" and bad.verdict["layer_name"] == "0.weight"
    good = vgbench.inspect(cnn(nn.ReLU, True), x, y)
    assert good.verdict["verdict"] == "healthy", good.table()
    names = [r["name"] for r in good.layers]
    assert names[:5] == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight"]
    assert names[-2:] == ["26.weight", "26.bias"]
    assert [r["role"] for r in good.layers[:3]] == ["weight", "vector", "norm"]
    assert [r["in_verdict"] for r in good.layers[:3]] == [True, False, False]  # reported
    assert len(good.activations) == 8 and good.activations[0]["module"] == "ReLU"
    assert all(r["grad_rms"] > 0 for r in good.layers if r["role"] == "weight")
    assert all(r["grad_rms"] is None for r in good.layers if r["module"] == "BatchNorm2d")
    assert "batch-mean gradient norms" not in " ".join(good.notes)  # convs are exact too


def test_dead_relu_units_are_named():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64),
                        nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        net[3].bias.fill_(-10.0)  # every unit of the second hidden layer off
    x, y = images()
    r = vgbench.inspect(net, x, y)
    assert r.verdict["verdict"] == "dead units" and r.verdict["layer_name"] == "4"
    assert r.activations[1]["dead"] == 1.0 and "100% of 4 (ReLU)'s units" in r.describe()
    with pytest.raises(AssertionError,
                       match=r"verdict dead units from 4: 100% of 4 \(ReLU\)'s units"):
        vgbench.assert_gradient_flow(net, (x, y))


def test_the_suites_mlp_is_one_case_of_the_same_probe(real_data):
    """inspect on the suite's MLP measures what the suite's probe does: the same numbers."""
    from vgbench import data

    cfg = replace(registry.get("baseline").config, epochs=0)
    s = data.split(real_data, 42, limit=1024)
    x, y = s.train_x[:256], s.train_y[:256]
    mlp = M.build(cfg)
    opt = M.make_optimizer(list(mlp.parameters()), cfg)
    report = vgbench.inspect(mlp, x, y, optimizer=opt)
    probe = Probe(mlp, x, y)
    probe.measure(mlp, 0, Updater(opt))
    weights = [r for r in report.layers if r["role"] == "weight"]
    assert [r["name"] for r in report.layers if r["role"] == "vector"] == [
        f"{r['name'][:-len('weight')]}bias" for r in weights]  # reported, not in the verdict
    assert [r["grad_norm"] for r in weights] == probe.points["grad_norm"][0]
    assert [r["grad_rms"] for r in weights] == probe.points["grad_rms"][0]
    assert [r["update_ratio"] for r in weights] == probe.points["update_ratio"][0]
    assert [a["saturated"] for a in report.activations] == probe.points["saturated"][0]
    assert report.verdict["verdict"] == "vanishing"  # the baseline, as the suite says
    assert [r["name"] for r in weights] == [f"hidden.{i}.linear.weight"
                                            for i in range(7)] + ["out.weight"]


def test_inspect_leaves_the_model_as_it_was():
    net = cnn(nn.ReLU, True, depth=2)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = images()
    r = vgbench.inspect(net, x, y)
    assert not net.training and any("was in eval mode" in n for n in r.notes)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    assert all(p.grad is None for p in net.parameters())


class LastStep(nn.Module):
    """An LSTM read at its last step: the gradient through time comes from the same backward."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


@pytest.mark.parametrize("kind", ["cnn with dropout", "lstm"])
def test_inspect_runs_the_model_forward_twice_and_backward_once(kind):
    """The probe's own forward finds the layout (layout.Discovery) and measures it, its
    backward gives the gradients and the gradient through time, and one more forward takes
    the would-be step; the global random stream is left as it was (dropout draws from the
    probe's own)."""
    torch.manual_seed(0)
    if kind == "lstm":
        # 5 steps: the gradient through time stays above VANISH_TIME (below, its label
        # check takes passes of its own)
        net, x, y = LastStep(), torch.randn(16, 5, 4), torch.randint(0, 3, (16,))
    else:
        net = nn.Sequential(nn.Dropout(0.2), cnn(nn.ReLU, True, depth=2))
        x, y = images()
    counts = {"forward": 0, "backward": 0}

    def seen(module, inputs, output):
        counts["forward"] += 1
        if output.requires_grad:
            output.register_hook(lambda g: counts.__setitem__("backward",
                                                              counts["backward"] + 1))
    net.register_forward_hook(seen)
    state = torch.get_rng_state()
    r = vgbench.inspect(net, x, y)
    assert counts == {"forward": 2, "backward": 1}, r.table()
    assert torch.equal(torch.get_rng_state(), state)
    if kind == "lstm":
        assert r.through_time["rnn"]["steps"] == 5 and r.through_time["rnn"]["ratio"] > 0


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.head = nn.Linear(16, 3)
        self.unused = nn.Linear(16, 3)
        self.frozen = nn.Linear(16, 16)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.frozen(torch.tanh(self.body(x))))
        return {"logits": self.head(h), "h": h}


def test_odd_models_get_an_honest_report_or_a_clear_error():
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    m = TwoHeads()
    with pytest.raises(InspectError, match=r"returned a dict, not a tensor of logits: pass loss="):
        vgbench.inspect(m, x, y)
    r = vgbench.inspect(m, x, y, loss=lambda out, t: nn.functional.cross_entropy(out["logits"], t))
    assert [layer["name"] for layer in r.layers] == ["body.weight", "body.bias",
                                                     "head.weight", "head.bias"]
    assert "unused (never called in forward: no gradient)" in r.skipped
    assert "frozen.weight (frozen: requires_grad is False)" in r.skipped
    with pytest.raises(InspectError, match=r"returned \(32,\), not a scalar"):
        vgbench.inspect(m, x, y, loss=lambda out, t: nn.functional.cross_entropy(
            out["logits"], t, reduction="none"))
    with pytest.raises(InspectError, match="a batch of 1 example: inspect needs at least 2"):
        vgbench.inspect(nn.Linear(8, 3), x[:1], y[:1])
    with pytest.raises(InspectError, match="no trainable parameter"):
        vgbench.inspect(nn.Linear(8, 3).requires_grad_(False), x, y)
    with pytest.raises(InspectError, match="pass targets"):
        vgbench.inspect(nn.Linear(8, 3), x)
    with pytest.raises(InspectError, match="the model is on cpu but the batch is on meta"):
        vgbench.inspect(nn.Linear(8, 3), x.to("meta"), y)


def test_shared_weights_and_non_finite_losses():
    lin = nn.Linear(8, 8)
    shared = nn.Sequential(lin, nn.Tanh(), lin, nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    r = vgbench.inspect(shared, x, y)
    assert any("is called 2 times per forward (shared weights)" in n for n in r.notes)
    assert [a["name"] for a in r.activations] == ["1", "3"]
    huge = nn.Sequential(nn.Linear(8, 3))
    with torch.no_grad():
        huge[0].weight.fill_(float("inf"))
    assert vgbench.inspect(huge, x, y).verdict["verdict"] == "diverged"


def test_bounds_of_the_assertion():
    x, y = images()
    net = cnn(nn.ReLU, True, depth=2)
    report = vgbench.assert_gradient_flow(net, (x, y), max_dead=0.5, update_range=(1e-9, 1.0))
    assert report.verdict["verdict"] == "healthy"
    with pytest.raises(AssertionError, match=r"gradient ratio 0.weight / 8.weight = .* < 1e\+06"):
        vgbench.assert_gradient_flow(net, (x, y), min_ratio=1e6)
    with pytest.raises(AssertionError, match=r"update ratio .* outside \[0.5, 1\]"):
        vgbench.assert_gradient_flow(net, (x, y), update_range=(0.5, 1.0))
    assert report.to_json().startswith("{") and "verdict:" in str(report)


USER_TEST = '''
import torch
from torch import nn


def net(act, he=False):
    torch.manual_seed(0)
    layers = [nn.Linear(784 if i == 0 else 64, 64) for i in range(6)]
    for lin in layers if he else []:
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.Flatten(), *[m for lin in layers for m in (lin, act())],
                         nn.Linear(64, 10))


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)


def test_relu_net_is_healthy(vg_inspect):
    vg_inspect(net(nn.ReLU, he=True), batch())


def test_sigmoid_net_is_not(vg_inspect):
    vg_inspect(net(nn.Sigmoid), batch())
'''


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_the_fixture_in_a_plain_project(pytester, xdist):
    """A project that uses nothing else of vgbench: no conftest, no vgbench option."""
    pytester.makepyfile(test_mine=USER_TEST)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", *xdist)
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "gradient flow: verdict vanishing from 1.weight" in out
    assert "vgbench summary" not in out and not (pytester.path / "vg-out").exists()
    assert "inspection.py" not in out and "plugin.py" not in out  # the message, not our frames
    assert not (pytester.path / ".benchmarks").exists()  # pytest-benchmark's empty folder


FACTORY = '''
from torch import nn


def sigmoid_cnn():
    layers, c = [], 1
    for _ in range(8):
        layers += [nn.Conv2d(c, 16, 3, padding=1), nn.Sigmoid()]
        c = 16
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
'''


ODD_FACTORIES = '''
import torch
from torch import nn
from helper import WIDTH  # a sibling module of the factory's file


def needs_width(width):
    return nn.Linear(width, 10)


def raises():
    raise RuntimeError("no such layer")


def not_a_module():
    return {"model": nn.Linear(4, 2)}


def tokens():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Embedding(50, WIDTH), nn.Linear(WIDTH, 10)

        def forward(self, x):
            return self.head(torch.relu(self.emb(x)).mean(1))
    return Bag()
'''


def test_the_command_line_says_what_is_wrong(tmp_path, capsys):
    from vgbench.cli import main

    (tmp_path / "helper.py").write_text("WIDTH = 16\n")
    (tmp_path / "odd.py").write_text(ODD_FACTORIES)
    odd = tmp_path / "odd.py"
    with pytest.raises(SystemExit, match=r"needs_width\(\) cannot be called without arguments"):
        main(["inspect", f"{odd}:needs_width", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"raises\(\) in .*odd.py, line 12 raised "
                                         r"RuntimeError: no such layer"):
        main(["inspect", f"{odd}:raises", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"not_a_module\(\) returned dict, not an nn.Module"):
        main(["inspect", f"{odd}:not_a_module", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--input-shape '1,28,x' is not a shape.*1,28,28"):
        main(["inspect", f"{odd}:tokens", "--input-shape", "1,28,x"])
    with pytest.raises(SystemExit, match="--input-dtype long feeds random tokens; it does not "
                                         "go with --data fashion-mnist"):
        main(["inspect", f"{odd}:tokens", "--input-dtype", "long", "--data", "fashion-mnist"])
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="--out .*a-file is a file, not a folder"):
        main(["inspect", f"{odd}:tokens", "--out", str(blocker)])
    capsys.readouterr()
    assert main(["inspect", f"{odd}:tokens", "--input-dtype", "long", "--vocab", "50",
                 "--input-shape", "12", "--out", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    assert "random token sequences of shape (12,), vocabulary 50" in out
    assert (tmp_path / "tok" / "inspect.json").exists()


def test_the_command_line(tmp_path, capsys):
    from vgbench.cli import main

    (tmp_path / "models.py").write_text(FACTORY)
    target = f"{tmp_path / 'models.py'}:sigmoid_cnn"
    assert main(["inspect", target, "--input-shape", "1,28,28", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "random inputs of shape (1, 28, 28)" in out and "verdict: vanishing from 0.weight" in out
    assert (tmp_path / "inspect.png").stat().st_size > 0
    assert '"verdict": "vanishing"' in (tmp_path / "inspect.json").read_text()
    assert main(["inspect", target, "--input-shape", "1,28,28", "--trial", "--out",
                 str(tmp_path / "trial")]) == 0
    assert "note: trial: not taken: without it the verdict is vanishing" in (
        capsys.readouterr().out)  # a healthy model's trial: the test above
    assert json.loads((tmp_path / "trial" / "inspect.json").read_text())["trial"] == []
    with pytest.raises(SystemExit, match="defines no function 'nope'"):
        main(["inspect", f"{tmp_path / 'models.py'}:nope"])
    with pytest.raises(SystemExit, match="is not FILE.py:FACTORY"):
        main(["inspect", str(tmp_path / "models.py")])
    with pytest.raises(SystemExit, match=r"failed on a batch of shape \(64, 784\): .*conv2d.*"
                       r"\n.*set --input-shape"):  # the default shape for a CNN
        main(["inspect", target, "--out", str(tmp_path)])


class Recurrent(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        torch.manual_seed(0)
        self.rnn = getattr(nn, kind)(8, 32, batch_first=True)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.out(h[:, -1])


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_time_is_depth_for_recurrent_nets(kind, tmp_path):
    """The gradient with respect to each step's input, from the last step back: at init,
    with PyTorch's defaults, both a tanh RNN and an LSTM lose it over 100 steps (an LSTM's
    forget gate starts near 0.5): vanishing through time, the recurrent module named,
    although the weights' gradients (summed over time) look fine."""
    x, y = torch.randn(32, 100, 8), torch.randint(0, 10, (32,))
    r = vgbench.inspect(Recurrent(kind), x, y)
    t = r.through_time["rnn"]
    assert t["steps"] == 100 and len(t["norms"]) == 100 and t["norms"][-1] > 0
    assert t["ratio"] < 1e-10
    assert any(n.startswith("rnn: over 100 steps") for n in r.notes)
    assert r.describe().startswith("vanishing from rnn: through time, over 100 steps")
    assert r.figure(tmp_path / "rnn.png").stat().st_size > 0  # with a panel per time step
    short = vgbench.inspect(Recurrent(kind), x[:, -3:], y)  # 3 steps: nothing to lose
    assert short.verdict["verdict"] == "healthy"
    assert vgbench.inspect(nn.Linear(8, 3), torch.randn(32, 8),
                           torch.randint(0, 3, (32,))).through_time == {}


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_recurrence_whose_weights_are_ten_times_too_large_explodes_through_time(kind):
    """Weights x10 (the zoo's twin, which does not learn): the gradient grows going back in
    time (rows of Fashion-MNIST-like inputs in [0, 1], 28 steps): exploding through time,
    the module named; at PyTorch's default init the same net is not exploding."""
    torch.manual_seed(0)
    x, y = torch.rand(64, 28, 8), torch.randint(0, 10, (64,))
    big = Recurrent(kind)
    with torch.no_grad():
        for p in big.parameters():
            if p.dim() == 2:
                p.mul_(10)
    r = vgbench.inspect(big, x, y, optimizer=torch.optim.AdamW(big.parameters(), 3e-3))
    assert r.through_time["rnn"]["ratio"] > diagnose.EXPLODE_TIME
    assert r.describe().startswith("exploding from rnn: through time, over 28 steps")
    assert r.verdict["layer_name"] == "rnn"
    plain = Recurrent(kind)
    assert vgbench.inspect(plain, x, y, optimizer=torch.optim.AdamW(
        plain.parameters(), 3e-3)).verdict["verdict"] != "exploding"


class Attention(nn.Module):
    """Two pre-norm TransformerEncoderLayers (nn.MultiheadAttention, F.relu) over 12 tokens."""

    def __init__(self, qk: float = 1.0, v: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True,
                                       norm_first=True), 2, enable_nested_tensor=False)
        self.out = nn.Linear(16, 3)
        with torch.no_grad():
            for layer in self.enc.layers:
                layer.self_attn.in_proj_weight[:32].mul_(qk)
                layer.self_attn.in_proj_weight[32:].mul_(v)
                layer.self_attn.out_proj.weight.mul_(v)

    def forward(self, x):
        return self.out(self.enc(x).mean(1))


def test_attention_softmax_rows_are_measured_and_not_judged_alone():
    """Each attention's softmax is an activation in the report (its rows, from the scores
    that the fused kernel never forms): queries and keys x30 put most rows on one key
    (saturated), at the default init none; saturated rows alone are no verdict (the zoo's
    transformers with queries and keys x10 still train)."""
    x, y = torch.randn(32, 12, 16), torch.randint(0, 3, (32,))
    for qk, low, high in ((1.0, 0.0, 0.0), (30.0, 0.5, 1.0)):
        r = vgbench.inspect(Attention(qk), x, y)
        soft = [a for a in r.activations if a["module"] == "Softmax"]
        assert [a["name"] for a in soft] == [f"enc.layers.{i}.self_attn:Softmax"
                                             for i in range(2)]
        assert all(low <= a["saturated"] <= high for a in soft), soft
        assert [a["module"] for a in r.activations].count("ReLU") == 2
        assert r.verdict["verdict"] == "healthy"


def test_saturated_attention_that_outweighs_its_input_is_saturated():
    """An attention whose rows sit on one key (queries and keys x30) and whose output is
    many times its input (values and output projection x10) reads saturated, named by the
    attention module; either alone stays healthy (the zoo: either alone trains). AdamW at
    the zoo's transformer recipe (plain SGD's step on the x10 values is exploding)."""
    x, y = torch.randn(32, 12, 16), torch.randint(0, 3, (32,))
    calls = {}
    for qk, v in ((1.0, 1.0), (30.0, 1.0), (1.0, 10.0), (30.0, 10.0)):
        net = Attention(qk, v)
        r = vgbench.inspect(net, x, y, optimizer=torch.optim.AdamW(net.parameters(), 1e-3))
        calls[qk, v] = r.verdict
    assert [calls[k]["verdict"] for k in calls] == ["healthy"] * 3 + ["saturated"]
    ev = calls[30.0, 10.0]["evidence"]
    assert calls[30.0, 10.0]["layer_name"] == "enc.layers.0.self_attn"
    assert ev["attention_saturated"] >= 0.5 and ev["attention_gain"] > 12, ev
    # the gain is against the stream the block adds to, not the attention's normed input:
    # a stream 30 times larger carries the tokens around the same attention
    net = Attention(30.0, 10.0)
    r = vgbench.inspect(net, 30 * x, y, optimizer=torch.optim.AdamW(net.parameters(), 1e-3))
    assert r.verdict["verdict"] == "healthy", r.table()
    first = next(a for a in r.activations if a["name"] == "enc.layers.0.self_attn:Softmax")
    assert first["saturated"] >= 0.5 and first["gain"] < 12, first
    assert all(a["gain"] is None for a in r.activations if a["module"] == "ReLU")


class SDPABlock(nn.Module):
    """timm's way: a qkv Linear, F.scaled_dot_product_attention, a projection, residual."""

    def __init__(self, d: int = 16, heads: int = 2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)
        return self.proj(h.transpose(1, 2).reshape(b, t, d))


def test_attention_gain_is_the_calling_module_s_for_sdpa():
    """With scaled_dot_product_attention inside a module (timm, Hugging Face), the gain is
    that module's output over its input: every weight x10 reads saturated, the default
    init healthy."""
    x, y = torch.randn(32, 12, 16), torch.randint(0, 3, (32,))
    for scale, want in ((1.0, "healthy"), (10.0, "saturated")):
        torch.manual_seed(0)
        attn = SDPABlock()
        net = nn.Sequential(nn.LayerNorm(16), attn, nn.Flatten(), nn.Linear(16 * 12, 3))
        with torch.no_grad():
            attn.qkv.weight.mul_(scale)
            attn.proj.weight.mul_(scale)
        r = vgbench.inspect(net, x, y)
        assert r.verdict["verdict"] == want, r.table()
    assert r.verdict["layer_name"] == "1"


def test_in_place_activations_are_measured_on_their_inputs():
    """torchvision's ResNets and VGGs use ReLU(inplace=True): slopes on the input, not the
    output; a Linear or conv whose output an in-place activation overwrites gets its exact
    per-example norms all the same (back through the activation's slope)."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))

    def net(inplace):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ELU(inplace=inplace), nn.Linear(16, 3))
    a, b = vgbench.inspect(net(True), x, y), vgbench.inspect(net(False), x, y)
    assert a.activations[0]["preact_rms"] == b.activations[0]["preact_rms"]
    assert a.activations[0]["saturated"] == b.activations[0]["saturated"]
    assert a.layers[0]["grad_rms"] == pytest.approx(b.layers[0]["grad_rms"], rel=1e-6)
    assert a.layers[0]["grad_norm"] == pytest.approx(b.layers[0]["grad_norm"])

    def vgg(inplace):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=inplace),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    xi = torch.randn(16, 3, 8, 8)
    a, b = vgbench.inspect(vgg(True), xi, y[:16]), vgbench.inspect(vgg(False), xi, y[:16])
    assert [r["grad_rms"] for r in a.layers if r["role"] == "weight"] == pytest.approx(
        [r["grad_rms"] for r in b.layers if r["role"] == "weight"], rel=1e-5)
    assert all(r["grad_rms"] is not None for r in a.layers if r["role"] == "weight")


CONVS = {
    "2d formed": nn.Conv2d(3, 4, 3, padding=1),  # P^2 > O k: each example's gradient formed
    "2d gram": nn.Conv2d(3, 64, 3, stride=2, padding=1),  # Gram matrices
    "2d dilated": nn.Conv2d(2, 8, (3, 2), padding=(1, 0), dilation=(2, 1)),
    "2d same reflect": nn.Conv2d(3, 6, 4, padding="same", padding_mode="reflect"),
    "2d grouped": nn.Conv2d(4, 8, 3, padding=1, groups=2),
    "2d depthwise gram": nn.Conv2d(6, 12, 3, stride=4, groups=6),  # 4 positions
    "1d": nn.Conv1d(3, 5, 4, stride=2, padding=2),
    "1d circular dilated": nn.Conv1d(4, 4, 3, padding=2, dilation=2, groups=4,
                                     padding_mode="circular"),
    "3d": nn.Conv3d(2, 3, (2, 3, 1), stride=(1, 2, 1), padding=(1, 0, 0)),
}


@pytest.mark.parametrize("chunk", ["default", "small"])
@pytest.mark.parametrize("conv", CONVS.values(), ids=CONVS.keys())
def test_conv_per_example_norms_are_exact(conv, chunk, monkeypatch):
    """Against autograd on each example alone; the examples taken together as
    float64.CHUNK allows, and (small) two at a time."""
    from vgbench import float64
    from vgbench.convs import conv_example_norms

    torch.manual_seed(0)
    shape = {1: (9,), 2: (9, 9), 3: (5, 6, 4)}[len(conv.kernel_size)]
    x = torch.randn(5, conv.in_channels, *shape)
    g = torch.randn_like(conv(x))
    if chunk == "small":  # what two examples need, at most (their patches or products)
        k = conv.in_channels // conv.groups * math.prod(conv.kernel_size)
        p, o = math.prod(g.shape[2:]), conv.out_channels // conv.groups
        monkeypatch.setattr(float64, "CHUNK", 2 * conv.groups * max(k * p, min(p * p, o * k)))
    alone = [torch.autograd.grad((conv(x[i:i + 1]) * g[i:i + 1]).sum(), conv.weight)[0].norm()
             for i in range(5)]
    torch.testing.assert_close(conv_example_norms(conv, x, g), torch.stack(alone))


class Gated(nn.Module):
    """A residual stack with a ReZero gate (zero at init), an unused bare parameter and a
    functional ReLU."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.block = nn.Linear(16, 16)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.extra = nn.Parameter(torch.ones(3))  # never used
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + self.alpha * nn.functional.relu(self.block(h)))


def test_roles_not_names_decide_what_the_verdict_reads():
    torch.manual_seed(0)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no std() degrees-of-freedom warning for alpha
        r = vgbench.inspect(Gated(), x, y)
    roles = {l["name"]: l["role"] for l in r.layers}
    assert roles["alpha"] == "vector" and roles["inp.bias"] == "vector"  # root: bare names
    assert [l["name"] for l in r.layers if l["in_verdict"]] == ["inp.weight", "block.weight",
                                                                "out.weight"]
    assert "extra (no gradient: the forward does not use it)" in r.skipped
    assert r.verdict["verdict"] == "healthy", r.table()
    # the functional ReLUs are measured like modules, named by the module that called them
    assert [a["name"] for a in r.activations] == ["Gated:ReLU", "Gated:ReLU"]
    assert all(math.isfinite(l["update_ratio"]) for l in r.layers if l["update_ratio"])


def test_a_transformer_encoder_is_read_by_role():
    """in_proj_bias (zero at init) is a vector, not a weight with an infinite ratio;
    out_proj, used functionally by MultiheadAttention, is measured, not skipped; the
    layer's F.relu is measured, and its attention's softmax."""
    torch.manual_seed(0)
    for norm_first in (False, True):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(
            16, 2, 32, dropout=0.1, batch_first=True, norm_first=norm_first), 3,
            enable_nested_tensor=False)
        net = nn.Sequential(enc, nn.Flatten(), nn.Linear(16 * 5, 4))
        x, y = torch.randn(16, 5, 16), torch.randint(0, 4, (16,))
        r = vgbench.inspect(net, x, y)
        roles = {l["name"]: l["role"] for l in r.layers}
        assert roles["0.layers.0.self_attn.in_proj_bias"] == "vector"
        assert roles["0.layers.0.self_attn.in_proj_weight"] == "weight"
        assert roles["0.layers.0.self_attn.out_proj.weight"] == "weight"
        assert not any("out_proj" in s for s in r.skipped)
        assert [a["module"] for a in r.activations] == ["Softmax", "ReLU"] * 3
        assert r.verdict["verdict"] == "healthy", r.table()


def test_torchvision_resnet18_at_sgd_is_not_an_alarm():
    """The reported false alarm (batch 16 at 3x64x64, SGD lr 0.01): conv1 moves by 0.08 of
    its norm in the first step, but BatchNorm follows it: the loss hardly depends on its
    scale (grad_cos), so the step only turns it."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    x, y = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))
    r = vgbench.inspect(net, x, y, optimizer=torch.optim.SGD(net.parameters(), lr=0.01))
    conv1 = next(l for l in r.layers if l["name"] == "conv1.weight")
    assert conv1["update_ratio"] > diagnose.EXPLODE_UPDATE > 0
    assert conv1["grad_cos"] < diagnose.SCALE_FREE
    assert r.verdict["verdict"] == "healthy", r.table()
    # the same step at 100 times the rate raises the loss: exploding
    r = vgbench.inspect(net, x, y, optimizer=torch.optim.SGD(net.parameters(), lr=1.0))
    assert r.verdict["verdict"] == "exploding", r.table()


def test_a_plain_relu_cnn_whose_gradient_vanishes_is_vanishing_not_dead():
    """12 plain convolutions with PyTorch's default init, their biases lowered by 0.05 (a
    layer then has 88% of its units dead): the gradient shrinks by far more than its dead
    units take."""
    torch.manual_seed(0)
    layers, c = [], 3
    for _ in range(12):
        layers += [nn.Conv2d(c, 16, 3, padding=1), nn.ReLU()]
        c = 16
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.bias.sub_(0.05)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    r = vgbench.inspect(net, x, y)
    assert max(a["dead"] for a in r.activations) >= diagnose.DEAD_SHARE  # dead units too
    assert r.verdict["verdict"] == "vanishing", r.table()


class Recall(nn.Module):
    """The zoo's recall LSTM, small: embedded tokens, an LSTM of 32 with the chrono init
    (forget-gate biases log U(1, 23), input gates their negative), the last step read; its
    matrices times scale."""

    def __init__(self, scale: float = 1.0, d: int = 32, steps: int = 24):
        super().__init__()
        torch.manual_seed(0)
        self.tok, self.rnn = nn.Embedding(16, d), nn.LSTM(d, d, batch_first=True)
        self.head = nn.Linear(d, 10)
        with torch.no_grad():
            for b in (self.rnn.bias_ih_l0, self.rnn.bias_hh_l0):
                b.zero_()
            forget = torch.empty(d).uniform_(1, steps - 1).log()
            self.rnn.bias_ih_l0[d:2 * d], self.rnn.bias_ih_l0[:d] = forget, -forget
            for w in (self.rnn.weight_ih_l0, self.rnn.weight_hh_l0, self.head.weight):
                w.mul_(scale)

    def forward(self, tokens):
        return self.head(self.rnn(self.tok(tokens))[0][:, -1])


def test_a_recurrence_whose_gates_sit_on_their_tails_is_saturated():
    """The recall LSTM with its matrices x10 (the zoo's twin, which does not learn): its
    gradient does not grow back in time (the forget gates held open), but about a third of
    the activations inside its kernel sit on a flat tail: saturated, the module named. At
    its own scale none do, and it reads healthy."""
    tokens = torch.randint(0, 16, (64, 24), generator=torch.Generator().manual_seed(0))
    for scale, verdict in ((10.0, "saturated"), (1.0, "healthy")):
        net = Recall(scale)
        r = vgbench.inspect(net, tokens, tokens[:, 0] % 10,
                            optimizer=torch.optim.AdamW(net.parameters(), 3e-3))
        assert r.through_time["rnn"]["ratio"] < diagnose.EXPLODE_TIME
        assert r.verdict["verdict"] == verdict, r.table()
        shares = [a["saturated"] for a in r.activations if a["name"].startswith("rnn:")]
        assert len(shares) == 5 and (sum(shares) / 5 > 0.25 if scale > 1 else max(shares) == 0)
    big = vgbench.inspect(Recall(10.0), tokens, tokens[:, 0] % 10)
    assert big.describe().startswith("saturated from rnn: ")
    assert big.verdict["layer_name"] == "rnn"


def test_a_short_memory_is_vanishing_only_where_the_answer_lies_beyond_it():
    """An LSTM at PyTorch's default init keeps about 0.6 of its gradient per step: over 30
    steps of one-hot tokens the first step's share is far below VANISH_TIME either way.
    Labelled by the last token, the gradient that reaches the inputs carries the labels
    (TIME_SIGNAL exceeded): healthy, with a note; labelled by the first token, it does not:
    vanishing through time. Its gates are measured (at PyTorch's default init none
    saturated)."""
    tokens = torch.randint(0, 8, (64, 30), generator=torch.Generator().manual_seed(0))
    x = F.one_hot(tokens, 8).float()
    net = Recurrent("LSTM")
    r = vgbench.inspect(net, x, tokens[:, -1] % 4)
    t = r.through_time["rnn"]
    assert t["ratio"] < diagnose.VANISH_TIME and t["signal"] > diagnose.TIME_SIGNAL
    assert r.verdict["verdict"] == "healthy"
    assert any("carries the labels, not a verdict" in n for n in r.notes)
    assert [a["name"] for a in r.activations] == [
        f"rnn:{g}" for g in ("input_gate", "forget_gate", "cell_input", "output_gate", "cell")]
    assert all(a["saturated"] == 0 for a in r.activations)
    r = vgbench.inspect(net, x, tokens[:, 0] % 4)
    assert r.through_time["rnn"]["signal"] < diagnose.TIME_SIGNAL
    assert r.describe().startswith("vanishing from rnn: through time, over 30 steps")


class Decoder(nn.Module):
    """Two pre-norm causal blocks (nn.MultiheadAttention, GELU MLP) over 16 embedded tokens,
    read at the last position (pooled=False, a decoder's head) or at their mean; every
    matrix times scale; zero=True: the attentions' out_proj at zero (ReZero)."""

    def __init__(self, scale: float = 1.0, pooled: bool = False, zero: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.tok, self.pooled = nn.Embedding(8, 32), pooled
        self.pos = nn.Parameter(torch.zeros(1, 16, 32))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(2))
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2 and p is not self.tok.weight and p is not self.pos:
                    p.mul_(scale)
            for b in self.blocks:
                if zero:
                    b.self_attn.out_proj.weight.zero_()
        mask = torch.triu(torch.ones(16, 16, dtype=torch.bool), 1)
        self.register_buffer("mask", mask)

    def forward(self, tokens):
        h = self.tok(tokens) + self.pos
        for b in self.blocks:
            h = b(h, src_mask=self.mask, is_causal=True)
        return self.head(h.mean(1) if self.pooled else h[:, -1])


def adamw(net, x, y):
    """inspect with AdamW at lr 1e-3 (a transformer's usual optimizer; with SGD the x0.1
    decoder's small gradients already read vanishing by depth)."""
    return vgbench.inspect(net, x, y, optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3))


def test_positions_out_of_reach_are_vanishing_where_the_answer_lies_there():
    """A decoder read at its last position hears the others only through its attentions.
    With every matrix x0.1 they route almost nothing (reach below VANISH_REACH): labelled by
    the first token, what the head reads does not tell the label (TIME_SIGNAL not exceeded):
    vanishing across positions, from the first attention; labelled by the last token it
    does: healthy, with a note. At PyTorch's init the reach is far above the line; read at
    the mean of the positions, every one is in reach; with the attentions' out_proj at zero
    (ReZero) none is, and they open once it moves: neither is judged."""
    tokens = torch.randint(0, 8, (64, 16), generator=torch.Generator().manual_seed(0))
    first, last = tokens[:, 0] % 4, tokens[:, -1] % 4
    r = adamw(Decoder(0.1), tokens, first)
    t = r.positions["blocks.0.self_attn"]
    assert t["via"] == "blocks.0" and t["positions"] == 16
    assert t["reach"] < diagnose.VANISH_REACH and not t["signal"] > diagnose.TIME_SIGNAL
    assert r.describe().startswith("vanishing from blocks.0.self_attn: across 16 positions")
    r = adamw(Decoder(0.1), tokens, last)
    assert r.positions["blocks.0.self_attn"]["signal"] > diagnose.TIME_SIGNAL
    assert r.verdict["verdict"] == "healthy"
    assert any("common part of the output layer's gradient is" in n and "carries the labels" in n
               for n in r.notes)
    design = adamw(Decoder(), tokens, first)
    assert design.positions["blocks.0.self_attn"]["reach"] > 4 * diagnose.VANISH_REACH
    assert "signal" not in design.positions["blocks.0.self_attn"]  # not needed: not taken
    assert design.verdict["verdict"] == "healthy"
    pooled = adamw(Decoder(0.1, pooled=True), tokens, first)
    assert pooled.positions["blocks.0.self_attn"]["reach"] > 0.5
    assert pooled.verdict["verdict"] == "healthy"
    gated = adamw(Decoder(zero=True), tokens, first)
    assert gated.positions["blocks.0.self_attn"]["reach"] == 0
    assert gated.verdict["verdict"] == "healthy"
    assert any("reach across positions is not in the verdict" in n for n in gated.notes)


def test_a_large_first_step_is_exploding_only_if_the_loss_stays_up(real_data):
    """Where a large step decides the verdict, inspect takes LOOKAHEAD real steps of the
    optimizer on the batch (diagnose.LOOKAHEAD_RISE on what follows, as watch reads a run
    against LOSS_RISE). The suite's tanh MLP at SGD lr 1.0 (explode_tanh, never learns): the
    loss climbs, exploding;
    its BatchNorm MLP at lr 0.5: one step moves its output layer by 0.15 of its norm and the
    loss falls after it: healthy. Everything is put back: weights, norm statistics, the
    optimizer's state and learning rate, .grad."""
    from vgbench import data
    from vgbench.lookahead import LOOKAHEAD

    s = data.split(real_data, 42, limit=1024)
    x, y = s.train_x[:256], s.train_y[:256]

    def inspected(name, lr):
        cfg = replace(registry.get(name).config, epochs=0, lr=lr)
        mlp = M.build(cfg)
        return mlp, vgbench.inspect(mlp, x, y, optimizer=M.make_optimizer(
            list(mlp.parameters()), cfg))

    _, r = inspected("tanh_xavier", 1.0)
    assert r.verdict["verdict"] == "exploding"
    assert r.verdict["evidence"]["loss_rise"] >= diagnose.LOOKAHEAD_RISE
    mlp, r = inspected("batchnorm", 0.5)
    assert r.verdict["verdict"] == "healthy"
    assert r.verdict["evidence"]["loss_rise"] < diagnose.LOOKAHEAD_RISE
    assert max(u["update_ratio"] or 0 for u in r.layers) > diagnose.EXPLODE_UPDATE
    assert any(f"over {LOOKAHEAD} real steps" in n for n in r.notes)
    opt = torch.optim.AdamW(mlp.parameters(), lr=0.5, betas=(0.8, 0.9))
    was = stepped_once(mlp, opt, x, y)
    r = vgbench.inspect(mlp, x, y, optimizer=opt)
    assert "loss_rise" in r.verdict["evidence"]  # the steps were taken
    assert_as_it_was(mlp, opt, *was)


def stepped_once(model, opt, x, y):
    """One real step (some optimizer state, and a .grad of the user's); what they are."""
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [p.grad.clone() for p in model.parameters()], copy.deepcopy(opt.state_dict()))


def assert_as_it_was(model, opt, before, grads, state):
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    after = opt.state_dict()
    assert after["param_groups"] == state["param_groups"]
    assert all(torch.equal(after["state"][i][k], v) for i, st in state["state"].items()
               for k, v in st.items())


def test_the_trial_takes_real_steps_and_puts_everything_back():
    """inspect(trial=True): lookahead.TRIAL real steps of the optimizer on the batch, their
    losses in report.trial and a note with what they did; the weights, norm statistics, the
    optimizer's state and .grad are as before; where the verdict is not healthy without it
    (the deep sigmoid CNN's vanishing) the trial is not taken, since it would not change it,
    and a note says so. An optimizer whose step needs a closure (LBFGS) is an error that says
    what to pass, not the verdict diverged it read before."""
    from vgbench.lookahead import TRIAL

    x, y = images()
    net = cnn(nn.ReLU, True, depth=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    was = stepped_once(net, opt, x, y)
    plain = vgbench.inspect(net, x, y, optimizer=opt)
    tried = vgbench.inspect(net, x, y, optimizer=opt, trial=True)
    assert plain.trial == [] and len(tried.trial) == TRIAL + 1
    assert all(math.isfinite(v) for v in tried.trial) and tried.trial[-1] < tried.trial[0]
    assert tried.verdict["verdict"] == plain.verdict["verdict"] == "healthy"
    assert any(n.startswith(f"trial: {TRIAL} real steps") for n in tried.notes)
    assert_as_it_was(net, opt, *was)
    assert vgbench.inspect(net, x, y, optimizer=opt, trial=True).trial == tried.trial
    bad = vgbench.inspect(cnn(nn.Sigmoid, False), x, y, trial=True)
    assert bad.verdict["verdict"] == "vanishing" and bad.trial == []  # not taken: no use
    assert any(n.startswith("trial: not taken: without it the verdict is vanishing")
               for n in bad.notes)
    with pytest.raises(InspectError, match=r"could not be taken on a twin \(TypeError.*"
                       r"closure.*pass lr= instead"):  # not a verdict (it read diverged)
        vgbench.inspect(net, x, y, optimizer=torch.optim.LBFGS(net.parameters()), trial=True)


def test_a_gradient_that_grows_toward_the_input_is_exploding_under_adamw():
    """torchvision's EfficientNet-B0 under AdamW (the zoo's recipe), random 32x32 images:
    its design reads healthy, the first conv's per-example gradient 32 times the head's;
    with every norm shift at -4 and every bias at -1 (its SiLUs then at a slope of about 5%)
    the gradient grows 250,000-fold toward the input while AdamW's steps stay at its
    learning rate: exploding from the first conv (diagnose.EXPLODE_SPREAD)."""
    tv = pytest.importorskip("torchvision")
    from vgbench.layout import NORMS

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
    verdicts = {}
    for shifted in (False, True):
        torch.manual_seed(0)
        net = tv.models.efficientnet_b0(num_classes=10)
        if shifted:
            with torch.no_grad():
                for m in net.modules():
                    if isinstance(getattr(m, "bias", None), nn.Parameter):
                        m.bias.fill_(-4.0 if isinstance(m, NORMS) else -1.0)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
        verdicts[shifted] = vgbench.inspect(net, x, y, optimizer=opt).verdict
    assert verdicts[False]["verdict"] == "healthy", verdicts[False]["why"]
    grown = verdicts[True]
    assert grown["verdict"] == "exploding" and grown["layer_name"] == "features.0.0.weight"
    assert grown["evidence"]["ratio_rms"] > diagnose.EXPLODE_SPREAD, grown["why"]

