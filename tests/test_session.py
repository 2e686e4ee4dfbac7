"""Summary statistics, the table, and reference files, without pytest-in-pytest."""

import dataclasses
import json

import pytest

from vgbench import reference, session, session_checks, summary
from vgbench.remedy import TRAINABLE_ACC


def record(remedy="relu", seed=42, acc=0.8, ratio=(1.0, 0.5), failures=(), to_target=12):
    return {"remedy": remedy, "seed": seed, "budget": "quick", "device": "cpu", "epochs": 5,
            "metrics": {"test_acc": acc, "best_val_acc": acc + 0.01,
                        "grad_ratio_init": ratio[0], "grad_ratio_final": ratio[1]},
            "checks": ["test_acc >= 0.7"], "failures": list(failures),
            "epoch_time": [1.0, 2.0, 3.0], "epochs_to_target": to_target, "target": 0.7}


def test_mean_ci95_by_hand():
    mean, half = summary.mean_ci95([0.80, 0.82, 0.84])
    # sd = 0.02, t(0.975, df=2) = 4.303 -> 4.303 * 0.02 / sqrt(3)
    assert mean == pytest.approx(0.82) and half == pytest.approx(0.049687, rel=1e-4)
    assert summary.mean_ci95([0.5]) == (0.5, 0.0)


def test_summary_rows_and_table():
    rows = summary.summarize([
        record(seed=43, acc=0.82), record(seed=42, acc=0.80, to_target=None),
        record("baseline", 42, 0.1, (1e-6, 2e-6), failures=["baseline (seed 42): ..."]),
    ])
    assert [r["remedy"] for r in rows] == ["baseline", "relu"]  # registry order
    relu = rows[1]
    assert relu["seeds"] == [42, 43] and relu["verdict"] == "held"
    assert relu["median_epoch_s"] == 2.0
    text = summary.table(rows)
    assert "0.810 +- " in text and "12 (1/2)" in text and "1.0e-06 -> 2.0e-06" in text
    assert "FAILED (1)" in text


def test_write_summary(tmp_path):
    rows = summary.summarize([record(failures=["relu (seed 42): expected x"])])
    js, md, png = summary.write_summary(rows, tmp_path, "budget quick")
    assert json.loads(js.read_text())["rows"][0]["remedy"] == "relu"
    assert "## Failed expectations" in md.read_text()
    assert png.stat().st_size > 1000


def test_settings_validate_names_and_budget():
    with pytest.raises(ValueError, match="unknown remedy 'x'"):
        session.Settings(remedies=("x",))
    with pytest.raises(ValueError, match="unknown budget"):
        session.Settings(budget="long")
    s = session.Settings(budget="quick", n_seeds=3, remedies=("relu", "baseline"))
    assert s.seeds == [42, 43, 44] and s.names == ["baseline", "relu"]


def test_worker_threads_never_oversubscribe():
    assert session.worker_threads(2, cores=2) == 1
    assert session.worker_threads(3, cores=16) == 5
    assert session.worker_threads(8, cores=2) == 1


def test_reference_round_trip_and_tolerances(tmp_path):
    settings = session.Settings(budget="quick")
    path = reference.save(tmp_path / "ref.json",
                          [record(seed=42, acc=0.80), record(seed=43, acc=0.90)], settings)
    ref = reference.load(path)
    entry = ref["budgets"]["quick"]["remedies"]["relu"]
    assert entry["test_acc"]["tol"] == pytest.approx(0.2)  # 2 x the 0.1 spread > floor
    assert entry["grad_ratio_init"]["tol_log10"] == reference.LOG_TOL_FLOOR
    same = reference.Comparison(ref)
    same.run([record(seed=42, acc=0.80)], settings)  # compared with seed 42's own value
    assert not same.failed and "ok" in same.report()
    moved = reference.Comparison(ref)
    moved.run([record(seed=42, acc=0.80, ratio=(1e-3, 0.5))], settings)
    assert moved.failed and "moved beyond tolerance: relu log10 grad_ratio_init" in moved.report()


def test_reference_keeps_other_budgets_and_bad_files(tmp_path):
    path = tmp_path / "ref.json"
    reference.save(path, [record()], session.Settings(budget="quick"))
    reference.save(path, [record()], session.Settings(budget="full"))
    assert set(reference.load(path)["budgets"]) == {"quick", "full"}
    path.write_text("{not json")
    with pytest.raises(reference.ReferenceError, match="not valid JSON"):
        reference.load(path)
    with pytest.raises(reference.ReferenceError, match="not valid JSON"):
        reference.save(path, [record()], session.Settings(budget="quick"))
    assert path.read_text() == "{not json"  # the user's file is never overwritten


def test_comparison_refuses_a_different_setup(tmp_path):
    path = reference.save(tmp_path / "r.json", [record()], session.Settings(budget="quick"))
    c = reference.Comparison(reference.load(path))
    c.run([record()], session.Settings(budget="quick", epochs=3))
    assert c.failed and "not comparable" in c.report()
    c = reference.Comparison(reference.load(path))
    c.run([record()], session.Settings(budget="full"))
    assert c.failed and "has no 'full' budget" in c.report()


def swept(remedy, depth, seed, best):
    return {"remedy": remedy, "key": f"{remedy}-depth{depth}", "depth": depth, "swept": True,
            "seed": seed, "metrics": {"whole_val_acc": best, "test_acc": best},
            "diverged_epoch": None}


