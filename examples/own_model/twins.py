"""Four pairs of twins: a model vgbench should flag and the same model with the one change
that fixes it, the data each is trained on, and the small training budget that checks the
verdict (a flagged model stays below TRAINABLE_ACC where its healthy twin passes it).

Nothing here is vgbench's own: these are the models a user would write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vgbench import data

TRAINABLE_ACC = 0.5
"""A model learned when its held-out accuracy reached this within the budget (the suite's
level, vgbench.prediction.TRAINABLE_ACC; chance is 0.1 on Fashion-MNIST, 0.25 on Recall)."""
MEAN, STD = 0.2860, 0.3530
"""Fashion-MNIST's pixel mean and standard deviation (training images), to standardize."""


# --- 1. a deep plain CNN: sigmoid (flagged: vanishing) / ReLU + BatchNorm (healthy) -------

def cnn(act: str = "sigmoid", depth: int = 8, width: int = 16) -> nn.Sequential:
    """depth 3x3 convolutions (stride 2 at the third and sixth: 28 -> 14 -> 7), each followed
    by the activation (ReLU with BatchNorm before it for act='relu_bn'), then one Linear."""
    layers: list[nn.Module] = []
    channels, size = 1, 28
    for i in range(depth):
        stride = 2 if i in (2, 5) else 1
        layers.append(nn.Conv2d(channels, width, 3, stride=stride, padding=1,
                                bias=act != "relu_bn"))
        size = (size - 1) // stride + 1
        if act == "relu_bn":
            layers += [nn.BatchNorm2d(width), nn.ReLU()]
        else:
            layers.append(nn.Sigmoid())
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * size * size, 10))


def sigmoid_cnn() -> nn.Module:
    return cnn("sigmoid")


def relu_bn_cnn() -> nn.Module:
    return cnn("relu_bn")


# --- 2. a stack of 30 pre-norm residual blocks (healthy) / the same without the skip -----

class Block(nn.Module):
    """x + tanh(W LayerNorm(x)) (pre-norm residual); skip=False drops the '+ x', norm=False
    the LayerNorm."""

    def __init__(self, width: int, skip: bool = True, norm: bool = True):
        super().__init__()
        self.skip = skip
        self.norm = nn.LayerNorm(width) if norm else nn.Identity()
        self.fc = nn.Linear(width, width)
        self.act = nn.Tanh()

    def forward(self, x):
        h = self.act(self.fc(self.norm(x)))
        return x + h if self.skip else h


