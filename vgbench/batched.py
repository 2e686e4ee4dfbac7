"""Several runs of one network shape trained as one stacked model: for GPUs, where one
small MLP leaves the device idle, a group of K runs costs about one.

A group's members are the seeds of one remedy, and remedies that differ from each other
only in their initialization or learning rate (group_key): on the course suite, baseline,
init_std1 and init_std10 are one group, relu another. Each member gets its own Run (its
split, init, shuffling, probe and history, exactly as when trained alone); the K models'
parameters are stacked (torch.func.stack_module_state) and every batch runs through them at
once with vmap over torch.func.functional_call. The loss is the sum of the K models'
losses, so each model receives its own gradient; SGD and Adam act elementwise, so one
optimizer over the stacked tensors is K optimizers. Members with another learning rate:
the optimizer steps at the group's largest, and each member's step is scaled to its own
(an SGD or Adam step is linear in the learning rate, and their state does not depend on
it). On CUDA the group's full-batch step is captured in one CUDA graph (train.StepGraph,
self-checked like a single run's). After every epoch the weights are copied back into each
member's model for its probe, and at the end for its test evaluation. Results equal
separate runs up to float rounding (batched matrix multiplies sum in another order): see
tests/test_batched.py and tests/test_group.py; the step is checked against every member
trained alone at run time (selfcheck.check_batched).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from vgbench import model as M
from vgbench import selfcheck
from vgbench.config import Config
from vgbench.data import Splits
from vgbench.history import History
from vgbench.machine import sync, without_denormals
from vgbench.train import Run, StepGraph, batch_bounds

FREE = ("seed", "init", "init_std", "init_gain", "lr")
"""Config fields in which a group's members may differ."""


@dataclass(frozen=True)
class Member:
    """One run of a group: what train.Run takes."""

    cfg: Config
    splits: Splits
    name: str = "custom"
    parts: M.Parts = M.DEFAULT_PARTS


def unsupported(cfg: Config, parts: M.Parts = M.DEFAULT_PARTS) -> str | None:
    """None when runs of cfg can train in a group; else why they train one by one."""
    if cfg.layerwise:
        return "layerwise training changes the network between stages"
    if parts.optimizer is not None:
        return "a user optimizer need not act elementwise on stacked weights"
    return None


def group_key(cfg: Config, parts: M.Parts = M.DEFAULT_PARTS) -> str | None:
    """The name of the group runs of cfg train in (equal for configs that differ only in
    FREE, with the same code of the remedy's own but its init); None: they cannot."""
    if unsupported(cfg, parts) is not None:
        return None
    base = replace(cfg, **{f: getattr(Config(), f) for f in FREE})
    code = sorted((k, v) for k, v in parts.labels().items() if k != "init")
    return "group-" + hashlib.sha256(repr((base, code)).encode()).hexdigest()[:12]


def label(member: Member) -> str:
    """How a history names a member of its group (History.batched_with)."""
    return f"{member.name}:{member.cfg.seed}"


