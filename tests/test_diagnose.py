"""The diagnosis: each verdict on a small net whose cause is known, and the measurements it
rests on (saturation on the activation's input, the optimizer's real step, dead units over
the whole batch)."""

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from tests.test_train import tiny_splits
from vgbench import diagnose, diagnostics, expect, prediction, registry, train
from vgbench.history import History
from vgbench.point import Point
from vgbench.config import Config
from vgbench.model import Parts



def judge(point: dict, **kw) -> diagnose.Verdict:
    """diagnose on a hand-made point, given as its metrics."""
    return diagnose.diagnose(Point(**point), **kw)

def negative_biases(m: nn.Linear, cfg) -> None:
    """Every bias at -3: a He-initialized ReLU unit is then off for nearly every input."""
    nn.init.constant_(m.bias, -3.0)


HE = registry.get("he_relu").config
# (config, parts, moment, verdict): each cause built in, on tiny data (seconds)
CONSTRUCTED = {
    "vanishing": (Config(), Parts(), "init", "vanishing"),  # sigmoid, default init
    "healthy": (HE, Parts(), "init", "healthy"),
    "saturated": (replace(Config(), init="normal", init_std=10.0), Parts(), "init", "saturated"),
    "dead units": (HE, Parts(init=negative_biases), "init", "dead units"),
    "exploding": (registry.get("gradnorm_pre").config, Parts(), "init", "exploding"),
    # tanh at lr 1: finite, but every step moves the output layer by half its norm
    "exploding, finite": (replace(registry.get("tanh_xavier").config, lr=1.0), Parts(),
                          "epoch1", "exploding"),
    # ReLU, N(0, 0.02) weights, 10 layers: gradients keep their size layer to layer, but
    # the signal is so small that no step moves anything
    "frozen": (replace(registry.get("relu").config, init_std=0.02, n_layer=10), Parts(),
               "init", "frozen"),
    "diverged": (replace(HE, init="normal", init_std=1.0, lr=1e4), Parts(), "end", "diverged"),
}


@pytest.fixture(scope="module")
def tiny():
    return tiny_splits()


def run(cfg, parts, splits, epochs=1):
    return train.train(replace(cfg, epochs=epochs, batch_size=128), splits, "t", parts=parts)


@pytest.mark.parametrize("case", list(CONSTRUCTED))
def test_each_verdict_on_a_net_whose_cause_is_known(case, tiny):
    cfg, parts, moment, verdict = CONSTRUCTED[case]
    h = run(cfg, parts, tiny)
    got = diagnose.Verdict.from_dict(h.diagnosis[moment])
    assert got.verdict == verdict, f"{case}: {got}"
    assert got.moment == moment and str(got).startswith(verdict)


def test_the_diagnosis_round_trips_through_the_history(tmp_path, tiny):
    h = run(Config(), Parts(), tiny, epochs=2)
    assert set(h.diagnosis) == {"init", "epoch1", "end"}
    assert h.diagnosis["end"]["epoch"] == 2 and h.diagnosis["init"]["epoch"] == 0
    h.to_json(tmp_path / "h.json")
    assert History.from_json(tmp_path / "h.json").diagnosis == h.diagnosis


def test_vanishing_names_the_first_layer_and_its_numbers(tiny):
    v = diagnose.Verdict.from_dict(run(Config(), Parts(), tiny).diagnosis["init"])
    assert v.layer == 1
    assert v.evidence["gain_per_layer"] < 0.3  # sigmoid, default init: 1/7 per layer
    assert v.evidence["update_first"] < 1e-8 and v.evidence["update_spread"] < 1e-5
    assert "gain 0.1" in str(v) and "first-layer update" in str(v)


def test_a_failing_check_names_the_cause(tiny):
    h = run(Config(), Parts(), tiny)
    m = expect.metrics(h)
    failures = expect.evaluate("baseline", [expect.Check("test_acc", ">=", 0.7, "why")], m,
                               42, h)
    assert len(failures) == 1
    assert failures[0].startswith("baseline (seed 42): expected test_acc >= 0.7, observed")
    assert "; vanishing from layer 1: gain" in failures[0] and failures[0].endswith("[why]")


