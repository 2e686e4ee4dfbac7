"""vgbench's diagnosis beside the rules of AUTOTRAINER and SageMaker Debugger, on the same runs.

A comparison, not a feature of the library: each peer rule is written here from its
published definition and default thresholds (not from its code) and applied to the
measurements vgbench's probe records in every history (vgbench/probe.py). For every
run of the folders given (`pytest benchmarks --vg-out DIR` or `vgbench run --out DIR`) it
prints, per moment (init, epoch 1, end), each tool's verdict, whether it agrees with the
ground truth the registry declares for that run (vgbench/registry.py, `diagnoses=`, with
the intervention that proves it), and each tool's trainability prediction from init and
epoch 1 against what the run did (whole-network validation accuracy >= TRAINABLE_ACC by
the end of its budget): confusion matrices and balanced accuracy.

    python benchmarks/peers.py vg-out/sweep [more folders] [--markdown]

The rules (thresholds are the tools' published defaults):

AUTOTRAINER (Zhang et al., ICSE 2021), judged only while the training accuracy is below 0.7:
- vanishing gradient: first-layer / last-layer weight-gradient norm < 1e-3 and the first
  layer's gradient norm < 1e-4;
- exploding gradient: that ratio > 70;
- dying ReLU: at least 70% of a layer's weight-gradient entries are exactly 0.
SageMaker Debugger built-in rules (its documentation's defaults):
- VanishingGradient: the mean |g| of some layer's gradient < 1e-7;
- ExplodingTensor: a non-finite tensor (a diverged run);
- SaturatedActivation (tanh and sigmoid inputs): more than 50% of a layer's units inactive
  (active on less than 1% of the examples; a unit is inactive where the activation's
  gradient is below the rule's "vanishing gradient threshold" 1e-7, from which it derives
  its input ranges);
- DeadRelu (ReLU outputs): more than 50% of a layer's ReLUs active on less than 1% of the
  examples;
- WeightUpdateRatio: some layer's update / weight above 10 or below 1e-8;
- PoorWeightInitialization (ReLU inputs): the largest over the smallest per-layer
  variance of the activation inputs above 10, or the smallest 5th-95th percentile spread
  of a layer's gradient below 0.001 (its loss-not-decreasing part is not applied: the
  probe does not record per-step losses).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from tabulate import tabulate

from vgbench import diagnose, prediction, registry
from vgbench.diagnostics import slope_profile
from vgbench.point import Point
from vgbench.model import ACTIVATION_MODULES
from vgbench.history import History
from vgbench.remedy import QUICK_EPOCHS, SWEEP_EPOCHS, TRAINABLE_ACC

TOOLS = ("vgbench", "AUTOTRAINER", "SageMaker")
RULE_VERDICT = {
    "vanishing gradient": "vanishing", "exploding gradient": "exploding",
    "dying ReLU": "dead units", "VanishingGradient": "vanishing",
    "ExplodingTensor": "diverged", "SaturatedActivation": "saturated",
    "DeadRelu": "dead units", "WeightUpdateRatio (small)": "vanishing",
    "WeightUpdateRatio (large)": "exploding", "PoorWeightInitialization": "poor init",
}
"""Each peer rule as the vgbench verdict it names (PoorWeightInitialization has none)."""


def autotrainer(p: dict, train_acc: float | None) -> list[str]:
    """AUTOTRAINER's rules that fire at one probe point (empty: none)."""
    if train_acc is not None and train_acc >= 0.7:
        return []
    g = p["grad_norm"]
    ratio = g[0] / g[-1] if g[-1] > 0 else math.inf
    fired = []
    if ratio < 1e-3 and g[0] < 1e-4:
        fired.append("vanishing gradient")
    if ratio > 70:
        fired.append("exploding gradient")
    if max(p["grad_zero_frac"]) >= 0.7:
        fired.append("dying ReLU")
    return fired


