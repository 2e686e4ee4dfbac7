"""vgbench.watch: the diagnosis inside a user's own training loop, every N optimizer steps,
from the gradients and the step the user's own code produced."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vgbench
from vgbench import diagnose
from vgbench.history import History
from vgbench.monitor import UnhealthyTraining, WatchError


def mlp(act, depth=6, width=64, norm=False, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(784, width), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width)] + ([nn.BatchNorm1d(width)] if norm else []) + [act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def batches(n, seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def train(model, opt, data, w=None, before_step=None):
    for k, (x, y) in enumerate(data):
        if before_step is not None:
            before_step(k, opt)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if w is not None:
            w.step(loss)


def test_a_healthy_run_reads_healthy_every_sampled_step(tmp_path):
    model = mlp(nn.ReLU, norm=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with vgbench.watch(model, opt, every=5, out=tmp_path / "w") as w:
        train(model, opt, batches(30), w)
    assert w.step_no == 30 and [r["step"] for r in w.timeline] == [0, 5, 10, 15, 20, 25]
    assert {r["verdict"] for r in w.timeline} == {"healthy"}
    assert w.onsets == [{"step": 0, "verdict": "healthy"}]
    assert all(r["loss"] is not None for r in w.timeline)
    w.assert_healthy()
    h = History.from_json(tmp_path / "w" / "history.json")
    assert h.watch["timeline"] == json.loads(json.dumps(w.timeline))
    assert h.diagnostics["epoch"] == [0, 5, 10, 15, 20, 25]
    assert len(h.diagnostics["saturated"][0]) == 6  # one per ReLU call
    assert h.watch["layers"][0] == "1.weight" and h.watch["steps"] == 30
    assert h.config["optimizer"] == "SGD" and h.config["lr"] == 0.05
    page = (tmp_path / "w" / "report.html").read_text()
    assert "vgbench watch: Sequential" in page and "verdict per sampled step" in page
    assert page.count("<svg") == 6  # strip, loss, grad norm, update ratio, dead, flow


def test_a_vanishing_run_fails_assert_healthy_naming_the_layer():
    model = mlp(nn.Sigmoid, depth=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with vgbench.watch(model, opt, every=4) as w:
        train(model, opt, batches(8), w)
    assert [r["verdict"] for r in w.timeline] == ["vanishing", "vanishing"]
    assert w.timeline[0]["layer_name"] == "1.weight"
    with pytest.raises(UnhealthyTraining, match="step 0: vanishing from 1.weight"):
        w.assert_healthy()


class ZeroBranches(nn.Module):
    """Residual blocks whose last linear map starts at zero (ReZero / zero-init
    residuals) on a pooled image: at step 0 no gradient reaches the maps before it, the
    first weight included; it trains."""

    def __init__(self, blocks=4, width=64):  # width: 8x8 pooled pixels
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Sequential(nn.AdaptiveAvgPool2d(8), nn.Flatten())  # no weights
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU(),
                                                  nn.Linear(width, width))
                                    for _ in range(blocks))
        for b in self.blocks:
            nn.init.zeros_(b[2].weight)
        self.out = nn.Linear(width, 10)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def test_weights_behind_a_zero_branch_are_left_out_only_while_it_is_zero():
    """Its usual recipe, AdamW: at step 0 the first maps get no gradient (vanishing, were
    they read); by step 5 the zero maps have moved and are read as weights, and a first
    map that still gets no gradient counts again (its gain 0)."""
    model = ZeroBranches()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with vgbench.watch(model, opt, every=5) as w:
        train(model, opt, batches(10), w)
    assert [r["verdict"] for r in w.timeline] == ["healthy", "healthy"], w.timeline
    gated = ", ".join(f"blocks.{k}.0.weight" for k in range(4))
    assert w.notes == {f"no gradient behind the zero weights (they learn once those move), "
                       f"not in the verdict: {gated}"}
    names = [n for n, _, _ in w.layout.entries]
    assert w.points["grad_norm"][0][names.index("blocks.0.0.weight")] == 0
    assert w.timeline[1]["evidence"]["gain_per_layer"] > 0
    model = ZeroBranches()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with vgbench.watch(model, opt, every=5) as w:
        model.blocks[0][0].weight.register_hook(lambda g: g * (w.step_no < 5))
        train(model, opt, batches(10), w)
    assert w.timeline[1]["evidence"]["gain_per_layer"] == 0, w.timeline


def tanh_xavier():
    model = mlp(nn.Tanh)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def lr_jump(steps: int, out=None):
    """A tanh MLP (Xavier init) at SGD lr 0.05 whose learning rate jumps 100x at step 20,
    watched every 5 steps: the Watch."""
    model = tanh_xavier()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def schedule(k, opt):
        if k == 20:
            opt.param_groups[0]["lr"] *= 100
    with vgbench.watch(model, opt, every=5, out=out) as w:
        train(model, opt, batches(steps), w, schedule)
    return w


def test_a_learning_rate_jump_reads_exploding_from_the_step_it_happens():
    """tanh (Xavier init) at lr 0.05 is healthy; from step 20 on, 100x that: exploding at
    step 20, not before, decided by the loss after it (measured: step 20 moves the weights
    by 0.41 of their norm and the next 5 losses average 4.5x the 5 before; at 30x the steps
    are 0.12-0.17 and the loss rises 1.07x: healthy, as it is at 60x, 1.35x, until step 25
    moves a weight by 2.0, REPLACE_STEP)."""
    w = lr_jump(30)
    verdicts = {r["step"]: r["verdict"] for r in w.timeline}
    assert all(verdicts[s] == "healthy" for s in (0, 5, 10, 15)), verdicts
    assert verdicts[20] == "exploding", w.timeline[4]
    assert w.timeline[4]["evidence"]["loss_rise"] > diagnose.LOSS_RISE
    assert {"step": 20, "verdict": "exploding"} in w.onsets


def test_a_large_step_after_which_the_loss_falls_is_not_exploding():
    """The rule the lr jump passes, the other way round: the same net's steps at 30x are
    above EXPLODE_UPDATE, and with the loss after them reported they read healthy; without
    losses (w.step() not given one) the step's size alone decides, as at init."""
    def run(report):
        model = tanh_xavier()
        opt = torch.optim.SGD(model.parameters(), lr=1.5)
        with vgbench.watch(model, opt, every=5) as w:
            for x, y in batches(10):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                w.step(loss if report else None)
        return w
    quiet, blind = run(True), run(False)
    assert [r["evidence"]["update_max"] > diagnose.EXPLODE_UPDATE for r in quiet.timeline] == [
        True, True]
    assert [r["verdict"] for r in quiet.timeline] == ["healthy", "healthy"], quiet.timeline
    assert all(r["evidence"]["loss_rise"] < diagnose.LOSS_RISE for r in quiet.timeline)
    assert [r["verdict"] for r in blind.timeline] == ["exploding", "exploding"]


