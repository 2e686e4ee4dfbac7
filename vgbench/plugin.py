"""The pytest side of vgbench: --vg-* options, the remedy cases, epoch timing, the summary.

Only hooks and fixtures live here; the work is in vgbench.harness and vgbench.reference.

pytest-benchmark disables itself under pytest-xdist. Our workers then time every epoch
themselves (device synchronized, like benchmark.pedantic would) and send the times with the
test report; the controller adds them to pytest-benchmark's session, so its table,
--benchmark-json, --benchmark-autosave and --benchmark-compare(-fail) see them.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from vgbench import harness, reference, registry

SETTINGS = pytest.StashKey["harness.Settings"]()
RECORD_KEY = "vgbench_record"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("vgbench", "vgbench: vanishing-gradient remedies")
    g.addoption("--vg-budget", choices=list(harness.BUDGETS), default="full",
                help="full: the protocol's 100 epochs (default); quick: "
                     f"{registry.QUICK_EPOCHS} epochs and the checks that hold that early")
    g.addoption("--vg-epochs", type=int, default=None, metavar="N",
                help="override the budget's epochs (per stage for layerwise); the budget's "
                     "checks still apply")
    g.addoption("--vg-seeds", type=int, default=1, metavar="K",
                help="run seeds 42..42+K-1, each its own test (default 1)")
    g.addoption("--vg-device", default="auto", choices=["auto", "cpu", "cuda"],
                help="where to train (default auto: cuda if available)")
    g.addoption("--vg-remedy", action="append", default=[], metavar="NAME",
                help="only this remedy (repeatable); see `python -m vgbench list`")
    g.addoption("--vg-out", default="vg-out", metavar="DIR",
                help="histories, figures, summary.json and summary.md (default vg-out)")
    g.addoption("--vg-target", type=float, default=0.70, metavar="ACC",
                help="the summary's 'epochs to val ACC' column (default 0.70)")
    g.addoption("--vg-limit", type=int, default=None, metavar="N",
                help="cap each data split at N samples (smoke tests; checks still apply)")
    g.addoption("--vg-data-dir", default=None, metavar="DIR",
                help="folder with the Fashion-MNIST IDX files (default: usual lookup)")
    g.addoption("--vg-no-figures", action="store_true", help="skip the per-run PNG figures")
    g.addoption("--vg-threads", type=int, default=None, metavar="N",
                help="torch threads per process (default: cores // local xdist workers; "
                     "set it with --tx on other hosts)")
    g.addoption("--vg-compare", default=None, metavar="FILE",
                help="fail remedies that moved beyond the tolerances in this reference file")
    g.addoption("--vg-save", default=None, metavar="FILE",
                help="write this session's results as a new reference file")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = harness.Settings(
            budget=config.getoption("vg_budget"), epochs=config.getoption("vg_epochs"),
            n_seeds=config.getoption("vg_seeds"), device=config.getoption("vg_device"),
            remedies=tuple(config.getoption("vg_remedy")), out=config.getoption("vg_out"),
            target=config.getoption("vg_target"), limit=config.getoption("vg_limit"),
            data_dir=config.getoption("vg_data_dir"),
            figures=not config.getoption("vg_no_figures"),
        )
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError(
                "--vg-device cuda: torch sees no CUDA device (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}). Run on a machine "
                "with an NVIDIA GPU and driver, or use --vg-device cpu / auto.")
    config.stash[SETTINGS] = settings
    if _is_worker(config):
        return
    comparison = None
    compare = config.getoption("vg_compare")
    if compare:
        try:
            comparison = reference.Comparison(reference.load(compare))
        except reference.ReferenceError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_Controller(config, settings, comparison), "vgbench-controller")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS]
    if "vg_remedy" in metafunc.fixturenames:
        names = settings.names
        metafunc.parametrize("vg_remedy", names, ids=names)
    if "vg_seed" in metafunc.fixturenames:
        seeds = settings.seeds
        metafunc.parametrize("vg_seed", seeds, ids=[f"seed{s}" for s in seeds])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Longest cases first (layerwise trains 4x), so xdist does not start one last."""
    settings = config.stash[SETTINGS]

    def cost(item) -> int:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "vg_remedy" not in params:
            return 0
        return -settings.config(registry.get(params["vg_remedy"]), 0).total_epochs

    items.sort(key=cost)  # stable: registry order among equals, other tests untouched
    bs = getattr(config, "_benchmarksession", None)
    if bs is not None and any(cost(item) for item in items):
        # pytest-benchmark >= 5.3 would warn at exit that it was off under xdist; our
        # workers time the epochs and hand them over, so that warning would mislead
        bs.xdist_benchmark_found = False


