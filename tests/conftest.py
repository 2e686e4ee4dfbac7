"""Shared fixtures: tiny IDX files written on the fly, and the real data when installed."""

import gzip
import struct

import numpy as np
import pytest

from vgbench import data

TINY = data.Spec(n_train=40, n_test=20)


def pytest_configure(config):
    """Under xdist, keep workers x torch threads <= cores (else they thrash)."""
    from vgbench.session import limit_xdist_threads

    limit_xdist_threads()


def write_idx(path, array, compress=True):
    """Write a uint8 array as an IDX file (gzip when compress)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
        return path.with_name(path.name + ".gz")
    path.write_bytes(payload)
    return path


def write_dataset(folder, spec=TINY, compress=True, seed=0):
    """A valid tiny dataset for `spec` in folder; returns {key: path}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        images = rng.integers(0, 256, size=(n, spec.rows, spec.cols), dtype=np.uint8)
        labels = np.repeat(np.arange(10, dtype=np.uint8), n // 10)
        rng.shuffle(labels)
        paths[f"{split}_images"] = write_idx(folder / data.FILES[f"{split}_images"], images,
                                             compress)
        paths[f"{split}_labels"] = write_idx(folder / data.FILES[f"{split}_labels"], labels,
                                             compress)
    return paths


@pytest.fixture
def tiny_dir(tmp_path):
    """A folder with a valid tiny (TINY spec) dataset."""
    write_dataset(tmp_path / "tiny")
    return tmp_path / "tiny"


def load_or_skip(device):
    """The real Fashion-MNIST on device; skips the test when it is not installed."""
    try:
        return data.load_cached(device=device, download=False)
    except data.DataError as exc:
        pytest.skip(f"real Fashion-MNIST not available: {exc}")


@pytest.fixture(scope="session")
def real_data():
    """The real Fashion-MNIST on the CPU (skips when it is not installed)."""
    return load_or_skip("cpu")


@pytest.fixture(scope="session")
def real_splits(real_data):
    """Seed-42 splits of the real data."""
    return data.split(real_data, 42)
