"""Reference results for regression checks: --vg-save writes them, --vg-compare checks them.

A reference file holds, per budget and case (a remedy, or a remedy at a swept depth), the
per-seed values of test accuracy and of the gradient ratio (init and final), a tolerance
for each, and the environment each seed ran in (torch, threads, device, CPU, platform).

Where this session's environment and seed equal the reference's, vgbench runs reproduce bit
for bit, so the comparison is exact (within EXACT_TOL). Elsewhere it uses the statistical
tolerance: accuracy absolute, gradient ratios in decades (log10, since they span 1e-7..1).
A statistical tolerance too wide to tell a real change apart is reported as `unchecked`.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from vgbench import files, session, summary

COLUMNS = ("case", "metric", "mode", "reference", "now", "delta", "tolerance", "status")
"""The comparison's diff table."""

FORMAT = "vgbench-reference/1"
ACC_TOL_FLOOR = 0.03
"""Smallest accuracy tolerance: CPU thread counts change float sums, and over many epochs
that moves a run by a point or two."""
LOG_TOL_FLOOR = 0.5
"""Smallest gradient-ratio tolerance, in decades (a factor of ~3.2)."""
SPREAD_FACTOR = 2.0
"""Tolerance = max(floor, SPREAD_FACTOR x the range over the reference seeds)."""
METRICS = {"test_acc": "abs", "grad_ratio_init": "log10", "grad_ratio_final": "log10"}
EXACT_TOL = 1e-6
"""Same seed and environment: runs are bit-identical, so any difference above this is real."""
STALL_ACC, LEARN_ACC = 0.15, 0.5
"""An accuracy window reaching both STALL_ACC (chance + 0.05) and LEARN_ACC cannot tell a
stalled net from a learning one: such a tolerance is reported `unchecked`."""
LOG_TOL_MAX = 2.0
"""A gradient-ratio tolerance wider than this many decades is reported `unchecked`."""
ENV_KEYS = ("torch", "threads", "device", "cpu")
"""What must be equal for bit-identical runs (the CPU entry holds its kernel level and a
digest of its feature flags)."""
INFO_KEYS = ("platform", "python")
"""Recorded too; a difference is reported, but does not change float results."""


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message says why and what to do."""


def _tol_key(metric: str) -> str:
    return "tol" if METRICS[metric] == "abs" else "tol_log10"


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(ref, where: str) -> None:
    """Check the whole schema; the first problem is a ReferenceError naming the field."""
    def bad(field: str, problem: str):
        raise ReferenceError(f"{where}: {field}: {problem}; fix the file or write a new one "
                             "with --vg-save")

    if not isinstance(ref, dict) or ref.get("format") != FORMAT:
        got = ref.get("format") if isinstance(ref, dict) else type(ref).__name__
        bad("format", f"not a {FORMAT} file (format {got!r})")
    if not isinstance(ref.get("budgets"), dict):
        bad("budgets", "missing or not an object")
    for budget, section in ref["budgets"].items():
        at = f"budgets.{budget}"
        if budget not in session.BUDGETS:
            bad(at, f"unknown budget; choose from {list(session.BUDGETS)}")
        if not isinstance(section, dict) or not isinstance(section.get("remedies"), dict):
            bad(f"{at}.remedies", "missing or not an object")
        for key in ("epochs_override", "limit"):
            v = section.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                bad(f"{at}.{key}", f"{v!r} is not null or a whole number >= 0")
        for name, entry in section["remedies"].items():
            at_r = f"{at}.remedies.{name}"
            if not isinstance(entry, dict):
                bad(at_r, "not an object")
            for field, value in entry.items():
                if field == "epochs":
                    if not isinstance(value, int) or value < 0:
                        bad(f"{at_r}.epochs", f"{value!r} is not a whole number >= 0")
                elif field == "env":
                    if not isinstance(value, dict) or not all(isinstance(e, dict)
                                                              for e in value.values()):
                        bad(f"{at_r}.env", "not an object of seed -> environment objects")
                elif field in METRICS:
                    _validate_metric(bad, f"{at_r}.{field}", field, value)
                else:
                    bad(f"{at_r}.{field}", f"unknown field; expected epochs, env or one of "
                                           f"{', '.join(METRICS)}")


def _validate_metric(bad, at: str, metric: str, m) -> None:
    if not isinstance(m, dict) or not isinstance(m.get("values"), dict) or not m["values"]:
        bad(f"{at}.values", "missing or empty (an object of seed -> value)")
    for seed, v in m["values"].items():
        if not seed.isdigit():
            bad(f"{at}.values", f"key {seed!r} is not a seed (a whole number)")
        if not _number(v):
            bad(f"{at}.values.{seed}", f"{v!r} is not a finite number")
        if METRICS[metric] == "log10" and v <= 0:
            bad(f"{at}.values.{seed}", f"{v!r} is not positive (a gradient ratio is > 0)")
    tol = m.get(_tol_key(metric))
    if not _number(tol) or tol < 0:
        bad(f"{at}.{_tol_key(metric)}", f"{tol!r} is not a number >= 0")
    alt = m.get("alt", [])
    if not isinstance(alt, list):
        bad(f"{at}.alt", "not a list")
    for i, a in enumerate(alt):
        if (not isinstance(a, dict) or not str(a.get("seed", "")).isdigit()
                or not _number(a.get("value")) or not isinstance(a.get("env"), dict)):
            bad(f"{at}.alt[{i}]", "not an object with seed, value and env")
        if METRICS[metric] == "log10" and a["value"] <= 0:
            bad(f"{at}.alt[{i}].value", f"{a['value']!r} is not positive")
    extra = set(m) - {"values", _tol_key(metric), "alt"}
    if extra:
        bad(f"{at}.{sorted(extra)[0]}", f"unknown field; expected values, "
                                        f"{_tol_key(metric)} or alt")


def load(path: str | Path, option: str = "--vg-compare") -> dict:
    """Read and validate a reference file (ReferenceError says what is wrong)."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"{option} {path}: no such file; write one with --vg-save "
                             f"{path} (see docs/regression.md)")
    try:
        ref = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReferenceError(f"{option} {path}: not valid JSON ({exc}); "
                             "regenerate it with --vg-save") from None
    validate(ref, f"{option} {path}")
    return ref


