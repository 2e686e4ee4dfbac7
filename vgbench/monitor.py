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

import copy
import itertools
import math
from pathlib import Path

import torch
from torch import nn

from vgbench import diagnose, files, float64
from vgbench.diagnostics import ACTIVATION_STATS, ACTIVATIONS, activation_stats, slope_profile
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
        self.model, self.opt, self.every = model, optimizer, every
        self.out = Path(out) if out is not None else None
        self.on_verdict, self.allow = on_verdict, tuple(allow)
        self.hook_before_step = hook_before_step
        """False: the caller calls before_step() once the gradients are there (an optimizer
        whose step runs a closure computes them inside step(), after its pre-hooks: so
        Lightning, whose callback calls it from on_before_optimizer_step)."""
        self.step_no = 0
        """Optimizer steps taken inside the watch."""
        self.timeline: list[dict] = []
        self.onsets: list[dict] = []
        self.points = points_store()
        """The sampled steps' measurements, as a history keeps probe points ('epoch' is
        the step)."""
        self.losses: list[tuple[int, float]] = []
        self.notes: set[str] = set()
        self.layout: ModelLayout | None = None
        self._recording = self._found = None
        self._hooks: list = []
        self._stats: list = []
        self._shapes: dict[nn.Module, tuple[float, bool]] = {}
        self._before: list[torch.Tensor] | None = None
        self._grads: dict | None = None
        self._open = False

    # --- the loop's side ------------------------------------------------------------------
    def __enter__(self) -> "Watch":
        if self.out is not None:
            files.check_writable(self.out, "out=")
        self._recording = ModelLayout.recording(self.model)
        self._found = self._recording.__enter__()  # until the first step: its forward
        self._open = True
        # plain functions, not bound methods: a deepcopy of the model (an EMA twin, the
        # probe's float64 stand-ins) copies its hooks, and a function is copied as itself
        self._hooks = [self.opt.register_step_post_hook(lambda o, a, k: self._post_step()),
                       self.model.register_forward_pre_hook(
                           lambda m, args: self._forward_starts(m))]
        if self.hook_before_step:
            self._hooks.append(self.opt.register_step_pre_hook(
                lambda o, a, k: self.before_step()))
        for m in self.model.modules():
            if isinstance(m, ACTIVATIONS):
                self._hooks.append(m.register_forward_pre_hook(
                    lambda mod, args: self._activation(mod, args)))
        return self

    def __exit__(self, *exc) -> None:
        self.close(write=exc[0] is None)

    def close(self, write: bool = True) -> None:
        """Remove the hooks; with write and out=, write watch.json."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._close_recording()
        if self.out is not None and write:
            self.write(self.out)

    def step(self, loss=None) -> None:
        """After optimizer.step(): this step's loss, for the timeline (optional)."""
        if loss is not None:
            value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
            self.losses.append((self.step_no, value))
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
            grads = [w.grad for w in weights]
            norms = [float64.norm64(w) for w in weights]
            nan = [None] * len(weights)
            self._grads = layer_rows(weights, grads, nan, [None] * len(weights), norms)
            self._norms = norms

    def _post_step(self) -> None:
        step, self.step_no = self.step_no, self.step_no + 1
        if self._before is None:
            return
        weights = [p for _, _, p in self.layout.entries]
        with torch.no_grad():
            update = [ratio(w.detach() - b, n) for w, b, n in zip(weights, self._before,
                                                                   self._norms)]
            layer = dict(self._grads, **update_rows(update, weights, self._norms))
        self._before = self._grads = None
        point = self._point(step, layer)
        keep(self.points, point)
        self._judge(point)

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

    def _judge(self, point: Point) -> None:
        chain = self.layout.chain()
        if not chain:
            self.notes.add("no weight (a matrix or filter the signal passes through) got a "
                           "gradient: no verdict")
            return
        seen = point.select(chain)
        seen.grad_rms = seen.grad_norm  # batch-mean norms: no per-example ones here
        finite = all(math.isfinite(g) for g in seen.grad_norm)
        v = diagnose.diagnose(seen, None, "watch", point.epoch,
                              None if finite else "non-finite gradients").to_dict()
        by_act = v["verdict"] in diagnose.BY_ACTIVATION
        name = None
        if v["layer"]:
            name = (seen.activation_name(v["layer"] - 1) if by_act
                    else seen.layer_name(v["layer"] - 1))
        record = {"step": point.epoch, "verdict": v["verdict"], "layer": v["layer"],
                  "layer_name": name, "why": v["why"], "evidence": v["evidence"],
                  "loss": None}
        if not self.timeline or self.timeline[-1]["verdict"] != record["verdict"]:
            self.onsets.append({"step": record["step"], "verdict": record["verdict"]})
        self.timeline.append(record)
        if record["verdict"] not in self.allow and self.on_verdict is not None:
            self._tell(record)

    def _tell(self, record: dict) -> None:
        text = _line(record)
        if self.on_verdict == "warn":
            import warnings

            warnings.warn(f"vgbench.watch: {text}", stacklevel=3)
        elif self.on_verdict == "raise":
            raise UnhealthyTraining(f"vgbench.watch: {text}")
        else:
            self.on_verdict(record)

    # --- results ----------------------------------------------------------------------------
    def assert_healthy(self) -> None:
        """An AssertionError naming the first sampled step whose verdict is not allowed."""
        if not self.timeline:
            raise UnhealthyTraining("vgbench.watch: no step was sampled (did the optimizer "
                                    "step inside the with block?)")
        bad = [r for r in self.timeline if r["verdict"] not in self.allow]
        if bad:
            raise UnhealthyTraining(f"vgbench.watch: {_line(bad[0])} (then {len(bad) - 1} "
                                    f"more of {len(self.timeline)} sampled steps; onsets: "
                                    + ", ".join(f"{o['verdict']} at step {o['step']}"
                                                for o in self.onsets) + ")")

    def to_dict(self) -> dict:
        return {"every": self.every, "steps": self.step_no, "timeline": self.timeline,
                "onsets": self.onsets, "losses": self.losses, "points": self.points,
                "notes": sorted(self.notes),
                "layers": [n for n, _, _ in self.layout.entries] if self.layout else []}

    def write(self, out: str | Path) -> Path:
        """out/watch.json: the timeline, the onsets, every sampled step's measurements."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "watch.json"
        files.write_json(path, self.to_dict(), indent=1)
        return path


def _line(record: dict) -> str:
    where = f" from {record['layer_name']}" if record.get("layer_name") else ""
    return f"step {record['step']}: {record['verdict']}{where}: {record['why']}"


def watch(model: nn.Module, optimizer: torch.optim.Optimizer, every: int = DEFAULT_EVERY,
          out: str | Path | None = None, on_verdict=None,
          allow: tuple[str, ...] = ("healthy",)) -> Watch:
    """The diagnosis of a training run every `every` optimizer steps (see the module's
    docstring); a context manager around the user's loop."""
    return Watch(model, optimizer, every, out, on_verdict, allow)


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
            + (f"; at the end {_line(end)}" if end else ""))
    if end is not None and end["verdict"] not in allow:
        raise UnhealthyTraining(f"vgbench.assert_trains: the loss fell ({-drop:+.0%}) but "
                                f"at the end {_line(end)} (verdicts: {onsets})")
    return w
