"""Seeds trained as one batched model equal the same seeds trained one by one (CPU runs the
same code path as the GPU)."""

from dataclasses import replace

import pytest
import torch

from vgbench import batched, data, registry, train

SEEDS = (42, 43, 44)


@pytest.fixture(scope="module")
def splits(real_data):
    return {s: data.split(real_data, s, limit=2048) for s in SEEDS}


@pytest.mark.parametrize("name", ["baseline", "relu", "adam", "batchnorm", "custom_norm",
                                  "gradnorm", "skip", "layernorm", "selu"])
def test_batched_seeds_equal_separate_runs(splits, name):
    cfg = replace(registry.get(name).config, epochs=2)
    together = batched.BatchedRun.of_seeds(cfg, splits, name)
    while not together.done:
        together.step()
    hs = together.finish()
    for seed, h in zip(SEEDS, hs):
        alone = train.train(replace(cfg, seed=seed), splits[seed], name)
        assert h.batched_with == [f"{name}:{s}" for s in SEEDS] and alone.batched_with is None
        for key in ("train_loss", "val_loss", "val_acc", "train_acc"):
            torch.testing.assert_close(torch.tensor(getattr(h, key)),
                                       torch.tensor(getattr(alone, key)), rtol=1e-4, atol=1e-5)
        assert h.test_acc == pytest.approx(alone.test_acc, abs=2e-3)  # a few flips of 512
        # gradnorm divides by the gradient's std (~1e-6 near the input), which magnifies
        # rounding: its first-layer norms part by 0.2% after 2 epochs, the others by < 0.1%
        torch.testing.assert_close(torch.tensor(h.diagnostics["grad_norm"]),
                                   torch.tensor(alone.diagnostics["grad_norm"]),
                                   rtol=1e-2, atol=1e-9)


def test_per_model_clipping_equals_clip_grad_norm(splits):
    """The saturated N(0, 10) nets (init_std10, clip_std10) are left out above: their
    logits are in the hundreds and rounding alone moves the loss by 0.5% within an epoch,
    batched or not. Their one batched-specific piece, clipping each model's own global
    gradient norm, is checked here against torch's clip_grad_norm_ per model."""
    cfg = replace(registry.get("clip_std10").config, epochs=1)
    run = batched.BatchedRun.of_seeds(cfg, splits, "clip_std10")
    torch.manual_seed(0)
    for p in run.params:
        p.grad = torch.randn_like(p) * torch.tensor([0.1, 1.0, 10.0]).view(-1, *[1] * (p.dim() - 1))
    expected = []
    for i in range(len(SEEDS)):
        grads = [p.grad[i].clone() for p in run.params]
        torch.nn.utils.clip_grad_norm_(grads_as_params(grads), cfg.clip_norm)
        expected.append(grads)
    run._clip()
    for i in range(len(SEEDS)):
        for p, g in zip(run.params, expected[i]):
            torch.testing.assert_close(p.grad[i], g, rtol=1e-5, atol=1e-7)


def grads_as_params(grads):
    """Parameters whose .grad are these tensors (clip_grad_norm_ works in place on them)."""
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros_like(g))
        p.grad = g
        params.append(p)
    return params


def test_what_cannot_be_batched_says_why():
    assert "layerwise" in batched.unsupported(registry.get("layerwise").config)
    assert batched.unsupported(registry.get("relu").config) is None
    with pytest.raises(ValueError, match="layerwise"):
        batched.BatchedRun.of_seeds(registry.get("layerwise").config, {}, "layerwise")
