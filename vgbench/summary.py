"""The session's summary: records aggregated per case key, the tables (text, Markdown, the
report's cells), and summary.json / summary.md / summary.png."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from tabulate import tabulate

from vgbench import diagnose, files
from vgbench.session import key_order
from vgbench.session_checks import format_expectations, trainable_depth
from vgbench.remedy import TRAINABLE_ACC

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


def by_key(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped per case key (remedy, or remedy at a swept depth): remedies in
    registry order (unknown ones last, sorted), then by depth; each group sorted by seed."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r.get("key", r["remedy"]), []).append(r)
    return {k: sorted(groups[k], key=lambda r: r["seed"]) for k in sorted(groups, key=key_order)}


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
    """Every epoch time of these records summed; runs trained as one group counted once."""
    seen, total = set(), 0.0
    for r in records:
        h_batch = r.get("batched_with")
        key = tuple(h_batch) if h_batch else (r["key"], r["seed"])
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


def depth_rows(records: list[dict], level: float = TRAINABLE_ACC) -> list[dict]:
    """For a depth sweep: per remedy, the mean test accuracy at each depth and the
    trainable depth of each seed."""
    swept = [r for r in records if r.get("swept")]
    out = []
    for name in sorted({r["remedy"] for r in swept}, key=key_order):
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


def depth_table(rows: list[dict], fmt: str = "simple") -> str:
    """The depth sweep as text: test accuracy per remedy and depth, and trainable depth."""
    depths = sorted({d for r in rows for d in r["depths"]})
    level = rows[0]["level"] if rows else TRAINABLE_ACC
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
                        level: float = TRAINABLE_ACC) -> list[Path]:
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
    return sorted(cases, key=lambda c: (key_order(c["key"]), c["seed"]))


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
