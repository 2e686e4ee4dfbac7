"""Fashion-MNIST: find the four IDX files, validate them, load once per process onto a device.

Lookup order (docs/protocol.md): a folder the user names (argument or $VGBENCH_DATA), the
project's cache, the Debian package `dataset-fashion-mnist`, torchvision's download.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "VGBENCH_DATA"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
N_CLASS = 10
HOW_TO_GET = (
    "  - offline (Debian/Ubuntu): apt-get install dataset-fashion-mnist  "
    f"(installs {DEBIAN_DIR})\n"
    f"  - a folder with the four IDX files (.gz or not): --data-dir DIR or {ENV_VAR}=DIR\n"
    "  - with internet: let torchvision download it (the default when nothing else is found;"
    " needs network access)"
)


class DataError(RuntimeError):
    """The dataset is missing, truncated or does not look like Fashion-MNIST."""


class DataWarning(UserWarning):
    """An implicit source (the cache, the Debian copy) was broken; the next one is used."""


@dataclass(frozen=True)
class Spec:
    """What a valid copy looks like: sizes and per-class label counts."""

    n_train: int = 60_000
    n_test: int = 10_000
    rows: int = 28
    cols: int = 28

    @property
    def per_class(self) -> dict[str, int]:
        """Images per class in each split (balanced)."""
        return {"train": self.n_train // N_CLASS, "test": self.n_test // N_CLASS}


FASHION_MNIST = Spec()


def cache_dir() -> Path:
    """The project's cache folder ($XDG_CACHE_HOME/vgbench/fashion-mnist)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vgbench" / "fashion-mnist"


def _find_file(folder: Path, stem: str) -> Path | None:
    # torchvision keeps its download under FashionMNIST/raw/
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        for name in (stem + ".gz", stem):
            if (sub / name).is_file():
                return sub / name
    return None


def _complete(folder: Path) -> dict[str, Path] | None:
    found = {key: _find_file(folder, stem) for key, stem in FILES.items()}
    return found if all(found.values()) else None


def _named(data_dir) -> tuple[Path, str] | None:
    named = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    if named is None:
        return None
    return Path(named).expanduser(), ("--data-dir" if data_dir is not None else f"${ENV_VAR}")


def _missing_error(folder: Path, source: str) -> DataError:
    missing = [s for s in FILES.values() if _find_file(folder, s) is None]
    return DataError(
        f"{source} {folder} does not hold Fashion-MNIST: missing {', '.join(missing)} "
        f"(.gz or uncompressed). Ways to get the data:\n{HOW_TO_GET}"
    )


