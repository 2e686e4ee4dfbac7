"""Every use of pytest-benchmark's private names, in one place.

pytest-benchmark has no public call for epoch times measured elsewhere (by an xdist worker,
or by the case that trained a batch of seeds), nor for a fixture that crashed before it
timed anything. vgbench needs both; these few functions are all it touches, and
tests/test_benchmark_adapter.py fails when pytest-benchmark renames what they rely on.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest


def session(config: pytest.Config):
    """pytest-benchmark's BenchmarkSession (None: the plugin is not loaded)."""
    return getattr(config, "_benchmarksession", None)


def has_timed(benchmark) -> bool:
    """Whether the fixture has timed something (or was told why it did not)."""
    return bool(benchmark._mode)


def untimed(benchmark, why: str) -> None:
    """Mark a fixture that never timed (a crashed case), so that pytest-benchmark does not
    also warn that the fixture was not used."""
    if not benchmark._mode:
        benchmark._mode = f"vgbench: {why}"


def book(benchmark, seconds: list[float], why: str) -> None:
    """Times measured elsewhere into this fixture, one round per value, as if it had timed
    them itself."""
    benchmark._mode = f"vgbench: {why}"
    stats = benchmark._make_stats(1)
    for s in seconds:
        stats.update(s)


def add(bs, name: str, fullname: str, param: str, params: dict, extra_info: dict,
        seconds: list[float]) -> None:
    """A benchmark timed elsewhere (by an xdist worker) into the session's table and
    JSON, one round per value."""
    from pytest_benchmark.stats import Metadata

    fixture = SimpleNamespace(name=name, fullname=fullname, group=None, param=param,
                              params=params, extra_info=extra_info, cprofile_stats=None,
                              has_error=False)
    meta = Metadata(fixture, iterations=1, options=bs.options)
    for s in seconds:
        meta.stats.update(s)
    bs.benchmarks.append(meta)


def quiet_xdist_warning(bs) -> None:
    """pytest-benchmark >= 5.3 warns at exit that it was off under xdist; vgbench's workers
    time the epochs and hand them over, so that warning would mislead."""
    bs.xdist_benchmark_found = False


def extra_info(record: dict) -> dict:
    """What pytest-benchmark's JSON keeps beside a case's epoch times."""
    extra = {k: record[k] for k in ("remedy", "depth", "seed", "budget", "device", "epochs")}
    extra["test_acc"] = record["metrics"]["test_acc"]
    extra["diverged_epoch"] = record["diverged_epoch"]
    return extra


def off_for_xdist(config: pytest.Config, bs) -> bool:
    """pytest-benchmark is off only because xdist runs (not --benchmark-disable/-skip)."""
    user_off = (config.getoption("benchmark_disable", False)
                and not config.getoption("benchmark_enable", False))
    # the same test pytest-benchmark uses to switch itself off
    xdist = (config.getoption("dist", "no") != "no"
             or bool(os.environ.get("PYTEST_XDIST_WORKER")))
    return bool(bs.disabled and xdist and not user_off
                and not config.getoption("benchmark_skip", False))
