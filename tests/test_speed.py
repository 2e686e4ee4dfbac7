"""benchmarks/speed.py: its floor runs exactly the epoch's GEMMs; its op recorder counts."""

import importlib.util
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vgbench import registry, train
from tests.test_train import tiny_splits

_spec = importlib.util.spec_from_file_location(
    "speed", Path(__file__).parents[1] / "benchmarks" / "speed.py")
speed = sys.modules["speed"] = importlib.util.module_from_spec(_spec)  # (for its dataclass)
_spec.loader.exec_module(speed)


def recorded_gemms(recorder: "speed.OpsAlone") -> Counter:
    """The GEMM calls a recorder saw, as (op, input shapes...) -> count."""
    out = Counter()
    for func, args, _, count in recorder.calls.values():
        name = func.overloadpacket.__name__
        if name in speed.GEMM_OPS:
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            out[(name,) + shapes] += count
    return out


def planned_gemms(gemms: list) -> Counter:
    """gemm_plan's entries as the aten calls nn.Linear and autograd make."""
    as_call = {"fwd": lambda b, i, o: ("addmm", (o,), (b, i), (i, o)),
               "dx": lambda b, i, o: ("mm", (b, o), (o, i)),
               "dw": lambda b, i, o: ("mm", (o, b), (b, i))}
    return Counter(as_call[kind](b, i, o) for kind, b, i, o in gemms)


@pytest.mark.parametrize("name", registry.names())
def test_the_floor_runs_every_gemm_of_an_epoch_and_no_other(name):
    cfg = replace(registry.get(name).config, epochs=1, stage_epochs=1, probe_size=64)
    splits = tiny_splits(n=1100)  # 825 train samples: batches 512 + 313, a short last one
    plan = speed.gemm_plan(cfg, len(splits.train_y), len(splits.val_y), cfg.probe_size)
    run = train.Run(cfg, splits, name, registry.get(name).parts)
    for epochs, gemms in plan:
        assert epochs == 1
        recorder = speed.OpsAlone()
        with recorder:
            run.step()
        assert recorded_gemms(recorder) == planned_gemms(gemms)
    assert run.done


def test_the_recorder_counts_calls_and_replays_on_copies():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    x = torch.zeros(8)
    recorder = speed.OpsAlone()
    with recorder:
        for _ in range(3):
            torch.mm(a, b)
        torch.mm(b.t(), a.t())  # another signature
        x.add_(1.0)
    assert recorder.n_calls == 4 + 1 + 2  # the two t() are views
    assert Counter(f.overloadpacket.__name__ for f, *_ in recorder.calls.values()) == {
        "mm": 2, "add_": 1, "t": 2}  # t() of two shapes
    seconds = recorder.seconds(reps=2)
    assert set(seconds) == {"mm", "add_", "views"}
    assert all(s > 0 for s in seconds.values())
    assert torch.equal(x, torch.ones(8))  # replayed on its copy, not on x