def test_the_step_is_the_optimizers_with_accumulation_and_bf16_autocast():
    model = mlp(nn.GELU, norm=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = batches(12)
    with vgbench.watch(model, opt, every=2) as w:
        for k in range(0, 12, 3):  # three micro-batches per optimizer step
            opt.zero_grad()
            for x, y in data[k:k + 3]:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y) / 3
                loss.backward()
            opt.step()
            w.step(loss)
    assert w.step_no == 4 and [r["step"] for r in w.timeline] == [0, 2]
    assert len(w.points["saturated"][0]) == 6  # the last micro-batch's forward only
    chain = w.layout.chain()
    assert all(math.isfinite(w.points["update_ratio"][0][i]) for i in chain)
    assert {r["verdict"] for r in w.timeline} == {"healthy"}


def test_gradient_norms_are_inspects_on_the_same_batch():
    """One probe: on a sampled step the gradient norms watch reads from the user's backward
    are those inspect takes on the same batch and loss."""
    model = mlp(nn.ReLU, norm=True)
    x, y = batches(1)[0]
    report = vgbench.inspect(model, x, y)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with vgbench.watch(model, opt, every=1) as w:
        train(model, opt, [(x, y)], w)
    inspected = {r["name"]: r["grad_norm"] for r in report.layers}
    watched = dict(zip(w.to_dict()["layers"], w.points["grad_norm"][0]))
    assert watched.keys() == inspected.keys()
    for name, g in inspected.items():
        assert watched[name] == pytest.approx(g, rel=1e-5), name


