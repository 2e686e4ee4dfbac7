"""Finding, validating and splitting Fashion-MNIST."""

import contextlib
import gzip
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import TINY, write_dataset, write_idx
from vgbench import data


def read_all(folder, spec=TINY):
    arrays = {k: data.read_idx(p) for k, p in data.locate(folder, download=False).items()}
    data.validate(arrays, spec)
    return arrays


def test_good_files_gz_and_raw(tmp_path):
    write_dataset(tmp_path / "gz")
    write_dataset(tmp_path / "raw", compress=False)
    a, b = read_all(tmp_path / "gz"), read_all(tmp_path / "raw")
    assert a["train_images"].shape == (40, 28, 28)
    np.testing.assert_array_equal(a["train_labels"], b["train_labels"])


def test_load_scales_to_unit_interval(tiny_dir):
    ds = data.load(tiny_dir, device="cpu", download=False, spec=TINY)
    assert ds.train_x.shape == (40, 784) and ds.train_x.dtype == torch.float32
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    assert ds.train_y.dtype == torch.int64


def test_truncated_gzip_names_the_file(tiny_dir):
    path = tiny_dir / "train-images-idx3-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.gz is truncated"):
        read_all(tiny_dir)


def test_truncated_payload_names_the_file(tmp_path):
    write_dataset(tmp_path / "d", compress=False)
    path = tmp_path / "d" / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte is truncated.*header says"):
        read_all(tmp_path / "d")


def test_not_an_idx_file(tiny_dir):
    with gzip.open(tiny_dir / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"<html>not found</html>")
    with pytest.raises(data.DataError, match="not an unsigned-byte IDX file"):
        read_all(tiny_dir)


def test_empty_named_folder_lists_every_way(tmp_path):
    with pytest.raises(data.DataError) as err:
        data.locate(tmp_path, download=False)
    msg = str(err.value)
    assert "missing train-images-idx3-ubyte" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "VGBENCH_DATA" in msg
    assert "download" in msg


def test_env_var_is_a_named_folder(tmp_path, monkeypatch, tiny_dir):
    monkeypatch.setenv(data.ENV_VAR, str(tiny_dir))
    assert data.locate(download=False)["train_images"].parent == tiny_dir
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match=r"\$VGBENCH_DATA .*nope"):
        data.locate(download=False)


def test_no_data_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(data.DataError) as err:
        data.locate(download=False)
    msg = str(err.value)
    assert "not found" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and "torchvision download" in msg


def test_cache_comes_before_debian(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_dataset(data.cache_dir() / "FashionMNIST" / "raw")  # torchvision's layout
    assert data.locate(download=False)["test_labels"].parent.name == "raw"


@pytest.mark.parametrize("split, fix, match", [
    ("train", lambda lab: np.where(lab == 3, 4, lab), r"train labels: expected 4 per class"),
    ("test", lambda lab: np.where(lab == 0, 10, lab), r"test labels: values must be 0..9"),
])
def test_wrong_labels(tmp_path, split, fix, match):
    folder = tmp_path / "d"
    write_dataset(folder)
    path = folder / data.FILES[f"{split}_labels"]
    labels = data.read_idx(path.with_name(path.name + ".gz"))
    write_idx(path, fix(labels.copy()))
    with pytest.raises(data.DataError, match=match):
        read_all(folder)


def test_wrong_image_count_is_the_first_failure(tiny_dir):
    arrays = read_all(tiny_dir)
    arrays["train_images"] = arrays["train_images"][:-1]
    arrays["train_labels"] = arrays["train_labels"][:-1]  # both wrong: images named first
    with pytest.raises(data.DataError, match="train images: expected 40 images"):
        data.validate(arrays, TINY)


def test_wrong_image_shape(tiny_dir):
    arrays = read_all(tiny_dir)
    arrays["test_images"] = arrays["test_images"][:, :27, :]
    with pytest.raises(data.DataError, match="test images: expected 28x28"):
        data.validate(arrays, TINY)


def test_real_data_is_the_original(real_data):
    """docs/protocol.md: 60,000 / 10,000 images, balanced labels, mean pixel 0.2860."""
    assert real_data.train_x.shape == (60_000, 784) and real_data.test_x.shape == (10_000, 784)
    assert torch.bincount(real_data.train_y).tolist() == [6000] * 10
    assert torch.bincount(real_data.test_y).tolist() == [1000] * 10
    assert real_data.train_x.mean().item() == pytest.approx(0.2860, abs=5e-5)


FINGERPRINT = (
    "s = data.split(ds, {seed});"
    "print(len(s.train_y), len(s.val_y), int(s.train_y[:500].sum()),"
    " int((s.val_x[:50] * 255).round().long().sum()))"  # integers: no float-sum order
)


def _fingerprint_here(ds, seed):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(FINGERPRINT.format(seed=seed), {"data": data, "ds": ds})
    return out.getvalue()


def test_split_is_identical_across_processes(real_data):
    code = ("from vgbench import data; ds = data.load_cached(download=False);"
            + FINGERPRINT.format(seed=42))
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout  # a fresh process, as an xdist worker is
    here = _fingerprint_here(real_data, 42)
    assert here.split()[:2] == ["54000", "6000"]
    assert fresh == here
    assert _fingerprint_here(real_data, 43) != here


def test_split_ignores_global_rng(real_data):
    a = data.split(real_data, 7, limit=100)
    torch.manual_seed(123)
    torch.rand(10)
    b = data.split(real_data, 7, limit=100)
    assert torch.equal(a.train_y, b.train_y) and torch.equal(a.val_x, b.val_x)
