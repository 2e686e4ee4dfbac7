"""Summary statistics, the table, and reference files, without pytest-in-pytest."""

import json

import pytest

from vgbench import harness, reference


def record(remedy="relu", seed=42, acc=0.8, ratio=(1.0, 0.5), failures=(), to_target=12):
    return {"remedy": remedy, "seed": seed, "budget": "quick", "device": "cpu", "epochs": 5,
            "metrics": {"test_acc": acc, "best_val_acc": acc + 0.01,
                        "grad_ratio_init": ratio[0], "grad_ratio_final": ratio[1]},
            "checks": ["test_acc >= 0.7"], "failures": list(failures),
            "epoch_time": [1.0, 2.0, 3.0], "epochs_to_target": to_target, "target": 0.7}


def test_mean_ci95_by_hand():
    mean, half = harness.mean_ci95([0.80, 0.82, 0.84])
    # sd = 0.02, t(0.975, df=2) = 4.303 -> 4.303 * 0.02 / sqrt(3)
    assert mean == pytest.approx(0.82) and half == pytest.approx(0.049687, rel=1e-4)
    assert harness.mean_ci95([0.5]) == (0.5, 0.0)


def test_summary_rows_and_table():
    rows = harness.summarize([
        record(seed=43, acc=0.82), record(seed=42, acc=0.80, to_target=None),
        record("baseline", 42, 0.1, (1e-6, 2e-6), failures=["baseline (seed 42): ..."]),
    ])
    assert [r["remedy"] for r in rows] == ["baseline", "relu"]  # registry order
    relu = rows[1]
    assert relu["seeds"] == [42, 43] and relu["verdict"] == "held"
    assert relu["median_epoch_s"] == 2.0
    text = harness.table(rows)
    assert "0.810 +- " in text and "12 (1/2)" in text and "1.0e-06 -> 2.0e-06" in text
    assert "FAILED (1)" in text


def test_write_summary(tmp_path):
    rows = harness.summarize([record(failures=["relu (seed 42): expected x"])])
    js, md, png = harness.write_summary(rows, tmp_path, "budget quick")
    assert json.loads(js.read_text())["rows"][0]["remedy"] == "relu"
    assert "## Failed expectations" in md.read_text()
    assert png.stat().st_size > 1000


def test_settings_validate_names_and_budget():
    with pytest.raises(ValueError, match="unknown remedy 'x'"):
        harness.Settings(remedies=("x",))
    with pytest.raises(ValueError, match="unknown budget"):
        harness.Settings(budget="long")
    s = harness.Settings(budget="quick", n_seeds=3, remedies=("relu", "baseline"))
    assert s.seeds == [42, 43, 44] and s.names == ["baseline", "relu"]


def test_worker_threads_never_oversubscribe():
    assert harness.worker_threads(2, cores=2) == 1
    assert harness.worker_threads(3, cores=16) == 5
    assert harness.worker_threads(8, cores=2) == 1


def test_reference_round_trip_and_tolerances(tmp_path):
    settings = harness.Settings(budget="quick")
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
    reference.save(path, [record()], harness.Settings(budget="quick"))
    reference.save(path, [record()], harness.Settings(budget="full"))
    assert set(reference.load(path)["budgets"]) == {"quick", "full"}
    path.write_text("{not json")
    with pytest.raises(reference.ReferenceError, match="not valid JSON"):
        reference.load(path)
    with pytest.raises(reference.ReferenceError, match="not valid JSON"):
        reference.save(path, [record()], harness.Settings(budget="quick"))
    assert path.read_text() == "{not json"  # the user's file is never overwritten


def test_comparison_refuses_a_different_setup(tmp_path):
    path = reference.save(tmp_path / "r.json", [record()], harness.Settings(budget="quick"))
    c = reference.Comparison(reference.load(path))
    c.run([record()], harness.Settings(budget="quick", epochs=3))
    assert c.failed and "not comparable" in c.report()
    c = reference.Comparison(reference.load(path))
    c.run([record()], harness.Settings(budget="full"))
    assert c.failed and "has no 'full' budget" in c.report()
