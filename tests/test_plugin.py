"""The pytest plugin, run in a subprocess as a user would (pytester), on tiny real data."""

import json
import re
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


def tiny(remedy: str = "baseline", seeds: int = 2) -> list[str]:
    """Options for a tiny session: one epoch on 512 samples per split, no figures."""
    return ["-p", "no:cacheprovider", "--vg-budget", "quick", "--vg-epochs", "1",
            "--vg-limit", "512", "--vg-remedy", remedy, "--vg-seeds", str(seeds),
            "--vg-no-figures"]


TINY = tiny()


def summary_row(out: str, remedy: str) -> str:
    """The summary table's row for remedy (its seeds column follows the name)."""
    return next(line for line in out.splitlines() if re.match(rf"{remedy}\s+\d", line))


@pytest.fixture(autouse=True)
def not_an_xdist_worker(monkeypatch):
    """When these tests run under xdist, the pytest they start must not think it is a worker."""
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def suite(pytester, real_data):
    """A copy of benchmarks/test_remedies.py with the root conftest beside it."""
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    return pytester


def test_options_in_help(pytester):
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    out = pytester.runpytest_subprocess("--help").stdout.str()
    assert "vgbench: vanishing-gradient remedies" in out
    for opt in ("--vg-budget", "--vg-epochs", "--vg-seeds", "--vg-device", "--vg-remedy",
                "--vg-out", "--vg-compare", "--vg-save"):
        assert opt in out


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_tiny_run_prints_the_summary(suite, xdist):
    res = suite.runpytest_subprocess(*TINY, *xdist, "--vg-out", "out",
                                     "--benchmark-json", "bench.json")
    res.assert_outcomes(passed=2)
    out = res.stdout.str()
    assert "vgbench summary" in out and "test acc (95% CI)" in out
    row = summary_row(out, "baseline")
    assert "42,43" in row and row.rstrip().endswith("held")
    summary = json.loads((suite.path / "out" / "summary.json").read_text())
    assert [r["remedy"] for r in summary["rows"]] == ["baseline"]
    assert (suite.path / "out" / "summary.md").read_text().startswith("# vgbench summary")
    assert (suite.path / "out" / "baseline-seed43" / "history.json").is_file()
    # epoch timings reach pytest-benchmark's table and JSON, from the workers under xdist
    assert "test_remedy[baseline-seed42]" in out and "Rounds" in out
    bench = json.loads((suite.path / "bench.json").read_text())["benchmarks"]
    assert sorted(b["param"] for b in bench) == ["baseline-seed42", "baseline-seed43"]
    assert all(b["stats"]["rounds"] == 1 and b["stats"]["mean"] > 0 for b in bench)


def test_a_false_expectation_fails_like_a_finding(suite):
    suite.makeconftest(
        (ROOT / "conftest.py").read_text() + "\n"
        "import dataclasses\n"
        "from vgbench import registry\n"
        "from vgbench.expect import Check\n"
        "registry.REMEDIES['baseline'] = dataclasses.replace(registry.REMEDIES['baseline'],\n"
        "    quick=(Check('test_acc', '>=', 0.9, 'made false on purpose'),))\n"
    )
    res = suite.runpytest_subprocess(*TINY, "--vg-seeds", "1", "--vg-out", "out")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "baseline (seed 42): expected test_acc >= 0.9, observed 0." in out
    assert "[made false on purpose]" in out
    assert "FAILED (1)" in summary_row(out, "baseline")


def test_bad_options_are_usage_errors(suite):
    res = suite.runpytest_subprocess("--vg-remedy", "rellu")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown remedy 'rellu'; choose from baseline" in res.stderr.str()
    res = suite.runpytest_subprocess("--vg-compare", "missing.json")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "no such file; write one with --vg-save" in res.stderr.str()


