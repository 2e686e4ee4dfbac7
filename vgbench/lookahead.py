"""A few real steps of the user's optimizer on the probe batch, everything put back: what the
loss does after a large first step, for inspect's exploding rule (read against
diagnose.LOOKAHEAD_RISE; watch reads the same from the run itself, against
diagnose.LOSS_RISE).

A first step that moves a layer by a sizeable part of its norm, or raises the batch's loss,
is an explosion only if the loss stays up. Optimizers and nets that overshoot on their
first steps and recover (AdamW without warm-up on a ConvNeXt: the loss up 41%, then below
the start by the third step) are told from those that do not (a learning rate 100 times
too large: the loss three times the start and staying there) by the mean loss over the
steps that follow.

inspect(trial=True) takes TRIAL steps whatever the first step did, and reads what they do
to the batch's loss: a loss that runs away is exploding, one that even thirty steps on the
same batch cannot lower is frozen (a net on a saddle: every weight scaled down behind its
norms, or a head at zero behind weights too small to move its input)."""

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
TRIAL = 30
"""Real steps inspect(trial=True) takes on the probe batch, whatever the first step did: the
loss over the first LOOKAHEAD of them is read as the lookahead's (exploding), over all of
them as the fit (diagnose.FIT_FALL: frozen)."""


def losses(model: nn.Module, optimizer: torch.optim.Optimizer, x, targets, loss_fn,
           steps: int = LOOKAHEAD) -> list[float] | None:
    """The loss on the batch before the first of `steps` real steps of optimizer on it and
    after each, up to the first that is not finite. Train mode, the probe's fixed dropout
    draws. Afterwards the weights, the optimizer's state and hyperparameters, every
    parameter's .grad, the norm statistics and the random generators are as before. None
    where a step cannot be taken (an optimizer that needs a closure)."""
    params = list(dict.fromkeys([*model.parameters(),
                                 *(p for g in optimizer.param_groups for p in g["params"])]))
    weights = [p.detach().clone() for p in params]
    grads = [p.grad for p in params]
    state = copy.deepcopy(optimizer.state_dict())
    values: list[float] = []
    try:
        with as_it_was(model, train=True), same_draws(x), torch.enable_grad():
            for k in range(steps + 1):
                value = loss_fn(call(model, x), targets)
                values.append(float(value.detach()))
                if k == steps or not math.isfinite(values[-1]):
                    break
                for p in params:
                    p.grad = None
                value.backward()
                optimizer.step()
    except (RuntimeError, TypeError):  # e.g. LBFGS: step() needs a closure
        return None
    finally:
        with torch.no_grad():
            for p, w in zip(params, weights):
                p.copy_(w)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.load_state_dict(state)
    return values


def rise(values: list[float] | None, steps: int = LOOKAHEAD) -> float:
    """The mean loss after the first `steps` steps of losses() over the loss before them
    (watch's loss_rise, with the probe batch as the run): infinite where the loss stops
    being finite within them, NaN where no step was taken."""
    if not values or len(values) < 2 or not values[0] > 0:
        return math.nan
    after = values[1:steps + 1]
    if not all(math.isfinite(v) for v in after):
        return math.inf  # the loss left the numbers: as far up as it goes
    return (sum(after) / len(after)) / values[0]


def fit(values: list[float] | None) -> float:
    """rise() over every step losses() took: how far the steps lowered the batch's loss."""
    return rise(values, len(values) - 1) if values else math.nan
