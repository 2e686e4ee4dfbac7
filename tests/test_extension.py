"""Bring your own remedy: the hook, --vg-remedies, `vgbench run --remedies`, Parts, errors."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_plugin import not_an_xdist_worker, summary_row, tiny  # noqa: F401 - autouse
from tests.test_train import tiny_splits
from vgbench import BASELINE, SMALL, Check, Parts, Remedy, model, registry, train
from vgbench.cli import main

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_remedies"
OURS = ["--vg-remedy", "scaled_sigmoid", "--vg-remedy", "my_layernorm"]


@pytest.fixture
def example(pytester, real_data):
    """A copy of examples/my_remedies: a user project that only has vgbench installed."""
    for path in EXAMPLE.glob("*.py"):
        shutil.copy(path, pytester.path / path.name)
    return pytester


def test_the_example_adds_its_remedies_beside_the_course(example):
    res = example.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider",
                                       "--vg-budget", "quick")
    ids = [line.split("[")[1].rstrip("]") for line in res.stdout.lines if "[" in line]
    assert sorted(ids) == sorted(f"{n}-seed42" for n in [*registry.names("course"),
                                                         "scaled_sigmoid", "my_layernorm"])


def test_the_example_runs_and_holds(example):
    """The example's own quick-budget checks, at the quick budget itself (5 epochs)."""
    res = example.runpytest_subprocess("-p", "no:cacheprovider", "--vg-budget", "quick",
                                       "--vg-no-figures", "--vg-out", "out", "-n", "2", *OURS)
    res.assert_outcomes(passed=2)
    rows = json.loads((example.path / "out" / "summary.json").read_text())["rows"]
    assert [(r["remedy"], r["verdict"]) for r in rows] == [("scaled_sigmoid", "held"),
                                                           ("my_layernorm", "held")]
    h = json.loads((example.path / "out" / "scaled_sigmoid-seed42" / "history.json").read_text())
    assert h["parts"] == {"activation": "my_remedies.ScaledSigmoid"}


def test_the_example_sabotaged_fails_its_checks(example):
    """Its module replaced by nn.Sigmoid, scaled_sigmoid is the vanishing net again."""
    path = example.path / "my_remedies.py"
    text = path.read_text()
    assert "Parts(activation=ScaledSigmoid)" in text
    path.write_text(text.replace("Parts(activation=ScaledSigmoid)", "Parts(activation=nn.Sigmoid)"))
    res = example.runpytest_subprocess("-p", "no:cacheprovider", "--vg-budget", "quick",
                                       "--vg-no-figures", "--vg-remedy", "scaled_sigmoid")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "scaled_sigmoid (seed 42): expected test_acc >= 0.7, observed 0.1" in out
    assert "scaled_sigmoid (seed 42): expected grad_ratio_init >= 0.3, observed 0.000" in out


def test_a_remedies_file_on_the_command_line(pytester, real_data):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    shutil.copy(EXAMPLE / "my_remedies.py", pytester.path / "my_remedies.py")
    res = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "no:cacheprovider",
                                        "--vg-remedies", "my_remedies.py",
                                        "--vg-set", "literature")
    ids = [line.split("[")[1].rstrip("]") for line in res.stdout.lines if "[" in line]
    assert sorted(ids) == sorted(f"{n}-seed42" for n in [*registry.names("literature"),
                                                         "scaled_sigmoid", "my_layernorm"])


DIVERGES = '''
from dataclasses import replace
from vgbench import BASELINE, Check, Remedy

BOOM = replace(BASELINE, activation="relu", init="normal", init_std=1e6)  # logits overflow
REMEDIES = [
    Remedy("boom", "explodes", BOOM, quick=(Check("test_acc", "<=", 0.15, "stalls?"),)),
    Remedy("boom_ok", "explodes, and says so", BOOM,
           quick=(Check("diverged", "==", True, "declared"),)),
]
'''


def test_a_diverging_user_remedy_is_a_finding(pytester, real_data):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    (pytester.path / "boom.py").write_text(DIVERGES)
    res = pytester.runpytest_subprocess(*tiny("boom", 1), "--vg-remedy", "boom_ok",
                                        "--vg-remedies", "boom.py", "--vg-out", "out")
    res.assert_outcomes(passed=1, failed=1)
    out = res.stdout.str()
    assert "boom (seed 42): diverged at epoch 1 (train loss " in out
    row = summary_row(out, "boom")
    assert "diverged@1" in row and "FAILED (1)" in row
    assert "diverged@1" in summary_row(out, "boom_ok") and summary_row(out, "boom_ok").endswith(
        "held")
    text = (pytester.path / "out" / "boom-seed42" / "history.json").read_text()
    assert '"diverged": true' in text and "NaN" not in text


