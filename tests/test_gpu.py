"""CUDA paths: skipped cleanly on machines without a GPU."""

from dataclasses import replace

import pytest
import torch

from tests.conftest import load_or_skip
from vgbench import data, registry, train
from vgbench import model as M

pytestmark = [
    pytest.mark.vgbench_gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def cuda_data():
    return load_or_skip("cuda")


def test_data_lives_on_the_gpu(cuda_data):
    assert cuda_data.train_x.is_cuda and cuda_data.train_x.dtype == torch.float32
    cpu = data.split(data.load_cached(device="cpu", download=False), 42, limit=64)
    gpu = data.split(cuda_data, 42, limit=64)
    assert torch.equal(gpu.train_y.cpu(), cpu.train_y)  # same split on either device


@pytest.mark.parametrize("name", ["baseline", "batchnorm", "layerwise"])
def test_training_runs_on_cuda(cuda_data, name):
    cfg = replace(registry.get(name).config, epochs=1, limit=2048)
    h = train.train(cfg, data.split(cuda_data, 42, limit=2048), name)
    assert h.device.startswith("cuda") and len(h.val_acc) == cfg.total_epochs
    assert 0.0 <= h.test_acc <= 1.0 and h.grad_ratio_init > 0


def test_same_init_on_cpu_and_gpu(cuda_data):
    cfg = replace(registry.get("relu").config, epochs=0, limit=512)
    cpu = train.Run(cfg, data.split(data.load_cached(device="cpu", download=False), 42,
                                     limit=512), "relu")
    gpu = train.Run(cfg, data.split(cuda_data, 42, limit=512), "relu")
    torch.testing.assert_close(gpu.mlp.hidden[0].linear.weight.cpu(),
                               cpu.mlp.hidden[0].linear.weight)


@pytest.mark.parametrize("name", ["baseline", "adam", "batchnorm", "gradnorm", "clip_std10"])
def test_cuda_graph_equals_eager(cuda_data, name):
    """The captured step trains like the eager one (CUDA rounding aside)."""
    cfg = replace(registry.get(name).config, epochs=2, limit=4096)
    splits = data.split(cuda_data, 42, limit=4096)
    graphed = train.train(cfg, splits, name)
    eager = train.train(replace(cfg, cuda_graph=False), splits, name)
    assert graphed.cuda_graph == "captured" and eager.cuda_graph is None
    torch.testing.assert_close(torch.tensor(graphed.train_loss), torch.tensor(eager.train_loss),
                               rtol=1e-3, atol=1e-4)


def test_layerwise_recaptures_each_stage(cuda_data):
    cfg = replace(registry.get("layerwise").config, epochs=1, limit=4096)
    h = train.train(cfg, data.split(cuda_data, 42, limit=4096), "layerwise")
    assert h.cuda_graph == "captured" and len(h.train_loss) == 4


class SyncingSigmoid(torch.nn.Module):
    """A user's activation that asks the host for a number: CUDA graphs cannot hold it."""

    def forward(self, x):
        if x.abs().max().item() > 1e9:
            raise ValueError("never")
        return torch.sigmoid(x)


def test_capture_failure_falls_back_to_eager(cuda_data):
    cfg = replace(registry.get("baseline").config, epochs=1, limit=4096)
    parts = M.Parts(activation=SyncingSigmoid)
    splits = data.split(cuda_data, 42, limit=4096)
    h = train.train(cfg, splits, "syncing", parts=parts)
    assert h.cuda_graph.startswith("eager (capture failed: ")
    eager = train.train(replace(cfg, cuda_graph=False), splits, "syncing", parts=parts)
    torch.testing.assert_close(torch.tensor(h.train_loss), torch.tensor(eager.train_loss),
                               rtol=1e-4, atol=1e-5)


def test_batched_seeds_on_cuda(cuda_data):
    from vgbench import batched

    cfg = replace(registry.get("relu").config, epochs=2, limit=4096)
    splits = {s: data.split(cuda_data, s, limit=4096) for s in (42, 43)}
    run = batched.BatchedRun.of_seeds(cfg, splits, "relu")
    while not run.done:
        run.step()
    for seed, h in zip((42, 43), run.finish()):
        alone = train.train(replace(cfg, seed=seed), splits[seed], "relu")
        torch.testing.assert_close(torch.tensor(h.train_loss), torch.tensor(alone.train_loss),
                                   rtol=1e-3, atol=1e-4)


class StaleBufferGraph(train.StepGraph):
    """A broken capture: the graph reads a copy of the batch it was captured on."""

    def record(self):
        # kept alive: a freed buffer would be reused and the replay would gather garbage
        # indices (a device-side assert that poisons the process; seen on an H200)
        self.stale = self.idx.clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.run.train_step(self.stale, zero_grad=False)
        return graph.replay


@pytest.mark.parametrize("name", ["baseline", "adam", "batchnorm"])
def test_graph_self_check_passes_on_cuda(cuda_data, name):
    from vgbench import selfcheck

    selfcheck.reset()
    cfg = replace(registry.get(name).config, epochs=1, limit=4096)
    h = train.train(cfg, data.split(cuda_data, 42, limit=4096), name)
    [check] = h.self_checks
    assert h.cuda_graph == "captured" and check["ok"] and check["here"], check
    print(f"{name}: {selfcheck.Result(**check).reason()}; {check['seconds']:.3f} s")


def test_stale_graph_buffer_is_caught_on_cuda(cuda_data):
    from vgbench import selfcheck

    selfcheck.reset()
    cfg = replace(registry.get("baseline").config, epochs=1, limit=4096)
    splits = data.split(cuda_data, 42, limit=4096)
    run = train.Run(cfg, splits, "baseline")
    run.graphs = StaleBufferGraph(run)
    while not run.done:
        run.step()
    h = run.finish()
    selfcheck.reset()
    eager = train.train(replace(cfg, cuda_graph=False), splits, "baseline")
    assert h.cuda_graph.startswith("eager (self-check failed: "), h.cuda_graph
    torch.testing.assert_close(torch.tensor(h.train_loss), torch.tensor(eager.train_loss),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["relu", "adam", "clip_std10"])
def test_batched_self_check_passes_on_cuda(cuda_data, name):
    from vgbench import batched, selfcheck

    selfcheck.reset()
    cfg = replace(registry.get(name).config, epochs=1, limit=4096)
    run = batched.BatchedRun.of_seeds(
        cfg, {s: data.split(cuda_data, s, limit=4096) for s in (42, 43)}, name)
    assert run.check.ok and run.check.here
    print(f"{name}: {run.check.reason()}; {run.check.seconds:.3f} s")


@pytest.mark.parametrize("names", [("baseline", "init_std1", "xavier"),
                                   ("tanh_xavier", "explode_tanh"),  # lr 0.01 and 1.0
                                   ("adam",)])
def test_a_group_is_captured_checked_and_trains_as_its_members_alone(cuda_data, names):
    """The group path on a GPU: one CUDA graph for the group's step, its self-check and
    the batched one passed, each member's losses as alone (tests/test_group.py on CPU)."""
    from vgbench import batched, selfcheck

    selfcheck.reset()
    members = []
    for name in names:
        for seed in (42, 43):
            cfg = replace(registry.get(name).config, epochs=2, limit=4096, seed=seed)
            members.append(batched.Member(cfg, data.split(cuda_data, seed, limit=4096),
                                          name, registry.get(name).parts))
    group = batched.BatchedRun(members)
    while not group.done:
        group.step()
    hs = group.finish()
    checks = {c["what"]: c for c in hs[0].self_checks}
    assert hs[0].cuda_graph == "captured", hs[0].cuda_graph
    assert checks[selfcheck.BATCHED]["ok"] and checks[selfcheck.GROUP_GRAPH]["ok"], checks
    for h, m in zip(hs, members):
        if m.name == "explode_tanh":
            continue  # lr 1.0 on tanh: rounding grows through the run (its own test: CPU)
        alone = train.train(m.cfg, m.splits, m.name, parts=m.parts)
        torch.testing.assert_close(torch.tensor(h.train_loss), torch.tensor(alone.train_loss),
                                   rtol=1e-3, atol=1e-4)
    print(f"{names}: {selfcheck.Result(**checks[selfcheck.GROUP_GRAPH]).reason()}")