def check_save_target(path: str | Path) -> None:
    """Before any training: --vg-save must name a file we can write (and, when it exists,
    a valid reference to merge into)."""
    path = Path(path)
    if path.is_dir():
        raise ReferenceError(f"--vg-save {path} is a folder; name a file, e.g. "
                             f"{path / 'reference.json'}")
    if path.exists():
        load(path, "--vg-save")
    files.check_writable(path.parent if str(path.parent) else ".", "--vg-save folder")


def _usable(metric: str, v) -> bool:
    """A value the reference can hold: finite, and for a ratio (compared in decades) > 0
    (a float32 ratio of 0 is an underflow at depth, not a measurement)."""
    return v is not None and math.isfinite(v) and (METRICS[metric] == "abs" or v > 0)


def _values(records: list[dict], metric: str) -> dict[str, float]:
    return {str(r["seed"]): r["metrics"][metric] for r in records
            if _usable(metric, r["metrics"].get(metric))}


def _scale(metric: str, v: float) -> float:
    return math.log10(v) if METRICS[metric] == "log10" else v


def _tolerance(metric: str, m: dict) -> float:
    """From every observation the entry holds: its seeds, and the same seeds on other
    platforms (alt), since a platform's float rounding moves a run like a seed does."""
    observed = list(m["values"].values()) + [a["value"] for a in m.get("alt", [])]
    scaled = [_scale(metric, v) for v in observed if v > 0 or METRICS[metric] == "abs"]
    spread = max(scaled) - min(scaled) if scaled else 0.0
    floor = ACC_TOL_FLOOR if METRICS[metric] == "abs" else LOG_TOL_FLOOR
    return round(max(floor, SPREAD_FACTOR * spread), 4)


def _same_env(a: dict | None, b: dict | None) -> bool:
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in ENV_KEYS)


def env_of(record: dict) -> dict:
    """The environment of a record as the reference keeps it (ENV_KEYS and INFO_KEYS)."""
    env = record.get("env") or {}
    return {k: env.get(k) for k in ENV_KEYS + INFO_KEYS}