def test_trainable_depth_and_orderings(monkeypatch):
    from vgbench import registry

    level = TRAINABLE_ACC
    good = {3: 0.8, 7: 0.8, 15: 0.8, 30: 0.8}
    bad = {3: 0.6, 7: 0.1, 15: 0.1, 30: 0.1}
    records = [swept("batchnorm", d, s, a) for s in (42, 43) for d, a in good.items()]
    records += [swept("baseline", d, s, a) for s in (42, 43) for d, a in bad.items()]
    assert session_checks.trainable_depth([r for r in records if r["remedy"] == "baseline"], level) == 3
    monkeypatch.setitem(registry.REMEDIES, "batchnorm", dataclasses.replace(
        registry.get("batchnorm"), deeper_than=("baseline",)))
    sweep = session.Settings(budget="sweep")
    [e] = session_checks.depth_expectations(records, sweep)
    assert e["held"] and e["detail"] == "seed 42: 30 vs 3, seed 43: 30 vs 3"
    # batchnorm silently replaced by the baseline: the ordering fails
    sabotaged = [dict(r, remedy="batchnorm") if r["remedy"] == "baseline" else r
                 for r in records if r["remedy"] == "baseline"] + [
        r for r in records if r["remedy"] == "baseline"]
    [e] = session_checks.depth_expectations(sabotaged, sweep)
    assert e["held"] is False
    # not the declared sweep: reported, not judged
    [e] = session_checks.depth_expectations(records, session.Settings(budget="sweep", epochs=2))
    assert e["held"] is None and "needs the sweep budget" in e["why"]
    assert session_checks.format_expectations([e])[0].startswith("batchnorm trains deeper than baseline:"
                                                          " not evaluated: needs")


def test_a_value_from_another_machine_is_kept_beside_the_first(tmp_path):
    path = tmp_path / "ref.json"
    settings = session.Settings(budget="quick")
    amd = dict(record(seed=42, acc=0.80), env={"torch": "2.14.1", "threads": 1,
                                               "device": "cpu", "cpu": "AMD"})
    intel = dict(record(seed=42, acc=0.84), env=dict(amd["env"], cpu="Intel"))
    reference.save(path, [amd], settings)
    reference.save(path, [intel], settings)
    m = reference.load(path)["budgets"]["quick"]["remedies"]["relu"]["test_acc"]
    assert m["values"] == {"42": 0.80} and m["alt"][0]["value"] == 0.84
    assert m["tol"] == pytest.approx(0.08)  # 2 x the spread over both machines
    for rec, ref_value in ((amd, "0.8000"), (intel, "0.8400")):
        c = reference.Comparison(reference.load(path))
        c.run([rec], settings)
        row = next(r for r in c.rows if r[1] == "test_acc")
        assert row[2] == "exact" and row[3] == ref_value and row[-1] == "ok (exact)"
    other = dict(record(seed=42, acc=0.81), env=dict(amd["env"], cpu="ARM"))
    c = reference.Comparison(reference.load(path))
    c.run([other], settings)
    row = next(r for r in c.rows if r[1] == "test_acc")
    assert row[2] == "stat" and row[-1] == "ok" and "cpu 'AMD' -> 'ARM'" in c.report()
    # an exact comparison catches any change
    c = reference.Comparison(reference.load(path))
    c.run([dict(intel, metrics=dict(intel["metrics"], test_acc=0.8401))], settings)
    assert c.failed and "MOVED" in c.report()


def test_a_useless_tolerance_is_unchecked(tmp_path):
    path = reference.save(tmp_path / "r.json", [record(seed=42, acc=0.10),
                                                record(seed=43, acc=0.45)],
                          session.Settings(budget="quick"))
    c = reference.Comparison(reference.load(path))
    c.run([dict(record(seed=44, acc=0.3))], session.Settings(budget="quick"))
    row = next(r for r in c.rows if r[1] == "test_acc")
    assert row[-1] == "unchecked" and "cannot tell a stalled net" in c.report()


def test_a_ratio_that_underflowed_is_not_saved(tmp_path):
    """A float32 ratio of 0 at depth is an underflow; the reference keeps what it can use."""
    path = reference.save(tmp_path / "r.json", [record(ratio=(0.0, 1.0))],
                          session.Settings(budget="quick"))
    entry = reference.load(path)["budgets"]["quick"]["remedies"]["relu"]
    assert "grad_ratio_init" not in entry and entry["grad_ratio_final"]["values"] == {"42": 1.0}


def test_a_declared_cause_is_proven_by_intervention():
    """init_std10 (saturated) is fixed by a smaller init (init_std1), not by clipping
    (clip_std10): held when the session ran all three at the same depth and seed."""
    def rec(name, acc, depth=7, seed=42):
        return {"remedy": name, "key": f"{name}-depth{depth}", "depth": depth, "seed": seed,
                "budget": "sweep", "metrics": {"whole_val_acc": acc}}

    def mine(found):  # clip_std10 declares its own cause too
        return [e for e in found if e["text"].startswith("init_std10")]

    sweep = session.Settings(budget="sweep")
    runs = [rec("init_std10", 0.27), rec("init_std1", 0.63), rec("clip_std10", 0.10)]
    [e] = mine(session_checks.interventions(runs, sweep))
    assert e["held"] is True and "fixed by init_std1; not by clip_std10" in e["text"]
    assert "init_std1 0.630" in e["detail"]
    # clipping that also trained would disprove the cause; so would a fix that did not
    [e] = mine(session_checks.interventions([runs[0], runs[1], rec("clip_std10", 0.6)], sweep))
    assert e["held"] is False
    [e] = mine(session_checks.interventions([runs[0], rec("init_std1", 0.2), runs[2]], sweep))
    assert e["held"] is False
    [e] = mine(session_checks.interventions(runs[:1], sweep))
    assert e["held"] is None and "needs init_std1, clip_std10 at depth 7, seed 42" in e["why"]
    assert session_checks.interventions(runs, session.Settings(budget="sweep", epochs=2)) == []
    assert session_checks.interventions(runs, session.Settings(budget="quick")) == []