def test_a_declared_diagnosis_is_asserted(tiny):
    h = run(Config(), Parts(), tiny)
    ok = expect.Diagnosis("vanishing", "init", why="seeds")
    wrong = expect.Diagnosis("saturated", "end", why="seeds")
    failures = expect.evaluate("baseline", [], {}, 42, h, [ok, wrong])
    assert failures == [failures[0]] and "expected diagnosis at end is saturated, observed " \
        "vanishing from layer 1" in failures[0]
    with pytest.raises(ValueError, match="unknown verdict"):
        expect.Diagnosis("sad")
    with pytest.raises(ValueError, match="unknown moment"):
        expect.Diagnosis("healthy", "epoch7")


# --- the measurements the verdicts rest on ------------------------------------------------

def test_saturation_is_measured_on_the_activations_input():
    """N(0, 10) sigmoid inputs sit on the flat tails; the outputs, fed through the sigmoid
    again, would not (the sabotage: measuring on the wrong side of the activation)."""
    torch.manual_seed(0)
    h = torch.randn(512, 128) * 80  # init_std10's pre-activation scale
    act, shape = nn.Sigmoid(), diagnostics.slope_profile(nn.Sigmoid())
    on_input = diagnostics.activation_stats(act, h, *shape)[0].item()
    on_output = diagnostics.activation_stats(act, act(h), *shape)[0].item()
    assert on_input > 0.9 and on_output == 0.0


def test_saturation_comes_from_the_module_so_user_activations_work():
    class Hard(nn.Module):  # a hard sigmoid: slope 1/4 on |x| < 2, exactly 0 beyond
        def forward(self, x):
            return (x / 4 + 0.5).clamp(0, 1)

    top, rectifier = diagnostics.slope_profile(Hard())
    assert top == pytest.approx(0.25) and rectifier
    h = torch.tensor([[0.0, 1.0, 3.0, -5.0]])
    _, dead, _, _ = diagnostics.activation_stats(Hard(), h, top, rectifier)
    assert dead.item() == pytest.approx(2 / 4)  # one example: units 3 and 4 pass nothing


def test_dead_units_need_every_example_of_the_batch(tiny):
    """He-initialized ReLU with zero biases: every unit is off for about half of the
    examples, yet (nearly) none is off for all of them; one example would call half dead."""
    net = copy.deepcopy(train.Run(replace(HE, epochs=0), tiny).mlp)
    acts = []
    hooks = [a.register_forward_hook(lambda m, i, o: acts.append(i[0]))
             for a in net.activations()]
    net(tiny.train_x[:512])
    for hk in hooks:
        hk.remove()
    shape = diagnostics.slope_profile(nn.ReLU())
    whole = [diagnostics.activation_stats(nn.ReLU(), h, *shape)[1].item() for h in acts]
    one = [diagnostics.activation_stats(nn.ReLU(), h[:1], *shape)[1].item() for h in acts]
    assert max(whole) < 0.3 and min(one) > 0.3


@pytest.mark.parametrize("name", ["baseline", "adam", "clip_std10", "layerwise"])
def test_update_ratio_is_the_step_the_optimizer_takes(name, tiny):
    """The probe's update ratio equals the relative change of a real optimizer step on the
    probe batch (learning rate, Adam's state and clipping included), taken in float64 on a
    copy of the model and optimizer."""
    cfg = replace(registry.get(name).config, epochs=1, stage_epochs=1, batch_size=128,
                  probe_size=128)
    r = train.Run(cfg, tiny, name)
    r.step()  # Adam has state now; layerwise trains its first block only
    r.probe.measure(r.mlp, 99, r.updater())
    probed = r.probe.points["update_ratio"][-1]
    # the same step for real, on copies: the gradient in float32 as the probe takes it (a
    # float64 one differs where N(0, 10) sigmoids saturate: by 0.6% on one CPU, 3% on
    # another), the step in float64 (ratios of 1e-8 are below float32's resolution)
    twin = copy.deepcopy({"net": r.net, "mlp": r.mlp, "opt": r.opt})
    twin["net"].train()
    params = [p for g in twin["opt"].param_groups for p in g["params"]]
    for lin in twin["mlp"].linears():
        lin.weight.requires_grad_(True)  # layerwise: frozen ones get a gradient, not a step
    nn.functional.cross_entropy(twin["mlp"](r.probe.x), r.probe.y).backward()
    for p in twin["net"].parameters():
        p.data = p.data.double()
        if p.grad is not None:
            p.grad = p.grad.double()
    for state in twin["opt"].state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                state[key] = value.double()
    before = [lin.weight.detach().clone() for lin in twin["mlp"].linears()]
    if cfg.clip_norm is not None:
        nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    twin["opt"].step()
    real = [((lin.weight - b).norm() / b.norm()).item()
            for lin, b in zip(twin["mlp"].linears(), before)]
    # the same gradient: equal within 1e-7 here; 1e-5 leaves float64 rounding room
    torch.testing.assert_close(torch.tensor(probed), torch.tensor(real), rtol=1e-5, atol=0)
    if name == "layerwise":  # stage 1 trains layers 1-2: the others do not move
        assert probed[2:] == [0.0] * (len(probed) - 2) and min(probed[:2]) > 0


