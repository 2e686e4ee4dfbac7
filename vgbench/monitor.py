"""Watch a real training run: the diagnosis inside the user's own loop, every N optimizer
steps, from what the user's own forward, backward and optimizer step produced.

    with vgbench.watch(model, optimizer, every=50, out="vg-watch") as w:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(); loss.backward(); optimizer.step()
            w.step(loss)                       # optional: the loss, for the timeline
    w.timeline   # [{'step', 'verdict', 'layer', 'layer_name', 'why', 'loss'}, ...]
    w.onsets     # [{'step', 'verdict'}]: when each verdict began

Nothing runs on the steps it does not sample but a flag test in a few hooks. On a sampled
step: the activations' statistics as the user's forward passes them (hooks), the gradient's
statistics from the gradients the user's backward left (read just before the optimizer
steps, so AMP's GradScaler has unscaled them), and the update ratio of the real step, from
the weights before and after it (any optimizer; a step the scaler skips is no step). The
layers and their roles come from the first step's forward (layout.ModelLayout.recording),
the metrics from the probe's own code (probe.layer_rows, update_rows), the verdict from
diagnose; per-example gradient norms are not taken (the verdict's gain uses batch-mean
norms, as inspect does where per-example ones are not exact).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from vgbench import diagnose, files, float64, layout, machine, watch_report
from vgbench.diagnostics import ACTIVATION_STATS, ACTIVATIONS, activation_stats, slope_profile
from vgbench.history import History
from vgbench.layout import ModelLayout
from vgbench.point import Point
from vgbench.probe import keep, layer_rows, points_store, ratio, update_rows

DEFAULT_EVERY = 50
"""Optimizer steps between two sampled ones (the first step is always sampled)."""


class WatchError(ValueError):
    """watch was used in a way that cannot work; the message says what to change."""


class UnhealthyTraining(AssertionError):
    """Raised by assert_healthy (and by on_verdict='raise') when a verdict left healthy."""


class Watch:
    """The monitor; use it through vgbench.watch(...). on_verdict: called with each
    timeline record whose verdict is not healthy (a function; 'warn'; 'raise', which stops
    the run from inside optimizer.step with UnhealthyTraining; None: only recorded)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 every: int = DEFAULT_EVERY, out: str | Path | None = None,
                 on_verdict=None, allow: tuple[str, ...] = ("healthy",),
                 hook_before_step: bool = True):
        if not isinstance(model, nn.Module):
            raise WatchError(f"watch needs the nn.Module being trained, got "
                             f"{type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise WatchError(f"watch needs the torch.optim.Optimizer that trains the model, "
                             f"got {type(optimizer).__name__}")
        if not isinstance(every, int) or every < 1:
            raise WatchError(f"every= must be a whole number of optimizer steps >= 1, got "
                             f"{every!r}")
        if on_verdict not in (None, "warn", "raise") and not callable(on_verdict):
            raise WatchError("on_verdict= must be a function, 'warn', 'raise' or None, got "
                             f"{on_verdict!r}")
        self.wrapper = type(model).__name__ if layout.unwrap(model) is not model else None
        """The wrapper watch looked through (DistributedDataParallel, a torch.compile'd
        module), or None."""
        self.model, self.opt, self.every = layout.unwrap(model), optimizer, every
        self.rank, self.world = _rank()
        """Under torch.distributed: rank 0 measures, judges and writes; the other ranks
        stay quiet (they count steps, and with on_verdict='raise' stop with rank 0)."""
        self.out = Path(out) if out is not None else None
        self.on_verdict, self.allow = on_verdict, tuple(allow)
        self.hook_before_step = hook_before_step
        """False: the caller calls before_step() once the gradients are there (an optimizer
        whose step runs a closure computes them inside step(), after its pre-hooks: so
        Lightning, whose callback calls it from on_before_optimizer_step)."""
        self.step_no = 0
        """Optimizer steps taken inside the watch."""
        self.lr0 = optimizer.param_groups[0].get("lr") if optimizer.param_groups else None
        """The first parameter group's learning rate at the start (each record has the
        one its step ran with)."""
        self.timeline: list[dict] = []
        self.onsets: list[dict] = []
        self.points = points_store()
        """The sampled steps' measurements, as a history keeps probe points ('epoch' is
        the step)."""
        self.losses: list[tuple[int, float]] = []
        self._queue: list[tuple[Point, float | None, list[int]]] = []
        """Sampled steps not judged yet, with their learning rate and the weights that were
        still all zeros (layout.gated): see _judge."""
        self.notes: set[str] = set()
        self.layout: ModelLayout | None = None
        self._recording = self._found = None
        self._hooks: list = []
        self._forward_hooks: list = []
        self._stance = None
        self.compiled = layout.compiled(model)
        """torch.compile'd (the module or a wrapper): sampled steps run eagerly."""
        self._stats: list = []
        self._shapes: dict[nn.Module, tuple[float, bool]] = {}
        self._before: list[torch.Tensor] | None = None
        self._before_zero: list[bool] = []
        self._grads: dict | None = None
        self._open = False

    # --- the loop's side ------------------------------------------------------------------
    def __enter__(self) -> "Watch":
        if self.out is not None and self.rank == 0:
            files.check_writable(self.out, "out=")
        if self.rank != 0:
            self._hooks = [self.opt.register_step_post_hook(lambda o, a, k: self._post_step())]
            return self
        self._recording = ModelLayout.recording(self.model)
        self._found = self._recording.__enter__()  # until the first step: its forward
        self._open = True
        # plain functions, not bound methods: a deepcopy of the model (an EMA twin, the
        # probe's float64 stand-ins) copies its hooks, and a function is copied as itself
        self._hooks = [self.opt.register_step_post_hook(lambda o, a, k: self._post_step())]
        if self.hook_before_step:
            self._hooks.append(self.opt.register_step_pre_hook(
                lambda o, a, k: self.before_step()))
        self._arm()
        return self

    def _arm(self) -> None:
        """The forward's hooks (the activations' statistics), and for a compiled model an
        eager forward: on a compiled model they are there on the sampled steps only, so the
        compiled graph never holds them."""
        self._forward_hooks = [self.model.register_forward_pre_hook(
            lambda m, args: self._forward_starts(m))]
        for m in self.model.modules():
            if isinstance(m, ACTIVATIONS):
                self._forward_hooks.append(m.register_forward_pre_hook(
                    lambda mod, args: self._activation(mod, args)))
        if self.compiled:
            self._stance = torch.compiler.set_stance("force_eager")  # set until _disarm

    def _disarm(self) -> None:
        for h in self._forward_hooks:
            h.remove()
        self._forward_hooks = []
        if self._stance is not None:
            self._stance.__exit__(None, None, None)  # the stance before _arm's
            self._stance = None

    def __exit__(self, *exc) -> None:
        self.close(write=exc[0] is None)

    def close(self, write: bool = True) -> None:
        """Remove the hooks; with write and out=, write history.json and report.html."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._disarm()
        self._close_recording()
        ended = [r for r in self._flush(None) if r["verdict"] not in self.allow]
        if self.out is not None and write and self.rank == 0:
            self.write(self.out)
        if write and self.on_verdict is not None and self.world == 1:
            for record in ended:
                self._tell(record)

    def step(self, loss=None) -> None:
        """After optimizer.step(): this step's loss, for the timeline (optional)."""
        if loss is not None and self.rank == 0:
            value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
            self.losses.append((self.step_no - 1, value))  # the step just taken
            if self.timeline and self.timeline[-1]["step"] == self.step_no - 1:
                self.timeline[-1]["loss"] = value

    @property
    def sampling(self) -> bool:
        """Whether the step about to be taken is measured."""
        return self.step_no % self.every == 0

    # --- hooks ----------------------------------------------------------------------------
    def _forward_starts(self, module) -> None:
        if self.sampling and module.training:
            self._stats = []  # the last forward before the step counts (accumulation)

    def _activation(self, module, args) -> None:
        if not (self.sampling and module.training and args and torch.is_tensor(args[0])):
            return
        if module not in self._shapes:
            self._shapes[module] = slope_profile(module)
        with torch.no_grad():
            self._stats.append((module, activation_stats(module, args[0],
                                                          *self._shapes[module])))

    def _close_recording(self) -> None:
        if self._open:
            self._open = False
            self._recording.__exit__(None, None, None)
            self.layout = self._found.layout

    def before_step(self) -> None:
        """The gradients are final and the optimizer is about to step (called by a hook on
        the optimizer, or by the caller: see hook_before_step)."""
        self._close_recording()
        if not self.sampling or not self.layout.entries:
            return
        weights = [p for _, _, p in self.layout.entries]
        with torch.no_grad():
            self._before = [w.detach().clone() for w in weights]
            self._before_zero = [r == "zero" and not bool(b.any())
                                 for r, b in zip(self.layout.roles, self._before)]
            grads = [w.grad for w in weights]
            norms = [float64.norm64(w) for w in weights]
            nan = [None] * len(weights)
            self._grads = layer_rows(weights, grads, nan, [None] * len(weights), norms)
            self._norms = norms

    def _post_step(self) -> None:
        step, self.step_no = self.step_no, self.step_no + 1
        if self.compiled and self.rank == 0:
            self._close_recording()
            if self.sampling and not self._forward_hooks:
                self._arm()
            elif not self.sampling and self._forward_hooks:
                self._disarm()
        if self.rank != 0:
            if step % self.every == 0 and self.on_verdict == "raise":
                self._stop_together(None)
            return
        if self._before is None:
            if step % self.every == 0 and self.world > 1 and self.on_verdict == "raise":
                self._stop_together(None)
            return
        weights = [p for _, _, p in self.layout.entries]
        with torch.no_grad():
            update = [ratio(w.detach() - b, n) for w, b, n in zip(weights, self._before,
                                                                   self._norms)]
            layer = dict(self._grads, **update_rows(update, weights, self._norms))
        self._before = self._grads = None
        point = self._point(step, layer)
        keep(self.points, point)
        zero = [i for i, b in enumerate(self._before_zero) if b]
        self._queue.append((point, self.opt.param_groups[0].get("lr")
                            if self.opt.param_groups else None, zero))
        bad = [r for r in self._flush(step) if r["verdict"] not in self.allow]
        if self.world > 1 and self.on_verdict == "raise":
            self._stop_together(bad[0] if bad else None)
        elif bad and self.on_verdict is not None:
            for record in bad:
                self._tell(record)

    # --- the verdict ------------------------------------------------------------------------
    def _point(self, step: int, layer: dict) -> Point:
        names = {m: n for n, m in self.model.named_modules()}
        hidden = {}
        if self._stats:
            rows = torch.stack([s for _, s in self._stats]).T.tolist()
            hidden = dict(zip(ACTIVATION_STATS, rows))
        acts = [names.get(m, type(m).__name__) for m, _ in self._stats]
        rect = [self._shapes[m][1] for m, _ in self._stats]
        self._stats = []
        return Point(layers=[n for n, _, _ in self.layout.entries], activations=acts,
                     epoch=step, **layer, **hidden, rectifier=rect)

    def _flush(self, now: int | None) -> list[dict]:
        """Judge the sampled steps waiting in order, as far as their losses allow (now: the
        step being taken; None: the run ended, judge with what there is); their records."""
        out = []
        while self._queue:
            record = self._judge(*self._queue[0], now)
            if record is False:
                break
            self._queue.pop(0)
            if record is not None:
                out.append(record)
        return out

    def _loss_at(self, step: int) -> float | None:
        return next((v if k == step else None for k, v in reversed(self.losses) if k <= step),
                    None)

    def _loss_rise(self, step: int, now: int | None):
        """Mean loss over the W = max(every, 2) steps after `step` over the mean of the W up
        to it; None: the loop reports no losses; False: wait for the ones after it."""
        w, last = max(self.every, 2), self.losses[-1][0] if self.losses else -1
        if last < step:  # at `now == step` its loss is reported after this call
            return False if now == step else None
        if last < step + w - 1 and now is not None:
            return False
        before, after = [], []
        for k, v in reversed(self.losses):
            if k <= step - w:
                break
            (before if k <= step else after if k < step + w else []).append(v)
        return (sum(after) / len(after)) / (sum(before) / len(before)) if after else None

    def _judge(self, point: Point, lr: float | None, zero: list[int],
               now: int | None) -> dict | None:
        """The point's verdict as a timeline record, kept (None: no weight to judge;
        False: it waits for the losses after it). A step large enough to be exploding but
        smaller than REPLACE_STEP is judged by the loss after it (diagnose.LOSS_RISE) where
        the loop reports losses: one sampling interval later."""
        roles = self.layout.roles
        chain = self.layout.chain([i for i, r in enumerate(roles) if r == "zero" and i not in zero])
        gated = self.layout.gated(chain, point.grad_norm, zero)
        if gated:
            chain = [i for i in chain if i not in gated]
            self.notes.add(self.layout.gated_note(gated))
        if not chain:
            self.notes.add("no weight (a matrix or filter the signal passes through) got a "
                           "gradient: no verdict")
            return None
        seen = point.select(chain)
        seen.grad_rms = seen.grad_norm  # batch-mean norms: no per-example ones here
        finite = all(math.isfinite(g) for g in seen.grad_norm)
        why = None if finite else "non-finite gradients"
        v = diagnose.diagnose(seen, None, "watch", point.epoch, why)
        rise = None
        if v.verdict == "exploding" and diagnose.diagnose(
                seen, None, "watch", point.epoch, why, loss_rise=1.0).verdict != "exploding":
            rise = self._loss_rise(point.epoch, now)
            if rise is False:
                return False
            if rise is not None:
                v = diagnose.diagnose(seen, None, "watch", point.epoch, why, loss_rise=rise)
        v = v.to_dict()
        if rise is not None:
            v["evidence"]["loss_rise"] = rise
        by_act = v["verdict"] in diagnose.BY_ACTIVATION
        name = None
        if v["layer"]:
            name = (seen.activation_name(v["layer"] - 1) if by_act
                    else seen.layer_name(v["layer"] - 1))
        record = {"step": point.epoch, "verdict": v["verdict"], "layer": v["layer"],
                  "layer_name": name, "why": v["why"], "evidence": v["evidence"],
                  "loss": self._loss_at(point.epoch), "lr": lr}
        if not self.timeline or self.timeline[-1]["verdict"] != record["verdict"]:
            self.onsets.append({"step": record["step"], "verdict": record["verdict"]})
        self.timeline.append(record)
        return record

    def _stop_together(self, record: dict | None) -> None:
        """Under torch.distributed with on_verdict='raise', on every sampled step: rank 0
        tells the others whether it stops, so that every rank raises together (one
        broadcast of one number; without it the others would wait in their next
        all-reduce)."""
        import torch.distributed as dist

        flag = torch.tensor([0.0 if record is None else 1.0], device=self._device())
        dist.broadcast(flag, src=0)
        if record is not None or flag.item():
            raise UnhealthyTraining("vgbench.watch: " + (line(record) if record is not None
                                                         else "rank 0 found the run unhealthy"
                                                              " (its message says why)"))

    def _tell(self, record: dict) -> None:
        text = line(record)
        if self.on_verdict == "warn":
            import warnings

            warnings.warn(f"vgbench.watch: {text}", stacklevel=3)
        elif self.on_verdict == "raise":
            raise UnhealthyTraining(f"vgbench.watch: {text}")
        else:
            self.on_verdict(record)

    # --- results ----------------------------------------------------------------------------
    def assert_healthy(self) -> None:
        """An AssertionError naming the first sampled step whose verdict is not allowed (on
        rank 0 of a distributed run; the other ranks have nothing to assert)."""
        if self.rank != 0:
            return
        if not self.timeline:
            raise UnhealthyTraining("vgbench.watch: no step was sampled (did the optimizer "
                                    "step inside the with block?)")
        bad = [r for r in self.timeline if r["verdict"] not in self.allow]
        if bad:
            raise UnhealthyTraining(f"vgbench.watch: {line(bad[0])} (then {len(bad) - 1} "
                                    f"more of {len(self.timeline)} sampled steps; onsets: "
                                    + ", ".join(f"{o['verdict']} at step {o['step']}"
                                                for o in self.onsets) + ")")

    def to_dict(self) -> dict:
        """The watch's own part of the history (History.watch)."""
        return {"every": self.every, "steps": self.step_no, "timeline": self.timeline,
                "onsets": self.onsets, "losses": self.losses, "notes": sorted(self.notes),
                "layers": [n for n, _, _ in self.layout.entries] if self.layout else [],
                "chain": self.layout.chain() if self.layout else []}

    def history(self) -> History:
        """The run as a History: the sampled steps' measurements as its diagnostics (their
        'epoch' is the step), the timeline and the losses in its 'watch' part."""
        config = {"model": type(self.model).__name__, "optimizer": type(self.opt).__name__,
                  "lr": self.lr0, "every": self.every,
                  "parameters": sum(p.numel() for p in self.model.parameters())}
        if self.wrapper:
            config["wrapper"] = self.wrapper
        if self.world > 1:
            config["world_size"] = self.world
        device = self._device()
        return History(name=type(self.model).__name__, config=config, device=str(device),
                       diagnostics=self.points, env=machine.environment(device),
                       watch=self.to_dict())

    def _device(self) -> torch.device:
        """Where the model's weights are (the CPU for a model without any)."""
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def write(self, out: str | Path) -> Path:
        """out/history.json (see history()) and out/report.html, the page drawn from it;
        returns the report's path."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.history().to_json(out / "history.json")
        return watch_report.write(out)


def _rank() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def line(record: dict) -> str:
    """A timeline record as one sentence: 'step S: verdict from layer: why'."""
    where = f" from {record['layer_name']}" if record.get("layer_name") else ""
    return f"step {record['step']}: {record['verdict']}{where}: {record['why']}"


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, every: int = DEFAULT_EVERY,
          out: str | Path | None = None, on_verdict=None,
          allow: tuple[str, ...] = ("healthy",)) -> Watch:
    """The diagnosis of a training run every `every` optimizer steps (see the module's
    docstring); a context manager around the user's loop."""
    return Watch(model, optimizer, every, out, on_verdict, allow)