def test_save_then_compare_then_a_moved_metric_fails(suite):
    args = [*TINY, "--vg-seeds", "1", "-n", "2"]
    suite.runpytest_subprocess(*args, "--vg-save", "ref.json").assert_outcomes(passed=1)
    ref = json.loads((suite.path / "ref.json").read_text())
    entry = ref["budgets"]["quick"]["remedies"]["baseline"]
    assert set(entry) >= {"test_acc", "grad_ratio_init", "grad_ratio_final"}
    res = suite.runpytest_subprocess(*args, "--vg-compare", "ref.json")
    assert res.ret == 0, res.stdout.str()
    assert "vgbench reference comparison" in res.stdout.str()
    entry["test_acc"]["values"]["42"] += 0.2  # as if the code had changed the outcome
    (suite.path / "ref.json").write_text(json.dumps(ref))
    res = suite.runpytest_subprocess(*args, "--vg-compare", "ref.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    out = res.stdout.str()
    assert "MOVED" in out and "moved beyond tolerance: baseline test_acc" in out
    page = (suite.path / "vg-out" / "report.html").read_text()
    table = page.split("Comparison with the reference")[1]
    assert "MOVED" in table.split("<tr>")[2]  # the moved case first, below the header row


def test_benchmark_autosave_and_compare_under_xdist(suite):
    args = [*TINY, "--vg-seeds", "1", "-n", "2", "--benchmark-storage", "file://store"]
    suite.runpytest_subprocess(*args, "--benchmark-autosave").assert_outcomes(passed=1)
    saved = list((suite.path / "store").rglob("*.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["benchmarks"][0]["param"] == "baseline-seed42"
    res = suite.runpytest_subprocess(*args, "--benchmark-compare",
                                     "--benchmark-compare-fail=mean:10000%")
    res.assert_outcomes(passed=1)
    assert "Comparing against benchmarks from" in res.stdout.str() + res.stderr.str()
    assert "NOW" in res.stdout.str()  # the table shows the saved run beside this one


INTERRUPT_THIRD = '''
import pytest

seen = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    seen.append(item.nodeid)
    if len(seen) == 3:
        raise KeyboardInterrupt
'''


def _conftest_with(suite, extra: str) -> None:
    suite.makeconftest((ROOT / "conftest.py").read_text() + "\n" + extra)


def test_an_interrupted_session_still_writes_the_summary(suite):
    _conftest_with(suite, INTERRUPT_THIRD)
    res = suite.runpytest_subprocess(*TINY, "--vg-seeds", "4", "--vg-out", "out",
                                     "--vg-save", "ref.json")
    assert res.ret == pytest.ExitCode.INTERRUPTED
    out = res.stdout.str()
    assert "vgbench summary" in out and "INCOMPLETE: 2 case(s) missing" in out
    summary = json.loads((suite.path / "out" / "summary.json").read_text())
    assert summary["complete"] is False
    assert summary["missing"] == ["baseline-seed44", "baseline-seed45"]
    assert summary["rows"][0]["seeds"] == [42, 43]  # what finished is kept
    assert "--vg-save: RuntimeError: refused: 2 case(s) produced no result" in out
    assert not (suite.path / "ref.json").exists()


def test_an_error_while_saving_keeps_the_table_and_fails_the_session(suite):
    _conftest_with(suite, "import vgbench.reference as r\n"
                          "def boom(*a, **k):\n    raise OSError('disk full')\n"
                          "r.save = boom\n")
    res = suite.runpytest_subprocess(*TINY, "--vg-seeds", "1", "--vg-out", "out",
                                     "--vg-save", "ref.json")
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    out = res.stdout.str()
    assert "vgbench summary" in out and "vgbench: error: --vg-save: OSError: disk full" in out
    assert "Traceback" not in out
    assert json.loads((suite.path / "out" / "summary.json").read_text())["complete"] is True


def test_a_corrupt_reference_is_a_usage_error_before_training(suite):
    ref = {"format": "vgbench-reference/1", "budgets": {"quick": {
        "epochs_override": 1, "limit": 512, "remedies": {"baseline": {
            "epochs": 1, "grad_ratio_init": {"values": {"42": 0}, "tol_log10": 0.5}}}}}}
    (suite.path / "ref.json").write_text(json.dumps(ref))
    res = suite.runpytest_subprocess(*TINY, "--vg-compare", "ref.json", "--vg-out", "out")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    err = res.stderr.str()
    assert ("budgets.quick.remedies.baseline.grad_ratio_init.values.42: 0 is not positive"
            in err)
    assert not (suite.path / "out").exists()  # nothing trained


@pytest.mark.parametrize("args, match", [
    (["--vg-epochs", "-1"], "argument --vg-epochs: must be >= 0, got -1"),
    (["--vg-threads", "0"], "argument --vg-threads: must be >= 1, got 0"),
    (["--vg-limit", "0"], "argument --vg-limit: must be >= 1, got 0"),
    (["--vg-limit", "100"], "--vg-limit 100 is below baseline's batch size 512"),
    (["--vg-seeds", "0"], "argument --vg-seeds: must be >= 1, got 0"),
    (["--vg-target", "1.5"], "argument --vg-target: must be in (0, 1], got 1.5"),
    (["--vg-target", "0"], "argument --vg-target: must be in (0, 1], got 0"),
    (["--vg-depth", "3,0"], "argument --vg-depth: must be >= 1, got 0"),
    (["--vg-out", "afile"], "--vg-out afile is a file, not a folder"),
    (["--vg-save", "."], "--vg-save . is a folder; name a file"),
])
def test_bad_numbers_and_paths_are_usage_errors(suite, args, match):
    (suite.path / "afile").write_text("x")
    res = suite.runpytest_subprocess("--vg-remedy", "baseline", *args)
    assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str()
    assert match in res.stderr.str()


def test_save_merges_and_compare_wants_every_case(suite):
    base = [*TINY, "--vg-seeds", "1"]
    suite.runpytest_subprocess(*base, "--vg-save", "ref.json").assert_outcomes(passed=1)
    # a second session with another seed merges into the same budget section
    suite.runpytest_subprocess(*tiny(seeds=2), "--vg-save", "ref.json")
    ref = json.loads((suite.path / "ref.json").read_text())
    entry = ref["budgets"]["quick"]["remedies"]["baseline"]
    assert sorted(entry["test_acc"]["values"]) == ["42", "43"]
    assert set(entry["env"]["42"]) >= {"torch", "threads", "device", "cpu", "platform"}
    # same seed, same machine: the comparison is exact
    res = suite.runpytest_subprocess(*base, "--vg-compare", "ref.json")
    assert res.ret == 0 and "ok (exact)" in res.stdout.str()
    # a case the reference lacks fails, unless allowed
    args = [*tiny("relu", 1), "--vg-compare", "ref.json"]
    res = suite.runpytest_subprocess(*args)
    assert res.ret == pytest.ExitCode.TESTS_FAILED
    assert "no reference for relu" in res.stdout.str()
    assert suite.runpytest_subprocess(*args, "--vg-allow-new").ret == 0


def test_batched_seeds_each_get_their_epoch_times(suite):
    """With --vg-batch-seeds on, the first seed's case trains the batch; the second takes
    its result, and the batch's epoch times into its own benchmark (no 'fixture was not
    used' warning, both seeds in the JSON)."""
    res = suite.runpytest_subprocess(*TINY, "--vg-batch-seeds", "on", "--vg-out", "out",
                                     "--benchmark-json", "bench.json")
    res.assert_outcomes(passed=2)
    assert "was not used" not in res.stdout.str()
    bench = json.loads((suite.path / "bench.json").read_text())["benchmarks"]
    assert sorted(b["param"] for b in bench) == ["baseline-seed42", "baseline-seed43"]
    stats = [b["stats"] for b in bench]
    assert [s["rounds"] for s in stats] == [1, 1]
    # the batch's one epoch: timed around step() for the first, inside it for the second
    assert stats[1]["min"] == pytest.approx(stats[0]["min"], rel=0.2)
    seed43 = json.loads((suite.path / "out" / "baseline-seed43" / "history.json").read_text())
    assert seed43["batched_with"] == ["baseline:42", "baseline:43"]


def test_under_xdist_a_group_trains_once_on_one_worker(suite):
    """baseline and init_std1 (they differ only in init) at 2 seeds: one group of 4 cases.
    Its scheduler gives them one worker, whose first case trains the group: every member's
    epoch time is that one training's (one worker each, every worker would train it)."""
    res = suite.runpytest_subprocess(*TINY, "--vg-remedy", "init_std1", "--vg-batch-seeds",
                                     "on", "--vg-out", "out", "-n", "2", "-v")
    outcomes = res.parseoutcomes()  # init_std1's checks, set for its budget, fail at 1 epoch
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 4, outcomes
    assert "was not used" not in res.stdout.str()
    found = [re.search(r"\[(gw\d)\] .*(?:PASSED|FAILED) .*\[(\S+)\]", line)
             for line in res.stdout.lines]
    workers = {m.group(2): m.group(1) for m in found if m}
    assert len(workers) == 4 and len(set(workers.values())) == 1, workers
    hs = [json.loads((suite.path / "out" / c / "history.json").read_text()) for c in workers]
    assert len({tuple(h["epoch_time"]) for h in hs}) == 1
    assert {tuple(h["batched_with"]) for h in hs} == {
        ("baseline:42", "baseline:43", "init_std1:42", "init_std1:43")}
