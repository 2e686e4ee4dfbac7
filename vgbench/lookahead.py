"""A few real steps of the user's optimizer on the probe batch, everything put back: what the
loss does after a large first step, for inspect's exploding rule (read against
diagnose.LOOKAHEAD_RISE; watch reads the same from the run itself, against
diagnose.LOSS_RISE).

A first step that moves a layer by a sizeable part of its norm, or raises the batch's loss,
is an explosion only if the loss stays up. Optimizers and nets that overshoot on their
first steps and recover (AdamW without warm-up on a ConvNeXt: the loss up 41%, then below
the start by the third step) are told from those that do not (a learning rate 100 times
too large: the loss three times the start and staying there) by the mean loss over the
steps that follow."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from vgbench.diagnostics import as_it_was, same_draws
from vgbench.reach import call

LOOKAHEAD = 10
"""Real steps taken on the probe batch: watch's sampling interval in the zoo's runs under
watch (every 10 steps), where LOSS_RISE was set."""


def loss_rise(model: nn.Module, optimizer: torch.optim.Optimizer, x, targets, loss_fn,
              steps: int = LOOKAHEAD) -> float:
    """The mean loss on the batch after each of `steps` real steps of optimizer on it, over
    the loss before the first (watch's loss_rise, with the probe batch as the run). Train
    mode, the probe's fixed dropout draws. Afterwards the weights, the optimizer's state and
    hyperparameters, every parameter's .grad, the norm statistics and the random generators
    are as before. Infinite where the loss stops being finite; NaN where a step cannot be
    taken (an optimizer that needs a closure)."""
    params = list(dict.fromkeys([*model.parameters(),
                                 *(p for g in optimizer.param_groups for p in g["params"])]))
    weights = [p.detach().clone() for p in params]
    grads = [p.grad for p in params]
    state = copy.deepcopy(optimizer.state_dict())
    losses: list[float] = []
    try:
        with as_it_was(model, train=True), same_draws(x), torch.enable_grad():
            for k in range(steps + 1):
                value = loss_fn(call(model, x), targets)
                losses.append(float(value.detach()))
                if k == steps or not math.isfinite(losses[-1]):
                    break
                for p in params:
                    p.grad = None
                value.backward()
                optimizer.step()
    except (RuntimeError, TypeError):  # e.g. LBFGS: step() needs a closure
        return math.nan
    finally:
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.load_state_dict(state)
    after = losses[1:]
    if not after or not losses[0] > 0:
        return math.nan
    if not all(math.isfinite(v) for v in after):
        return math.inf  # the loss left the numbers: as far up as it goes
    return (sum(after) / len(after)) / losses[0]
