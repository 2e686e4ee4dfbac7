"""What the benchmark suite does per case and at the end, as plain code (no pytest here).

A case is (remedy, depth, seed). run_case trains it for the session's budget, evaluates the
remedy's declared checks and returns a Record: a plain dict that travels from pytest-xdist
workers (local or on other hosts) to the controller, where summarize() turns the records
into one table. A record carries its history, so the controller can write every case's
files into its own output folder.
"""

from __future__ import annotations

import hashlib
import math
import os
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tabulate import tabulate

from vgbench import data, diagnose, expect, files, registry, selfcheck, train

BUDGETS = {"full": None, "quick": registry.QUICK_EPOCHS, "sweep": registry.SWEEP_EPOCHS}
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
    """'on': train a remedy's seeds as one batched model (vgbench.batched) where it can;
    'off' or 'auto': one by one. Measured on an H200 (README, 'Speed'): seeds one by one,
    each step replayed from a CUDA graph, trained 2.5x faster than the batched model's eager
    steps, so auto does not batch; on the CPU one by one also stays bit-identical to the
    reference, which batched matrix multiplies are not."""

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
        return registry.SWEEP_DEPTHS if self.budget == "sweep" else ()

    @property
    def cases(self) -> list[Case]:
        """Every case of the session: registry order, then depth, then seed."""
        depths = self.sweep_depths or (None,)
        return [Case(n, s, d) for n in self.names for d in depths for s in self.seeds]

    def batched(self, remedy: registry.Remedy, cfg) -> bool:
        """Whether this remedy's seeds train as one batched model this session."""
        return (self._batchable(remedy, cfg)
                and selfcheck.failed(selfcheck.BATCHED) is None)

    def _batchable(self, remedy: registry.Remedy, cfg) -> bool:
        if self.n_seeds < 2 or self.batch_seeds != "on":
            return False
        from vgbench import batched

        return batched.unsupported(cfg, remedy.parts) is None

    def batch_fallback(self, remedy: registry.Remedy, cfg):
        """The failed batched self-check (selfcheck.Result) that made this remedy's seeds,
        which would have trained batched, train one by one; None if none did."""
        failed = selfcheck.failed(selfcheck.BATCHED)
        if failed is None or not self._batchable(remedy, cfg):
            return None
        return failed.elsewhere()

    def config(self, remedy: registry.Remedy, seed: int, depth: int | None = None):
        """The remedy's config at this budget, seed and depth."""
        changes = {"seed": seed, "limit": self.limit}
        epochs = self.epochs if self.epochs is not None else BUDGETS[self.budget]
        if epochs is not None:
            changes["epochs"] = epochs
        if depth is not None:
            changes["n_layer"] = depth
        return replace(remedy.config, **changes)


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