@contextmanager
def _cache_lock():
    """An exclusive lock on the cache (a file beside it), so that concurrent workers or
    sessions never download into it at once. No-op where fcntl is missing (Windows)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = cache_dir().parent / "fashion-mnist.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _signature(paths: dict[str, Path] | None) -> dict | None:
    if not paths:
        return None
    return {k: (p, p.stat().st_mtime_ns, p.stat().st_size) for k, p in paths.items()}


def _download(tried: str, broken: dict | None = None) -> dict[str, Path]:
    """torchvision's download into the cache, under the cache lock; found files or
    DataError. `broken`: the signature of cache files found broken, which are moved aside
    (NAME.corrupt) before downloading again, unless another process replaced them while
    this one waited for the lock."""
    with _cache_lock():
        found = _complete(cache_dir())
        if found and _signature(found) != broken:  # filled (again) while we waited
            return found
        for path in (found or {}).values():
            path.replace(path.with_name(path.name + ".corrupt"))
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(cache_dir()), train=True, download=True)
            FashionMNIST(str(cache_dir()), train=False, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "no internet copy"
            tried += f"; torchvision download failed ({type(exc).__name__}: {exc})"
        else:
            found = _complete(cache_dir())
            if found:
                return found
    raise DataError(f"Fashion-MNIST not found ({tried}). Ways to get it:\n{HOW_TO_GET}")


def locate(data_dir: str | os.PathLike | None = None, download: bool = True) -> dict[str, Path]:
    """Return the four file paths of the first source that has them all (see sources());
    raise DataError if none does. Files are not read here: load() validates them."""
    named = _named(data_dir)
    if named is not None:
        found = _complete(named[0])
        if found:
            return found
        raise _missing_error(*named)
    for folder in (cache_dir(), DEBIAN_DIR):
        found = _complete(folder)
        if found:
            return found
    tried = f"looked in {cache_dir()} and {DEBIAN_DIR}"
    if not download:
        raise DataError(f"Fashion-MNIST not found ({tried}; download disabled). "
                        f"Ways to get it:\n{HOW_TO_GET}")
    return _download(tried)


def ensure_local(data_dir: str | os.PathLike | None = None) -> None:
    """Make sure a local copy exists, downloading it (once, under the cache lock) when no
    source has one. Run it before workers start so that they never race a download."""
    locate(data_dir, download=True)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip or raw) into a uint8 array; DataError names what is wrong."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataError(
            f"{path.name} is truncated or corrupt ({type(exc).__name__}: {exc}); "
            f"reinstall dataset-fashion-mnist or replace the file in {path.parent}"
        ) from exc
    if len(raw) < 4:
        raise DataError(f"{path.name} is truncated ({len(raw)} bytes, no IDX header)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise DataError(
            f"{path.name} is not an unsigned-byte IDX file (magic {raw[:4].hex()}); "
            "is it the right file?"
        )
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path.name} is truncated or padded: header says {dims} ({expected} bytes), "
            f"file holds {len(raw)} bytes; reinstall dataset-fashion-mnist or replace it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def validate(arrays: dict[str, np.ndarray], spec: Spec = FASHION_MNIST) -> None:
    """Check counts, shapes, label range and per-class counts; the first failure is raised."""
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[0] != n:
            raise DataError(f"{split} images: expected {n} images, got shape {images.shape}")
        if images.shape[1:] != (spec.rows, spec.cols):
            raise DataError(
                f"{split} images: expected {spec.rows}x{spec.cols}, got {images.shape[1:]}"
            )
        if labels.shape != (n,):
            raise DataError(f"{split} labels: expected {n} labels, got shape {labels.shape}")
        if labels.max(initial=0) >= N_CLASS:
            raise DataError(f"{split} labels: values must be 0..9, found {int(labels.max())}")
        counts = np.bincount(labels, minlength=N_CLASS)
        want = spec.per_class[split]
        if not (counts == want).all():
            raise DataError(
                f"{split} labels: expected {want} per class, got {counts.tolist()}; "
                "the file is not the original Fashion-MNIST"
            )


@dataclass
class Dataset:
    """Device tensors: images float32 (n, 784) in [0, 1], labels int64 (n,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.train_x.device


def _read_all(paths: dict[str, Path], spec: Spec) -> dict[str, np.ndarray]:
    arrays = {key: read_idx(p) for key, p in paths.items()}
    validate(arrays, spec)
    return arrays


def read(data_dir: str | os.PathLike | None = None, download: bool = True,
         spec: Spec = FASHION_MNIST) -> tuple[dict[str, np.ndarray], str]:
    """The validated arrays and the folder they came from, trying each source in turn.

    A folder the user named must hold valid files (an error otherwise, never silently
    skipped). A broken copy in the cache or the Debian folder is reported (DataWarning)
    and the lookup goes on to the next source, ending with torchvision's download.
    """
    named = _named(data_dir)
    if named is not None:
        paths = locate(data_dir, download=False)
        return _read_all(paths, spec), str(paths["train_images"].parent)
    tried, broken = [], None
    for folder in (cache_dir(), DEBIAN_DIR):
        paths = _complete(folder)
        if not paths:
            tried.append(f"nothing in {folder}")
            continue
        try:
            return _read_all(paths, spec), str(paths["train_images"].parent)
        except DataError as exc:
            warnings.warn(f"skipping the Fashion-MNIST copy in {folder}: {exc}; trying the "
                          "next source", DataWarning, stacklevel=2)
            tried.append(f"{folder} broken ({exc})")
            if folder == cache_dir():
                broken = _signature(paths)
    if not download:
        raise DataError(f"Fashion-MNIST not found ({'; '.join(tried)}; download disabled). "
                        f"Ways to get it:\n{HOW_TO_GET}")
    paths = _download("; ".join(tried), broken)
    return _read_all(paths, spec), str(paths["train_images"].parent)


def load(
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    spec: Spec = FASHION_MNIST,
) -> Dataset:
    """Read and validate (see read()), then move to `device` (uint8 -> float32 in [0, 1])."""
    arrays, source = read(data_dir, download, spec)
    dev = torch.device(device)

    def images(a: np.ndarray) -> torch.Tensor:
        # convert on the device: 4x less to copy than float32
        return torch.from_numpy(a.reshape(len(a), -1).copy()).to(dev).float().div_(255.0)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64)).to(dev)

    return Dataset(
        train_x=images(arrays["train_images"]),
        train_y=labels(arrays["train_labels"]),
        test_x=images(arrays["test_images"]),
        test_y=labels(arrays["test_labels"]),
        source=source,
    )


_CACHE: dict[tuple, Dataset] = {}


def load_cached(
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Dataset:
    """load(), memoized per process on (resolved data_dir, device)."""
    named = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    key = (str(named), str(torch.device(device)))
    if key not in _CACHE:
        _CACHE[key] = load(data_dir, device=device, download=download)
    return _CACHE[key]


@dataclass
class Splits:
    """Train / validation / test tensors for one seed, all on the dataset's device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def split(ds: Dataset, seed: int, val_fraction: float = 0.1, limit: int | None = None) -> Splits:
    """Seeded train/val split of the training images, the same in every process.

    The permutation is drawn on the CPU from its own generator, so it does not depend on
    the device, the global RNG or what ran before in this process.
    """
    n = len(ds.train_y)
    n_train = int(n * (1 - val_fraction) + 0.5)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(ds.device)
    tr, va = perm[:n_train], perm[n_train:]
    te = torch.arange(len(ds.test_y), device=ds.device)
    if limit is not None:
        tr, va, te = tr[:limit], va[:limit], te[:limit]
    return Splits(
        ds.train_x[tr], ds.train_y[tr], ds.train_x[va], ds.train_y[va],
        ds.test_x[te], ds.test_y[te],
    )
