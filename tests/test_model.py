"""The networks: every registry entry, shapes, init, skip wiring, the custom layers."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from vgbench import model as M
from vgbench import registry
from vgbench.config import Config


@pytest.mark.parametrize("name", registry.names())
def test_every_remedy_builds_and_backprops(name):
    cfg = registry.get(name).config
    torch.manual_seed(0)
    net = M.build(cfg)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    logits = net(x)
    assert logits.shape == (16, 10)
    nn.functional.cross_entropy(logits, y).backward()
    for lin in net.linears():
        assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_baseline_shapes_and_parameter_count():
    net = M.build(Config())
    # counted by hand: 784*128+128, then 6 x (128*128+128), then 128*10+10
    expected = (784 * 128 + 128) + 6 * (128 * 128 + 128) + (128 * 10 + 10)
    assert expected == 200_842
    assert sum(p.numel() for p in net.parameters()) == expected
    shapes = [tuple(lin.weight.shape) for lin in net.linears()]
    assert shapes == [(128, 784)] + [(128, 128)] * 6 + [(10, 128)]
    assert all(isinstance(layer.act, nn.Sigmoid) for layer in net.hidden)


def test_depth_and_width_are_real_settings():
    net = M.build(Config(n_layer=3, width=32))
    assert [tuple(lin.weight.shape) for lin in net.linears()] == [(32, 784), (32, 32), (32, 32),
                                                                  (10, 32)]


@pytest.mark.parametrize("std", [0.05, 1.0, 10.0])
def test_normal_init_statistics(std):
    torch.manual_seed(0)
    net = M.build(Config(init="normal", init_std=std))
    w = torch.cat([lin.weight.flatten() for lin in net.linears()])  # ~200k samples
    assert w.std().item() == pytest.approx(std, rel=0.01)
    assert abs(w.mean().item()) < 0.01 * std
    assert all((lin.bias == 0).all() for lin in net.linears())


def test_default_init_is_pytorchs():
    torch.manual_seed(0)
    w = M.build(Config()).hidden[0].linear.weight
    bound = 1 / 784 ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 784
    assert w.abs().max().item() <= bound and w.std().item() == pytest.approx(bound / 3 ** 0.5,
                                                                              rel=0.02)


class Tag(nn.Module):
    """Stands in for a hidden layer: every output equals its 1-based layer index."""

    def __init__(self, i):
        super().__init__()
        self.i = i

    def forward(self, x):
        return torch.full((len(x), 4), float(self.i))


def test_skip_wiring():
    """h3 = act3 + h1 and h7 = act7 + h4, nothing else, as docs/protocol.md's skip remedy."""
    net = M.MLP(registry.get("skip").config)
    net.hidden = nn.ModuleList(Tag(i) for i in range(1, 8))
    acts = []
    h7 = net.features(torch.zeros(2, 784), acts=acts)
    assert [a[0, 0].item() for a in acts] == [1, 2, 3, 4, 5, 6, 7]  # raw activations
    assert h7[0, 0].item() == 7 + 4  # h7 = act7 + h4 (h4 = act4, no skip into 4)
    net2 = M.MLP(replace(Config(), skip=((1, 3), (3, 5))))
    net2.hidden = nn.ModuleList(Tag(i) for i in range(1, 8))
    assert net2.features(torch.zeros(1, 784), n=5)[0, 0].item() == 5 + (3 + 1)  # chained


def test_skip_config_is_checked():
    with pytest.raises(ValueError, match="skip"):
        Config(skip=((3, 3),))


def test_gradnorm_backward_is_the_formula():
    x = torch.zeros(2, 3, requires_grad=True)
    g = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 10.0]])
    M.GradNorm()(x).backward(g)
    mean, std = g.mean(), g.std()  # whole tensor, unbiased std
    expected = (g - mean) / (std + 1e-6)
    torch.testing.assert_close(x.grad, expected)
    assert x.grad.mean().abs() < 1e-6 and x.grad.std().item() == pytest.approx(1.0, rel=1e-5)


def test_gradnorm_placement():
    post = M.build(registry.get("gradnorm").config).hidden[0]
    pre = M.build(registry.get("gradnorm_pre").config).hidden[0]
    assert isinstance(post.post, M.GradNorm) and isinstance(post.pre, nn.Identity)
    assert isinstance(pre.pre, M.GradNorm) and isinstance(pre.post, nn.Identity)


def test_custom_norm_forward():
    x = torch.tensor([[1.0, 2.0], [3.0, 10.0]])
    out = M.BatchStandardize()(x)
    vals = torch.tensor([1.0, 2.0, 3.0, 10.0])
    torch.testing.assert_close(out.flatten(), (vals - vals.mean()) / vals.std())
    assert list(M.BatchStandardize().parameters()) == []


def test_batchnorm_is_a_real_module():
    net = M.build(registry.get("batchnorm").config)
    bn = net.hidden[0].norm
    assert isinstance(bn, nn.BatchNorm1d) and bn.weight.requires_grad
    assert bn.weight in set(net.parameters())  # so the optimizer trains the affine
    net.train()
    net(torch.rand(64, 784) * 3)
    assert bn.num_batches_tracked.item() == 1 and bn.running_mean.abs().sum() > 0
    net.eval()  # eval uses running statistics: one sample alone gives a defined output
    assert torch.isfinite(net(torch.rand(1, 784))).all()