def sagemaker(p: dict, activation: str, diverged: bool) -> list[str]:
    """SageMaker Debugger's built-in rules that fire at one probe point (empty: none)."""
    if diverged:
        return ["ExplodingTensor"]
    fired = []
    if min(p["grad_abs_mean"]) < 1e-7:
        fired.append("VanishingGradient")
    if activation in ("sigmoid", "tanh") and max(p["inactive"]) > 0.5:
        fired.append("SaturatedActivation")
    if activation == "relu" and max(p["inactive"]) > 0.5:
        fired.append("DeadRelu")
    upd = [u for u in p["update_ratio"] if u > 0]  # 0: a layer the optimizer does not train
    if upd and max(upd) > 10:
        fired.append("WeightUpdateRatio (large)")
    if upd and min(upd) < 1e-8:
        fired.append("WeightUpdateRatio (small)")
    if activation == "relu":
        var = [r * r for r in p["preact_rms"]]
        if (min(var) > 0 and max(var) / min(var) > 10) or min(p["grad_spread"]) < 1e-3:
            fired.append("PoorWeightInitialization")
    return fired


def _verdicts(fired: list[str]) -> set[str]:
    return {RULE_VERDICT[f] for f in fired} or {"healthy"}


def ground_truth(name: str, depth: int, budget: str, moment: str) -> str | None:
    """The verdict the registry declares for this run and moment, if any."""
    try:
        remedy = registry.get(name)
    except registry.UnknownRemedy:
        return None
    for d in remedy.diagnoses_at(budget, depth):
        if d.moment == moment:
            return d.verdict
    return None


def _budget(h: History) -> str:
    cfg = h.config
    epochs = cfg["stage_epochs"] or cfg["epochs"]
    return {QUICK_EPOCHS: "quick", SWEEP_EPOCHS: "sweep"}.get(epochs, "full")


def rows_for(h: History) -> dict:
    """Per tool: verdicts at each moment and the trainability prediction; plus the truth."""
    name = h.name.partition("-depth")[0]
    depth, budget = h.config["n_layer"], _budget(h)
    d = h.diagnostics
    act = h.config["activation"] if not h.parts.get("activation") else "custom"
    out = {"run": h.name, "name": name, "depth": depth, "budget": budget,
           "seed": h.config["seed"], "tools": {}, "truth": {}}
    whole = [a for a, st in zip(h.val_acc, h.stage) if a is not None and st == max(h.stage)]
    out["trained"] = bool(whole) and max(whole) >= TRAINABLE_ACC and not h.diverged
    for tool in TOOLS:
        out["tools"][tool] = {}
    # recomputed from the stored measurements (a change of the rules needs no new runs)
    diagnosis = diagnose.diagnose_run(d, h.theory, h.diverged_epoch, h.diverged_reason)
    for moment in diagnose.MOMENTS:
        out["truth"][moment] = ground_truth(name, depth, budget, moment)
        i = diagnose.MOMENT_POINTS[moment]
        if moment == "epoch1" and len(d["epoch"]) < 2:
            continue
        p = Point.at(d, i).metrics()
        acc = None if d["epoch"][i] == 0 else h.train_acc[d["epoch"][i] - 1]
        diverged = h.diverged and moment == "end"
        v = diagnosis.get(moment)
        out["tools"]["vgbench"][moment] = {v["verdict"]} if v else set()
        out["tools"]["AUTOTRAINER"][moment] = _verdicts(autotrainer(p, acc))
        out["tools"]["SageMaker"][moment] = _verdicts(sagemaker(p, act, diverged))
    val1 = h.val_acc[0] if h.val_acc else None
    out["predicted"] = {
        "vgbench": prediction.predict_trainable(diagnosis, val1,
                                              (h.steps_per_epoch or 106) * h.total_epochs),
        "AUTOTRAINER": out["tools"]["AUTOTRAINER"].get("epoch1") == {"healthy"},
        "SageMaker": out["tools"]["SageMaker"].get("epoch1") == {"healthy"},
    }
    return out


def confusion(rows: list[dict], tool: str) -> dict:
    """{'tp', 'fn', 'fp', 'tn', 'balanced_accuracy'} of a tool's trainability prediction."""
    c = {"tp": 0, "fn": 0, "fp": 0, "tn": 0}
    for r in rows:
        pred, real = r["predicted"][tool], r["trained"]
        c[("tp" if pred else "fn") if real else ("fp" if pred else "tn")] += 1
    pos, neg = c["tp"] + c["fn"], c["tn"] + c["fp"]
    sens = c["tp"] / pos if pos else math.nan
    spec = c["tn"] / neg if neg else math.nan
    c["balanced_accuracy"] = (sens + spec) / 2
    return c