def test_update_ratio_follows_the_learning_rate(tiny):
    """The sabotage 'update ratio without the learning rate' would give equal ratios."""
    a = train.Run(replace(Config(), epochs=0, batch_size=128), tiny)
    b = train.Run(replace(Config(), epochs=0, batch_size=128, lr=1e-3), tiny)
    ua, ub = a.probe.points["update_ratio"][0], b.probe.points["update_ratio"][0]
    for x, y in zip(ua, ub):
        assert x / y == pytest.approx(10.0, rel=1e-4)


def test_probing_the_update_leaves_the_optimizer_alone(tiny):
    cfg = replace(registry.get("adam").config, epochs=1, batch_size=128)
    r = train.Run(cfg, tiny, "adam")
    r.step()
    state = copy.deepcopy(r.opt.state_dict())
    weights = [p.detach().clone() for p in r.params]
    r.probe.measure(r.mlp, 99, r.updater())
    after = r.opt.state_dict()
    for k, v in state["state"].items():
        for name, t in v.items():
            assert torch.equal(torch.as_tensor(t), torch.as_tensor(after["state"][k][name]))
    assert all(torch.equal(w, p) for w, p in zip(weights, r.params))


def test_exploding_reads_the_layers_and_the_optimizer_it_can_judge():
    big = {"grad_rms": [1.0] * 4, "update_ratio": [1e-3, 0.2, 1e-3, 1e-3],
           "saturated": [0.0] * 3, "dead": [0.0] * 3, "preact_rms": [0.5] * 3}
    assert judge(big).verdict == "exploding"  # no more evidence: as before
    # a norm follows layer 2 (the loss ignores its scale): its large step only turns it
    free = {**big, "grad_cos": [0.1, diagnose.SCALE_FREE / 2, 0.1, 0.1]}
    assert judge(free).verdict == "healthy"
    assert judge({**free, "grad_cos": [0.1] * 4}).layer == 2
    # Adam's first step is its learning rate: large, but the loss falls -> not exploding
    adam = {**big, "step_gain": 1.0, "loss": 2.3, "loss_after_step": 2.1}
    assert judge(adam).verdict == "healthy"
    assert judge({**adam, "loss_after_step": 2.4}).verdict == "exploding"
    assert judge({**adam, "loss_after_step": math.nan}).verdict == "exploding"
    # SGD's step grows with the gradient: a large one is exploding even if the loss falls
    sgd = {**adam, "step_gain": 2.0}
    v = judge(sgd)
    assert v.verdict == "exploding" and "from 2.3 to 2.1" in v.why
    # a step as large as the weight itself replaces it: exploding even if this batch's loss falls
    replace_ = {**adam, "update_scaled": [1e-3, diagnose.REPLACE_STEP * 1.5, 1e-3, 1e-3]}
    assert judge(replace_).verdict == "exploding"
    assert judge({**replace_, "update_scaled": [1e-3, 0.5, 1e-3, 1e-3]}
                             ).verdict == "healthy"


def test_the_loss_after_a_large_step_is_read_against_the_line_of_where_it_came_from():
    """A large SGD step (exploding by its size alone) is forgiven where the loss after it
    stays below the line: LOSS_RISE for a run's steps (watch), LOOKAHEAD_RISE for inspect's
    steps on the probe batch; the same rise between the two lines is exploding in a run and
    not in the lookahead; a step that replaces the weight is exploding whatever follows."""
    sgd = {"grad_rms": [1.0] * 4, "update_ratio": [1e-3, 0.2, 1e-3, 1e-3],
           "saturated": [0.0] * 3, "dead": [0.0] * 3, "preact_rms": [0.5] * 3,
           "step_gain": 2.0, "loss": 2.3, "loss_after_step": 2.1}
    between = (diagnose.LOSS_RISE * diagnose.LOOKAHEAD_RISE) ** 0.5
    assert diagnose.LOSS_RISE < between < diagnose.LOOKAHEAD_RISE
    assert judge(sgd, loss_rise=between).verdict == "exploding"
    assert judge(sgd, loss_rise=between, rise_limit=diagnose.LOOKAHEAD_RISE
                 ).verdict == "healthy"
    above = judge(sgd, loss_rise=diagnose.LOOKAHEAD_RISE * 1.1,
                  rise_limit=diagnose.LOOKAHEAD_RISE)
    assert above.verdict == "exploding" and "times the loss before" in above.why
    replaced = {**sgd, "update_scaled": [1e-3, diagnose.REPLACE_STEP * 1.5, 1e-3, 1e-3]}
    assert judge(replaced, loss_rise=0.5, rise_limit=diagnose.LOOKAHEAD_RISE
                 ).verdict == "exploding"


