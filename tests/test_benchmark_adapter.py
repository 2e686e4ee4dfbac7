"""vgbench.benchmark_adapter against the installed pytest-benchmark: what it relies on of
that library's private names must still do what it did. Fails when pytest-benchmark changes
them (then the adapter, and only the adapter, needs mending)."""

import json
import textwrap

pytest_plugins = ["pytester"]

USER = """
from vgbench import benchmark_adapter as ba


def test_booked(benchmark, request):
    bs = ba.session(request.config)
    assert bs is not None
    assert not ba.has_timed(benchmark)
    ba.book(benchmark, [0.25, 0.5], "timed elsewhere")
    assert ba.has_timed(benchmark)
    ba.add(bs, "test_added", "test_user.py::test_added", "p1", {"x": 1}, {"k": 1}, [1.0, 2.0])
    ba.quiet_xdist_warning(bs)


def test_crashed(benchmark):
    ba.untimed(benchmark, "the case crashed before timing")
    assert ba.has_timed(benchmark)
"""


def test_the_adapter_books_times_adds_benchmarks_and_silences_unused(pytester, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(test_user=textwrap.dedent(USER))
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--benchmark-json", "b.json")
    res.assert_outcomes(passed=2)
    assert "was not used" not in res.stdout.str() + res.stderr.str()
    bench = {b["name"]: b for b in json.loads((pytester.path / "b.json").read_text())
             ["benchmarks"]}
    assert sorted(bench) == ["test_added", "test_booked"]
    booked = bench["test_booked"]["stats"]
    assert (booked["rounds"], booked["min"], booked["max"]) == (2, 0.25, 0.5)
    added = bench["test_added"]
    assert (added["stats"]["rounds"], added["stats"]["mean"]) == (2, 1.5)
    assert added["extra_info"] == {"k": 1} and added["param"] == "p1"
    assert added["fullname"] == "test_user.py::test_added"
