"""The probe and the diagnosis for any PyTorch model: `vgbench.inspect` and
`vgbench.assert_gradient_flow` (pytest-free; the plugin's `vg_inspect` fixture calls them).

The suite's MLP is one case of this: probe.Probe measures whatever a layout names,
model.MLP is its own layout, and `ModelLayout` is the layout of any other nn.Module, found
by the probe's own forward pass with hooks (layout.Discovery). So the numbers and the
verdict mean the same for both.

    report = vgbench.inspect(model, x, y)              # cross-entropy on class indices y
    report = vgbench.inspect(model, x, y, loss=nn.MSELoss(), optimizer=opt)
    vgbench.assert_gradient_flow(model, (x, y))        # AssertionError naming the layer

Cost: the probe's forward and backward on the batch (the forward also checks the loss and
finds the layers in call order and the parameters' roles; the backward also gives a
recurrent module's gradient through time), and one more forward with the optimizer's
would-be step taken (the exploding rule); no batch of per-example gradients
(per-example norms only where they are exact and cheap: a Linear called once on a (batch,
features) input, a Conv1d/2d/3d called once: convs.conv_example_norms).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from vgbench import diagnose, files
from vgbench.kernels import gate_saturation
from vgbench.layout import Discovery, ModelLayout
from vgbench.lookahead import LOOKAHEAD, TRIAL, fit, losses, rise
from vgbench.point import HIDDEN_METRICS, Point
from vgbench.probe import Probe
from vgbench.reach import across_positions, label_signal
from vgbench.updater import Updater

DEFAULT_LR = 0.01
"""Without optimizer= or lr=, update ratios are those of plain SGD at this rate (the
protocol's)."""
class InspectError(ValueError):
    """The model or the batch cannot be inspected as given; the message says what to pass."""


@dataclass
class Report:
    """What inspect measured: per weight, per activation, the verdict, and notes."""

    layers: list[dict]
    activations: list[dict]
    verdict: dict
    loss: float
    mode: str
    notes: list[str]
    skipped: list[str]
    through_time: dict = field(default_factory=dict)
    """Per recurrent module: the loss's gradient norm with respect to its input at each
    time step (inspect's _loss_and_time)."""
    positions: dict = field(default_factory=dict)
    """Per first attention: the loss's gradient norm with respect to the stream it adds to at
    each position, and its reach (reach.across_positions)."""
    trial: list = field(default_factory=list)
    """inspect(trial=True): the batch's loss before and after each real step of the trial."""

    def table(self) -> str:
        """The per-layer table, then the activations and the verdict, as text."""
        rows = [[r["name"], r["module"], "x".join(map(str, r["shape"])), r["role"],
                 _g(r["grad_norm"]), _g(r["grad_rms"]), _g(r["update_ratio"]),
                 "" if r["in_verdict"] else "no"]
                for r in self.layers]
        text = tabulate(rows, headers=["parameter", "module", "shape", "role", "grad norm",
                                       "per-example RMS", "update ratio", "in verdict"],
                        disable_numparse=True)
        if self.activations:
            text += "\n\n" + tabulate(
                [[a["name"], a["module"], f"{a['saturated']:.1%}", f"{a['dead']:.1%}",
                  _g(a["preact_rms"]), _g(a.get("gain"))] for a in self.activations],
                headers=["activation", "module", "saturated", "dead", "input RMS",
                         "attention gain"],
                disable_numparse=True)
        text += f"\n\nverdict: {self.describe()}"
        text += "".join(f"\nnote: {n}" for n in self.notes)
        text += "".join(f"\nskipped: {s}" for s in self.skipped)
        return text

    def describe(self) -> str:
        """The verdict in words, its layer by name."""
        v = self.verdict
        where = f" from {v['layer_name']}" if v.get("layer_name") else ""
        return f"{v['verdict']}{where}: {v['why']}" if v.get("why") else v["verdict"] + where

    def to_dict(self) -> dict:
        return asdict(self)

    def figure(self, path) -> Path:
        """The per-layer figure (gradient norm and update ratio per weight by name, the
        verdict's layer marked; per time step for recurrent modules), written to path."""
        from vgbench import plots  # matplotlib only when a figure is asked for

        return plots.inspect_figure(self, path)

    def to_json(self, path=None) -> str:
        """Strict JSON (non-finite numbers as null); written atomically to path if given."""
        text = files.dumps(self.to_dict(), indent=1)
        if path is not None:
            files.write_text(path, text + "\n")
        return text

    def __str__(self) -> str:
        return self.table()


def _g(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"


def _check_inputs(model, x, targets, loss) -> None:
    if not isinstance(model, nn.Module):
        raise InspectError(f"inspect needs an nn.Module, got {type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InspectError("the model has no trainable parameter (every requires_grad is "
                           "False): nothing to inspect")
    tensors = list(x) if isinstance(x, tuple) else [x]
    if not tensors or not all(torch.is_tensor(t) for t in tensors):
        raise InspectError("inputs must be a tensor, or a tuple of tensors passed to "
                           "model(*inputs)")
    devices = {str(p.device) for p in params}
    for t in tensors + ([targets] if torch.is_tensor(targets) else []):
        if str(t.device) not in devices:
            raise InspectError(f"the model is on {', '.join(sorted(devices))} but the batch "
                               f"is on {t.device}: move one, e.g. x.to({next(iter(devices))!r})")
    if len(tensors[0]) < 2:
        raise InspectError(f"a batch of {len(tensors[0])} example: inspect needs at least 2 "
                           "(per-example statistics, batch normalization); pass a few dozen")
    if targets is None and loss is None:
        raise InspectError("pass targets (class indices, for cross-entropy) or loss=, a "
                           "function loss(output, targets) -> scalar")


def inspect(model: nn.Module, inputs, targets=None, loss=None, optimizer=None,
            lr: float | None = None, trial: bool = False) -> Report:
    """Probe model on one batch and diagnose it (vgbench/diagnose.py's verdict).

    inputs: a tensor (or a tuple of tensors: model(*inputs)); targets: what loss compares
    the output with (default loss: cross-entropy on class indices); optimizer: the one you
    train with, for the update ratios (its state and learning rate are used, nothing is
    stepped), else plain SGD at lr (default DEFAULT_LR). The model is measured in train mode
    and left as it was (mode, weights, norm statistics). trial: also take lookahead.TRIAL
    real steps of the optimizer on the batch (everything put back after; about TRIAL more
    forward and backward passes) and read what they do to its loss where the verdict would
    otherwise be healthy: a loss that runs away is exploding, one they cannot lower is
    frozen (diagnose.FIT_FALL). Not taken where it cannot change the verdict."""
    _check_inputs(model, inputs, targets, loss)
    loss_fn = _scalar(loss if loss is not None else _cross_entropy)
    default = []
    if optimizer is None:  # elementwise: the same steps whatever else it holds
        rate = lr if lr is not None else DEFAULT_LR
        optimizer = torch.optim.SGD([w for w in model.parameters() if w.requires_grad],
                                    lr=rate)
        default.append(f"update ratios of plain SGD at lr {rate:g} (pass optimizer= for yours)")
    # one forward finds the layout and measures it (layout.Discovery), one backward
    probe = Probe(model, inputs, targets, Discovery(model, _check_layout), loss_fn,
                  keep_start=False)
    point = probe.measure(model, 0, Updater(optimizer))
    if probe.step_failed:  # not a verdict: every rule reads the step (NaN reads diverged)
        raise InspectError(f"{probe.step_failed}: inspect measures the step your "
                           "optimizer would take, on a copy; an optimizer whose step needs a "
                           "closure (LBFGS) cannot be stepped so: pass lr= instead for plain "
                           "SGD's update ratios, or an optimizer stepped without a closure")
    layout = probe.layout
    modules = dict(model.named_modules())
    through_time = _through_time(probe.taps, {m: n for n, m in modules.items()})
    for name, t in through_time.items():  # only where the ratio alone would be vanishing
        if t["ratio"] < diagnose.VANISH_TIME:
            t["signal"] = label_signal(model, inputs, targets, loss_fn,
                                       getattr(modules[name], "weight_ih_l0", None))
    positions = across_positions(model, inputs, targets, loss_fn, layout.callers)
    for t in positions.values():  # only where the reach alone would be vanishing, and is
        gated = t["reach"] == 0 and "zero" in layout.roles  # judged once the zeros move
        if t["reach"] < diagnose.VANISH_REACH and not gated:
            t["signal"] = label_signal(model, inputs, targets, loss_fn, layout.output())
    mode = ("the model was in eval mode: measured in train mode (dropout and batch "
            "statistics as in training), then put back in eval mode" if not model.training
            else "measured in train mode")  # as it was, and stays
    notes = [*layout.notes, mode, *default, *sorted(probe.notes)]
    return _report(layout, probe, point, point.loss, "train", notes, through_time,
                   modules, positions,
                   lambda steps: losses(model, optimizer, inputs, targets, loss_fn, steps),
                   trial)


def _check_layout(layout: ModelLayout) -> None:
    if not layout.entries:
        raise InspectError("no trainable weight was used in the forward pass (every "
                           "parameter is frozen or unused)")


def _scalar(loss_fn):
    """loss_fn, checked to return a scalar (InspectError otherwise)."""
    def checked(output, targets):
        value = loss_fn(output, targets)
        if not torch.is_tensor(value) or value.dim() != 0:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise InspectError(f"the loss returned {shape}, not a scalar: reduce it "
                               "(e.g. reduction='mean')")
        return value
    return checked


def _through_time(taps: dict, names: dict) -> dict:
    """For each recurrent module (RNN, LSTM, GRU) the probe tapped (layout.Discovery), the
    norm of the loss's gradient with respect to its input at every time step: {name:
    {'steps', 'norms', 'ratio' (first step over last)}}."""
    profile = {}
    for module, g in taps.items():
        if g is None:
            continue
        per_step = (g if module.batch_first else g.transpose(0, 1)).detach().double()
        norms = per_step.square().sum(dim=(0, 2)).sqrt().tolist()  # (time,)
        profile[names[module]] = {"steps": len(norms), "norms": norms,
                                  "ratio": norms[0] / norms[-1] if norms[-1] else math.nan}
    return profile


def _cross_entropy(output, targets):
    if not torch.is_tensor(output):
        raise InspectError(f"the model returned a {type(output).__name__}, not a tensor of "
                           "logits: pass loss=, a function loss(output, targets) -> scalar "
                           "that picks what to train on")
    return F.cross_entropy(output, targets)


def _report(layout: ModelLayout, probe: Probe, point: Point, loss: float, mode: str,
            notes: list[str], through_time: dict, modules: dict,
            positions: dict, lookahead, trial: bool = False) -> Report:
    """The report from the probe's point; lookahead(steps) gives the batch's loss over that
    many real steps on it (lookahead.losses), taken where a large step is the verdict's
    question (LOOKAHEAD steps) or a trial is asked for (TRIAL steps)."""
    p = point.metrics()
    used = [i for i in range(len(layout.entries)) if i not in probe.unused]
    skipped = list(layout.skipped)
    for i in sorted(probe.unused):  # by the module where none of it was called
        module, _, name = layout.entries[i][0].rpartition(".")
        why = (f"{module} (never called in forward: no gradient)"
               if module and module not in layout.called else
               f"{layout.entries[i][0]} (no gradient: the forward does not use it)")
        if why not in skipped:
            skipped.append(why)
    chain = [i for i in layout.chain() if i in used]
    zero = [layout.entries[i][0] for i in used if layout.roles[i] == "zero"]
    if zero:
        notes.append(f"all zeros at init, so no update ratio, not in the verdict: "
                     f"{', '.join(zero)}")
        gated = layout.gated(chain, p["grad_norm"], zero)
        if gated:
            chain = [i for i in chain if i not in gated]
            notes.append(layout.gated_note(gated))
    layers = [{"name": n, "module": type(m).__name__, "shape": list(w.shape),
               "role": layout.roles[i], "grad_norm": p["grad_norm"][i],
               "grad_rms": _num(p["grad_rms"][i]), "update_ratio": _num(p["update_ratio"][i]),
               "grad_cos": p["grad_cos"][i], "grad_abs_mean": p["grad_abs_mean"][i],
               "grad_zero_frac": p["grad_zero_frac"][i], "grad_spread": p["grad_spread"][i],
               "in_verdict": i in chain}
              for i, (n, m, w) in enumerate(layout.entries) if i in used]
    acts = [{"name": n, "module": type(m).__name__, "saturated": p["saturated"][j],
             "dead": p["dead"][j], "inactive": p["inactive"][j],
             "preact_rms": p["preact_rms"][j],
             "gain": layout.gains.get(n.rpartition(":")[0]) if isinstance(m, nn.Softmax)
             else None}
            for j, (n, m) in enumerate(layout.acts) if j < len(p["saturated"])]
    if not chain:
        raise InspectError("no weight (a matrix or filter the signal passes through) got a "
                           "gradient: nothing for the verdict to read; see the table for the "
                           "parameters that were measured")
    owners = [layout.entries[i][1] for i in chain]
    names = [layout.entries[i][0] for i in chain]
    no_grad = [n for n, i in zip(names, chain) if p["grad_norm"][i] == 0]
    if no_grad:
        notes.append(f"no gradient reaches {', '.join(no_grad)}")
    rms = [p["grad_rms"][i] for i in chain]
    if any(r is None or math.isnan(r) for r in rms):  # not exact everywhere: batch-mean
        rms = [p["grad_norm"][i] for i in chain]
        notes.append("the verdict's gain uses batch-mean gradient norms (per-example norms "
                     "are exact only for Linear layers on (batch, features) inputs and "
                     "Conv1d/2d/3d layers, each called once)")
    # a recurrent module's place in the chain: where its first weight is
    place = {}
    for k, m in enumerate(owners):
        place.setdefault(m, k + 1)
    time = [{"layer": place[modules[name]], "steps": t["steps"], "ratio": t["ratio"],
             "signal": t.get("signal", math.nan), "name": name,
             "saturated": gate_saturation(acts, name)}
            for name, t in through_time.items() if modules.get(name) in place]
    # an attention's place: its first weight's, its own or its submodules' (timm's qkv)
    inside = {name: next((k + 1 for k, n in enumerate(names) if n.startswith(name + ".")),
                         None) for name in positions}
    reached = [{"layer": inside[name], "positions": t["positions"],
                "reach": t["reach"], "signal": t.get("signal", math.nan), "name": name}
               for name, t in positions.items()
               if inside[name] is not None and not (t["reach"] == 0 and zero)]
    # the chain's weights, the activations as "4 (ReLU)" (a Sequential's names are numbers)
    # the verdict reads the elementwise activations; an attention's softmax only with the
    # attention's gain (docs/thresholds.md: its rows saturate in models that train)
    reads = [j for j, (_, m) in enumerate(layout.acts)
             if j < len(p["saturated"]) and not isinstance(m, nn.Softmax)]
    hidden = {k: [p[k][j] for j in reads] for k in HIDDEN_METRICS}
    attention = [{"name": a["name"].rpartition(":")[0], "saturated": a["saturated"],
                  "gain": a["gain"]} for a in acts if a["gain"] is not None]
    seen = dataclasses.replace(
        point.select(chain, names), grad_rms=rms, through_time=time, attention=attention,
        positions=reached,
        **hidden,
        rectifier=[point.rectifier[j] for j in reads] if point.rectifier else None,
        activations=[f"{layout.acts[j][0]} ({type(layout.acts[j][1]).__name__})"
                     for j in reads])
    diverged = None if math.isfinite(loss) else f"the loss is {loss}"
    v = diagnose.diagnose(seen, None, "inspect", None, diverged)
    large = v.verdict == "exploding" and diagnose.diagnose(
        seen, None, "inspect", None, diverged, loss_rise=1.0).verdict != "exploding"
    # the trial only where it can change the verdict; its first steps are the lookahead's
    wanted = trial and (v.verdict == "healthy" or large)
    tried = lookahead(TRIAL) if wanted else None
    if large:
        up = rise(tried if wanted else lookahead(LOOKAHEAD))  # a large step it may yet excuse
        v = diagnose.diagnose(seen, None, "inspect", None, diverged, loss_rise=up,
                              rise_limit=diagnose.LOOKAHEAD_RISE)
        v.evidence["loss_rise"] = up
        notes.append(f"the loss over {LOOKAHEAD} real steps of the optimizer on the batch "
                     f"is {up:.3g} times the loss before them (from {diagnose.LOOKAHEAD_RISE:g}"
                     " a large step is exploding; weights and optimizer put back)")
    if wanted and tried:
        up, kept = rise(tried), fit(tried)
        if v.verdict == "healthy":
            v = diagnose.diagnose(seen, None, "inspect", None, diverged, loss_rise=up,
                                  rise_limit=diagnose.LOOKAHEAD_RISE, fit=kept)
            v.evidence.update(loss_rise=up, fit=kept)
        notes.append(
            f"trial: {TRIAL} real steps of the optimizer on the batch (weights and optimizer "
            f"put back): the loss over the first {LOOKAHEAD} is {up:.3g} times the loss "
            f"before them (from {diagnose.LOOKAHEAD_RISE:g} exploding), over all of them "
            f"{kept:.3g} (above {1 - diagnose.FIT_FALL:g} frozen); read where the verdict "
            "would otherwise be healthy")
    elif trial:
        notes.append("trial: not taken: " + (
            "the optimizer's step failed outside the probe" if wanted else
            f"without it the verdict is {v.verdict}, which the trial does not change"))
    v = v.to_dict()
    if "time_steps" in v["evidence"]:  # the recurrent module, not its first weight
        v["layer_name"] = next(t["name"] for t in time if t["layer"] == v["layer"])
    elif "attention" in v["evidence"]:
        v["layer_name"] = v["evidence"]["attention"]
    elif v["layer"]:  # diagnose counts layers 1.. along the chain, or the activations
        by_act = v["verdict"] in diagnose.BY_ACTIVATION
        v["layer_name"] = (layout.acts[reads[v["layer"] - 1]][0] if by_act
                           else seen.layer_name(v["layer"] - 1))
    for name, t in through_time.items():
        notes.append(f"{name}: over {t['steps']} steps the loss's gradient with respect to the "
                     f"first step's input is {t['ratio']:.2g} of the last step's (time is "
                     f"depth: below {diagnose.VANISH_TIME:g} the verdict is vanishing, unless "
                     "what the gradient reaches carries the labels)")
        if "signal" in t:
            notes.append(signal_note(f"{name}: the common part of its input weights' gradient",
                                     t["signal"]))
    notes += position_notes(positions, zero)
    return Report(layers, acts, v, loss, mode, notes, skipped, through_time, positions,
                  tried or [])


def position_notes(positions: dict, zero: list[str]) -> list[str]:
    """What the reach across positions says, per attention measured."""
    notes = []
    for name, t in positions.items():
        if t["reach"] == 0 and zero:
            notes.append(f"{name}: no gradient reaches the stream's other positions while "
                         "weights are all zeros (they open the path once they move): the "
                         "reach across positions is not in the verdict")
            continue
        notes.append(f"{name}: at the stream it adds to ({t['via']}), the loss's gradient at "
                     f"the median of {t['positions']} positions is {t['reach']:.2g} of the "
                     f"largest (below {diagnose.VANISH_REACH:g} the verdict is vanishing, "
                     "unless what the output layer reads carries the labels)")
        if "signal" in t:
            notes.append(signal_note("the common part of the output layer's gradient",
                                     t["signal"]))
    return notes


def signal_note(what: str, signal: float) -> str:
    """reach.label_signal's reading in words: what it was taken on, and whether it carries
    the labels (above TIME_SIGNAL, which excuses the verdict it was taken for)."""
    carries = signal > diagnose.TIME_SIGNAL
    return (f"{what} is {signal:.3g} times what it is with each example given its "
            f"neighbour's label ({'above' if carries else 'not above'} "
            f"{diagnose.TIME_SIGNAL:g}): what it reaches "
            + ("carries the labels, not a verdict" if carries else "does not carry the labels"))


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def assert_gradient_flow(model: nn.Module, batch, loss=None, optimizer=None,
                         lr: float | None = None, allow=("healthy",),
                         min_ratio: float | None = None, max_saturated: float | None = None,
                         max_dead: float | None = None,
                         update_range: tuple[float, float] | None = None,
                         trial: bool = False) -> Report:
    """Inspect model on batch = (inputs, targets) and raise AssertionError, naming the
    layer, the verdict and the numbers, unless the verdict is in allow and every given bound
    holds: min_ratio (first/last gradient norm of the verdict's layer chain), max_saturated
    and max_dead (each activation's fraction), update_range (every layer's update ratio).
    trial: inspect's trial (real steps on the batch, put back). Returns the report."""
    __tracebackhide__ = True  # pytest shows the message, not this function and its batch
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise InspectError("batch must be (inputs, targets); inputs may itself be a tuple")
    x, y = batch
    report = inspect(model, tuple(x) if isinstance(x, list) else x, y, loss, optimizer, lr,
                     trial)
    problems = []
    if report.verdict["verdict"] not in allow:
        problems.append(f"verdict {report.describe()} (allowed: {', '.join(allow)})")
    chain = [r for r in report.layers if r["in_verdict"]]
    if min_ratio is not None and chain:
        first, last = chain[0]["grad_norm"], chain[-1]["grad_norm"]
        ratio = first / last if last else math.nan
        if not ratio >= min_ratio:
            problems.append(f"gradient ratio {chain[0]['name']} / {chain[-1]['name']} = "
                            f"{ratio:.3g} < {min_ratio:g}")
    for a in report.activations:
        if max_saturated is not None and a["saturated"] > max_saturated:
            problems.append(f"{a['name']} ({a['module']}): {a['saturated']:.1%} saturated > "
                            f"{max_saturated:.1%}")
        if max_dead is not None and a["dead"] > max_dead:
            problems.append(f"{a['name']} ({a['module']}): {a['dead']:.1%} dead units > "
                            f"{max_dead:.1%}")
    if update_range is not None:
        lo, hi = update_range
        for r in report.layers:
            u = r["update_ratio"]
            if u is not None and not lo <= u <= hi:
                problems.append(f"{r['name']}: update ratio {u:.3g} outside [{lo:g}, {hi:g}]")
    if problems:
        raise AssertionError("gradient flow: " + "; ".join(problems) + "\n\n" + report.table())
    return report