def test_inspects_trial_reads_the_loss_only_where_the_verdict_would_be_healthy():
    """inspect(trial=True) passes fit (the mean loss over its steps on the probe batch over
    the start) and loss_rise (over its first steps). A saddle, a first step that changes the
    loss by less than FROZEN_DROP of it with a fit above 1 - FIT_FALL, is frozen; a fit that
    falls, or a first step that moves the loss, is not; a rise up to LOOKAHEAD_RISE is
    exploding. Without a trial (fit None) neither rule runs, and the trial never overrules
    another verdict (vanishing stays vanishing)."""
    calm = {"grad_rms": [1.0] * 4, "update_ratio": [1e-3] * 4, "saturated": [0.0] * 3,
            "dead": [0.0] * 3, "preact_rms": [0.5] * 3, "step_gain": 2.0, "loss": 2.3,
            "loss_after_step": 2.3 * (1 - diagnose.FROZEN_DROP / 2)}
    stays = 1 - diagnose.FIT_FALL / 2
    assert judge(calm).verdict == "healthy"
    assert judge(calm, loss_rise=1.0, fit=None).verdict == "healthy"
    v = judge(calm, loss_rise=1.0, rise_limit=diagnose.LOOKAHEAD_RISE, fit=stays)
    assert v.verdict == "frozen" and "cannot fit" in v.why and v.evidence["fit"] == stays
    assert judge(calm, loss_rise=1.0, fit=1 - 2 * diagnose.FIT_FALL).verdict == "healthy"
    moved = {**calm, "loss_after_step": 2.3 * (1 - 2 * diagnose.FROZEN_DROP)}
    assert judge(moved, loss_rise=1.0, fit=stays).verdict == "healthy"  # it swings, not stays
    up = judge(moved, loss_rise=diagnose.LOOKAHEAD_RISE * 1.1,
               rise_limit=diagnose.LOOKAHEAD_RISE, fit=1.5)
    assert up.verdict == "exploding" and "runs away" in up.why
    assert judge(moved, loss_rise=diagnose.LOOKAHEAD_RISE * 1.1,
                 rise_limit=diagnose.LOOKAHEAD_RISE).verdict == "healthy"  # no trial
    fading = {**calm, "grad_rms": [1e-6, 1e-4, 1e-2, 1.0],
              "update_ratio": [1e-9, 1e-7, 1e-5, 1e-3]}
    assert judge(fading).verdict == "vanishing"
    assert judge(fading, loss_rise=1.0, fit=stays).verdict == "vanishing"


def test_a_gradient_that_grows_toward_the_input_at_init_is_exploding():
    """Updates at the optimizer's own rate (Adam's), activations fine, but the first
    layer's per-example gradient EXPLODE_SPREAD times the output layer's or more: exploding
    from the first layer at init; below the line, or once training has started: not."""
    n = 5
    grown = {"grad_rms": [diagnose.EXPLODE_SPREAD * 2 ** -k for k in range(n - 1)] + [1.0],
             "update_ratio": [1e-3] * n, "saturated": [0.0] * (n - 1),
             "dead": [0.0] * (n - 1), "preact_rms": [0.5] * (n - 1)}
    grown["grad_rms"][0] *= 1.01
    for moment in ("init", "inspect"):
        v = judge(grown, moment=moment)
        assert v.verdict == "exploding" and v.layer == 1, v
        assert v.evidence["ratio_rms"] > diagnose.EXPLODE_SPREAD
        assert "grows toward the input" in v.why
    for moment in ("epoch1", "end", "watch"):
        assert judge(grown, moment=moment).verdict == "healthy"
    below = {**grown, "grad_rms": [diagnose.EXPLODE_SPREAD * 0.99] + grown["grad_rms"][1:]}
    assert judge(below, moment="inspect").verdict == "healthy"


