"""A few steps of training as a test: trial trains a model for K steps on given batches
under vgbench.watch and puts it back; assert_trains fails when the loss does not fall or
the flow breaks (it catches models that read healthy at init and do not train).

    vgbench.assert_trains(model, batches, steps=300, optimizer=lambda p: SGD(p, lr=0.01))
"""

from __future__ import annotations

import copy
import itertools
import math

import torch
from torch import nn

from vgbench.monitor import UnhealthyTraining, Watch, WatchError, line, watch

MIN_DROP = 0.1
"""assert_trains: the mean loss of the last tenth of the steps must be at least this share
below the first tenth's (where the numbers come from: docs/watch.md)."""


def trial(model: nn.Module, batches, steps: int = 100, optimizer=None, loss=None,
          every: int | None = None, allow: tuple[str, ...] = ("healthy",)) -> dict:
    """Train `steps` optimizer steps on `batches` under watch, then put the model (and a
    given optimizer's state) back as it was: {'first', 'last' (the mean loss of the first
    and the last tenth of the steps), 'drop' ((first - last) / first), 'finite', 'watch'}.
    batches: a list of (inputs, targets), cycled, or a function returning the next one;
    optimizer: an optimizer of the model, or a function params -> optimizer (default plain
    SGD at lr 0.01); loss(output, targets) -> scalar (default cross-entropy)."""
    if not isinstance(steps, int) or steps < 10:
        raise WatchError(f"steps= must be a whole number >= 10 (the loss is compared over "
                         f"tenths of the run), got {steps!r}")
    if callable(batches):
        next_batch = batches
    else:
        batches = list(batches)
        if not batches:
            raise WatchError("batches= is empty: give a list of (inputs, targets) or a "
                             "function returning the next batch")
        cycled = itertools.cycle(batches)
        next_batch = lambda: next(cycled)  # noqa: E731
    if optimizer is None:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    elif isinstance(optimizer, torch.optim.Optimizer):
        opt = optimizer
    else:
        opt = optimizer(model.parameters())
    loss_fn = loss or (lambda out, y: torch.nn.functional.cross_entropy(out, y))
    saved = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict()) if opt is optimizer else None
    was_training = model.training
    losses = []
    try:
        model.train()
        with watch(model, opt, every or max(1, steps // 10), allow=allow) as w:
            for _ in range(steps):
                x, y = next_batch()
                value = loss_fn(model(x), y)
                opt.zero_grad()
                value.backward()
                opt.step()
                w.step(value)
                losses.append(float(value.detach()))
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
        if saved_opt is not None:
            opt.load_state_dict(saved_opt)
    tenth = max(1, steps // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    return {"first": first, "last": last, "tenth": tenth, "steps": steps,
            "drop": (first - last) / abs(first) if first else math.nan,
            "finite": all(math.isfinite(v) for v in losses), "watch": w}


def assert_trains(model: nn.Module, batches, steps: int = 100, optimizer=None, loss=None,
                  every: int | None = None, min_drop: float = MIN_DROP,
                  allow: tuple[str, ...] = ("healthy",)) -> Watch:
    """A few steps of training as a test (see trial for the arguments): an AssertionError
    when the loss does not fall by min_drop (the last tenth of the steps against the first)
    or the last sampled verdict is not in allow. Returns the Watch when the run passes."""
    t = trial(model, batches, steps, optimizer, loss, every, allow)
    w, drop = t["watch"], t["drop"]
    onsets = ", ".join(f"{o['verdict']} at step {o['step']}" for o in w.onsets)
    end = w.timeline[-1] if w.timeline else None
    if not (drop >= min_drop) or not t["finite"]:
        raise UnhealthyTraining(
            f"vgbench.assert_trains: the loss did not fall in {steps} steps: "
            f"{t['first']:.4g} (first {t['tenth']}) -> {t['last']:.4g} (last {t['tenth']}), "
            f"{-drop:+.0%} (needs {-min_drop:+.0%}); verdicts: {onsets}"
            + (f"; at the end {line(end)}" if end else ""))
    if end is not None and end["verdict"] not in allow:
        raise UnhealthyTraining(f"vgbench.assert_trains: the loss fell ({-drop:+.0%}) but "
                                f"at the end {line(end)} (verdicts: {onsets})")
    return w
