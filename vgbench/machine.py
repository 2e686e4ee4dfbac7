"""The device and the machine: picking a device, honest clocks, the environment a history
records (bit-identity depends on it), and flushing CPU denormals while vgbench computes."""

from __future__ import annotations

import functools
import platform
import zlib
from contextlib import contextmanager

import torch


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA device; "
                           "use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; choose from auto, cpu, cuda")
    return torch.device(device)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU model, torch's kernel level and a digest of the CPU's feature flags: two
    machines that print the same model name may still run different float kernels."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        info = {k.strip(): v.strip() for k, v in info.items()}
        model = info.get("model name", model)
        flags = info.get("flags", info.get("Features", ""))
    except OSError:
        pass
    digest = zlib.crc32(" ".join(sorted(flags.split())).encode())
    return f"{model} [{torch.backends.cpu.get_cpu_capability()}, flags {digest:08x}]"


@contextmanager
def flush_denormals():
    """Flush denormal floats to zero on the CPU while vgbench computes (this thread).

    Saturated nets (init_std10, gradnorm_pre) make numbers below 1.2e-38, which cost many
    CPUs ~100 cycles an operation; flushing them leaves every history bit-identical
    (docs/speed.md has the timings). torch has no getter, so the mode is switched off again
    afterwards (its default).
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def without_denormals(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with flush_denormals():
            return method(*args, **kwargs)
    return wrapper


def environment(device: torch.device) -> dict:
    """What bit-identical reproduction depends on: torch, threads, device, CPU, platform."""
    name = str(device)
    if device.type == "cuda":
        name += f" ({torch.cuda.get_device_name(device)})"
    return {"torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "device": name, "cpu": cpu_name(), "platform": platform.platform(),
            "python": platform.python_version()}