def test_a_step_that_raises_the_batchs_loss_at_init_overshoots():
    """No layer moves much (the chain's updates are small), but the step raises the probe
    batch's loss by more than OVERSHOOT at init: exploding, no layer named; after training
    started, or a smaller rise: not."""
    calm = {"grad_rms": [1.0] * 4, "update_ratio": [1e-3] * 4, "saturated": [0.0] * 3,
            "dead": [0.0] * 3, "preact_rms": [0.5] * 3, "step_gain": 1.0, "loss": 2.3}
    rise = {**calm, "loss_after_step": 2.3 * (1 + diagnose.OVERSHOOT) + 0.05}
    for moment in ("init", "inspect"):
        v = judge(rise, moment=moment)
        assert v.verdict == "exploding" and v.layer is None and "overshoots" in v.why
    assert judge(rise, moment="end").verdict == "healthy"
    assert judge({**calm, "loss_after_step": 2.35}, moment="init").verdict == "healthy"
    assert judge({**calm, "loss_after_step": 2.0}, moment="init").verdict == "healthy"


def test_diagnose_on_hand_made_points():
    base = {"grad_rms": [1e-6, 1e-4, 1e-2, 1.0], "update_ratio": [1e-9, 1e-7, 1e-5, 1e-3],
            "saturated": [0.0, 0.0, 0.0], "dead": [0.0, 0.0, 0.0],
            "preact_rms": [0.5, 0.5, 0.5]}
    assert judge(base).verdict == "vanishing"
    # dead units are the cause where they explain the loss of gradient, not where it vanishes
    # by far more than they take (a layer with 80% dead passes sqrt(0.2) of the norm)
    assert judge({**base, "dead": [0.0, 0.8, 0.0]}).verdict == "vanishing"
    assert judge({**base, "dead": [0.0, 1.0, 0.0]}).layer == 2
    flowing = {**base, "grad_rms": [1.0] * 4, "update_ratio": [1e-3] * 4}
    assert judge({**flowing, "dead": [0.0, 0.8, 0.0]}).verdict == "dead units"
    # half a layer off passes most of the gradient (sqrt(0.5) of its norm): not a verdict
    assert judge({**flowing, "dead": [0.0, 0.55, 0.0]}).verdict == "healthy"
    assert judge({**base, "saturated": [0.4, 0.6, 0.7]}).layer == 2
    assert judge({**base, "saturated": [0.0, 0.0, 0.9]}).verdict == "vanishing"
    # a smooth activation's exact zeros are saturation, not dead units
    sig = {**base, "dead": [0.0, 0.9, 0.0], "rectifier": [False] * 3}
    assert judge(sig).verdict == "vanishing"
    flat = {**base, "grad_rms": [1.0] * 4, "update_ratio": [1e-7] * 4}
    assert judge(flat).verdict == "frozen"
    assert judge({**flat, "update_ratio": [1e-3] * 4}).verdict == "healthy"
    assert judge({**flat, "update_ratio": [1e-3, 1e-3, 2.0, 1e-3]}).layer == 3
    assert judge({**flat, "grad_rms": [math.nan] * 4}).verdict == "diverged"
    # Adam: the first layer's gradient vanishes, its update does not -> not vanishing
    adam = {**base, "update_ratio": [6e-3, 1e-2, 2e-2, 2e-2]}
    assert judge(adam).verdict == "healthy"


def test_time_is_depth_in_the_verdict():
    """A recurrent layer whose gradient falls over its time steps is vanishing there, even
    when the weight chain looks healthy; at or above VANISH_TIME, or undefined, it is not."""
    ok = {"grad_rms": [1.0, 1.0], "update_ratio": [1e-3, 1e-3], "saturated": [0.0],
          "dead": [0.0], "preact_rms": [0.5]}
    assert judge(ok).verdict == "healthy"
    lost = {**ok, "through_time": [{"layer": 1, "steps": 100, "ratio": 1e-20}]}
    v = judge(lost)
    assert (v.verdict, v.layer, v.evidence["time_steps"]) == ("vanishing", 1, 100)
    assert v.evidence["gain_per_step"] == pytest.approx(1e-20 ** (1 / 99))
    assert "through time, over 100 steps" in v.why
    for ratio in (diagnose.VANISH_TIME, 0.5, math.nan):
        kept = {**ok, "through_time": [{"layer": 1, "steps": 100, "ratio": ratio}]}
        assert judge(kept).verdict == "healthy"
    # depth first: a vanishing weight chain is named as such
    deep = {**lost, "grad_rms": [1e-6, 1.0], "update_ratio": [1e-9, 1e-3]}
    assert "through time" not in judge(deep).why


