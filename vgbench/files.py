"""Atomic file writes: every file vgbench writes goes to a temporary file in the same folder
and is renamed into place, so a crash or an interrupt never leaves half a file behind (the
previous version, if any, stays whole)."""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    On any exception the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name the writer creates itself (so the umask applies, unlike mkstemp's 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write data to path atomically; returns the path."""
    with replacing(path) as tmp:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text (UTF-8) to path atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def finite(obj):
    """A copy of obj (dicts, lists, tuples, floats) with NaN and +-inf replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """Strict JSON (non-finite floats become null, never a bare NaN)."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj, **kwargs) -> Path:
    """Write obj as strict JSON (see dumps) to path atomically; returns the path."""
    return write_text(path, dumps(obj, **kwargs) + "\n")


def savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """fig.savefig(path) atomically (the format comes from path's suffix)."""
    path = Path(path)
    fmt = kwargs.pop("format", path.suffix.lstrip(".") or "png")
    with replacing(path) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return path


def check_writable(folder: str | os.PathLike, what: str) -> Path:
    """Prove a file can be written in folder (creating it for the test, and removing again
    what the test created: a session that writes nothing leaves no empty folder); else
    ValueError naming `what` (the option) and the reason."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder; choose a folder")
    new = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".vgbench-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ValueError(f"{what} {folder} is not writable ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None
    finally:
        for p in new:  # innermost first
            try:
                p.rmdir()
            except OSError:
                break
    return folder
