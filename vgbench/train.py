"""The training loop: batches from device tensors, one host sync per epoch, layerwise stages."""

from __future__ import annotations

import math
import time
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from vgbench import diagnose, selfcheck, theory
from vgbench import model as M
from vgbench.config import Config
from vgbench.data import Splits
from vgbench.machine import environment, sync, without_denormals
from vgbench.history import History
from vgbench.diagnostics import grad_ratio, init_profile, probe_batch
from vgbench.probe import Probe
from vgbench.updater import Updater


def _generator(seed: int, stream: str) -> torch.Generator:
    # an independent, process-stable CPU stream per purpose (str hashes are salted per process)
    return torch.Generator().manual_seed(zlib.crc32(f"{seed}:{stream}".encode()))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch over n samples; a last batch of one sample is merged into
    the one before, so BatchNorm never trains on a single sample."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class StepGraph:
    """The training step of a full batch captured in one CUDA graph and replayed.

    Static buffers: the batch's indices (copied in each step), from which the graph itself
    gathers the batch with index_select on the device tensors; the gradients, optimizer
    state and the epoch's loss and hit sums live in the graph's memory. The first WARMUP
    full batches run eagerly on a side stream (as CUDA requires before a capture; they are
    real training steps), the next is captured, checked against eager steps
    (vgbench/selfcheck.py) and replayed. A short last batch runs eagerly. Where capture
    fails (a remedy's own code that syncs with the host, e.g. with .item()) or the replay
    trains differently from eager, the run goes on eagerly and `status` says why.
    """

    WARMUP = 3

    def __init__(self, run: "Run", previous: str | None = None, what: str = selfcheck.GRAPH):
        self.run, self.replay, self.seen, self.what = run, None, 0, what
        """run: a Run, or a batched.BatchedRun (what: selfcheck.GROUP_GRAPH), whose step
        takes each member's batch, idx (K, batch)."""
        self.status = previous if previous and previous.startswith("eager") else "warming up"
        failed = selfcheck.failed(what)
        if failed is not None and not self.status.startswith("eager"):
            self.status = f"eager (self-check failed earlier in this session: {failed.reason()})"
            self.run.book_check(failed.elsewhere())
        self.idx = None
        self.stream = torch.cuda.Stream(run.device) if run.device.type == "cuda" else None

    def step(self, idx: torch.Tensor) -> None:
        """Train on the full batch idx: eagerly while warming up, then by graph replay."""
        run = self.run
        if self.status.startswith("eager"):
            run.train_step(idx)
        elif self.replay is None and self.seen < self.WARMUP:
            if self.stream is None:
                run.train_step(idx)
            else:
                self.stream.wait_stream(torch.cuda.current_stream(run.device))
                with torch.cuda.stream(self.stream):
                    run.train_step(idx)
                torch.cuda.current_stream(run.device).wait_stream(self.stream)
            self.seen += 1
        elif self.replay is None:
            self._capture(idx)
        else:
            self.idx.copy_(idx)
            self.replay()

    def record(self):
        """Capture run's step on the static self.idx; returns the replay callable. (A CPU
        stand-in in the tests overrides this.)"""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.run.train_step(self.idx, zero_grad=False)
        return graph.replay

    def _capture(self, idx: torch.Tensor) -> None:
        run = self.run
        self.idx = idx.clone()
        run.opt.zero_grad(set_to_none=True)  # the captured backward owns the gradients
        try:
            replay = self.record()
        except RuntimeError as exc:  # nothing ran: capture only records
            sync(run.device)
            run.opt.zero_grad(set_to_none=True)
            self.status = f"eager (capture failed: {str(exc).splitlines()[0][:200]})"
            run.train_step(idx)
            return
        if not self._verified(replay, idx):
            run.train_step(idx)
            return
        self.replay, self.status = replay, "captured"
        self.idx.copy_(idx)
        replay()  # the capture recorded this batch's step: now run it

    def _verified(self, replay, idx: torch.Tensor) -> bool:
        """The replay trains as eager steps do (checked once per session and step kind)."""
        run = self.run
        key = selfcheck.step_key(self.what, run.net, run.opt, run.cfg)
        result = selfcheck.earlier(key)
        if result is None:
            n, bs = run.n_train, idx.shape[-1]
            batches = [(idx + j * bs) % n for j in range(selfcheck.STEPS)]
            result = selfcheck.remember(key, selfcheck.check_graph(run, replay, self.idx,
                                                                   batches, self.what))
        run.book_check(result)
        if not result.ok:
            self.status = f"eager (self-check failed: {result.reason()})"
        return result.ok