BAD = {
    "clash": ('Remedy("relu", "mine", SMALL, quick=(Check("test_acc", ">=", 0.5),))',
              r"remedy 'relu' is already declared by vgbench; give it another name"),
    "no checks": ('Remedy("mine", "no checks", SMALL)',
                  r"remedy 'mine' declares no checks"),
    "unknown metric": ('Remedy("mine", "typo", SMALL, quick=(Check("tst_acc", ">=", 0.5),))',
                       r"remedy 'mine', quick budget: check on unknown metric 'tst_acc'"),
    "not a list": ('Remedy("mine", "one", SMALL, quick=(Check("test_acc", ">=", 0.5),))',
                   r"expected a list of vgbench Remedy objects, got Remedy"),
}


@pytest.mark.parametrize("kind", BAD)
def test_bad_user_remedies_name_the_file_and_the_remedy(tmp_path, kind):
    code, match = BAD[kind]
    path = tmp_path / "mine.py"
    body = code if kind == "not a list" else f"[{code}]"
    path.write_text(f"from vgbench import SMALL, Check, Remedy\nREMEDIES = {body}\n")
    with pytest.raises(registry.RemedyError, match=match) as err:
        registry.register(registry.load_file(path), str(path))
    assert str(path) in str(err.value)
    assert "mine" not in registry.REMEDIES  # nothing half-registered


def test_bad_user_remedies_are_usage_errors_in_pytest(pytester):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    pytester.makeconftest(
        "from vgbench import SMALL, Check, Remedy\n"
        "def pytest_vgbench_remedies():\n"
        "    return [Remedy('relu', 'again', SMALL, quick=(Check('test_acc', '>=', 0.5),))]\n")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str()
    assert "conftest.py: remedy 'relu' is already declared by vgbench" in err


def test_cli_runs_a_user_remedy(real_data, tmp_path, capsys):
    assert main(["list", "--remedies", str(EXAMPLE / "my_remedies.py")]) == 0
    assert "scaled_sigmoid  user" in capsys.readouterr().out
    registry.unregister(["scaled_sigmoid", "my_layernorm"])
    try:
        assert main(["run", "scaled_sigmoid", "--remedies", str(EXAMPLE / "my_remedies.py"),
                     "--epochs", "1", "--limit", "512", "--out", str(tmp_path)]) == 0
    finally:
        registry.unregister(["scaled_sigmoid", "my_layernorm"])
    h = json.loads((tmp_path / "scaled_sigmoid-seed42" / "history.json").read_text())
    assert h["parts"]["activation"].endswith("ScaledSigmoid") and len(h["val_acc"]) == 1


def test_parts_reach_the_builder_and_the_loop():
    made = []

    def init(linear, cfg):
        nn.init.constant_(linear.weight, 0.01)

    def optimizer(params, cfg):
        made.append(len(params))
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)

    parts = Parts(activation=nn.Tanh, norm=nn.LayerNorm, init=init, optimizer=optimizer)
    cfg = replace(SMALL, layerwise=True, epochs=1, batch_size=256)
    run = train.Run(cfg, tiny_splits(), "mine", parts)
    layer = run.mlp.hidden[0]
    assert isinstance(layer.act, nn.Tanh) and isinstance(layer.norm, nn.LayerNorm)
    assert torch.all(run.mlp.out.weight == 0.01) and torch.all(run.mlp.out.bias == 0)
    assert isinstance(run.opt, torch.optim.SGD) and run.opt.defaults["momentum"] == 0.9
    while not run.done:
        run.step()
    # stages 1-3: a block's 2 Linears and 2 LayerNorms (weight, bias each) and a fresh head;
    # stage 4: the whole net (7 x 4 + the output layer's 2)
    assert made == [10, 10, 10, 30]


def test_a_user_remedy_declared_like_a_builtin():
    r = Remedy("mine", "relu with he init", replace(BASELINE, activation="relu", init="kaiming",
                                                   init_gain=2 ** 0.5),
               quick=(Check("grad_ratio_init", ">=", 0.1, "why"),))
    assert r.set == "user" and r.parts == model.DEFAULT_PARTS
    with pytest.raises(registry.RemedyError, match="has set 'course'"):
        registry.register([replace(r, set="course")], "here")
