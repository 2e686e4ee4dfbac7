"""Nothing lost, nothing silent: divergence, degenerate runs, atomic writes, bad input, data
sources (the pytest side of it is in test_plugin.py)."""

import json
import math
import threading
import time
from dataclasses import replace

import pytest
import torch

from tests.conftest import TINY, write_dataset
from tests.test_train import tiny_splits
from vgbench import data, expect, files, registry, train
from vgbench.history import History
from vgbench.cli import main
from vgbench.config import Config
from vgbench.remedy import QUICK_EPOCHS

EXPLODES = replace(registry.get("relu").config, init="normal", init_std=1.0, lr=1e4,
                   epochs=5, batch_size=128)
"""ReLU with N(0, 1) weights and lr 1e4: the loss is inf or NaN within the first epoch."""


def test_a_diverging_run_stops_and_records_nulls(tmp_path):
    h = train.train(EXPLODES, tiny_splits(), "explodes")
    assert h.diverged and h.diverged_epoch == 1 and len(h.train_loss) == 1  # stopped there
    assert h.diverged_reason.startswith("train loss ")
    assert h.train_loss == [None] and h.val_acc == [None] and h.test_acc is None
    assert h.grad_ratio_final is None and h.grad_ratio_init > 0  # init was measured
    h.to_json(tmp_path / "h.json")
    text = (tmp_path / "h.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = History.from_json(tmp_path / "h.json")
    assert back.diverged and back.diverged_epoch == 1


def test_a_diverged_case_is_a_finding_unless_declared():
    h = train.train(EXPLODES, tiny_splits(), "explodes")
    m = expect.metrics(h)
    assert m["test_acc"] is None and m["diverged"] == 1.0
    stalls = (expect.Check("test_acc", "<=", 0.15, "stalls"),)
    assert expect.evaluate("explodes", stalls, m, 42, h) == [
        f"explodes (seed 42): diverged at epoch 1 ({h.diverged_reason})"]
    declared = (expect.Check("diverged", "==", True, "blows up on purpose"),)
    assert expect.evaluate("explodes", declared, m, 42, h) == []
    quiet = train.train(replace(registry.get("relu").config, epochs=1, batch_size=128),
                        tiny_splits(), "quiet")
    failures = expect.evaluate("quiet", declared, expect.metrics(quiet), 42, quiet)
    [failure] = failures  # the finding names the run's diagnosis before the provenance
    assert failure.startswith("quiet (seed 42): expected diverged == True, observed 0; ")
    assert failure.endswith("  [blows up on purpose]")


def test_strict_json_never_writes_nan(tmp_path):
    path = files.write_json(tmp_path / "x.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None]}


def test_an_interrupted_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = files.write_text(tmp_path / "summary.json", '{"old": true}\n')

    class Boom(Exception):
        pass

    real_open = open

    def half_then_crash(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if "x" in mode:  # the temporary file: write part of it, then die
            f.write(b'{"new": ')
            f.flush()
            raise Boom
        return f

    monkeypatch.setattr("builtins.open", half_then_crash)
    with pytest.raises(Boom):
        files.write_text(path, '{"new": "a long text that never lands"}\n')
    monkeypatch.undo()
    assert path.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary left


def test_an_interrupted_figure_leaves_the_previous_file(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    fig = plt.figure()
    path = files.savefig(fig, tmp_path / "f.png")
    before = path.read_bytes()
    monkeypatch.setattr(files.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        files.savefig(fig, path)
    plt.close(fig)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_degenerate_pipeline_fails_the_baselines_sanity_checks(real_data):
    """A pipeline that does not train (here: a learning rate of 1e-12) leaves the baseline
    at chance, so `test_acc <= 0.15` alone would pass; the checks that prove training
    happened (the output layer moved, the loss left ln(10) behind) must fail."""
    cfg = replace(registry.get("baseline").config, epochs=QUICK_EPOCHS, lr=1e-12,
                  limit=4096)
    h = train.train(cfg, data.split(real_data, 42, limit=4096), "baseline")
    failures = expect.evaluate("baseline", registry.get("baseline").quick,
                               expect.metrics(h), 42, h)
    assert any("output_layer_change" in f for f in failures), failures
    assert not any(f.startswith("baseline (seed 42): expected test_acc") for f in failures)


def test_last_batch_of_one_is_merged():
    assert train.batch_bounds(1025, 512) == [(0, 512), (512, 1025)]
    assert train.batch_bounds(1026, 512) == [(0, 512), (512, 1024), (1024, 1026)]
    assert train.batch_bounds(1, 512) == [(0, 1)]
    # a BatchNorm net whose data leaves one sample over trains without an error
    splits = tiny_splits()
    s = replace(splits, train_x=splits.train_x[:513], train_y=splits.train_y[:513])
    cfg = replace(registry.get("batchnorm").config, epochs=1, batch_size=128)
    h = train.train(cfg, s, "batchnorm")  # 4 x 128 + 1: the last batch takes 129
    assert h.train_loss[0] is not None and math.isfinite(h.train_loss[0])


def test_zero_epochs_evaluates_the_untrained_net():
    h = train.train(Config(epochs=0, batch_size=256), tiny_splits(), "baseline")
    assert h.train_loss == [] and 0 <= h.test_acc <= 1 and h.grad_ratio_init > 0
    m = expect.metrics(h)
    assert m["best_val_acc"] is None and m["final_train_loss"] is None


def test_history_records_its_environment():
    h = train.train(Config(epochs=1, batch_size=256), tiny_splits(), "baseline")
    assert h.env["torch"] == torch.__version__ and h.env["threads"] == torch.get_num_threads()
    assert h.env["device"] == "cpu" and h.env["platform"] and "flags" in h.env["cpu"]


@pytest.mark.parametrize("args, match", [
    (["run", "relu", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
    (["run", "relu", "--epochs", "-1"], "argument --epochs: must be >= 0, got -1"),
    (["run", "relu", "--stage-epochs", "0"], "argument --stage-epochs: must be >= 1, got 0"),
    (["run", "relu", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["run", "relu", "--depth", "0"], "argument --depth: must be >= 1, got 0"),
])
def test_cli_numbers_are_checked_where_parsed(args, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_cli_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["run", "relu", "--out", str(tmp_path / "f"), "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is a file, not a folder" in err and "Traceback" not in err


def test_cli_limit_below_the_batch_size_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "relu", "--limit", "100", "--out", str(tmp_path)]) == 2
    assert "--limit 100 is below the batch size 512" in capsys.readouterr().err


def test_plot_of_a_corrupt_history_names_the_file(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.json").write_text('{"name": "relu", "config": {')
    with pytest.raises(SystemExit, match=r"run/history.json is not valid JSON .*truncated"):
        main(["plot", str(tmp_path / "run")])


def _no_named_data(tmp_path, monkeypatch, debian=None):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", debian or tmp_path / "no-debian")


def test_a_truncated_cache_file_falls_back_to_the_debian_copy(tmp_path, monkeypatch):
    _no_named_data(tmp_path, monkeypatch, debian=tmp_path / "debian")
    write_dataset(tmp_path / "debian")
    write_dataset(data.cache_dir())
    bad = data.cache_dir() / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(data.DataWarning, match=r"skipping .*cache.* train-images-idx3-ubyte"
                                              r"\.gz is truncated"):
        arrays, source = data.read(download=False, spec=TINY)
    assert source == str(tmp_path / "debian") and arrays["train_images"].shape[0] == 40


def test_a_named_folder_is_still_strict(tmp_path, monkeypatch):
    _no_named_data(tmp_path, monkeypatch, debian=tmp_path / "debian")
    write_dataset(tmp_path / "debian")
    write_dataset(tmp_path / "mine")
    bad = tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:10])
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.gz is truncated"):
        data.read(tmp_path / "mine", download=False, spec=TINY)


def test_concurrent_downloads_run_once_under_the_lock(tmp_path, monkeypatch):
    """Two workers finding nothing local: one downloads, the other waits and uses it."""
    _no_named_data(tmp_path, monkeypatch)
    calls = []

    class FakeFashionMNIST:  # torchvision's download, slowly
        def __init__(self, root, train, download):
            calls.append(train)
            time.sleep(0.3)
            if not data._complete(data.cache_dir()):
                write_dataset(data.cache_dir() / "FashionMNIST" / "raw")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FakeFashionMNIST)
    errors = []

    def worker():
        try:
            data.ensure_local()
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and calls == [True, False]  # one download: train, then test


def test_a_broken_cache_is_moved_aside_and_downloaded_again(tmp_path, monkeypatch):
    _no_named_data(tmp_path, monkeypatch)
    write_dataset(data.cache_dir())
    bad = data.cache_dir() / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"junk")

    class FakeFashionMNIST:
        def __init__(self, root, train, download):
            write_dataset(data.cache_dir() / "FashionMNIST" / "raw")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", FakeFashionMNIST)
    with pytest.warns(data.DataWarning):
        arrays, source = data.read(spec=TINY)
    assert source.endswith("FashionMNIST/raw") and arrays["train_labels"].shape == (40,)
    assert (data.cache_dir() / "train-labels-idx1-ubyte.gz.corrupt").read_bytes() == b"junk"