def test_a_gradient_that_grows_back_in_time_is_exploding():
    """Above EXPLODE_TIME (the first step's input gets that many times the last step's
    gradient) a recurrent layer is exploding through time; at or below it, it is not."""
    ok = {"grad_rms": [1.0, 1.0], "update_ratio": [1e-3, 1e-3], "saturated": [0.0],
          "dead": [0.0], "preact_rms": [0.5]}
    grown = {**ok, "through_time": [{"layer": 1, "steps": 28, "ratio": 558.0}]}
    v = judge(grown)
    assert (v.verdict, v.layer, v.evidence["time_steps"]) == ("exploding", 1, 28)
    assert v.evidence["gain_per_step"] == pytest.approx(558.0 ** (1 / 27))
    assert "through time, over 28 steps" in v.why and "5.6e+02 times" in v.why
    for ratio in (diagnose.EXPLODE_TIME, 1.0, math.nan):
        kept = {**ok, "through_time": [{"layer": 1, "steps": 28, "ratio": ratio}]}
        assert judge(kept).verdict == "healthy"


def test_prediction_from_init_and_epoch1():
    healthy = {"epoch1": {"verdict": "healthy"}}
    assert prediction.predict_trainable(healthy) is True
    assert prediction.predict_trainable({"epoch1": {"verdict": "vanishing"}}) is False
    assert prediction.predict_trainable({"epoch1": {"verdict": "vanishing"}}, 0.6) is True


def test_prediction_trusts_an_epoch1_accuracy_halfway_to_trained():
    """A broken verdict predicts a stall unless the run is already learning (gradnorm at
    depth 3: saturated after epoch 1 at 0.46, trained to 0.87); below halfway it stays a no,
    and a healthy run with too little reach stays a no however close its accuracy is."""
    saturated = {"epoch1": {"verdict": "saturated", "evidence": {"update_min": 1e-3}}}
    assert prediction.LEARNING_ACC == 0.3
    assert prediction.predict_trainable(saturated, 0.46, 3180) is True
    assert prediction.predict_trainable(saturated, 0.29, 3180) is False
    slow = {"epoch1": {"verdict": "healthy", "evidence": {"update_min": 1e-7}}}
    assert prediction.predict_trainable(slow, 0.29, 3180) is False
    assert prediction.predict_trainable(slow, 0.3, 3180) is True
    assert prediction.predict_trainable(slow, None, 3180) is False
    moving = {"epoch1": {"verdict": "healthy", "evidence": {"update_min": 2e-6}}}
    assert prediction.predict_trainable(moving, 0.1, 3180) is True  # 3180 x 2e-6 = 0.64%
    assert prediction.predict_trainable(moving, 0.1, 1000) is False  # 0.2%


def test_a_recurrence_whose_gates_sit_on_their_tails_is_saturated_at_init():
    """At init a recurrent layer with GATE_SATURATED or more of its kernel's activations on a
    flat tail is saturated, the layer named; below the line, NaN (not measured) or once
    training has started (a trained forget gate held open is memory) it is not; a gradient
    that grows back in time is named first, one that fades back in time after it."""
    ok = {"grad_rms": [1.0, 1.0], "update_ratio": [1e-3, 1e-3], "saturated": [0.3],
          "dead": [0.0], "preact_rms": [0.5]}
    tails = {**ok, "through_time": [{"layer": 1, "steps": 24, "ratio": 0.33,
                                     "saturated": 0.30, "name": "rnn"}]}
    v = judge(tails, moment="inspect")
    assert (v.verdict, v.layer, v.evidence["gates_saturated"]) == ("saturated", 1, 0.30)
    assert "30% of the activations inside rnn" in v.why
    assert judge(tails, moment="init").verdict == "saturated"
    assert judge(tails, moment="end").verdict == "healthy"
    for share in (0.049, math.nan):
        kept = {**ok, "through_time": [{**tails["through_time"][0], "saturated": share}]}
        assert judge(kept, moment="inspect").verdict == "healthy"
    assert diagnose.GATE_SATURATED == 0.05
    grown = {**ok, "through_time": [{**tails["through_time"][0], "ratio": 558.0}]}
    assert judge(grown, moment="inspect").verdict == "exploding"
    lost = {**ok, "through_time": [{**tails["through_time"][0], "ratio": 1e-20}]}
    assert judge(lost, moment="inspect").verdict == "saturated"  # the cause of that loss
    assert judge(lost, moment="end").verdict == "vanishing"