def test_on_verdict_raise_stops_the_run_and_a_function_hears_each_record():
    heard = []
    model = mlp(nn.Sigmoid, depth=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with vgbench.watch(model, opt, every=2, on_verdict=heard.append) as w:
        train(model, opt, batches(4), w)
    assert [r["step"] for r in heard] == [0, 2] and heard[0]["verdict"] == "vanishing"
    model = mlp(nn.Sigmoid, depth=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(UnhealthyTraining, match="step 0: vanishing"):
        with vgbench.watch(model, opt, on_verdict="raise"):
            train(model, opt, batches(3))


def test_bad_arguments_say_what_to_pass(tmp_path):
    model = mlp(nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(WatchError, match="every= must be"):
        vgbench.watch(model, opt, every=0)
    with pytest.raises(WatchError, match="torch.optim.Optimizer"):
        vgbench.watch(model, "sgd")
    with pytest.raises(WatchError, match="on_verdict="):
        vgbench.watch(model, opt, on_verdict="shout")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="out="):
        with vgbench.watch(model, opt, out=tmp_path / "file"):
            pass
    with vgbench.watch(model, opt) as w:
        pass  # no step taken
    with pytest.raises(UnhealthyTraining, match="no step was sampled"):
        w.assert_healthy()


def test_assert_trains_passes_a_net_that_learns_and_puts_it_back():
    model = mlp(nn.ReLU, norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [(x, x.flatten(1)[:, :10].argmax(1)) for x, _ in batches(4)]  # learnable labels
    w = vgbench.assert_trains(model, data, steps=40,
                              optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9))
    assert [r["step"] for r in w.timeline] == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_assert_trains_fails_a_net_whose_loss_does_not_fall_naming_the_verdict():
    model = mlp(nn.Sigmoid, depth=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = [(x, x.flatten(1)[:, :10].argmax(1)) for x, _ in batches(4)]
    with pytest.raises(UnhealthyTraining, match=r"the loss did not fall in 20 steps: .*"
                                                r"verdicts: vanishing at step 0"):
        vgbench.assert_trains(model, data, steps=20, optimizer=opt)
    assert opt.state_dict()["state"] == {}  # its momentum put back: none, as before
    with pytest.raises(WatchError, match="steps= must be"):
        vgbench.assert_trains(model, data, steps=5)
    with pytest.raises(WatchError, match="batches= is empty"):
        vgbench.assert_trains(model, [], steps=10)


def test_late_trouble_is_flagged_where_it_starts_and_its_twin_stays_quiet(real_data):
    """benchmarks/watch_late.py in small: ReLUs killed at step 20 (every hidden bias pushed
    down) read dead units from the next sampled step, the same run without it no alarm."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import watch_late
    from vgbench import data

    splits = data.split(data.load_cached(), 42, 0.1)
    hit = watch_late.run("kill_relu", 0, 40, 20, 10, True, splits)
    twin = watch_late.run("kill_relu", 0, 40, 20, 10, False, splits)
    assert hit["onset"] == (30, "dead units") and hit["alarms_before"] == 0
    assert twin["alarms"] == 0 and twin["onset"] is None


@pytest.mark.parametrize("how", ["torch.compile(model)", "model.compile()"])
def test_a_compiled_model_runs_eagerly_on_the_sampled_steps_and_is_compiled_once(how):
    """torch.compile: on a sampled step watch's hooks are there and the forward runs eager
    (torch.compiler.set_stance); on the others no hook of watch's is in the compiled graph,
    so it is compiled once, and the numbers are an eager twin's."""
    graphs = []

    def backend(gm, example_inputs):  # counts the graphs dynamo compiles
        graphs.append(gm)
        return gm.forward
    model, twin = mlp(nn.ReLU, norm=True), mlp(nn.ReLU, norm=True)
    if how == "model.compile()":
        model.compile(backend=backend)
        trained = model
    else:
        trained = torch.compile(model, backend=backend)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    opt_twin = torch.optim.SGD(twin.parameters(), lr=0.05)
    data = batches(12)
    with vgbench.watch(trained, opt, every=3) as w:
        train(trained, opt, data, w)
    with vgbench.watch(twin, opt_twin, every=3) as eager:
        train(twin, opt_twin, data, eager)
    assert w.compiled and [r["step"] for r in w.timeline] == [0, 3, 6, 9]
    assert w.to_dict()["layers"] == eager.to_dict()["layers"]  # the user's names
    assert len(w.points["saturated"][0]) == 6  # every ReLU seen on a sampled step
    assert len(graphs) == 1, f"compiled {len(graphs)} times"
    for k in range(4):
        assert w.points["grad_norm"][k] == pytest.approx(eager.points["grad_norm"][k],
                                                         rel=1e-4)
    assert [r["verdict"] for r in w.timeline] == [r["verdict"] for r in eager.timeline]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # torchmortem's hooks
def test_torchmortem_rides_in_the_same_loop_and_changes_nothing(real_data):
    """watch_late.py --peers in small: torchmortem's Autopsy in the same loop; watch's
    timeline is the one without it, and torchmortem's findings come back by cause."""
    pytest.importorskip("torchmortem", reason="the peers extra: pip install -e '.[peers]'")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import watch_late
    from vgbench import data

    splits = data.split(data.load_cached(), 42, 0.1)
    alone = watch_late.run("kill_relu", 0, 40, 20, 10, True, splits)
    both = watch_late.run("kill_relu", 0, 40, 20, 10, True, splits, peers=True)
    assert both["onset"] == alone["onset"] == (30, "dead units")
    assert both["val_acc"] == alone["val_acc"]
    assert "dead units" in {f["cause"] for f in both["torchmortem"]}
    assert all(isinstance(f["start"], int) for f in both["torchmortem"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: measured on the CPU's scaler"))])
def test_under_a_grad_scaler_it_reads_the_unscaled_gradients_and_skipped_steps_are_none(
        device):
    """AMP's GradScaler (CUDA's, and the CPU's, which runs the same unscale logic) unscales
    the gradients before the optimizer's step, so watch (hooked just before it) reads what
    the same run reads without scaling; a step the scaler skips (inf gradients) calls no
    optimizer step and counts none."""
    def run(scaled):
        model = mlp(nn.ReLU, norm=True).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 12, enabled=scaled)
        with vgbench.watch(model, opt, every=1) as w:
            for x, y in batches(4):
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                opt.zero_grad()
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        return w, scaler
    scaled, _ = run(True)
    plain, _ = run(False)
    for k in range(4):
        assert scaled.points["grad_norm"][k] == pytest.approx(plain.points["grad_norm"][k],
                                                              rel=1e-4)
    model = mlp(nn.ReLU, norm=True).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler(device)
    x, y = batches(1)[0]
    with vgbench.watch(model, opt, every=1) as w:
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        scaler.scale(loss).backward()
        with torch.no_grad():  # what an overflow in half precision leaves
            next(model.parameters()).grad[0, 0] = float("inf")
        scaler.step(opt)
        scaler.update()
    assert w.step_no == 0 and w.timeline == []