class BatchedRun:
    """K runs of one network shape, trained together; step() trains one epoch of each."""

    def __init__(self, members: list[Member]):
        keys = {group_key(m.cfg, m.parts) for m in members}
        if None in keys:
            why = next(unsupported(m.cfg, m.parts) for m in members
                       if group_key(m.cfg, m.parts) is None)
            raise ValueError(f"{members[0].name}: runs cannot train batched: {why}")
        if len(keys) > 1:
            raise ValueError("runs of a group must differ only in " + ", ".join(FREE) +
                             ": " + ", ".join(sorted({m.name for m in members})))
        self.members = list(members)
        self.cfg, self.parts = members[0].cfg, members[0].parts
        self.runs = [Run(m.cfg, m.splits, m.name, m.parts) for m in members]
        for part in ("train_y", "val_y"):
            if len({len(getattr(r.s, part)) for r in self.runs}) > 1:
                raise ValueError(f"batched runs need equal split sizes ({part} differs)")
        self.device = self.runs[0].device
        models = [r.mlp for r in self.runs]
        weights, buffers = stack_module_state(models)
        self.weights = {k: v.detach().requires_grad_(True) for k, v in weights.items()}
        self.params = list(self.weights.values())
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        lrs = [m.cfg.lr for m in members]
        self.lr_scale = (None if len(set(lrs)) == 1 else
                         torch.tensor([lr / max(lrs) for lr in lrs], device=self.device))
        """Per member, its learning rate over the group's largest (None: all equal)."""
        use_graph = self.cfg.cuda_graph and self.device.type == "cuda"
        self.opt = M.make_optimizer(self.params, replace(self.cfg, lr=max(lrs)), self.parts,
                                    capturable=use_graph)
        k = len(self.runs)
        self.loss_sum = torch.zeros(k, device=self.device)  # the epoch's sums, static for
        self.correct = torch.zeros(k, device=self.device, dtype=torch.long)  # CUDA graphs
        self.epoch_no = 0
        self.graphs = None
        for run in self.runs:  # the members do not train alone
            run.graphs = None
        self.check = self._verify()
        for i, run in enumerate(self.runs):  # the check ran once, for the group
            run.history.self_checks.append((self.check if i == 0
                                             else self.check.elsewhere()).to_dict())
        self.graphs = StepGraph(self, what=selfcheck.GROUP_GRAPH) if use_graph else None

    @classmethod
    def of_seeds(cls, cfg: Config, splits: dict[int, Splits], name: str = "custom",
                 parts: M.Parts = M.DEFAULT_PARTS) -> "BatchedRun":
        """The seeds of one remedy (splits: per seed) as a group."""
        why = unsupported(cfg, parts)
        if why is not None:
            raise ValueError(f"{name}: seeds cannot train batched: {why}")
        return cls([Member(replace(cfg, seed=s), splits[s], name, parts)
                    for s in sorted(splits)])

    def _verify(self) -> selfcheck.Result:
        """The batched step trains every member as it trains alone (checked once per
        session and step kind); raises selfcheck.Mismatch if not."""
        failed = selfcheck.failed(selfcheck.BATCHED)
        if failed is not None:
            raise selfcheck.Mismatch(failed.elsewhere())
        key = selfcheck.step_key(selfcheck.BATCHED, self.net, self.opt, self.cfg) + (
            self.lr_scale is not None,)
        result = selfcheck.earlier(key) or selfcheck.remember(key,
                                                              selfcheck.check_batched(self))
        if not result.ok:
            raise selfcheck.Mismatch(result)
        return result

    # --- what train.StepGraph and the self-checks read ---
    @property
    def net(self) -> torch.nn.Module:
        """The first member's network (its module types and device: selfcheck.step_key)."""
        return self.runs[0].mlp

    @property
    def n_train(self) -> int:
        return self.runs[0].n_train

    def book_check(self, result: selfcheck.Result) -> None:
        """A self-check's result into every member's history (the first one ran it)."""
        for i, run in enumerate(self.runs):
            run.book_check(result if i == 0 else result.elsewhere())

    def stacked_state(self) -> dict[str, torch.Tensor]:
        """The tensors a batched step changes: stacked weights, buffers, optimizer state,
        the epoch's loss sums (each with the members along its first dimension)."""
        state = dict(self.weights)
        state.update({f"buffer {k}": v for k, v in self.buffers.items()})
        state.update(selfcheck.optimizer_state(self.opt, self.weights))
        state["loss sum"] = self.loss_sum
        return state

    @property
    def done(self) -> bool:
        """True once every member has trained its epochs (diverged ones stop recording)."""
        return self.epoch_no >= self.cfg.total_epochs

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        def one(p, b, xi):
            return functional_call(self.base, (p, b), (xi,))
        return vmap(one)(self.weights, self.buffers, x)  # (K, batch, classes)

    def _clip(self) -> None:
        """Each model's own global gradient norm clipped to cfg.clip_norm (as
        nn.utils.clip_grad_norm_ does for one model)."""
        grads = [p.grad for p in self.params if p.grad is not None]
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (K,)
        coef = (self.cfg.clip_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))

    def _gather(self, idx: torch.Tensor):
        """Each member's batch from its own split: idx (K, batch) -> (K, batch, 784),
        (K, batch)."""
        x = torch.stack([r.s.train_x.index_select(0, i) for r, i in zip(self.runs, idx)])
        y = torch.stack([r.s.train_y.index_select(0, i) for r, i in zip(self.runs, idx)])
        return x, y

    def _train_epoch(self):
        perms = torch.stack([torch.randperm(r.n_train, generator=r.shuffle)
                             for r in self.runs]).to(self.device)  # (K, n): each its own
        self.loss_sum.zero_()
        self.correct.zero_()
        self.base.train()
        n, bs = perms.shape[1], self.cfg.batch_size
        for lo, hi in batch_bounds(n, bs):
            if self.graphs is not None and hi - lo == bs:
                self.graphs.step(perms[:, lo:hi])
            else:
                self.train_step(perms[:, lo:hi])
        return self.loss_sum / n, self.correct / n

    def train_step(self, idx: torch.Tensor, zero_grad: bool = True) -> None:
        """One optimizer step of every model on its own batch idx[k] (idx: (K, batch)),
        accumulating each one's loss and hits on the device (no host sync), as a CUDA
        graph can capture it."""
        x, y = self._gather(idx)
        logits = self._forward(x)
        losses = vmap(F.cross_entropy)(logits, y)  # (K,): each model's mean loss
        if zero_grad:
            for p in self.params:
                p.grad = None
        losses.sum().backward()  # model k's weights get d loss_k only
        if self.cfg.clip_norm is not None:
            self._clip()
        if self.lr_scale is None:
            self.opt.step()
        else:  # at the largest rate, then each member's step scaled to its own
            with torch.no_grad():
                before = [p.detach().clone() for p in self.params]
            self.opt.step()
            with torch.no_grad():
                for p, b in zip(self.params, before):
                    p.sub_(b).mul_(self.lr_scale.view(-1, *[1] * (p.dim() - 1))).add_(b)
        self.loss_sum += losses.detach() * idx.shape[1]
        self.correct += (logits.argmax(-1) == y).sum(-1)

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
        """The stacked weights and buffers into each member's own model."""
        for i, run in enumerate(self.runs):
            for name, p in run.mlp.named_parameters():
                p.copy_(self.weights[name][i])
            for name, b in run.mlp.named_buffers():
                b.copy_(self.buffers[name][i])

    @without_denormals
    def step(self) -> list[dict]:
        """One epoch of every member; returns each one's epoch record (diverged members,
        which keep training in the group, record nothing more)."""
        sync(self.device)
        t0 = time.perf_counter()
        tr_loss, tr_acc = self._train_epoch()
        va_loss, va_acc = self._evaluate()
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1)
                              for p in self.params]).all(0)  # (K,)
        values = torch.stack([tr_loss, tr_acc.float(), va_loss, va_acc.float(),
                              finite.float()], 1).tolist()  # the epoch's one sync
        self._write_back()
        self.epoch_no += 1
        booked = [(run, run.record_epoch(*v)) for run, v in zip(self.runs, values)
                  if not run.diverged]
        dt = time.perf_counter() - t0  # the group's epoch: every member's epoch_time
        return [run.record_time(record, dt) for run, record in booked]

    def finish(self) -> list[History]:
        """Every member's history (test evaluation on its own model)."""
        self._write_back()
        for run in self.runs:
            run.history.batched_with = [label(m) for m in self.members]
            if self.graphs is not None:
                run.history.cuda_graph = self.graphs.status
        return [run.finish() for run in self.runs]