class Run:
    """One training run, advanced an epoch at a time (so a benchmark can time each epoch)."""

    @without_denormals
    def __init__(self, cfg: Config, splits: Splits, name: str = "custom",
                 parts: M.Parts = M.DEFAULT_PARTS):
        self.cfg, self.s, self.parts = cfg, splits, parts
        self.device = splits.train_x.device
        with torch.random.fork_rng(devices=[]):  # seed init without touching the caller's RNG
            torch.manual_seed(cfg.seed)
            self.mlp = M.build(cfg, parts).to(self.device)
        self.shuffle = _generator(cfg.seed, "shuffle")
        self.history = History(name=name, config=cfg.to_dict(), device=str(self.device),
                               total_epochs=cfg.total_epochs, env=environment(self.device),
                               parts=parts.labels(),
                               steps_per_epoch=len(batch_bounds(len(splits.train_y),
                                                                cfg.batch_size)))
        self.loss_sum = torch.zeros((), device=self.device)  # the epoch's sums, static for
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)  # CUDA graphs
        self.graphs: StepGraph | None = None
        self.epoch_no = 0
        self.stage_no = 0
        self._start_stage(1)
        self.probe = None
        if cfg.diagnostics:  # after the optimizer exists: the probe takes its would-be step
            x, y = probe_batch(splits.train_x, splits.train_y, cfg.probe_size,
                               _generator(cfg.seed, "probe"))
            self.probe = Probe(self.mlp, x, y)
            self.probe.measure(self.mlp, 0, self.updater())
            self.history.init_profile = init_profile(self.mlp, x, y)
            try:
                self.history.theory = theory.predict(cfg, x, parts).to_dict()
            except theory.NotApplicable as exc:
                self.history.theory = {"applies": False, "why": str(exc)}

    # --- stages ---
    def _start_stage(self, k: int) -> None:
        cfg = self.cfg
        self.stage_no = k
        if not cfg.layerwise or k == cfg.n_stages:
            for p in self.mlp.parameters():
                p.requires_grad_(True)
            self.net: nn.Module = self.mlp
        else:
            ends = [sum(cfg.stage_blocks[:i + 1]) for i in range(cfg.n_stages)]
            lo, hi = (ends[k - 2] if k > 1 else 0), ends[k - 1]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(zlib.crc32(f"{cfg.seed}:head{k}".encode()))
                head = nn.Linear(cfg.width, M.N_CLASS)
                M.init_weights(head, cfg, self.parts)
            for i, layer in enumerate(self.mlp.hidden):
                layer.requires_grad_(lo <= i < hi)
            self.mlp.out.requires_grad_(False)  # unused until the last stage
            self.net = M.Stage(self.mlp, hi, head.to(self.device))
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        use_graph = cfg.cuda_graph and self.device.type == "cuda"
        self.opt = M.make_optimizer(self.params, cfg, self.parts, capturable=use_graph)
        if use_graph:  # a new net and optimizer: a new graph (each layerwise stage too)
            self.graphs = StepGraph(self, self.graphs.status if self.graphs else None)

    @property
    def n_train(self) -> int:
        return len(self.s.train_y)

    def book_check(self, result: "selfcheck.Result") -> None:
        """A self-check's result into the history (once: layerwise has a StepGraph per
        stage)."""
        entry, booked = result.to_dict(), self.history.self_checks
        if entry not in booked:
            booked.append(entry)

    def updater(self) -> Updater:
        """The current stage's optimizer, for the probe's would-be step (update_ratio)."""
        return Updater(self.opt, self.cfg.clip_norm)

    @property
    def diverged(self) -> bool:
        """True once the loss or the weights became non-finite (training stops there)."""
        return self.history.diverged

    @property
    def done(self) -> bool:
        """True once every stage has trained its epochs, or the run diverged."""
        return self.epoch_no >= self.cfg.total_epochs or self.diverged

    # --- one epoch ---
    def train_step(self, idx: torch.Tensor, zero_grad: bool = True) -> None:
        """One optimizer step on the batch idx, accumulating its loss and hits on the device
        (no host sync), as a CUDA graph can capture it."""
        x, y = self.s.train_x.index_select(0, idx), self.s.train_y.index_select(0, idx)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        if zero_grad:
            for p in self.params:  # = opt.zero_grad(set_to_none=True), without its overhead
                p.grad = None
        loss.backward()
        if self.cfg.clip_norm is not None:
            nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.opt.step()
        self.loss_sum += loss.detach() * len(idx)
        self.correct += (logits.argmax(1) == y).sum()

    def _train_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        bs, n = self.cfg.batch_size, len(self.s.train_y)
        perm = torch.randperm(n, generator=self.shuffle).to(self.device)
        self.loss_sum.zero_()
        self.correct.zero_()
        self.net.train()
        for lo, hi in batch_bounds(n, bs):
            if self.graphs is not None and hi - lo == bs:
                self.graphs.step(perm[lo:hi])
            else:
                self.train_step(perm[lo:hi])
        return self.loss_sum / n, self.correct / n

    @torch.no_grad()
    def evaluate(self, x_all: torch.Tensor, y_all: torch.Tensor, net: nn.Module | None = None):
        """(mean loss, accuracy) as device tensors; batches of batch_size, in order."""
        net = net or self.net
        net.eval()
        bs = self.cfg.batch_size  # custom_norm uses batch statistics, so keep the batch size
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(0, len(y_all), bs):
            x, y = x_all[i:i + bs], y_all[i:i + bs]
            logits = net(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        return loss_sum / len(y_all), correct / len(y_all)

    @without_denormals
    def step(self) -> dict:
        """Train one epoch, evaluate on validation, probe; return the epoch's record."""
        if self.done:
            raise RuntimeError(f"run already trained its {self.cfg.total_epochs} epochs")
        per_stage = self.cfg.epochs_per_stage
        if self.epoch_no and self.epoch_no % per_stage == 0:
            self._start_stage(self.stage_no + 1)
        sync(self.device)
        t0 = time.perf_counter()
        tr_loss, tr_acc = self._train_epoch()
        va_loss, va_acc = self.evaluate(self.s.val_x, self.s.val_y)
        values = torch.stack([tr_loss, tr_acc.float(), va_loss, va_acc.float(),
                              self.weights_finite().float()]).tolist()  # the epoch's one sync
        record = self.record_epoch(*values)
        return self.record_time(record, time.perf_counter() - t0)

    def weights_finite(self) -> torch.Tensor:
        """A device bool: every trained weight is finite."""
        return torch.stack([p.detach().isfinite().all() for p in self.params]).all()

    def record_epoch(self, tr_loss: float, tr_acc: float, va_loss: float, va_acc: float,
                     weights_ok: float) -> dict:
        """Book the epoch that just trained: divergence (which stops the run), the probe,
        the history; returns the epoch's record (time_s filled by record_time)."""
        self.epoch_no += 1
        h = self.history
        if not (math.isfinite(tr_loss) and weights_ok):
            h.diverged, h.diverged_epoch = True, self.epoch_no
            h.diverged_reason = (f"train loss {tr_loss}" if not math.isfinite(tr_loss)
                                 else "non-finite weights")
            tr_loss = tr_acc = va_loss = va_acc = None  # a diverged epoch has no metrics
        elif self.probe is not None:
            self.probe.measure(self.mlp, self.epoch_no, self.updater())
        for key, v in (("stage", self.stage_no), ("train_loss", tr_loss), ("train_acc", tr_acc),
                       ("val_loss", va_loss), ("val_acc", va_acc)):
            getattr(h, key).append(v)
        return {"epoch": self.epoch_no, "total": self.cfg.total_epochs, "stage": self.stage_no,
                "n_stages": self.cfg.n_stages,
                "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": va_loss,
                "val_acc": va_acc, "diverged": h.diverged_reason}

    def record_time(self, record: dict, seconds: float) -> dict:
        """The epoch's wall time (train + validation + probe) into the history and record."""
        self.history.epoch_time.append(seconds)
        record["time_s"] = seconds
        return record

    @without_denormals
    def finish(self) -> History:
        """Test accuracy of the whole network, diagnostics into the history; returns it."""
        if self.stage_no != self.cfg.n_stages:  # stopped before the final stage: use full net
            self._start_stage(self.cfg.n_stages)
        h = self.history
        if not h.diverged:  # a diverged net has no test accuracy: its metrics stay null
            loss, acc = self.evaluate(self.s.test_x, self.s.test_y, net=self.mlp)
            h.test_loss, h.test_acc = loss.item(), acc.item()
        if self.graphs is not None:
            h.cuda_graph = self.graphs.status
        if self.probe is not None:
            h.diagnostics = {**self.probe.points, "activations": self.probe.activations}
            if self.probe.notes:
                h.diagnostics["notes"] = sorted(self.probe.notes)
            h.grad_ratio_init = grad_ratio(self.probe.points["grad_norm"][0])
            if not h.diverged:
                h.grad_ratio_final = grad_ratio(self.probe.points["grad_norm"][-1])
            h.diagnosis = diagnose.diagnose_run(h.diagnostics, h.theory, h.diverged_epoch,
                                                h.diverged_reason)
        return h


def train(cfg: Config, splits: Splits, name: str = "custom", on_epoch=None,
          parts: M.Parts = M.DEFAULT_PARTS) -> History:
    """Run every epoch of cfg on splits (stopping early if it diverges); on_epoch(record)
    is called after each."""
    run = Run(cfg, splits, name, parts)
    while not run.done:
        record = run.step()
        if on_epoch is not None:
            on_epoch(record)
    return run.finish()


def format_epoch(r: dict) -> str:
    """The course project's per-epoch line."""
    stage = f" stage {r['stage']}/{r['n_stages']}" if r["n_stages"] > 1 else ""
    if r.get("diverged"):
        return (f"EPOCH {r['epoch']}/{r['total']}{stage} diverged ({r['diverged']}); "
                "training stopped")

    def f(key):
        return f"{r[key]:.4f}" if r[key] is not None else "null"
    return (f"EPOCH {r['epoch']}/{r['total']}{stage} train_loss {f('train_loss')} "
            f"train_acc {f('train_acc')} val_loss {f('val_loss')} "
            f"val_acc {f('val_acc')} ({r['time_s']:.2f}s)")
