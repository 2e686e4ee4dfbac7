"""One session's choices and cases, and what it does per case, as plain code (no pytest).

A case is (remedy, depth, seed). run_case trains it for the session's budget, evaluates the
remedy's declared checks and returns a Record: a plain dict that travels from pytest-xdist
workers (local or on other hosts) to the controller, where vgbench.summary turns the
records into one table. A record carries its history, so the controller can write every
case's files into its own output folder.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from vgbench import data, expect, files, machine, registry, selfcheck, train
from vgbench.history import History
from vgbench.remedy import BASELINE, QUICK_EPOCHS, Remedy, SWEEP_DEPTHS, SWEEP_EPOCHS

BUDGETS = {"full": None, "quick": QUICK_EPOCHS, "sweep": SWEEP_EPOCHS}
"""Epochs per budget (None: the protocol's, from the config)."""
DEFAULT_SEED = 42
SETS = ("course", "literature", "control", "all")
"""What --vg-set picks (user remedies always join)."""


@dataclass(frozen=True)
class Case:
    """One test case: a remedy at a depth (None: its own, unswept) and a seed."""

    remedy: str
    seed: int
    depth: int | None = None

    @property
    def key(self) -> str:
        """The case without its seed: 'relu', or 'relu-depth15' in a depth sweep."""
        return self.remedy if self.depth is None else f"{self.remedy}-depth{self.depth}"

    @property
    def id(self) -> str:
        """The test id and output folder name: 'relu-seed42', 'relu-depth15-seed42'."""
        return f"{self.key}-seed{self.seed}"


@dataclass(frozen=True)
class Settings:
    """One session's choices (from --vg-* options)."""

    budget: str = "full"
    """'full' (the protocol, 100 epochs), 'quick' (QUICK_EPOCHS) or 'sweep' (SWEEP_EPOCHS,
    over depths); picks the checks."""
    epochs: int | None = None
    """Override the budget's epochs (per stage for layerwise)."""
    n_seeds: int = 1
    """Seeds 42, 43, ... each its own test."""
    device: str = "auto"
    """auto | cpu | cuda."""
    remedies: tuple[str, ...] = ()
    """Only these remedies (empty: the set's)."""
    out: str = "vg-out"
    """Folder for histories, figures and the summary."""
    target: float = 0.70
    """Validation accuracy whose first epoch the summary reports."""
    limit: int | None = None
    """Cap every data split (smoke tests only)."""
    data_dir: str | None = None
    """Fashion-MNIST folder (else the usual lookup)."""
    figures: bool = True
    """Write each run's PNG figures."""
    set: str = "course"
    """Which built-in remedies run: 'course', 'literature' or 'all' (user ones always)."""
    depths: tuple[int, ...] = ()
    """Depths to sweep (empty: each remedy at its own; the sweep budget: SWEEP_DEPTHS)."""
    batch_seeds: str = "auto"
    """'on': train runs of one network shape as one group (vgbench.batched; see group())
    where it can; 'off' or 'auto': one by one, which on the CPU stays bit-identical to the
    reference, and on a GPU was the faster of one by one and the eager (uncaptured) group;
    the captured group has not been timed on a GPU yet (docs/speed.md)."""

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose from {list(BUDGETS)}")
        if self.set not in SETS:
            raise ValueError(f"--vg-set: unknown set {self.set!r}; choose from {list(SETS)}")
        if self.n_seeds < 1:
            raise ValueError(f"--vg-seeds must be >= 1, got {self.n_seeds}")
        if self.epochs is not None and self.epochs < 0:
            raise ValueError(f"--vg-epochs must be >= 0, got {self.epochs}")
        if self.batch_seeds not in ("auto", "on", "off"):
            raise ValueError(f"--vg-batch-seeds must be auto, on or off, got "
                             f"{self.batch_seeds!r}")
        if not 0 < self.target <= 1:
            raise ValueError(f"--vg-target must be in (0, 1], got {self.target}")
        for d in self.depths:
            if d < 1:
                raise ValueError(f"--vg-depth must be >= 1, got {d}")
        for name in self.remedies:
            registry.get(name)  # raises with the valid names
        if self.limit is not None:
            for name in self.names:
                bs = registry.get(name).config.batch_size
                if self.limit < bs:
                    raise ValueError(f"--vg-limit {self.limit} is below {name}'s batch size "
                                     f"{bs}: every split would be a single short batch; use "
                                     f"--vg-limit {bs} or more")

    @property
    def seeds(self) -> list[int]:
        """The seeds this session runs."""
        return [DEFAULT_SEED + i for i in range(self.n_seeds)]

    @property
    def names(self) -> list[str]:
        """The remedies this session runs, in registry order."""
        if self.remedies:
            return [n for n in registry.names() if n in self.remedies]
        sets = ("course", "literature", "control") if self.set == "all" else (self.set,)
        return registry.names((*sets, "user"))

    @property
    def sweep_depths(self) -> tuple[int, ...]:
        """The depths swept (empty: none, each remedy at its own)."""
        if self.depths:
            return tuple(sorted(set(self.depths)))
        return SWEEP_DEPTHS if self.budget == "sweep" else ()

    @property
    def cases(self) -> list[Case]:
        """Every case of the session: registry order, then depth, then seed."""
        depths = self.sweep_depths or (None,)
        return [Case(n, s, d) for n in self.names for d in depths for s in self.seeds]

    def group(self, case: Case) -> tuple[Case, ...] | None:
        """The session's cases that train as one group with this one (vgbench.batched:
        the seeds of its remedy, and remedies that differ from it only in init or learning
        rate, at its depth; itself included, session order), or None: it trains alone
        (--vg-batch-seeds is not 'on', its remedy cannot be grouped, nothing shares its
        group). The group is named by its first case: 'group-' + its id."""
        snapshot = tuple((n, registry.get(n).config, repr(registry.get(n).parts.labels()))
                         for n in self.names)  # user remedies come and go (pytester)
        return _groups(self, snapshot).get(case)

    def batched(self, case: Case) -> bool:
        """Whether this case trains in a group this session."""
        return self.group(case) is not None and selfcheck.failed(selfcheck.BATCHED) is None

    def batch_fallback(self, case: Case):
        """The failed batched self-check (selfcheck.Result) that made this case, which
        would have trained in a group, train alone; None if none did."""
        failed = selfcheck.failed(selfcheck.BATCHED)
        if failed is None or self.group(case) is None:
            return None
        return failed.elsewhere()

    def config(self, remedy: Remedy, seed: int, depth: int | None = None):
        """The remedy's config at this budget, seed and depth."""
        changes = {"seed": seed, "limit": self.limit}
        epochs = self.epochs if self.epochs is not None else BUDGETS[self.budget]
        if epochs is not None:
            changes["epochs"] = epochs
        if depth is not None:
            changes["n_layer"] = depth
        return replace(remedy.config, **changes)


@functools.lru_cache(maxsize=16)
def _groups(settings: Settings, snapshot: tuple) -> dict[Case, tuple[Case, ...]]:
    """Settings.group for every case of the session that trains in a group (snapshot: the
    registry's remedies as they are now)."""
    if settings.batch_seeds != "on":
        return {}
    from vgbench import batched

    by_key: dict[tuple, list[Case]] = {}
    for case in settings.cases:
        remedy = registry.get(case.remedy)
        key = batched.group_key(settings.config(remedy, case.seed, case.depth), remedy.parts)
        if key is not None:
            by_key.setdefault((key, case.depth), []).append(case)
    return {c: tuple(cases) for cases in by_key.values() if len(cases) > 1 for c in cases}


def case_cost(settings: Settings, case: Case) -> float:
    """Rough multiply-adds of a case's training (epochs x one sample's forward), to start
    the longest cases first."""
    cfg = settings.config(registry.get(case.remedy), case.seed, case.depth)
    w = cfg.width
    per_sample = 784 * w + (cfg.n_layer - 1) * w * w + w * 10
    return cfg.total_epochs * per_sample


def worker_threads(n_workers: int, cores: int | None = None) -> int:
    """torch threads per worker so that workers x threads <= cores."""
    if cores is None:
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    return max(1, cores // max(1, n_workers))


def limit_xdist_threads() -> None:
    """In a pytest-xdist worker (PYTEST_XDIST_WORKER_COUNT above 1), torch's threads at
    worker_threads: a worker at torch's default of every core thrashes beside the others.
    For test folders' conftests; the suite's plugin sets its own (_set_threads, which also
    knows the workers per host)."""
    n_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if n_workers > 1:
        torch.set_num_threads(worker_threads(n_workers))


def baseline_ratio_init(splits: data.Splits, seed: int, probe_size: int,
                        n_layer: int) -> float:
    """The baseline's first/output gradient ratio at init for this seed, probe batch and
    depth."""
    cfg = replace(BASELINE, seed=seed, epochs=0, probe_size=probe_size,
                  n_layer=n_layer)
    run = train.Run(cfg, splits, "baseline")
    return run.finish().grad_ratio_init


def run_case(case: Case, settings: Settings, epoch_driver=None) -> dict:
    """Train one case, check it, write its history and figures; return its Record.

    epoch_driver(run) must call run.step() until run.done (a benchmark fixture can time
    each call); by default a plain loop.
    """
    remedy = registry.get(case.remedy)
    cfg = settings.config(remedy, case.seed, case.depth)
    device = machine.resolve_device(settings.device)
    ds = data.load_cached(settings.data_dir, device=device)
    splits = data.split(ds, case.seed, cfg.val_fraction, cfg.limit)
    h = (_batched_history(case, settings, ds, epoch_driver)
         if settings.batched(case) else None)
    if h is None:
        run = train.Run(cfg, splits, case.key, remedy.parts)
        _drive(run, epoch_driver, case)
        h = run.finish()
        failed = _FALLBACK.pop(case.id, None) or settings.batch_fallback(case)
        if failed is not None:  # it would have trained in a group: say why it did not
            h.self_checks.append(failed.to_dict())
    base = (baseline_ratio_init(splits, case.seed, cfg.probe_size, cfg.n_layer)
            if cfg.diagnostics else None)
    m = expect.metrics(h, base)
    checks = remedy.checks(settings.budget, cfg.n_layer)
    diagnoses = remedy.diagnoses_at(settings.budget, cfg.n_layer)
    failures = expect.evaluate(case.remedy, checks, m, case.seed, h, diagnoses)
    text = h.to_json()
    out = Path(settings.out) / case.id
    write_case_files(out, h, text, settings.figures)
    return {
        "remedy": case.remedy, "key": case.key, "depth": cfg.n_layer,
        "swept": case.depth is not None, "seed": case.seed, "budget": settings.budget,
        "device": str(device), "epochs": cfg.total_epochs, "metrics": m,
        "checks": [str(c) for c in checks + diagnoses], "failures": failures,
        "diagnosis": h.diagnosis,
        "diverged_epoch": h.diverged_epoch, "diverged_reason": h.diverged_reason,
        "epoch_time": h.epoch_time, "epochs_to_target": h.epochs_to(settings.target),
        "target": settings.target, "history": str(out / "history.json"),
        "history_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "history_json": text, "torch_threads": torch.get_num_threads(), "env": h.env,
        "batched_with": h.batched_with, "self_checks": h.self_checks,
    }


def _drive(run, epoch_driver, case: Case) -> None:
    if epoch_driver is None:
        while not run.done:
            run.step()
    else:
        epoch_driver(run)
    if not run.done:
        raise RuntimeError(f"epoch driver stopped {case.id} after {run.epoch_no} of "
                           f"{run.cfg.total_epochs} epochs")


_BATCHES: dict[tuple, dict[Case, History]] = {}
"""Histories of cases trained in a group, waiting for their own case (in this process)."""
_FALLBACK: dict[str, "selfcheck.Result"] = {}
"""Cases whose group failed its self-check in this very case (the others learn it from
selfcheck.failed)."""


def _batched_history(case: Case, settings: Settings, ds, epoch_driver):
    """This case's history from its group (Settings.group): the group's first case to run
    trains them all (timed by its driver), the others take their result."""
    group = settings.group(case)
    if group not in _BATCHES:
        from vgbench import batched

        members = []
        for c in group:
            remedy = registry.get(c.remedy)
            cfg = settings.config(remedy, c.seed, c.depth)
            members.append(batched.Member(cfg, data.split(ds, c.seed, cfg.val_fraction,
                                                          cfg.limit), c.key, remedy.parts))
        try:
            run = batched.BatchedRun(members)
        except selfcheck.Mismatch as exc:  # one by one from now on (settings.batch_fallback)
            _FALLBACK[case.id] = exc.result
            return None
        _drive(run, epoch_driver, case)
        _BATCHES[group] = dict(zip(group, run.finish()))
    histories = _BATCHES[group]
    h = histories.pop(case)
    if not histories:
        del _BATCHES[group]
    return h


def write_case_files(out: Path, h: History, text: str, figures: bool) -> None:
    """A case's history.json (text: its JSON) and, with figures, its PNGs into out."""
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(out / "history.json", text + "\n")
    if figures:
        from vgbench import plots

        plots.run_figures(h, out)


def bring_home(record: dict, settings: Settings) -> bool:
    """On the controller: write a case's files from its record when the worker that ran it
    wrote them elsewhere (another host, or another checkout); True when written."""
    out = Path(settings.out) / Path(record["history"]).parent.name
    path = out / "history.json"
    if path.is_file():
        text = path.read_text().rstrip("\n")
        if hashlib.sha256(text.encode()).hexdigest() == record["history_sha256"]:
            return False
    h = History.from_json(record["history_json"])
    write_case_files(out, h, record["history_json"], settings.figures)
    return True


def key_order(key: str) -> tuple:
    """Sort key of a case key: registry order (unknown remedies last, by name), then depth."""
    name, _, depth = key.partition("-depth")
    known = registry.names()
    return (known.index(name) if name in known else len(known), name,
            int(depth) if depth.isdigit() else 0)



def crash_info(case: Case, exc: BaseException) -> dict:
    """A crashed case for summary.json's 'errors': the exception and where it was raised:
    the innermost frame outside vgbench, torch and the standard library (the user's code),
    else the innermost one."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    skip = (str(Path(__file__).parent), str(Path(torch.__file__).parent),
            str(Path(os.__file__).parent))
    own = [f for f in frames if not f.filename.startswith(skip)]
    where = (own or frames or [None])[-1]
    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return {"case": case.id, "remedy": case.remedy, "key": case.key, "seed": case.seed,
            "depth": case.depth, "type": type(exc).__name__, "message": message,
            "file": where.filename if where else None, "line": where.lineno if where else None}

