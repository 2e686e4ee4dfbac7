"""vgbench.watch under DistributedDataParallel: two processes on the CPU with the gloo
backend. Rank 0 reads the all-reduced gradients (those of the whole batch, both shards),
judges and writes the files; rank 1 measures nothing and writes nothing; with
on_verdict='raise' both ranks stop at the same step (no rank left waiting in an
all-reduce)."""

import json
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import vgbench
from vgbench.history import History
from vgbench.monitor import UnhealthyTraining

STEPS, EVERY, HALF = 6, 2, 16


def net(act, depth, seed=0):
    torch.manual_seed(seed)
    layers = [nn.Flatten(), nn.Linear(64, 32), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(32, 32), act()]
    return nn.Sequential(*layers, nn.Linear(32, 10))


def batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randn(2 * HALF, 64, generator=g), torch.randint(0, 10, (2 * HALF,), generator=g)


def train(model, opt, rank, world, w=None):
    for step in range(STEPS):
        x, y = batch(step)
        if world > 1:  # each rank its half of the batch
            x, y = x[rank * HALF:(rank + 1) * HALF], y[rank * HALF:(rank + 1) * HALF]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if w is not None:
            w.step(loss)


def worker(rank, world, port, folder, act_name, depth, on_verdict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    folder = Path(folder)
    result = {"rank": rank}
    try:
        model = DistributedDataParallel(net(getattr(nn, act_name), depth))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        try:
            with vgbench.watch(model, opt, every=EVERY, out=folder / "out",
                               on_verdict=on_verdict) as w:
                train(model, opt, rank, world, w)
        except UnhealthyTraining as exc:
            result["raised"] = str(exc)
        result.update(steps=w.step_no, timeline=w.timeline, points=w.points,
                      wrapper=w.wrapper)
    finally:
        dist.destroy_process_group()
        (folder / f"rank{rank}.json").write_text(json.dumps(result))


def run(tmp_path, act, depth, on_verdict=None):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(2, port, str(tmp_path), act, depth, on_verdict), nprocs=2,
             join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch has no gloo backend")
def test_rank0_diagnoses_the_all_reduced_gradients_and_rank1_stays_quiet(tmp_path):
    zero, one = run(tmp_path, "ReLU", 3)
    # what one process sees training the same model on the whole batch
    model = net(nn.ReLU, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgbench.watch(model, opt, every=EVERY) as alone:
        train(model, opt, 0, 1, alone)
    assert zero["wrapper"] == "DistributedDataParallel" and zero["steps"] == STEPS
    assert [r["step"] for r in zero["timeline"]] == [0, 2, 4]
    for k in range(3):  # the all-reduced gradient is the whole batch's
        assert zero["points"]["grad_norm"][k] == pytest.approx(alone.points["grad_norm"][k],
                                                               rel=1e-5)
        assert zero["points"]["update_ratio"][k] == pytest.approx(
            alone.points["update_ratio"][k], rel=1e-4)
    assert [r["verdict"] for r in zero["timeline"]] == [r["verdict"] for r in alone.timeline]
    h = History.from_json(tmp_path / "out" / "history.json")
    assert h.config["wrapper"] == "DistributedDataParallel" and h.config["world_size"] == 2
    assert h.watch["layers"][0] == "1.weight"  # the user's names, not 'module.1.weight'
    assert one["steps"] == STEPS and one["timeline"] == [] and "raised" not in one
    assert one["points"]["epoch"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["history.json",
                                                                   "report.html"]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch has no gloo backend")
def test_on_verdict_raise_stops_every_rank_at_the_same_step(tmp_path):
    zero, one = run(tmp_path, "Sigmoid", 8, on_verdict="raise")
    assert "step 0: vanishing" in zero["raised"]
    assert "rank 0 found the run unhealthy" in one["raised"]
    assert zero["steps"] == one["steps"] == 1
