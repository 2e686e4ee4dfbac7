"""`python -m vgbench run|list|plot` on the real data (small limit, one epoch)."""

import json
import subprocess
import sys

import pytest

from vgbench import registry
from vgbench.cli import main


def test_list_prints_every_remedy(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == registry.names()
    assert all(len(line.split(None, 2)[2]) > 10 for line in out)  # a description each
    sets = {line.split()[0]: line.split()[1] for line in out}
    assert sets["relu"] == "course" and sets["he_relu"] == "literature"
    assert "[He et al. 2015]" in next(line for line in out if line.startswith("he_relu"))


def test_unknown_remedy_is_a_clear_error(capsys):
    assert main(["run", "rellu"]) == 2
    err = capsys.readouterr().err
    assert "unknown remedy 'rellu'; choose from baseline" in err and "Traceback" not in err


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "relu", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not hold Fashion-MNIST" in err and "apt-get install" in err


def test_run_then_plot(real_data, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--epochs", "2", "--limit", "1024", "--device", "cpu", "--out", str(out)]
    # once through the real entry point, once in-process (same code, faster)
    res = subprocess.run([sys.executable, "-m", "vgbench", "run", "baseline", *args],
                         capture_output=True, text=True, check=True)
    assert main(["run", "relu", *args]) == 0
    for name, stdout in (("baseline", res.stdout), ("relu", capsys.readouterr().out)):
        lines = stdout.splitlines()
        assert any(line.startswith("EPOCH 1/2 train_loss ") and " val_acc " in line
                   for line in lines)
        assert "Accuracy:" in stdout
        run_dir = out / f"{name}-seed42"
        h = json.loads((run_dir / "history.json").read_text())
        assert len(h["val_acc"]) == 2 and len(h["diagnostics"]["grad_norm"]) == 3
        for png in ("learning_curves.png", "gradient_flow.png", "weight_change.png"):
            assert (run_dir / png).stat().st_size > 1000
    base = json.loads((out / "baseline-seed42" / "history.json").read_text())
    relu = json.loads((out / "relu-seed42" / "history.json").read_text())
    assert relu["grad_ratio_init"] / base["grad_ratio_init"] > 1000
    assert main(["plot", str(out / "baseline-seed42"), str(out / "relu-seed42"),
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_plot_without_history_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="has no history.json"):
        main(["plot", str(tmp_path)])
