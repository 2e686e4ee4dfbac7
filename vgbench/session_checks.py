"""Expectations across the cases of a session: depth orderings (`deeper_than`) and causes
proven by intervention (`fixed_by` / `not_fixed_by`), judged on the records of all cases."""

from __future__ import annotations


from vgbench import registry
from vgbench.session import Settings, key_order
from vgbench.remedy import SWEEP_DEPTHS, SWEEP_EPOCHS, TRAINABLE_ACC

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


def depth_expectations(records: list[dict], settings: Settings,
                       level: float = TRAINABLE_ACC) -> list[dict]:
    """Each declared `deeper_than` over this session's sweep: {'text', 'held' (True, False,
    or None: not evaluated, with 'why'), 'detail'}. Evaluated when the session ran the sweep
    budget's epochs over at least SWEEP_DEPTHS (where the orderings were measured), per
    seed both remedies ran."""
    swept = [r for r in records if r.get("swept")]
    ran = {r["remedy"] for r in swept}
    as_declared = (settings.budget == "sweep" and settings.epochs is None and not settings.limit
                   and set(SWEEP_DEPTHS) <= set(settings.sweep_depths))
    out = []
    for name in [n for n in registry.names() if n in ran]:
        for other in [o for o in registry.get(name).deeper_than if o in ran]:
            text = f"{name} trains deeper than {other}"
            if not as_declared:
                out.append({"text": text, "held": None,
                            "why": f"needs the sweep budget as declared (depths "
                                   f"{', '.join(map(str, SWEEP_DEPTHS))}, "
                                   f"{SWEEP_EPOCHS} epochs, full data)"})
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
            detail = ", ".join(f"seed {s}: {a or '<' + str(min(SWEEP_DEPTHS))} vs "
                               f"{b or '<' + str(min(SWEEP_DEPTHS))}" for s, a, b in pairs)
            out.append({"text": text, "held": held, "detail": detail})
    return out


INTERVENTION_BUDGETS = ("sweep",)
"""Where a cause's proof by intervention is judged: where it was measured. The quick budget
(5 epochs) is too short for some fixes to train (init_std1 reaches 0.42..0.50), and in the
full budget's 100 epochs some slow runs escape their cause (custom_norm and layernorm
leave vanishing behind and reach 0.82)."""


def interventions(records: list[dict], settings: Settings,
                  level: float = TRAINABLE_ACC) -> list[dict]:
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
    for r in sorted(records, key=lambda r: (key_order(r["key"]), r["seed"])):
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