def save(path: str | Path, records: list[dict], settings) -> Path:
    """Merge records into the reference for settings.budget: each (case, seed) value is
    added or replaced, everything else in the file is kept; tolerances are recomputed from
    all the seeds an entry then holds. Written atomically."""
    path = Path(path)
    ref = load(path, "--vg-save") if path.exists() else {"format": FORMAT, "budgets": {}}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    section = ref["budgets"].setdefault(settings.budget, {
        "epochs_override": settings.epochs, "limit": settings.limit, "seeds": [],
        "device": [], "created": now, "remedies": {}})
    if (section.get("epochs_override"), section.get("limit")) != (settings.epochs,
                                                                   settings.limit):
        raise ReferenceError(
            f"--vg-save {path}: its '{settings.budget}' budget ran with --vg-epochs "
            f"{section.get('epochs_override')} --vg-limit {section.get('limit')}, this session "
            f"with {settings.epochs} and {settings.limit}; save into another file")
    for key, rs in summary.by_key(records).items():
        entry = section["remedies"].setdefault(key, {})
        entry["epochs"] = rs[0]["epochs"]
        envs = entry.setdefault("env", {})
        for r in rs:
            _merge_record(entry, envs, r)
        entry["env"] = dict(sorted(envs.items(), key=lambda kv: int(kv[0])))
    section["seeds"] = sorted(set(section.get("seeds", [])) | {r["seed"] for r in records})
    section["device"] = sorted(set(section.get("device", [])) | {r["device"] for r in records})
    section["updated"] = now
    files.write_json(path, ref, indent=1, sort_keys=True)
    return path


def _merge_record(entry: dict, envs: dict, r: dict) -> None:
    """One seed's values into an entry. A value from the environment the entry already
    holds for that seed (or a new seed) replaces it; a value from another environment is
    kept beside it as an 'alt' observation, so the reference knows several platforms."""
    seed, env = str(r["seed"]), env_of(r)
    known = any(seed in m["values"] for key, m in entry.items() if key in METRICS)
    # a seed the entry has from an unrecorded environment (older files) stays primary too
    primary = not known or _same_env(envs.get(seed), env)
    for metric in METRICS:
        v = r["metrics"].get(metric)
        if not _usable(metric, v):
            continue
        m = entry.setdefault(metric, {"values": {}})
        if primary or seed not in m["values"]:
            m["values"][seed] = v
            m["values"] = dict(sorted(m["values"].items(), key=lambda kv: int(kv[0])))
        else:
            alt = [a for a in m.get("alt", []) if not (a["seed"] == seed
                                                       and _same_env(a["env"], env))]
            m["alt"] = alt + [{"seed": seed, "value": v, "env": env}]
        m[_tol_key(metric)] = _tolerance(metric, m)
    if primary:
        envs[seed] = env


