"""CUDA paths: skipped cleanly on machines without a GPU."""

from dataclasses import replace

import pytest
import torch

from tests.conftest import load_or_skip
from vgbench import data, registry, train

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