def deep_stack(skip: bool = True, norm: bool = True, depth: int = 30,
               width: int = 64) -> nn.Sequential:
    """784 -> width, depth Blocks, a final LayerNorm (if norm), -> 10 classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width),
                         *[Block(width, skip, norm) for _ in range(depth)],
                         nn.LayerNorm(width) if norm else nn.Identity(), nn.Linear(width, 10))


def residual_30() -> nn.Module:
    return deep_stack(skip=True)


def plain_30() -> nn.Module:
    """The residual stack without its skips and its norms: what a network of depth 30 is
    without the two things that make it trainable."""
    return deep_stack(skip=False, norm=False)


def plain_30_norm() -> nn.Module:
    """Without the skips but with the LayerNorms (a control: the norm alone keeps the
    gradient's scale at init)."""
    return deep_stack(skip=False, norm=True)


# --- 3. time is depth: a vanilla tanh RNN (flagged) / an LSTM (healthy) on Recall --------

RECALL_STEPS, RECALL_CLASSES, RECALL_FEATURES, HIDDEN = 100, 4, 8, 64


def recall(n: int, generator: torch.Generator, steps: int = RECALL_STEPS):
    """The Recall task: a class (one of 4) is shown at the first of `steps` time steps, as
    a one-hot of height 2 in the first 4 of 8 features; every step carries N(0, 0.5^2)
    noise; the model must name the class after the last step. (batch, time, features)."""
    y = torch.randint(0, RECALL_CLASSES, (n,), generator=generator)
    x = torch.randn(n, steps, RECALL_FEATURES, generator=generator) * 0.5
    x[:, 0, :RECALL_CLASSES] += 2 * F.one_hot(y, RECALL_CLASSES)
    return x, y


class Sequence(nn.Module):
    """A one-layer recurrent net (kind 'rnn': tanh, 'lstm', 'gru') read out after the last
    step. init: None (PyTorch's default), 'orthogonal' (the recurrent weight of an RNN),
    'forget1' (an LSTM's forget-gate bias at 1, Gers et al. 2000) or 'chrono' (an LSTM's
    forget-gate bias log U(1, steps - 1) and input-gate bias its negative, Tallec & Ollivier
    2018: the forget gate starts open for memories up to `steps` long)."""

    def __init__(self, kind: str = "rnn", init: str | None = None,
                 steps: int = RECALL_STEPS):
        super().__init__()
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = cls(RECALL_FEATURES, HIDDEN, batch_first=True)
        h = HIDDEN
        with torch.no_grad():
            if init == "orthogonal":
                nn.init.orthogonal_(self.rnn.weight_hh_l0)
            elif init in ("forget1", "chrono"):  # LSTM gates: input, forget, cell, output
                bias = (torch.ones(h) if init == "forget1"
                        else torch.log(torch.empty(h).uniform_(1, steps - 1)))
                self.rnn.bias_ih_l0[:2 * h].zero_()
                self.rnn.bias_hh_l0[h:2 * h].copy_(bias)
                if init == "chrono":
                    self.rnn.bias_hh_l0[:h].copy_(-bias)
            elif init is not None:
                raise ValueError(f"unknown init {init!r}")
        self.head = nn.Linear(HIDDEN, RECALL_CLASSES)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def tanh_rnn() -> nn.Module:
    return Sequence("rnn")


def lstm() -> nn.Module:
    """An LSTM with the chrono initialization of its gate biases (the forget gate starts
    open for memories up to the task's length)."""
    return Sequence("lstm", "chrono")


def lstm_default() -> nn.Module:
    """PyTorch's default LSTM initialization (forget gate about 0.5 at init): a control."""
    return Sequence("lstm")


# --- 4. dead ReLU units (flagged) / the same MLP, alive (healthy) --------------------------

def relu_mlp(depth: int = 6, width: int = 128, bias: float = 0.0) -> nn.Sequential:
    """depth ReLU layers of width units with He (Kaiming) initialization and every bias at
    `bias`, then a Linear to 10 classes."""
    layers: list[nn.Module] = [nn.Flatten()]
    n = 784
    for _ in range(depth):
        fc = nn.Linear(n, width)
        nn.init.kaiming_normal_(fc.weight, nonlinearity="relu")
        nn.init.constant_(fc.bias, bias)
        layers += [fc, nn.ReLU()]
        n = width
    return nn.Sequential(*layers, nn.Linear(n, 10))


def alive_mlp() -> nn.Module:
    return relu_mlp()


def dead_mlp() -> nn.Module:
    """The same MLP with its biases at -1 (as after a too-large step has pushed them down,
    the classic way ReLU units die): most units are off for every input."""
    return relu_mlp(bias=-1.0)


# --- the pairs, their data, their training budget ------------------------------------------

@dataclass(frozen=True)
class Pair:
    """A flagged model, its healthy twin, the verdict vgbench should give the flagged one,
    and how both are trained to check it."""

    name: str
    flagged: Callable[[], nn.Module]
    healthy: Callable[[], nn.Module]
    verdict: str
    task: str  # "fashion" or "recall"
    optimizer: Callable[[list], torch.optim.Optimizer]
    steps: int
    """Training budget (optimizer steps of batch BATCH) for the check."""


BATCH = 64


def sgd(params):
    return torch.optim.SGD(params, lr=0.01, momentum=0.9)


def adam(params):
    return torch.optim.Adam(params, lr=1e-3)


PAIRS = {
    "cnn": Pair("cnn", sigmoid_cnn, relu_bn_cnn, "vanishing", "fashion", sgd, 300),
    "residual": Pair("residual", plain_30, residual_30, "vanishing", "fashion", sgd, 300),
    "rnn": Pair("rnn", tanh_rnn, lstm, "vanishing", "recall", adam, 400),
    "dead": Pair("dead", dead_mlp, alive_mlp, "dead units", "fashion", sgd, 300),
}
CONTROLS = {"plain_30_norm": ("fashion", sgd, 300), "lstm_default": ("recall", adam, 400)}
"""Models that are not part of a pair but say something about the verdict (see README)."""
FACTORIES = {f.__name__: f for f in (sigmoid_cnn, relu_bn_cnn, residual_30, plain_30,
                                     plain_30_norm, tanh_rnn, lstm, lstm_default, dead_mlp,
                                     alive_mlp)}


class Task:
    """Batches of one task: Fashion-MNIST (standardized; images (n, 1, 28, 28)) or Recall
    (fresh sequences every batch). The held-out set is Fashion-MNIST's first 2,000 test
    images, or 1,000 Recall sequences from a fixed generator."""

    def __init__(self, name: str, seed: int, steps: int = RECALL_STEPS):
        self.name, self.steps = name, steps
        self.generator = torch.Generator().manual_seed(seed)
        if name == "fashion":
            ds = data.load_cached()
            self.x = ((ds.train_x - MEAN) / STD).view(-1, 1, 28, 28)
            self.y = ds.train_y
            self.test = (((ds.test_x[:2000] - MEAN) / STD).view(-1, 1, 28, 28),
                         ds.test_y[:2000])
        elif name == "recall":
            self.test = recall(1000, torch.Generator().manual_seed(10_000), steps)
        else:
            raise ValueError(f"unknown task {name!r}; choose 'fashion' or 'recall'")

    def batch(self, n: int = BATCH):
        if self.name == "recall":
            return recall(n, self.generator, self.steps)
        i = torch.randint(0, len(self.y), (n,), generator=self.generator)
        return self.x[i], self.y[i]


def train(factory: Callable[[], nn.Module], task: str,
          optimizer: Callable[[list], torch.optim.Optimizer], steps: int,
          seed: int, recall_steps: int = RECALL_STEPS) -> float:
    """Held-out accuracy after `steps` steps of training from a seeded init (seed: the
    weights and the batches; recall_steps: the Recall task's length)."""
    torch.manual_seed(seed)
    model = factory()
    t = Task(task, seed, recall_steps)
    opt = optimizer(model.parameters())
    model.train()
    for _ in range(steps):
        x, y = t.batch()
        loss = F.cross_entropy(model(x), y)
        if not math.isfinite(loss.item()):
            return math.nan
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        x, y = t.test
        return (model(x).argmax(1) == y).float().mean().item()


def probe_batch(task: str, seed: int = 0, recall_steps: int = RECALL_STEPS):
    """The batch vgbench inspects (64 examples of the task, seeded)."""
    return Task(task, 1_000 + seed, recall_steps).batch()


def at_init(factory: Callable[[], nn.Module], task: str,
            optimizer: Callable[[list], torch.optim.Optimizer], seed: int = 0,
            recall_steps: int = RECALL_STEPS):
    """(model, batch, optimizer) as vgbench inspects them: the model from the seeded init
    that train() starts from, the probe batch, and the optimizer it is trained with (for
    the update ratios)."""
    torch.manual_seed(seed)
    model = factory()
    return model, probe_batch(task, seed, recall_steps), optimizer(model.parameters())
