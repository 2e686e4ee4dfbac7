"""What is wrong and where: a verdict from the probe's measurements (no training, no pytest).

The probe (probe.py) measures, at init and after every epoch, per layer: the
per-example gradient norms, the step the run's optimizer would take relative to each
weight (update ratio), and per hidden activation the saturated and dead fractions and the
pre-activation scale. `diagnose` turns one such moment into one Verdict:

    diverged    the loss or the weights are not finite
    exploding   one step would move some layer by a sizeable part of its own norm; or, in
                a recurrent layer, the loss's gradient grows going back in time; or, at
                init, the gradient grows layer by layer toward the input by orders of
                magnitude
    dead units  a hidden layer of rectifiers (ReLU) has three quarters or more of its
                units at slope exactly 0 on every example of the probe batch: they pass
                no gradient and cannot revive
    saturated   half or more of all hidden activations sit on a flat tail (for a smooth
                activation such as the sigmoid, exact zeros of the slope count here); or
                an attention's softmax rows sit on one key while its output outweighs
                its input; or, at init, a recurrent layer's gates sit on a flat tail
    vanishing   the input side's updates are orders of magnitude smaller than the output
                side's, and the gradient shrinks layer by layer toward the input; or, in
                a recurrent layer (time is depth), the loss's gradient with respect to
                the first step's input is orders of magnitude smaller than the last's;
                or, across positions, an attention routes almost no gradient to the
                positions the output does not read, and what it reads says nothing of
                the labels
    frozen      no layer's update is large enough to move it within a training budget,
                although the gradient does not shrink toward the input (a ratio that looks
                fine); or, in inspect's trial, real steps cannot lower even the probe
                batch's loss
    healthy     none of these

The rules are checked in this order; the first that holds is the verdict. Where each
threshold comes from is data in calibration.py (rendered in docs/thresholds.md). A Verdict
is data (JSON-ready), so the history, the summary,
the failure message, the figure and the user assertion all print the same object.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from vgbench.point import Point

VERDICTS = ("healthy", "vanishing", "exploding", "saturated", "dead units", "frozen",
            "diverged")
"""Every verdict diagnose can return."""
BY_ACTIVATION = ("dead units", "saturated")
"""Verdicts whose layer counts the hidden activations (the others count the weights)."""
MOMENTS = ("init", "epoch1", "end")
"""When a run is diagnosed: before training, after its first epoch, after its last."""

EXPLODE_UPDATE = 0.05
"""exploding: some layer's update ratio (one step, ||dW|| / ||W||) is above this: twenty
such steps would double the layer."""
SCALE_FREE = 1e-3
"""exploding ignores a layer whose weight is this close to orthogonal to its gradient or
closer (|cos|, Point.grad_cos): the loss hardly depends on that weight's scale (a norm
follows it), so a large step mostly turns it and its norm grows, which shrinks the next
step (the self-tuning step of normalized layers, Arora et al. 2019)."""
# exploding reads update_scaled where the probe has it (point.Point): a weight
# started below PyTorch's default scale (VGG's and timm's heads at std 0.01, a ResNet's head
# times 0.1) is meant to grow, and a step large only next to itself is not an explosion.
ADAPTIVE_GAIN = 1.5
"""An optimizer whose step grows by less than this when the gradient doubles
(Point.step_gain: SGD 2, Adam's first step about 1) sets its step by its learning rate,
not by the gradient: there a large update ratio is exploding only if the step raises the
probe batch's loss."""
REPLACE_STEP = 1.0
"""exploding whatever the batch's loss does: a step at least this large next to the weight
(Point.update_scaled) replaces the weight in one step; on the batch it was computed on it
can still lower the loss, but training does not recover."""
LOSS_RISE = 1.5
"""exploding, where the loss after the step is known (diagnose's loss_rise): a step below
REPLACE_STEP, or one that overshoots (OVERSHOOT), is an explosion only if the mean loss over
the steps after it is at least this many times the mean over the steps up to it; a large
step after which the loss goes on falling is the optimizer's (SGD momentum on a head,
AdamW's first step), not an explosion. A watched run gives it from the run; inspect from
lookahead.LOOKAHEAD real steps on the probe batch (everything put back after), read
against its own line, LOOKAHEAD_RISE."""
LOOKAHEAD_RISE = 2.5
"""exploding at init where inspect's lookahead decides (lookahead.LOOKAHEAD real steps of the
optimizer on the probe batch, everything put back): LOSS_RISE's rule, read on those steps'
mean loss over the loss before them. Its own line: ten steps on one batch from init are not
a run's steps on fresh batches, and SGD with momentum on a deep batch-normed net without
warm-up swings up on them and recovers in training. Calibration: calibration.py."""
OVERSHOOT = 0.1
"""exploding at init (moments 'init' and 'inspect'): the step the optimizer would take raises
the probe batch's loss by more than this share: it overshoots on the very batch it was
computed from, unless the loss over the steps after it stays below LOSS_RISE times the
start (LOOKAHEAD_RISE for inspect's lookahead). Not applied once training has started, where a step near a minimum can raise a small
loss by more than this."""
DEAD_SHARE = 0.75
"""dead units: a hidden layer of rectifiers with at least this share of its units dead: it
passes at most half the gradient's norm (sqrt(1 - 0.75)); half a layer off passes 0.7 of
it, and nets that train have such layers (calibration.py)."""
SATURATED_SHARE = 0.5
"""saturated: at least this share of all hidden activations on a flat tail
(diagnostics.SLOPE_FRACTION), averaged over the hidden layers (one saturated layer is not
enough: deep nets that train can have one)."""
ATTENTION_SATURATED = 0.25
"""saturated through an attention: at least this share of its softmax rows on a flat tail
(one key takes all the weight: the scores, and so the queries and keys, get almost no
gradient)..."""
ATTENTION_GAIN = 12.0
"""...while its output's RMS is at least this many times the RMS of the residual stream
it is added to (layout.gains: the input of the block that calls it): nothing the skip
carries routes around the frozen choice. Either alone trains (calibration.py); a pre-norm
stack's first attention is where the gain is (the stream then grows and dwarfs the later
ones)."""
VANISH_SPREAD = 5e-3
"""vanishing: the first layer's update ratio over the output layer's is below this: the
input side learns 200 times slower than the output side."""
VANISH_GAIN = 1.0
"""vanishing also needs the per-example gradient to shrink toward the input (geometric-mean
gain per layer below 1); otherwise a small first-layer update is the optimizer's doing."""
FROZEN_UPDATE = 3e-6
"""frozen: every layer's update ratio is below this, so over the protocol's 10,600 steps
(100 epochs of 106) no layer can move by more than 3% of its norm."""
FROZEN_DROP = 2e-4
"""frozen in inspect's trial, the saddle: the step the optimizer would take changes the probe
batch's loss by less than this share of it (every weight scaled down behind the norms: the
logits start tiny and the gradient is small everywhere). The trial's fit (FIT_FALL) then
tells a net that stays from one that gets going. Calibration: calibration.py."""
FIT_FALL = 0.09
"""frozen in inspect's trial (lookahead.TRIAL real steps of the optimizer on the probe batch,
everything put back), where the first step hardly moves the loss (FROZEN_DROP): the mean
loss over the trial's steps stays above 1 - FIT_FALL of the loss before them: the network
cannot fit even the batch it was measured on. Calibration: calibration.py."""
VANISH_TIME = 5e-3
"""vanishing through time: a recurrent layer (RNN, LSTM, GRU) where the loss's gradient with
respect to its first time step's input is below this share of the last step's (the depth
rule's 200x, VANISH_SPREAD, for steps instead of layers)."""
TIME_SIGNAL = 1.5
"""vanishing through time needs, as well, that the gradient reaching the recurrent layer's
inputs carries nothing about the labels: the common part of its input weights'
per-example gradients with the batch's labels over the same with the labels shifted by one
example (reach.label_signal; about 1 without a tie) at most this (vanishing across
positions reads it at the output layer's weight). A recurrence whose gradient reaches only
the last steps still learns where those steps tell the label (Fashion-MNIST's rows), not
where the answer lies further back (recalling the first token). At batches below 64 the
ratio of nets that learn falls toward 1. Calibration: calibration.py."""
VANISH_REACH = 5e-3
"""vanishing across positions: at the stream the first attention adds to, the loss's
gradient at the median position is below this share of the position that gets the most
(reach.across_positions; the depth rule's 200x, as VANISH_TIME): a network that reads its
output from one position (a decoder's last token, a class token) hears the others only
through its attention, and here it routes almost nothing. Judged, like VANISH_TIME, only
where the output layer's gradient does not carry the labels (TIME_SIGNAL, at the output
layer's weight): the position read may tell the answer itself. Calibration: calibration.py."""
EXPLODE_TIME = 10.0
"""exploding through time: a recurrent layer where the loss's gradient with respect to its
first time step's input is above this many times the last step's: it grows as it goes back
in time (a recurrence that keeps its memory perfectly, an LSTM with open forget gates,
keeps it at about 1). Calibration: calibration.py."""
GATE_SATURATED = 0.05
"""saturated at init (moments 'init' and 'inspect'), in a recurrent layer (RNN, LSTM, GRU):
the nonlinearities inside its kernel (its gates and cell, kernels.GATES, over every example
and time step) have at least this share on a flat tail, on average: a layer drawn at its
usual scale has none (weights within 1/sqrt(hidden) keep every gate near its middle), and a
gate on a flat tail passes no gradient to the weights that would open or close it, at any
step. Read after exploding through time (a gradient that grows back in time is the larger
trouble) and before vanishing through time (saturated gates are its cause there). Not
applied once training has started: a trained forget gate held open is memory.
Calibration: calibration.py."""

EXPLODE_SPREAD = 1500.0
"""exploding at init (moments 'init' and 'inspect'), the gradient growing toward the input:
the first layer's per-example gradient norm above this many times the output layer's along
the verdict's chain (the exploding gradient of Pascanu et al. 2013; batch norm without
skips makes it at init, Yang et al. 2019). An adaptive optimizer (Adam, AdamW) scales its
steps back to its learning rate, so the update rule does not see it; the loss is then most
sensitive to the weights that move as much as any. Not applied once training has started,
when the first layers' gradients can dominate in nets that train. Calibration:
calibration.py."""

MOMENT_POINTS = {"init": 0, "epoch1": 1, "end": -1}
"""The probe point of each moment (probe points: 0 = init, then one per epoch)."""


@dataclass(frozen=True)
class Verdict:
    """One diagnosis: the verdict, the layer where it starts (1-based Linear index, input
    layer 1; None: the whole network), the numbers that decided it, and a sentence."""

    verdict: str
    layer: int | None
    evidence: dict = field(default_factory=dict)
    why: str = ""
    moment: str = ""
    epoch: int | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; choose from {list(VERDICTS)}")

    def __str__(self) -> str:
        where = f" from layer {self.layer}" if self.layer is not None else ""
        return f"{self.verdict}{where}: {self.why}" if self.why else self.verdict + where

    def to_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Verdict":
        """Inverse of to_dict."""
        return cls(**d)


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _g(v: float) -> str:
    return f"{v:.2g}"


def gains(grad_rms: list[float]) -> list[float]:
    """Per layer below the output: this layer's per-example gradient norm over the next
    one's (a gain below 1 means the gradient shrank on its way down); NaN where undefined."""
    return [a / b if b and b > 0 else math.nan for a, b in zip(grad_rms[:-1], grad_rms[1:])]


def gain_per_layer(grad_rms: list[float]) -> float:
    """Geometric-mean gain per layer from the output layer to the first."""
    first, last = grad_rms[0], grad_rms[-1]
    if len(grad_rms) < 2 or not last or last <= 0:
        return math.nan
    if first == 0:  # below float32's range (deep sigmoid nets, about 30 layers and more)
        return 0.0
    return (first / last) ** (1 / (len(grad_rms) - 1))


def diagnose(point: Point, theory: dict | None = None, moment: str = "",
             epoch: int | None = None, diverged: str | None = None,
             loss_rise: float | None = None, rise_limit: float = LOSS_RISE,
             fit: float | None = None) -> Verdict:
    """The verdict for one probe point (its weights the chain the signal passes, input
    first; its names are the sentence's). theory: the history's mean-field prediction (for
    the pre-activation scale against the fixed point), or None. diverged: why the run
    diverged, if it did. loss_rise: in a real run whose point is a step the optimizer took,
    the mean loss over the steps after it over the mean up to it (None: not known);
    rise_limit: the line it is read against (LOSS_RISE for a run, LOOKAHEAD_RISE for
    inspect's lookahead on the probe batch). fit: inspect's trial, the mean loss over its
    real steps on the probe batch over the loss before them (None: no trial); with it a
    verdict that would be healthy is exploding where loss_rise (the trial's first steps)
    reaches rise_limit, and frozen where the step hardly moves the loss (FROZEN_DROP) and
    fit stays above 1 - FIT_FALL.
    """
    rms, upd = point.grad_rms, point.update_ratio
    sat, dead, pre = point.saturated, point.dead, point.preact_rms
    weight, unit = point.layer_name, point.activation_name
    ev: dict = {}
    if pre and _finite(pre):
        ev["preact_q"] = sum(p * p for p in pre) / len(pre)
        if theory and theory.get("q_star") is not None:
            ev["q_star"] = theory["q_star"]

    def verdict(name, layer, why, **numbers):
        return Verdict(name, layer, {**numbers, **ev}, why, moment, epoch)

    if diverged or not (_finite(rms) and _finite(upd)):
        return verdict("diverged", None, diverged or "non-finite gradients or updates")
    ev["update_min"], ev["update_max"] = min(upd), max(upd)
    rect = point.rectifier or [True] * len(dead)
    dead_layers = [i for i, (v, r) in enumerate(zip(dead, rect)) if r and v >= DEAD_SHARE]
    g = gain_per_layer(rms)
    spread = upd[0] / upd[-1] if upd[-1] > 0 else math.nan
    if dead_layers and not _vanishing_beyond_dead(rms, upd, g, dead, rect):
        i = dead_layers[0]
        return verdict("dead units", i + 1,
                       f"{dead[i]:.0%} of {unit(i)}'s units pass no gradient for any "
                       f"example (mean over layers {sum(dead) / len(dead):.0%})",
                       dead_layer=dead[i], dead_mean=sum(dead) / len(dead))
    if sat and sum(sat) / len(sat) >= SATURATED_SHARE:
        i = next(i for i, v in enumerate(sat) if v >= SATURATED_SHARE)
        return verdict("saturated", i + 1,
                       f"{sum(sat) / len(sat):.0%} of the hidden activations sit on a flat "
                       f"tail ({sat[i]:.0%} in {unit(i)})",
                       saturated_mean=sum(sat) / len(sat), saturated_layer=sat[i])
    for a in point.attention:
        if a["saturated"] >= ATTENTION_SATURATED and a["gain"] >= ATTENTION_GAIN:
            return verdict("saturated", None,
                           f"{a['saturated']:.0%} of {a['name']}'s softmax rows give one key "
                           f"all their weight, and its output is {_g(a['gain'])} times its "
                           "input: its scores get almost no gradient, and what it adds "
                           "outweighs what the skip carries around it",
                           attention=a["name"], attention_saturated=a["saturated"],
                           attention_gain=a["gain"])
    top = max(range(len(upd)), key=lambda i: upd[i])
    cos = point.grad_cos or [1.0] * len(upd)
    sensitive = [i for i in range(len(upd)) if not cos[i] < SCALE_FREE]
    loss, after = point.loss, point.loss_after_step
    adaptive = (point.step_gain or 2.0) < ADAPTIVE_GAIN
    lowered = loss is not None and after is not None and after < loss  # NaN: it rose
    step = point.update_scaled or upd  # against at least the default init's scale
    big = max(sensitive, key=lambda i: step[i]) if sensitive else None
    calm = loss_rise is not None and math.isfinite(loss_rise) and loss_rise < rise_limit
    if big is not None and step[big] > EXPLODE_UPDATE and not (
            (adaptive and lowered or calm) and step[big] < REPLACE_STEP):
        rose = "" if loss is None or after is None else (
            f"; the step takes the batch's loss from {_g(loss)} to {_g(after)}")
        if loss_rise is not None:
            rose += f"; the loss after it is {_g(loss_rise)} times the loss before"
        return verdict("exploding", big + 1,
                       f"one step would move {weight(big)} by {_g(upd[big])} of its "
                       f"norm{rose}",
                       ratio_rms=rms[0] / rms[-1] if rms[-1] else None,
                       loss=loss, loss_after_step=after)
    if (moment in ("init", "inspect") and loss and after is not None and math.isfinite(after)
            and after > loss * (1 + OVERSHOOT) and not calm):
        return verdict("exploding", None,
                       f"the step the optimizer would take raises the batch's loss from "
                       f"{_g(loss)} to {_g(after)} ({after / loss - 1:+.0%}): it overshoots",
                       loss=loss, loss_after_step=after)
    for t in point.through_time:
        if t["ratio"] > EXPLODE_TIME:
            per_step = t["ratio"] ** (1 / (t["steps"] - 1))
            return verdict("exploding", t["layer"],
                           f"through time, over {t['steps']} steps: the loss's gradient at "
                           f"the first step's input is {_g(t['ratio'])} times the last "
                           f"step's (gain {_g(per_step)} per step)",
                           time_ratio=t["ratio"], time_steps=t["steps"],
                           gain_per_step=per_step)
    for t in point.through_time if moment in ("init", "inspect") else ():
        if t.get("saturated", math.nan) >= GATE_SATURATED:
            return verdict("saturated", t["layer"],
                           f"{t['saturated']:.0%} of the activations inside {t['name']} (its "
                           "gates and cell, every example and step) sit on a flat tail: they "
                           "pass no gradient to the weights that set them",
                           gates_saturated=t["saturated"], time_steps=t["steps"],
                           gain_per_layer=g)
    grown = rms[0] / rms[-1] if rms[-1] > 0 else math.nan
    if moment in ("init", "inspect") and grown > EXPLODE_SPREAD:
        return verdict("exploding", 1,
                       f"the gradient grows toward the input: {weight(0)}'s per-example "
                       f"gradient is {_g(grown)} times the output layer's (gain {_g(g)} per "
                       f"layer over {len(rms)} layers)",
                       ratio_rms=grown, gain_per_layer=g)
    if _vanishes(upd, g):
        per = gains(rms)
        start = next((i for i in range(len(per) - 1, -1, -1) if per[i] >= VANISH_GAIN), None)
        layer = 1 if start is None else start + 2
        return verdict("vanishing", layer,
                       f"gain {_g(g)} per layer, first-layer update {_g(upd[0])} of its "
                       f"weight per step ({_g(spread)} of the output layer's)",
                       gain_per_layer=g, update_first=upd[0], update_out=upd[-1],
                       update_spread=spread)
    for t in point.through_time:
        # NaN ratio (no gradient at the last step): no verdict; NaN signal: the ratio decides
        if t["ratio"] < VANISH_TIME and not t.get("signal", math.nan) > TIME_SIGNAL:
            per_step = t["ratio"] ** (1 / (t["steps"] - 1)) if t["steps"] > 1 else math.nan
            return verdict("vanishing", t["layer"],
                           f"through time, over {t['steps']} steps: the loss's gradient at "
                           f"the first step's input is {_g(t['ratio'])} of the last step's "
                           f"(gain {_g(per_step)} per step)",
                           time_ratio=t["ratio"], time_steps=t["steps"],
                           gain_per_step=per_step, gain_per_layer=g)
    for t in point.positions:
        if t["reach"] < VANISH_REACH and not t.get("signal", math.nan) > TIME_SIGNAL:
            return verdict("vanishing", t["layer"],
                           f"across {t['positions']} positions: the loss's gradient at the "
                           f"median position of the stream it adds to is {_g(t['reach'])} "
                           "of the largest, and the output layer's gradient carries nothing "
                           "of the labels: what the output reads does not tell them, and "
                           "the other positions are out of reach",
                           reach=t["reach"], positions=t["positions"],
                           attention=t["name"], label_signal=t.get("signal"),
                           gain_per_layer=g)
    if upd[top] < FROZEN_UPDATE:
        return verdict("frozen", None,
                       f"the largest update is {_g(upd[top])} of a weight per step "
                       f"({weight(top)}), gain {_g(g)} per layer",
                       gain_per_layer=g)
    if fit is not None and loss_rise is not None and loss_rise >= rise_limit:
        return verdict("exploding", None,
                       f"real steps of the optimizer on the probe batch take its loss to "
                       f"{_g(loss_rise)} times the loss before them on average (from "
                       f"{_g(rise_limit)} it runs away)", loss_rise=loss_rise,
                       gain_per_layer=g)
    if (fit is not None and 1 - FIT_FALL < fit < math.inf and after is not None
            and loss and abs(after - loss) < FROZEN_DROP * loss):
        return verdict("frozen", None,
                       f"the step the optimizer would take changes the batch's loss by "
                       f"{_g(abs(after - loss) / loss)} of it, and real steps on the batch "
                       f"leave it at {_g(fit)} of the start on average: it cannot fit even "
                       "the batch it was measured on", fit=fit, loss=loss,
                       loss_after_step=after, gain_per_layer=g)
    return verdict("healthy", None,
                   f"gain {_g(g)} per layer, updates {_g(min(upd))}..{_g(upd[top])} per step",
                   gain_per_layer=g, update_spread=spread)


def _vanishes(upd: list[float], g: float) -> bool:
    """The vanishing rule: the first layer's update below VANISH_SPREAD of the output
    layer's (or the output layer not moving at all), and the gradient shrinking toward the
    input (gain per layer below VANISH_GAIN)."""
    return (upd[-1] == 0 or upd[0] / upd[-1] < VANISH_SPREAD) and g < VANISH_GAIN


def _vanishing_beyond_dead(rms, upd, g, dead, rect) -> bool:
    """Whether the gradient vanishes by more than the dead units explain: the vanishing rule
    holds, and the first layer's gradient, relative to the last, is below VANISH_SPREAD even
    after dividing out what the dead units take (a layer with a share d of its units dead
    passes at most sqrt(1 - d) of the gradient's norm). A ReLU net whose units all died
    (biases -1) is dead units; a plain ReLU CNN whose small init shrinks every layer, with a
    third of its units dead as a consequence, is vanishing."""
    if not _vanishes(upd, g):
        return False
    passed = math.prod(math.sqrt(max(0.0, 1 - d)) for d, r in zip(dead, rect) if r)
    ratio = rms[0] / rms[-1] if rms[-1] else math.nan
    return passed > 0 and ratio / passed < VANISH_SPREAD


def diagnose_run(diagnostics: dict | None, theory: dict | None = None,
                 diverged_epoch: int | None = None,
                 diverged_reason: str | None = None) -> dict[str, dict]:
    """{moment: Verdict.to_dict()} for init, epoch 1 and the end of a run, from its history's
    probe points (empty without diagnostics). A run that diverged is 'diverged' from the
    epoch it diverged at."""
    if not diagnostics or not diagnostics.get("epoch"):
        return {}
    epochs = diagnostics["epoch"]
    out = {}
    for moment in MOMENTS:
        i = MOMENT_POINTS[moment] % len(epochs)
        if moment == "epoch1" and len(epochs) < 2:
            continue
        epoch = epochs[i]
        if moment == "end" and diverged_epoch is not None:
            out[moment] = Verdict("diverged", None, {"epoch": diverged_epoch},
                                  f"at epoch {diverged_epoch} ({diverged_reason})",
                                  moment, diverged_epoch).to_dict()
            continue
        if moment == "end" and epoch == 0:
            continue
        out[moment] = diagnose(Point.at(diagnostics, i), theory, moment, epoch).to_dict()
    return out


def summary(diagnosis: dict[str, dict]) -> str:
    """'vanishing -> healthy' (init -> end), for the summary table."""
    names = [diagnosis[m]["verdict"] for m in ("init", "end") if m in diagnosis]
    return " -> ".join(names) if names else "-"
