"""The training loop: determinism, history round trip, layerwise stages."""

import dataclasses
from dataclasses import replace

import pytest
import torch

from vgbench import data, machine, registry, train
from vgbench.history import History
from vgbench.config import Config
from vgbench.remedy import BASELINE


def tiny_splits(seed=0, n=1024):
    """Random images with an easy rule: class c lights pixels 20c..20c+19."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g) * 0.5
    y = torch.randint(0, 10, (n,), generator=g)
    x[torch.arange(n)[:, None], (y * 20)[:, None] + torch.arange(20)] = 1.0
    k = n // 4
    return data.Splits(x[k:], y[k:], x[:k // 2], y[:k // 2], x[k // 2:k], y[k // 2:k])


def without_times(h):
    d = dataclasses.asdict(h)
    d.pop("epoch_time")
    return d


@pytest.mark.parametrize("name", ["baseline", "batchnorm", "layerwise", "gradnorm", "adam"])
def test_same_seed_same_history(name):
    cfg = replace(registry.get(name).config, epochs=2, batch_size=128)
    a = train.train(cfg, tiny_splits(), name)
    b = train.train(cfg, tiny_splits(), name)
    assert without_times(a) == without_times(b)
    c = train.train(replace(cfg, seed=7), tiny_splits(), name)
    assert without_times(c) != without_times(a)


def test_determinism_on_real_data(real_data):
    cfg = replace(registry.get("relu").config, epochs=1, limit=4096)
    splits = data.split(real_data, 42, limit=4096)
    a, b = train.train(cfg, splits, "relu"), train.train(cfg, splits, "relu")
    assert without_times(a) == without_times(b)


def test_history_round_trips_through_json(tmp_path):
    cfg = Config(epochs=2, batch_size=256)
    h = train.train(cfg, tiny_splits(), "baseline")
    path = tmp_path / "h.json"
    h.to_json(path)
    back = History.from_json(path)
    assert back == h
    assert History.from_json(h.to_json()) == h
    assert Config.from_dict(back.config) == cfg


def test_history_records_every_epoch():
    h = train.train(Config(epochs=3, batch_size=256), tiny_splits(), "baseline")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time", "stage"):
        assert len(getattr(h, key)) == 3
    assert 0 <= h.test_acc <= 1 and h.total_epochs == 3


def test_a_learnable_task_is_learned():
    """Guards the loop itself: a good remedy must fit a simple rule."""
    cfg = replace(registry.get("batchnorm").config, epochs=5, batch_size=64)
    h = train.train(cfg, tiny_splits(n=2048), "batchnorm")
    assert h.train_acc[-1] > 0.5 and h.train_loss[-1] < h.train_loss[0]


def test_layerwise_stages_freeze_and_report_total_epochs():
    cfg = replace(registry.get("layerwise").config, epochs=3, stage_epochs=2, batch_size=256)
    assert cfg.total_epochs == 8
    run = train.Run(cfg, tiny_splits(), "layerwise")
    w = [layer.linear.weight.detach().clone() for layer in run.mlp.hidden]
    out0 = run.mlp.out.weight.detach().clone()
    run.step(), run.step()  # stage 1: layers 1-2 and a fresh head
    changed = [not torch.equal(a, layer.linear.weight) for a, layer in zip(w, run.mlp.hidden)]
    assert changed == [True, True, False, False, False, False, False]
    assert torch.equal(out0, run.mlp.out.weight)  # the real output layer waits for stage 4
    w = [layer.linear.weight.detach().clone() for layer in run.mlp.hidden]
    run.step(), run.step()  # stage 2: layers 3-4; 1-2 frozen
    changed = [not torch.equal(a, layer.linear.weight) for a, layer in zip(w, run.mlp.hidden)]
    assert changed == [False, False, True, True, False, False, False]
    while not run.done:
        run.step()
    h = run.finish()
    assert h.stage == [1, 1, 2, 2, 3, 3, 4, 4] and h.total_epochs == 8
    assert not torch.equal(out0, run.mlp.out.weight)
    assert all(p.requires_grad for p in run.mlp.parameters())


def test_layerwise_default_budget_is_per_stage():
    cfg = replace(registry.get("layerwise").config, epochs=100)
    assert cfg.epochs_per_stage == 100 and cfg.total_epochs == 400


def test_training_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train.train(Config(epochs=1, batch_size=256), tiny_splits(), "baseline")
    assert torch.equal(torch.rand(3), expected)


def test_config_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"unknown activation 'tahn'; choose from"):
        Config(activation="tahn")
    with pytest.raises(ValueError, match="stage_block must be >= 1"):
        Config(layerwise=True, stage_block=0)
    with pytest.raises(ValueError, match="unknown config keys"):
        Config.from_dict({"lr": 1, "momentum": 0.9})


def test_unknown_remedy_lists_the_valid_ones():
    with pytest.raises(registry.UnknownRemedy, match="unknown remedy 'rellu'; choose from "
                                                     "baseline, init_std1"):
        registry.get("rellu")


def test_registry_entries_differ_from_the_baseline_only_where_declared():
    base = BASELINE
    for r in registry.REMEDIES.values():
        diff = {f.name for f in dataclasses.fields(base)
                if getattr(r.config, f.name) != getattr(base, f.name)}
        assert (r.name == "baseline") == (not diff), (r.name, diff)
        if r.name not in ("baseline", "init_std1", "init_std10"):
            assert {"init", "init_std"} <= diff | {"init_std"}, r.name  # small init


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        machine.resolve_device("cuda")