def agreement(rows: list[dict], tool: str) -> tuple[int, int, list[str]]:
    """(agreeing, judged, disagreements) of a tool's verdicts with the declared truth."""
    agree = judged = 0
    wrong = []
    for r in rows:
        for moment, truth in r["truth"].items():
            seen = r["tools"][tool].get(moment)
            if truth is None or seen is None:
                continue
            judged += 1
            if truth in seen:
                agree += 1
            else:
                wrong.append(f"{r['run']} (seed {r['seed']}) at {moment}: declared {truth}, "
                             f"{tool} says {', '.join(sorted(seen))}"
                             + _intervention(r["name"], r["depth"], r["budget"], moment))
    return agree, judged, wrong


def _intervention(name: str, depth: int, budget: str, moment: str) -> str:
    for d in registry.get(name).diagnoses_at(budget, depth):
        if d.moment == moment and (d.fixed_by or d.not_fixed_by):
            parts = []
            if d.fixed_by:
                parts.append(f"fixed by {', '.join(d.fixed_by)}")
            if d.not_fixed_by:
                parts.append(f"not by {', '.join(d.not_fixed_by)}")
            return f" ({'; '.join(parts)})"
    return ""


def load(folders: list[str]) -> list[dict]:
    """rows_for every history under the folders (NAME[-depthD]-seedS/history.json)."""
    rows = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*-seed*/history.json")):
            h = History.from_json(path)
            if h.diagnostics:
                _activation_shape(h)
                rows.append(rows_for(h))
    return rows


def _activation_shape(h: History) -> None:
    """Histories written before the probe recorded each activation's shape: take it from
    the config's built-in activation (a user activation stays unknown)."""
    if "activations" in h.diagnostics or h.parts.get("activation"):
        return
    top, rect = slope_profile(ACTIVATION_MODULES[h.config["activation"]]())
    n = h.config["n_layer"]
    h.diagnostics["activations"] = {"max_slope": [top] * n, "rectifier": [rect] * n}


def report(rows: list[dict], fmt: str = "simple") -> str:
    """Confusion matrices, agreement with the declared truth, and every disagreement."""
    table = []
    for tool in TOOLS:
        c = confusion(rows, tool)
        agree, judged, _ = agreement(rows, tool)
        table.append([tool, c["tp"], c["fn"], c["fp"], c["tn"],
                      f"{c['balanced_accuracy']:.2f}",
                      f"{agree}/{judged} ({agree / judged:.0%})" if judged else "-"])
    text = tabulate(table, headers=["tool", "trains, predicted yes", "trains, predicted no",
                                    "stalls, predicted yes", "stalls, predicted no",
                                    "balanced accuracy", "verdict = declared cause"],
                    tablefmt=fmt, disable_numparse=True)
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        def by_seed(tool: str, seed: int) -> float:
            return confusion([r for r in rows if r["seed"] == seed], tool)["balanced_accuracy"]

        text += "\n\nbalanced accuracy by seed: " + "; ".join(
            f"{tool} " + ", ".join(f"{s} {by_seed(tool, s):.2f}" for s in seeds)
            for tool in TOOLS)
    for tool in TOOLS:
        _, _, wrong = agreement(rows, tool)
        wrong_pred = [f"{r['run']} (seed {r['seed']}): predicted "
                      f"{'trains' if r['predicted'][tool] else 'stalls'}, it "
                      f"{'trained' if r['trained'] else 'stalled'}"
                      for r in rows if r["predicted"][tool] != r["trained"]]
        text += f"\n\n{tool}: {len(wrong)} verdicts differ from the declared cause, " \
                f"{len(wrong_pred)} predictions wrong"
        text += "".join(f"\n- {w}" for w in wrong + wrong_pred)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="run folders (histories under NAME-seedS/)")
    p.add_argument("--markdown", action="store_true", help="GitHub tables")
    args = p.parse_args(argv)
    rows = load(args.folders)
    if not rows:
        print(f"no histories with diagnostics under {', '.join(args.folders)}", file=sys.stderr)
        return 1
    print(f"{len(rows)} runs")
    print(report(rows, "github" if args.markdown else "simple"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
