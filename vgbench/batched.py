"""Several seeds of one remedy trained as one batched model: for GPUs, where one small MLP
leaves the device idle, K seeds cost about one.

Each seed gets its own Run (its split, init, shuffling, probe and history, exactly as when
trained alone); the K models' parameters are stacked (torch.func.stack_module_state) and
every batch runs through them at once with vmap over torch.func.functional_call. The loss
is the sum of the K models' losses, so each model receives its own gradient; SGD and Adam
act elementwise, so one optimizer over the stacked tensors is K optimizers. After every
epoch the weights are copied back into each seed's model for its probe, and at the end for
its test evaluation. Results equal separate runs up to float rounding (batched matrix
multiplies sum in another order): see tests/test_batched.py.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from vgbench import model as M
from vgbench import selfcheck
from vgbench.config import Config
from vgbench.data import Splits
from vgbench.history import History
from vgbench.machine import sync, without_denormals
from vgbench.train import Run, batch_bounds


def unsupported(cfg: Config, parts: M.Parts = M.DEFAULT_PARTS) -> str | None:
    """None when seeds of cfg can train batched; else why they train one by one."""
    if cfg.layerwise:
        return "layerwise training changes the network between stages"
    if parts.optimizer is not None:
        return "a user optimizer need not act elementwise on stacked weights"
    return None


class BatchedRun:
    """K seeds of one config, trained together; step() trains one epoch of every seed."""

    def __init__(self, cfg: Config, splits: dict[int, Splits], name: str = "custom",
                 parts: M.Parts = M.DEFAULT_PARTS):
        why = unsupported(cfg, parts)
        if why is not None:
            raise ValueError(f"{name}: seeds cannot train batched: {why}")
        self.cfg, self.parts = cfg, parts
        self.runs = [Run(replace(cfg, seed=s), splits[s], name, parts) for s in sorted(splits)]
        for part in ("train_y", "val_y"):
            if len({len(getattr(r.s, part)) for r in self.runs}) > 1:
                raise ValueError(f"batched seeds need equal split sizes ({part} differs)")
        self.device = self.runs[0].device
        models = [r.mlp for r in self.runs]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        self.opt = M.make_optimizer(list(self.params.values()), cfg, parts)
        self.epoch_no = 0
        self.check = self._verify()
        for i, run in enumerate(self.runs):  # the check ran once, for the batch
            run.history.self_checks.append((self.check if i == 0
                                             else self.check.elsewhere()).to_dict())

    def _verify(self) -> selfcheck.Result:
        """The batched step trains the first seed as it trains alone (checked once per
        session and step kind); raises selfcheck.Mismatch if not."""
        failed = selfcheck.failed(selfcheck.BATCHED)
        if failed is not None:
            raise selfcheck.Mismatch(failed.elsewhere())
        key = selfcheck.step_key(selfcheck.BATCHED, self.runs[0].mlp, self.opt, self.cfg)
        result = selfcheck.earlier(key) or selfcheck.remember(key,
                                                              selfcheck.check_batched(self))
        if not result.ok:
            raise selfcheck.Mismatch(result)
        return result

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """The tensors a batched step changes: stacked weights, buffers, optimizer state."""
        state = dict(self.params)
        state.update({f"buffer {k}": v for k, v in self.buffers.items()})
        state.update(selfcheck.optimizer_state(self.opt, self.params))
        return state

    @property
    def done(self) -> bool:
        """True once every seed has trained its epochs (diverged ones stop recording)."""
        return self.epoch_no >= self.cfg.total_epochs

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        def one(p, b, xi):
            return functional_call(self.base, (p, b), (xi,))
        return vmap(one)(self.params, self.buffers, x)  # (K, batch, classes)

    def _clip(self) -> None:
        """Each model's own global gradient norm clipped to cfg.clip_norm (as
        nn.utils.clip_grad_norm_ does for one model)."""
        grads = [p.grad for p in self.params.values() if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,)
        coef = (self.cfg.clip_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))

    def _gather(self, perms: list[torch.Tensor], lo: int, hi: int):
        """Each seed's batch from its own split and shuffle: (K, batch, 784), (K, batch)."""
        idx = [p[lo:hi] for p in perms]
        x = torch.stack([r.s.train_x.index_select(0, i) for r, i in zip(self.runs, idx)])
        y = torch.stack([r.s.train_y.index_select(0, i) for r, i in zip(self.runs, idx)])
        return x, y

    def _train_epoch(self):
        k = len(self.runs)
        perms = [torch.randperm(len(r.s.train_y), generator=r.shuffle).to(self.device)
                 for r in self.runs]
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        self.base.train()
        n = len(perms[0])
        for lo, hi in batch_bounds(n, self.cfg.batch_size):
            losses, hits = self.train_step(perms, lo, hi)
            loss_sum += losses.detach() * (hi - lo)
            correct += hits
        return loss_sum / n, correct / n

    def train_step(self, perms: list[torch.Tensor], lo: int, hi: int):
        """One optimizer step of every model on its perm[lo:hi]; returns (each model's
        mean loss, each model's hits), shapes (K,)."""
        x, y = self._gather(perms, lo, hi)
        logits = self._forward(x)
        losses = vmap(F.cross_entropy)(logits, y)  # (K,): each model's mean loss
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()  # model k's weights get d loss_k only
        if self.cfg.clip_norm is not None:
            self._clip()
        self.opt.step()
        return losses, (logits.argmax(-1) == y).sum(-1)

    @torch.no_grad()
    def _evaluate(self):
        k, bs = len(self.runs), self.cfg.batch_size
        self.base.eval()
        n = len(self.runs[0].s.val_y)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        for i in range(0, n, bs):
            x = torch.stack([r.s.val_x[i:i + bs] for r in self.runs])
            y = torch.stack([r.s.val_y[i:i + bs] for r in self.runs])
            logits = self._forward(x)
            loss_sum += vmap(lambda a, b: F.cross_entropy(a, b, reduction="sum"))(logits, y)
            correct += (logits.argmax(-1) == y).sum(-1)
        return loss_sum / n, correct / n

    @torch.no_grad()
    def _write_back(self) -> None:
        """The stacked weights and buffers into each seed's own model."""
        for i, run in enumerate(self.runs):
            for name, p in run.mlp.named_parameters():
                p.copy_(self.params[name][i])
            for name, b in run.mlp.named_buffers():
                b.copy_(self.buffers[name][i])

    @without_denormals
    def step(self) -> list[dict]:
        """One epoch of every seed; returns each seed's epoch record (diverged seeds, which
        keep training in the batch, record nothing more)."""
        sync(self.device)
        t0 = time.perf_counter()
        tr_loss, tr_acc = self._train_epoch()
        va_loss, va_acc = self._evaluate()
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1)
                              for p in self.params.values()]).all(0)  # (K,)
        values = torch.stack([tr_loss, tr_acc.float(), va_loss, va_acc.float(),
                              finite.float()], 1).tolist()  # the epoch's one sync
        self._write_back()
        self.epoch_no += 1
        booked = [(run, run.record_epoch(*v)) for run, v in zip(self.runs, values)
                  if not run.diverged]
        dt = time.perf_counter() - t0  # the batch's epoch: every seed's epoch_time
        return [run.record_time(record, dt) for run, record in booked]

    def finish(self) -> list[History]:
        """Every seed's history (test evaluation on its own model)."""
        self._write_back()
        for run in self.runs:
            run.history.batched_with = [r.cfg.seed for r in self.runs]
        return [run.finish() for run in self.runs]