def baseline_ratio_init(splits: data.Splits, seed: int, probe_size: int,
                        n_layer: int) -> float:
    """The baseline's first/output gradient ratio at init for this seed, probe batch and
    depth."""
    cfg = replace(registry.BASELINE, seed=seed, epochs=0, probe_size=probe_size,
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
    device = train.resolve_device(settings.device)
    ds = data.load_cached(settings.data_dir, device=device)
    splits = data.split(ds, case.seed, cfg.val_fraction, cfg.limit)
    h = (_batched_history(case, settings, remedy, ds, epoch_driver)
         if settings.batched(remedy, cfg) else None)
    if h is None:
        run = train.Run(cfg, splits, case.key, remedy.parts)
        _drive(run, epoch_driver, case)
        h = run.finish()
        failed = _FALLBACK.pop(case.id, None) or settings.batch_fallback(remedy, cfg)
        if failed is not None:  # the seeds would have trained batched: say why they did not
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


_BATCHES: dict[tuple, dict[int, train.History]] = {}
"""Histories of seeds trained in a batch, waiting for their own case (in this process)."""
_FALLBACK: dict[str, "selfcheck.Result"] = {}
"""Cases whose batch failed its self-check in this very case (the others learn it from
selfcheck.failed)."""


def _batched_history(case: Case, settings: Settings, remedy, ds, epoch_driver):
    """This seed's history from a batch of all the session's seeds: the first case of a
    (remedy, depth) trains them all (timed by its driver), the others take their result."""
    key = (case.remedy, case.depth, settings.budget, settings.epochs, settings.limit)
    if key not in _BATCHES:
        from vgbench import batched

        cfg = settings.config(remedy, case.seed, case.depth)
        splits = {s: data.split(ds, s, cfg.val_fraction, cfg.limit) for s in settings.seeds}
        try:
            run = batched.BatchedRun(cfg, splits, case.key, remedy.parts)
        except selfcheck.Mismatch as exc:  # one by one from now on (settings.batch_fallback)
            _FALLBACK[case.id] = exc.result
            return None
        _drive(run, epoch_driver, case)
        _BATCHES[key] = dict(zip(settings.seeds, run.finish()))
    histories = _BATCHES[key]
    h = histories.pop(case.seed)
    if not histories:
        del _BATCHES[key]
    return h


def write_case_files(out: Path, h: train.History, text: str, figures: bool) -> None:
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
    h = train.History.from_json(record["history_json"])
    write_case_files(out, h, record["history_json"], settings.figures)
    return True


# --- the summary -------------------------------------------------------------------------

# two-sided 95% Student t quantiles by degrees of freedom (no scipy in the stack)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and 95% CI half-width (Student t); half-width 0 for a single value."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, 0.0
    df = n - 1
    # between tabulated df, the next lower one (a slightly wider, conservative interval)
    t = _T95[max(k for k in _T95 if k <= df)] if df <= 30 else 1.96
    return mean, t * statistics.stdev(values) / math.sqrt(n)


def _fmt_acc(values: list[float | None], diverged: list[int | None], ci: bool = True) -> str:
    """Mean accuracy (with its 95% CI over seeds) of the runs that finished; diverged runs
    are shown as diverged@EPOCH."""
    done = [v for v, d in zip(values, diverged) if d is None and v is not None]
    parts = []
    if done:
        mean, half = mean_ci95(done)
        parts.append(f"{mean:.3f} +- {half:.3f}" if ci and len(done) > 1 else f"{mean:.3f}")
    epochs = sorted({d for d in diverged if d is not None})
    if epochs:
        n = sum(d is not None for d in diverged)
        parts.append(f"diverged@{','.join(map(str, epochs))}"
                     + (f" ({n}/{len(diverged)})" if done else ""))
    return "; ".join(parts) or "-"


def self_check_words(records: list[dict]) -> str:
    """The summary header's words on the GPU self-checks (selfcheck.py): '' where none
    ran (CPU); each fast path's checks and their cost; a WARNING for a failed one."""
    checks = [c for r in records for c in r.get("self_checks") or []]
    words = []
    for what in sorted({c["what"] for c in checks}):
        ran = [c for c in checks if c["what"] == what and c["here"]]
        bad = [c for c in ran if not c["ok"]]
        hit = sum(any(c["what"] == what and not c["ok"] for c in r.get("self_checks") or [])
                  for r in records)
        if bad:
            words.append(f"WARNING: the {what} self-check failed, {hit} case(s) trained "
                         f"without it: {bad[0]['worst']} off by {bad[0]['diff']:.2g} of its "
                         f"change after {bad[0]['steps']} steps (tolerance "
                         f"{bad[0]['tolerance']:.2g})")
        else:
            words.append(f"{what} self-check passed ({len(ran)} check(s), "
                         f"{sum(c['seconds'] for c in ran):.2f} s)")
    return "; ".join(words)


def _order(key: str) -> tuple:
    name, _, depth = key.partition("-depth")
    known = registry.names()
    return (known.index(name) if name in known else len(known), name,
            int(depth) if depth.isdigit() else 0)


def by_key(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped per case key (remedy, or remedy at a swept depth): remedies in
    registry order (unknown ones last, sorted), then by depth; each group sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r.get("key", r["remedy"]), []).append(r)
    return {k: sorted(groups[k], key=lambda r: r["seed"]) for k in sorted(groups, key=_order)}


def summarize(records: list[dict]) -> list[dict]:
    """One row per case key (registry order, then depth) aggregating its seeds."""
    rows = []
    for key, rs in by_key(records).items():
        ms = [r["metrics"] for r in rs]
        times = [t for r in rs for t in r["epoch_time"]]
        failures = [f for r in rs for f in r["failures"]]
        rows.append({
            "remedy": rs[0]["remedy"],
            "key": key,
            "depth": rs[0].get("depth"),
            "seeds": [r["seed"] for r in rs],
            "epochs": rs[0]["epochs"],
            "test_acc": [m["test_acc"] for m in ms],
            "best_val_acc": [m["best_val_acc"] for m in ms],
            "diverged_epoch": [r.get("diverged_epoch") for r in rs],
            "epochs_to_target": [r["epochs_to_target"] for r in rs],
            "target": rs[0]["target"],
            "grad_ratio_init": [m.get("grad_ratio_init") for m in ms],
            "grad_ratio_final": [m.get("grad_ratio_final") for m in ms],
            "median_epoch_s": statistics.median(times) if times else None,
            "diagnosis": [diagnose.summary(r.get("diagnosis") or {}) for r in rs],
            "checks": rs[0]["checks"],
            "failures": failures,
            "verdict": ("no checks" if not rs[0]["checks"] else
                        "held" if not failures else f"FAILED ({len(failures)})"),
        })
    return rows


def epoch_seconds(records: list[dict]) -> float:
    """Every epoch time of these records summed; seeds trained as one batch counted once."""
    seen, total = set(), 0.0
    for r in records:
        h_batch = r.get("batched_with")
        key = (r["key"], tuple(h_batch)) if h_batch else (r["key"], r["seed"])
        if key not in seen:
            seen.add(key)
            total += sum(r["epoch_time"])
    return total


def _geo(values) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    return math.exp(statistics.fmean(math.log(v) for v in vals)) if vals else None


def table(rows: list[dict], fmt: str = "simple") -> str:
    """The summary as text (tabulate); fmt 'github' gives Markdown."""
    headers, body = table_cells(rows)
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def table_cells(rows: list[dict]) -> tuple[list[str], list[list]]:
    """The summary table's headers and cells (the text table and the HTML report's)."""
    body = []
    for r in rows:
        reached = [e for e in r["epochs_to_target"] if e is not None]
        if not reached:
            to_target = "-"
        elif len(reached) == len(r["epochs_to_target"]):
            to_target = f"{statistics.median(reached):g}"
        else:
            to_target = f"{statistics.median(reached):g} ({len(reached)}/{len(r['seeds'])})"
        gi, gf = _geo(r["grad_ratio_init"]), _geo(r["grad_ratio_final"])
        ratio = (f"{gi:.1e} -> {gf:.1e}" if gi is not None and gf is not None
                 else f"{gi:.1e} -> -" if gi is not None else "-")
        best = [v for v in r["best_val_acc"] if v is not None]
        t = r["median_epoch_s"]
        seen = list(dict.fromkeys(r.get("diagnosis") or ["-"]))  # unique, in seed order
        body.append([r["key"], ",".join(map(str, r["seeds"])), r["epochs"],
                     _fmt_acc(r["test_acc"], r["diverged_epoch"]),
                     f"{max(best):.3f}" if best else "-", to_target, ratio,
                     " / ".join(seen), f"{t:.2f}" if t is not None else "-", r["verdict"]])
    target = rows[0]["target"] if rows else 0.7
    headers = ["remedy", "seeds", "epochs", "test acc (95% CI)", "best val acc",
               f"epochs to val {target:g}", "grad ratio init -> final",
               "diagnosis (init -> end)", "median epoch s", "expected outcome"]
    return headers, body


def _trained(record: dict, level: float) -> bool:
    """The whole network reached validation accuracy `level` (metric whole_val_acc) and
    the run did not diverge."""
    return (record["metrics"].get("whole_val_acc") or 0.0) >= level and \
        not record.get("diverged_epoch")


def trainable_depth(records: list[dict], level: float) -> int | None:
    """The deepest depth at which these records (one remedy, one seed) reach a validation
    accuracy >= level with the whole network (metric whole_val_acc: layerwise's shallow
    early stages do not count); None: no depth did."""
    ok = [r["depth"] for r in records if _trained(r, level)]
    return max(ok, default=None)


def depth_rows(records: list[dict], level: float = registry.TRAINABLE_ACC) -> list[dict]:
    """For a depth sweep: per remedy, the mean test accuracy at each depth and the
    trainable depth of each seed."""
    swept = [r for r in records if r.get("swept")]
    out = []
    for name in sorted({r["remedy"] for r in swept}, key=_order):
        rs = [r for r in swept if r["remedy"] == name]
        depths = sorted({r["depth"] for r in rs})
        acc = {}
        for d in depths:
            at = [r for r in rs if r["depth"] == d]
            acc[d] = _fmt_acc([r["metrics"]["test_acc"] for r in at],
                              [r.get("diverged_epoch") for r in at], ci=False)
        seeds = sorted({r["seed"] for r in rs})
        per_seed = {s: trainable_depth([r for r in rs if r["seed"] == s], level)
                    for s in seeds}
        out.append({"remedy": name, "depths": depths, "test_acc": acc,
                    "trainable_depth": per_seed, "level": level})
    return out


def depth_expectations(records: list[dict], settings: "Settings",
                       level: float = registry.TRAINABLE_ACC) -> list[dict]:
    """Each declared `deeper_than` over this session's sweep: {'text', 'held' (True, False,
    or None: not evaluated, with 'why'), 'detail'}. Evaluated when the session ran the sweep
    budget's epochs over at least SWEEP_DEPTHS (where the orderings were measured), per
    seed both remedies ran."""
    swept = [r for r in records if r.get("swept")]
    ran = {r["remedy"] for r in swept}
    as_declared = (settings.budget == "sweep" and settings.epochs is None and not settings.limit
                   and set(registry.SWEEP_DEPTHS) <= set(settings.sweep_depths))
    out = []
    for name in [n for n in registry.names() if n in ran]:
        for other in [o for o in registry.get(name).deeper_than if o in ran]:
            text = f"{name} trains deeper than {other}"
            if not as_declared:
                out.append({"text": text, "held": None,
                            "why": f"needs the sweep budget as declared (depths "
                                   f"{', '.join(map(str, registry.SWEEP_DEPTHS))}, "
                                   f"{registry.SWEEP_EPOCHS} epochs, full data)"})
                continue
            seeds = sorted({r["seed"] for r in swept if r["remedy"] == name}
                           & {r["seed"] for r in swept if r["remedy"] == other})
            pairs = []
            for s in seeds:
                a = trainable_depth([r for r in swept if r["remedy"] == name and r["seed"] == s],
                                    level)
                b = trainable_depth([r for r in swept if r["remedy"] == other and r["seed"] == s],
                                    level)
                pairs.append((s, a, b))
            held = all((a or 0) > (b or 0) for _, a, b in pairs)
            detail = ", ".join(f"seed {s}: {a or '<' + str(min(registry.SWEEP_DEPTHS))} vs "
                               f"{b or '<' + str(min(registry.SWEEP_DEPTHS))}" for s, a, b in pairs)
            out.append({"text": text, "held": held, "detail": detail})
    return out


INTERVENTION_BUDGETS = ("sweep",)
"""Where a cause's proof by intervention is judged: where it was measured. The quick budget
(5 epochs) is too short for some fixes to train (init_std1 reaches 0.42..0.50), and in the
full budget's 100 epochs some slow runs escape their cause (custom_norm and layernorm
leave vanishing behind and reach 0.82)."""


def interventions(records: list[dict], settings: "Settings",
                  level: float = registry.TRAINABLE_ACC) -> list[dict]:
    """Each declared diagnosis' proof by intervention, per case of this session that
    declares one with fixed_by / not_fixed_by: {'text', 'held' (True, False, or None: not
    evaluated, with 'why'), 'detail'}. Held when the case itself did not reach `level`
    (whole-network validation accuracy), every fixed_by remedy did at the same depth, seed
    and budget, and no not_fixed_by remedy did. Judged at the budgets' own epochs on the
    full data, at INTERVENTION_BUDGETS; elsewhere none are listed."""
    at = {(r["remedy"], r["depth"], r["seed"]): r for r in records}
    if not (settings.budget in INTERVENTION_BUDGETS and settings.epochs is None
            and not settings.limit):
        return []  # nothing to judge (and nothing to print) at other budgets
    out = []
    for r in sorted(records, key=lambda r: (_order(r["key"]), r["seed"])):
        remedy = registry.REMEDIES.get(r["remedy"])
        if remedy is None:
            continue
        for d in remedy.diagnoses_at(r["budget"], r["depth"]):
            if not (d.fixed_by or d.not_fixed_by):
                continue
            text = f"{r['key']} (seed {r['seed']}) {d.verdict} at {d.moment}: " + "; ".join(
                part for part in (d.fixed_by and f"fixed by {', '.join(d.fixed_by)}",
                                  d.not_fixed_by and f"not by {', '.join(d.not_fixed_by)}")
                if part)
            others = {n: at.get((n, r["depth"], r["seed"])) for n in d.fixed_by + d.not_fixed_by}
            absent = [n for n, o in others.items() if o is None]
            if absent:
                out.append({"text": text, "held": None,
                            "why": f"needs {', '.join(absent)} at depth {r['depth']}, seed "
                                   f"{r['seed']} in the same session (--vg-remedy ...)"})
                continue

            def acc(rec):
                return rec["metrics"].get("whole_val_acc")
            held = (not _trained(r, level)
                    and all(_trained(others[n], level) for n in d.fixed_by)
                    and not any(_trained(others[n], level) for n in d.not_fixed_by))
            detail = ", ".join(f"{n} {acc(o):.3f}" if acc(o) is not None else f"{n} -"
                               for n, o in [(r["remedy"], r), *others.items()])
            out.append({"text": text, "held": held,
                        "detail": f"whole-net val acc {detail}; trained means >= {level:g}"})
    return out


def format_expectations(expectations: list[dict]) -> list[str]:
    """One line each: held / FAILED / not evaluated."""
    lines = []
    for e in expectations:
        if e["held"] is None:
            lines.append(f"{e['text']}: not evaluated: {e['why']}")
        else:
            lines.append(f"{e['text']}: {'held' if e['held'] else 'FAILED'} ({e['detail']})")
    return lines


def depth_table(rows: list[dict], fmt: str = "simple") -> str:
    """The depth sweep as text: test accuracy per remedy and depth, and trainable depth."""
    depths = sorted({d for r in rows for d in r["depths"]})
    level = rows[0]["level"] if rows else registry.TRAINABLE_ACC
    body = []
    for r in rows:
        td = list(r["trainable_depth"].values())
        shown = sorted({"<" + str(min(r["depths"])) if v is None else str(v) for v in td},
                       key=lambda t: int(t.lstrip("<")))
        body.append([r["remedy"], *(r["test_acc"].get(d, "") for d in depths),
                     " / ".join(shown) if len(shown) > 1 else shown[0]])
    headers = ["remedy", *(f"depth {d}" for d in depths),
               f"trainable depth (val >= {level:g})"]
    return tabulate(body, headers=headers, tablefmt=fmt, disable_numparse=True)


def write_depth_figures(records: list[dict], out: str | Path,
                        level: float = registry.TRAINABLE_ACC) -> list[Path]:
    """For a depth sweep: depth_profiles.png (gradient profile at init, measured and
    predicted, per remedy and depth) and depth_sweep.png (accuracy and R vs depth)."""
    from vgbench import plots

    swept = [r for r in records if r.get("swept")]
    if len({r["depth"] for r in swept}) < 2:
        return []
    out = Path(out)
    return [plots.depth_profiles(swept, out / "depth_profiles.png"),
            plots.depth_sweep(swept, level, out / "depth_sweep.png")]


def case_entries(records: list[dict], crashed: list[dict] = ()) -> list[dict]:
    """summary.json's 'cases': each finished case (what the report shows beside its
    history) and each crashed one, in the table's order, then seed."""
    keep = ("remedy", "key", "seed", "depth", "metrics", "checks", "failures", "diagnosis",
            "env", "self_checks")
    cases = [{"id": Path(r["history"]).parent.name, **{k: r.get(k) for k in keep}}
             for r in records]
    cases += [{"id": c["case"], "remedy": c["remedy"], "key": c["key"], "seed": c["seed"],
               "depth": c["depth"], "crashed": c} for c in crashed]
    return sorted(cases, key=lambda c: (_order(c["key"]), c["seed"]))


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


def error_line(e: dict | str) -> str:
    """One line for an entry of summary.json's 'errors' (a crash or a session problem)."""
    if isinstance(e, str):
        return e
    where = f" ({e['file']}:{e['line']})" if e.get("file") else ""
    who = f"{e['case']} crashed: " if e.get("case") else ""
    return f"{who}{e['type']}: {e['message']}{where}"


def write_summary(rows: list[dict], out: str | Path, header: str = "",
                  image: bool = True, status: dict | None = None,
                  depth: list[dict] | None = None,
                  expectations: list[dict] | None = None, cases: list[dict] | None = None,
                  command: str = "", comparison: dict | None = None) -> list[Path]:
    """summary.json, summary.md and (image) summary.png into out, each written atomically.

    status: {'complete': bool, 'missing': [case ids], 'errors': [crashes and problems:
    {'case' (None: the session's), 'type', 'message', 'file', 'line'}]}; cases: from
    case_entries; command: the session's command line; comparison: --vg-compare's diff
    ({columns, rows (moved first), text}).
    """
    status = status or {"complete": True, "missing": [], "errors": []}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "summary.json", out / "summary.md"
    files.write_json(js, {"header": header, **status, "rows": rows, "depth": depth or [],
                          "expectations": expectations or [], "cases": cases or [],
                          "command": command, "comparison": comparison}, indent=1)
    failures = [f for r in rows for f in r["failures"]]
    text = f"# vgbench summary\n\n{header}\n\n{table(rows, 'github')}\n"
    if depth:
        text += f"\n## Depth sweep\n\n{depth_table(depth, 'github')}\n"
    if expectations:
        text += "\n## Session expectations (depth orderings, causes proven by intervention)\n"
        text += "".join(f"\n- {line}" for line in format_expectations(expectations)) + "\n"
    if not status["complete"]:
        text += ("\n## Incomplete\n\nThese cases produced no result:\n\n"
                 + "\n".join(f"- {c}" for c in status["missing"]) + "\n")
    if failures:
        text += "\n## Failed expectations\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    if status["errors"]:
        text += ("\n## Errors\n\n" + "\n".join(f"- {error_line(e)}" for e in status["errors"])
                 + "\n")
    files.write_text(md, text)
    paths = [js, md]
    if image:
        from vgbench import plots

        picture = f"{header}\n\n{table(rows)}"
        if depth:
            picture += f"\n\n{depth_table(depth)}"
        paths.append(plots.text_image(picture, out / "summary.png"))
    return paths
