"""benchmarks/peers.py: the peers' rules at their published thresholds, the confusion matrix,
and the comparison end to end on histories written by real (tiny) runs."""

import importlib.util
import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_train import tiny_splits
from vgbench import registry, train
from vgbench.history import History

_spec = importlib.util.spec_from_file_location(
    "peers", Path(__file__).parents[1] / "benchmarks" / "peers.py")
peers = sys.modules["peers"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(peers)


def point(**kw) -> dict:
    """A probe point of a 3-layer net where no rule fires; kw overrides a measurement."""
    p = {"grad_norm": [1e-2, 1e-2, 1e-2], "grad_zero_frac": [0.0, 0.0, 0.0],
         "grad_abs_mean": [1e-3, 1e-3, 1e-3], "inactive": [0.0, 0.0],
         "update_ratio": [1e-4, 1e-4, 1e-4], "preact_rms": [1.0, 1.0], "grad_spread": [0.1, 0.1]}
    return {**p, **kw}


def test_autotrainer_rules_at_their_published_thresholds():
    assert peers.autotrainer(point(), 0.1) == []
    # vanishing: first/last < 1e-3 AND first < 1e-4; either alone is not enough
    assert peers.autotrainer(point(grad_norm=[5e-5, 1e-2, 1e-1]), 0.1) == ["vanishing gradient"]
    assert peers.autotrainer(point(grad_norm=[2e-4, 1e-2, 1.0]), 0.1) == []
    assert peers.autotrainer(point(grad_norm=[5e-5, 1e-2, 1e-2]), 0.1) == []
    assert peers.autotrainer(point(grad_norm=[0.71, 1.0, 1e-2]), 0.1) == ["exploding gradient"]
    assert peers.autotrainer(point(grad_norm=[0.69, 1.0, 1e-2]), 0.1) == []
    assert peers.autotrainer(point(grad_zero_frac=[0.0, 0.7, 0.0]), 0.1) == ["dying ReLU"]
    assert peers.autotrainer(point(grad_zero_frac=[0.0, 0.69, 0.0]), 0.1) == []
    # judged only while the training accuracy is below 0.7
    assert peers.autotrainer(point(grad_norm=[0.71, 1.0, 1e-2]), 0.7) == []
    assert peers.autotrainer(point(grad_norm=[0.71, 1.0, 1e-2]), None) == ["exploding gradient"]


def test_sagemaker_rules_at_their_documented_defaults():
    assert peers.sagemaker(point(), "sigmoid", False) == []
    assert peers.sagemaker(point(), "sigmoid", True) == ["ExplodingTensor"]
    assert peers.sagemaker(point(grad_abs_mean=[9e-8, 1, 1]), "sigmoid", False) == [
        "VanishingGradient"]
    assert peers.sagemaker(point(grad_abs_mean=[1.1e-7, 1, 1]), "sigmoid", False) == []
    # activity: saturation for sigmoid and tanh, dead units for ReLU, above half the units
    assert peers.sagemaker(point(inactive=[0.0, 0.51]), "tanh", False) == [
        "SaturatedActivation"]
    assert peers.sagemaker(point(inactive=[0.0, 0.5]), "tanh", False) == []
    assert peers.sagemaker(point(inactive=[0.0, 0.51]), "relu", False) == ["DeadRelu"]
    assert peers.sagemaker(point(inactive=[0.0, 0.51]), "gelu", False) == []
    # update ratio: a layer the optimizer does not train (0) is not "too small"
    assert peers.sagemaker(point(update_ratio=[0.0, 1e-4, 1e-4]), "sigmoid", False) == []
    assert peers.sagemaker(point(update_ratio=[9e-9, 1e-4, 1e-4]), "sigmoid", False) == [
        "WeightUpdateRatio (small)"]
    assert peers.sagemaker(point(update_ratio=[11.0, 1e-4, 1e-4]), "sigmoid", False) == [
        "WeightUpdateRatio (large)"]
    # poor init, on ReLU inputs only: variance spread over 10, or a gradient spread < 1e-3
    assert peers.sagemaker(point(preact_rms=[1.0, 3.2]), "relu", False) == [
        "PoorWeightInitialization"]
    assert peers.sagemaker(point(preact_rms=[1.0, 3.1]), "relu", False) == []
    assert peers.sagemaker(point(grad_spread=[0.1, 9e-4]), "relu", False) == [
        "PoorWeightInitialization"]
    assert peers.sagemaker(point(preact_rms=[1.0, 3.2]), "sigmoid", False) == []


def test_confusion_and_balanced_accuracy():
    def row(pred, real):
        return {"predicted": {"vgbench": pred}, "trained": real}

    rows = [row(True, True)] * 3 + [row(False, True)] + [row(True, False)] + \
        [row(False, False)] * 4
    c = peers.confusion(rows, "vgbench")
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (3, 1, 1, 4)
    assert c["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert math.isnan(peers.confusion([row(True, True)], "vgbench")["balanced_accuracy"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two real runs of 2 epochs on tiny data, saved as a session saves them."""
    out = tmp_path_factory.mktemp("runs")
    splits = tiny_splits()
    for name in ("baseline", "he_relu"):
        cfg = replace(registry.get(name).config, epochs=2, batch_size=128)
        h = train.train(cfg, splits, name)
        (out / f"{name}-seed{cfg.seed}").mkdir()
        h.to_json(out / f"{name}-seed{cfg.seed}" / "history.json")
    return out


def test_the_comparison_on_saved_runs(folder, capsys):
    rows = {r["name"]: r for r in peers.load([str(folder)])}
    assert set(rows) == {"baseline", "he_relu"}
    for name, r in rows.items():
        h = History.from_json(folder / f"{name}-seed42" / "history.json")
        # vgbench's column is the diagnosis the run stored, recomputed the same way
        assert {m: next(iter(v)) for m, v in r["tools"]["vgbench"].items()} == {
            m: d["verdict"] for m, d in h.diagnosis.items()}
        # the truth is what the registry declares (2 epochs count as the full budget)
        assert r["truth"]["init"] == peers.ground_truth(name, 7, "full", "init")
    assert rows["baseline"]["truth"]["init"] == "vanishing"
    assert rows["he_relu"]["truth"]["init"] == "healthy"
    assert peers.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 runs") and "balanced accuracy" in out and "AUTOTRAINER" in out


def test_a_folder_without_histories_says_so(tmp_path, capsys):
    assert peers.main([str(tmp_path)]) == 1
    assert "no histories with diagnostics under" in capsys.readouterr().err


def test_the_report_gives_balanced_accuracy_by_seed():
    def row(seed, pred, real):
        return {"run": f"r{seed}", "seed": seed, "trained": real, "truth": {},
                "tools": {t: {} for t in peers.TOOLS},
                "predicted": {t: pred for t in peers.TOOLS}}

    rows = [row(42, True, True), row(42, False, False),   # seed 42: both right
            row(43, True, True), row(43, True, False)]    # seed 43: one false alarm
    text = peers.report(rows)
    assert "balanced accuracy by seed: vgbench 42 1.00, 43 0.50;" in text
    assert "by seed" not in peers.report(rows[:2])  # one seed: no breakdown