class Comparison:
    """Compares a session's records with a reference; rows for the diff table."""

    def __init__(self, ref: dict, allow_new: bool = False):
        self.ref, self.allow_new = ref, allow_new
        self.rows: list[list] = []
        self.problems: list[str] = []
        self.notes: dict[str, list[str]] = {}  # note -> the cases it concerns
        self.failed = False

    def run(self, records: list[dict], settings) -> None:
        """Fill rows; failed is True if any metric moved beyond its tolerance or a case has
        no reference (unless allow_new)."""
        budget = self.ref["budgets"].get(settings.budget)
        if budget is None:
            self.problems.append(f"the reference has no '{settings.budget}' budget "
                                 f"(it has {sorted(self.ref['budgets'])}); save one with "
                                 f"--vg-budget {settings.budget} --vg-save FILE")
            self.failed = True
            return
        if (budget.get("epochs_override"), budget.get("limit")) != (settings.epochs,
                                                                     settings.limit):
            self.problems.append(
                f"the reference's '{settings.budget}' budget ran with --vg-epochs "
                f"{budget.get('epochs_override')} --vg-limit {budget.get('limit')}, this "
                f"session with {settings.epochs} and {settings.limit}: not comparable")
            self.failed = True
            return
        for key, rs in summary.by_key(records).items():
            entry = budget["remedies"].get(key)
            if entry is None:
                status = "new (allowed)" if self.allow_new else "NO REFERENCE"
                self.failed |= not self.allow_new
                self.rows.append([key, "-", "-", "-", "-", "-", "-", status])
                continue
            for metric in METRICS:
                if metric in entry:
                    self._compare(key, metric, rs, entry[metric], entry.get("env", {}))

    def _note(self, key: str, seed, text: str) -> None:
        self.notes.setdefault(text, []).append(f"{key} (seed {seed})")

    def _reference_value(self, key: str, r: dict, m: dict, envs: dict):
        """(value, exact?) the reference holds for r's seed: the value from r's own
        environment when it has one (then runs are bit-identical), else its primary value
        for the seed (None if it has none)."""
        seed, now = str(r["seed"]), env_of(r)

        def diff(ref_env, keys):
            return "; ".join(f"{k} {ref_env.get(k)!r} -> {now[k]!r}" for k in keys
                             if ref_env.get(k) != now[k])

        found = None
        if seed in m["values"] and _same_env(envs.get(seed), now):
            found = m["values"][seed], envs[seed]
        for a in m.get("alt", []):
            if found is None and a["seed"] == seed and _same_env(a["env"], now):
                found = a["value"], a["env"]
        if found is not None:
            info = diff(found[1], INFO_KEYS)
            if info:
                self._note(key, seed, f"{info}: no effect on float results, compared exactly")
            return found[0], True
        ref_env = envs.get(seed)
        if ref_env is None:
            self._note(key, seed, "the reference records no environment for this seed: "
                                  "statistical tolerance")
        else:
            self._note(key, seed, "environment differs from the reference's ("
                                  f"{diff(ref_env, ENV_KEYS + INFO_KEYS)}): statistical "
                                  "tolerance")
        return m["values"].get(seed), False

    def _compare(self, key: str, metric: str, rs: list[dict], ref_m: dict, envs: dict):
        now_vals = _values(rs, metric)
        if not now_vals:
            return
        picks = [self._reference_value(key, r, ref_m, envs) for r in rs
                 if str(r["seed"]) in now_vals]
        if all(v is not None for v, _ in picks):  # compare seed for seed
            ref_pick = [v for v, _ in picks]
            exact = all(e for _, e in picks)
        else:  # seeds the reference lacks: against its seeds' mean
            ref_pick, exact = list(ref_m["values"].values()), False
        ref_v = statistics.fmean(_scale(metric, v) for v in ref_pick)
        now_v = statistics.fmean(_scale(metric, v) for v in now_vals.values())
        delta = now_v - ref_v
        tol = EXACT_TOL if exact else ref_m[_tol_key(metric)]
        if abs(delta) > tol:
            status = "MOVED"
            self.failed = True
        elif exact:
            status = "ok (exact)"
        elif self._meaningless(metric, ref_v, tol):
            status = "unchecked"
        else:
            status = "ok"
        label = metric if METRICS[metric] == "abs" else f"log10 {metric}"
        self.rows.append([key, label, "exact" if exact else "stat", f"{ref_v:.4f}",
                          f"{now_v:.4f}", f"{delta:+.4f}", f"{tol:g}", status])

    @staticmethod
    def _meaningless(metric: str, ref_v: float, tol: float) -> bool:
        if METRICS[metric] == "abs":
            return ref_v - tol <= STALL_ACC and ref_v + tol >= LEARN_ACC
        return tol > LOG_TOL_MAX

    def moved_first(self) -> list[list]:
        """The diff rows, the cases that moved beyond tolerance first."""
        return sorted(self.rows, key=lambda r: r[-1] != "MOVED")

    def report(self) -> str:
        """The diff table (reference, now, delta, tolerance) and any problems."""
        text = tabulate(self.rows, headers=list(COLUMNS))
        for note, cases in self.notes.items():
            text += f"\nvgbench: {note}: {', '.join(sorted(set(cases)))}"
        if any(r[-1] == "unchecked" for r in self.rows):
            text += ("\nvgbench: 'unchecked': the reference seeds spread so widely that the "
                     "tolerance cannot tell a stalled net from a learning one (or spans more "
                     f"than {LOG_TOL_MAX:g} decades); add seeds or compare on the same "
                     "environment")
        if self.problems:
            text += "\n" + "\n".join(f"vgbench: {p}" for p in self.problems)
        moved = [r for r in self.rows if r[-1] == "MOVED"]
        if moved:
            text += ("\nvgbench: moved beyond tolerance: "
                     + ", ".join(f"{r[0]} {r[1]}" for r in moved))
        new = [r[0] for r in self.rows if r[-1] == "NO REFERENCE"]
        if new:
            text += (f"\nvgbench: no reference for {', '.join(new)}: add it with --vg-save, "
                     "or pass --vg-allow-new to accept cases the reference lacks")
        return text