def _set_threads(config: pytest.Config) -> None:
    """Before each case (idempotent): workers x threads <= cores, or --vg-threads."""
    import torch

    threads = config.getoption("vg_threads")
    n_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if threads is None and n_workers > 1:
        threads = harness.worker_threads(n_workers)
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def vg_settings(request: pytest.FixtureRequest) -> harness.Settings:
    """This session's --vg-* settings."""
    return request.config.stash[SETTINGS]


@pytest.fixture
def vg_run(request, benchmark, vg_settings, vg_remedy, vg_seed):
    """Call it to train (vg_remedy, vg_seed), timed per epoch; returns the case's record."""

    def go() -> dict:
        _set_threads(request.config)

        def driver(run):
            if benchmark.disabled:  # under xdist: run.step() times each epoch itself
                benchmark.pedantic(lambda: [run.step() for _ in range(run.cfg.total_epochs)])
            elif run.cfg.total_epochs:  # one round per epoch, the device synced in step()
                benchmark.pedantic(run.step, rounds=run.cfg.total_epochs, iterations=1)
        record = harness.run_case(vg_remedy, vg_seed, vg_settings, driver)
        node = request.node
        record.update(nodeid=node.nodeid, name=node.name, param=node.callspec.id,
                      params={"vg_remedy": vg_remedy, "vg_seed": vg_seed})
        benchmark.extra_info.update(_extra_info(record))
        node.user_properties.append((RECORD_KEY, record))
        return record

    return go


def _extra_info(record: dict) -> dict:
    """What pytest-benchmark's JSON keeps beside a case's epoch times."""
    extra = {k: record[k] for k in ("remedy", "seed", "budget", "device", "epochs")}
    extra["test_acc"] = record["metrics"]["test_acc"]
    return extra


def _benchmarks_off_for_xdist(config: pytest.Config, bs) -> bool:
    """pytest-benchmark is off only because xdist runs (not --benchmark-disable/-skip)."""
    user_off = (config.getoption("benchmark_disable", False)
                and not config.getoption("benchmark_enable", False))
    # the same test pytest-benchmark uses to switch itself off
    xdist = (config.getoption("dist", "no") != "no"
             or bool(os.environ.get("PYTEST_XDIST_WORKER")))
    return bool(bs.disabled and xdist and not user_off
                and not config.getoption("benchmark_skip", False))


def _add_to_benchmark_session(config: pytest.Config, record: dict) -> None:
    """Under xdist, pytest-benchmark is off: give it the epoch times the worker measured."""
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or not record["epoch_time"] or not _benchmarks_off_for_xdist(config, bs):
        return
    from pytest_benchmark.stats import Metadata

    extra = dict(_extra_info(record), timed_by="vgbench xdist worker")
    fixture = SimpleNamespace(name=record["name"], fullname=record["nodeid"], group=None,
                              param=record["param"], params=record["params"],
                              extra_info=extra, cprofile_stats=None, has_error=False)
    meta = Metadata(fixture, iterations=1, options=bs.options)
    for seconds in record["epoch_time"]:
        meta.stats.update(seconds)
    bs.benchmarks.append(meta)


class _Controller:
    """Registered on the controller (or the only process): collects records, reports."""

    def __init__(self, config: pytest.Config, settings: harness.Settings, comparison):
        self.config, self.settings, self.comparison = config, settings, comparison
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, record in report.user_properties:
            if key == RECORD_KEY:
                self.records.append(record)
                _add_to_benchmark_session(self.config, record)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.comparison is not None and self.records:
            self.comparison.run(self.records, self.settings)
            if self.comparison.failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        save = self.config.getoption("vg_save")
        if save and self.records:
            reference.save(save, self.records, self.settings)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.records:
            return
        settings, records = self.settings, self.records
        rows = harness.summarize(records)
        devices = sorted({r["device"] for r in records})
        header = (f"budget {settings.budget} (epochs: all stages, layerwise included), "
                  f"device {', '.join(devices)}"
                  + (f", data limited to {settings.limit} per split" if settings.limit else ""))
        tr = terminalreporter
        tr.write_sep("=", "vgbench summary")
        tr.write_line(header)
        tr.write_line(harness.table(rows))
        paths = harness.write_summary(rows, settings.out, header, image=settings.figures)
        tr.write_line(f"wrote {', '.join(map(str, paths))} and each run's history and "
                      f"figures under {settings.out}/")
        if self.comparison is not None:
            tr.write_sep("=", "vgbench reference comparison")
            tr.write_line(self.comparison.report())
        save = self.config.getoption("vg_save")
        if save:
            tr.write_line(f"vgbench: wrote reference results to {save}")
