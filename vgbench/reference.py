"""Reference results for regression checks: --vg-save writes them, --vg-compare checks them.

A reference file holds, per budget and remedy, the per-seed values of test accuracy and of
the gradient ratio (init and final), each with a tolerance. Accuracy tolerances are
absolute; gradient-ratio tolerances are in decades (log10), since the ratio spans 1e-7..1.
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from vgbench import harness

FORMAT = "vgbench-reference/1"
ACC_TOL_FLOOR = 0.03
"""Smallest accuracy tolerance: CPU thread counts change float sums, and over many epochs
that moves a run by a point or two."""
LOG_TOL_FLOOR = 0.5
"""Smallest gradient-ratio tolerance, in decades (a factor of ~3.2)."""
SPREAD_FACTOR = 2.0
"""Tolerance = max(floor, SPREAD_FACTOR x the range over the reference seeds)."""
METRICS = {"test_acc": "abs", "grad_ratio_init": "log10", "grad_ratio_final": "log10"}


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message says why and what to do."""


def load(path: str | Path) -> dict:
    """Read and check a reference file."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError(f"--vg-compare {path}: no such file; write one with --vg-save "
                             f"{path} (see README, 'Regression checks')")
    try:
        ref = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReferenceError(f"--vg-compare {path}: not valid JSON ({exc}); "
                             "regenerate it with --vg-save") from None
    if not isinstance(ref, dict) or ref.get("format") != FORMAT:
        raise ReferenceError(f"--vg-compare {path}: not a {FORMAT} file "
                             f"(format {ref.get('format') if isinstance(ref, dict) else None!r})")
    return ref


def _values(records: list[dict], metric: str) -> dict[str, float]:
    return {str(r["seed"]): r["metrics"].get(metric) for r in records
            if r["metrics"].get(metric) is not None}


def _scale(metric: str, v: float) -> float:
    return math.log10(v) if METRICS[metric] == "log10" else v


def save(path: str | Path, records: list[dict], settings) -> Path:
    """Write records as the reference for settings.budget, keeping other budgets in the file."""
    path = Path(path)
    ref = {"format": FORMAT, "budgets": {}}
    if path.is_file():
        try:
            ref = load(path)
        except ReferenceError:
            # never destroy what the user had: keep it beside the new file
            backup = path.with_suffix(path.suffix + ".bak")
            path.replace(backup)
    remedies = {}
    for name, rs in harness.by_remedy(records).items():
        entry = {}
        for metric, kind in METRICS.items():
            vals = _values(rs, metric)
            if not vals:
                continue
            scaled = [_scale(metric, v) for v in vals.values() if v > 0 or kind == "abs"]
            spread = max(scaled) - min(scaled) if scaled else 0.0
            floor = ACC_TOL_FLOOR if kind == "abs" else LOG_TOL_FLOOR
            tol = round(max(floor, SPREAD_FACTOR * spread), 4)
            entry[metric] = {"values": vals, ("tol" if kind == "abs" else "tol_log10"): tol}
        entry["epochs"] = rs[0]["epochs"]
        remedies[name] = entry
    ref["budgets"][settings.budget] = {
        "epochs_override": settings.epochs,
        "limit": settings.limit,
        "seeds": sorted({r["seed"] for r in records}),
        "device": sorted({r["device"] for r in records}),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "remedies": remedies,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
    return path


class Comparison:
    """Compares a session's records with a reference; rows for the diff table."""

    def __init__(self, ref: dict):
        self.ref = ref
        self.rows: list[list] = []
        self.problems: list[str] = []
        self.failed = False

    def run(self, records: list[dict], settings) -> None:
        """Fill rows; failed is True if any metric moved beyond its tolerance."""
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
        for name, rs in harness.by_remedy(records).items():
            entry = budget["remedies"].get(name)
            if entry is None:
                self.rows.append([name, "-", "-", "-", "-", "-", "no reference"])
                continue
            for metric, kind in METRICS.items():
                if metric not in entry:
                    continue
                now_vals = _values(rs, metric)
                ref_vals = entry[metric]["values"]
                same = [s for s in now_vals if s in ref_vals]
                # the same seeds when the reference has them (exact on the same platform)
                ref_pick = [ref_vals[s] for s in same] if len(same) == len(now_vals) else list(
                    ref_vals.values())
                now_pick = list(now_vals.values())
                if not now_pick:
                    continue
                ref_v = statistics.fmean(_scale(metric, v) for v in ref_pick)
                now_v = statistics.fmean(_scale(metric, v) for v in now_pick)
                tol = entry[metric]["tol" if kind == "abs" else "tol_log10"]
                delta = now_v - ref_v
                ok = abs(delta) <= tol
                self.failed |= not ok
                label = metric if kind == "abs" else f"log10 {metric}"
                self.rows.append([name, label, f"{ref_v:.4f}", f"{now_v:.4f}",
                                  f"{delta:+.4f}", f"{tol:g}", "ok" if ok else "MOVED"])

    def report(self) -> str:
        """The diff table (reference, now, delta, tolerance) and any problems."""
        text = tabulate(self.rows, headers=["remedy", "metric", "reference", "now", "delta",
                                            "tolerance", "status"])
        if self.problems:
            text += "\n" + "\n".join(f"vgbench: {p}" for p in self.problems)
        moved = [r for r in self.rows if r[-1] == "MOVED"]
        if moved:
            text += ("\nvgbench: moved beyond tolerance: "
                     + ", ".join(f"{r[0]} {r[1]}" for r in moved))
        return text
