"""The pytest side of vgbench: --vg-* options, the remedy cases, epoch timing, the summary.

Only hooks and fixtures live here; the work is in vgbench.harness and vgbench.reference.

pytest-benchmark disables itself under pytest-xdist. Our workers then time every epoch
themselves (device synchronized, like benchmark.pedantic would) and send the times with the
test report; the controller adds them to pytest-benchmark's session, so its table,
--benchmark-json, --benchmark-autosave and --benchmark-compare(-fail) see them.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from vgbench import data, files, harness, reference, registry, report
from vgbench.config import option_type

SETTINGS = pytest.StashKey["harness.Settings"]()
USER_REMEDIES = pytest.StashKey[list]()
NEW_BENCHMARK_FOLDER = pytest.StashKey["Path | None"]()
RECORD_KEY = "vgbench_record"
CRASH_KEY = "vgbench_crash"
"""user_properties key of a case that raised: harness.crash_info's dict."""


def _depths(text: str) -> list[int]:
    """--vg-depth: one depth or a comma list (3,7,15,30)."""
    return [option_type(int, lo=1)(part.strip()) for part in text.split(",") if part.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("vgbench", "vgbench: vanishing-gradient remedies")
    g.addoption("--vg-budget", choices=list(harness.BUDGETS), default="full",
                help="full: the protocol's 100 epochs (default); quick: "
                     f"{registry.QUICK_EPOCHS} epochs and the checks that hold that early; "
                     f"sweep: {registry.SWEEP_EPOCHS} epochs at depths "
                     f"{','.join(map(str, registry.SWEEP_DEPTHS))} (or --vg-depth)")
    g.addoption("--vg-epochs", type=option_type(int, lo=0), default=None, metavar="N",
                help="override the budget's epochs (per stage for layerwise; 0: evaluate the "
                     "untrained net); the budget's checks still apply")
    g.addoption("--vg-seeds", type=option_type(int, lo=1), default=1, metavar="K",
                help="run seeds 42..42+K-1, each its own test (default 1)")
    g.addoption("--vg-depth", type=_depths, action="append", default=[], metavar="D",
                help="sweep these depths (hidden layers): repeatable or a comma list, e.g. "
                     "3,7,15,30; ids become NAME-depthD-seedS (default: each remedy's own)")
    g.addoption("--vg-device", default="auto", choices=["auto", "cpu", "cuda"],
                help="where to train (default auto: cuda if available)")
    g.addoption("--vg-set", default="course", choices=list(harness.SETS),
                help="which built-in remedies run: course (default, the protocol's), "
                     "literature, control (the diagnosis' positive controls), or all; user "
                     "remedies always join")
    g.addoption("--vg-remedy", action="append", default=[], metavar="NAME",
                help="only this remedy (repeatable); see `python -m vgbench list`")
    g.addoption("--vg-remedies", action="append", default=[], metavar="FILE",
                help="add the remedies of this Python file (its REMEDIES list; repeatable)")
    g.addoption("--vg-out", default="vg-out", metavar="DIR",
                help="histories, figures, summary.json and summary.md (default vg-out)")
    g.addoption("--vg-target", type=option_type(float, lo=0, hi=1, lo_open=True),
                default=0.70, metavar="ACC",
                help="the summary's 'epochs to val ACC' column, in (0, 1] (default 0.70)")
    g.addoption("--vg-limit", type=option_type(int, lo=1), default=None, metavar="N",
                help="cap each data split at N samples, at least the batch size (smoke "
                     "tests; checks still apply)")
    g.addoption("--vg-data-dir", default=None, metavar="DIR",
                help="folder with the Fashion-MNIST IDX files (default: usual lookup)")
    g.addoption("--vg-no-figures", action="store_true", help="skip the per-run PNG figures")
    g.addoption("--vg-threads", type=option_type(int, lo=1), default=None, metavar="N",
                help="torch threads per process (default: each host's cores // its xdist "
                     "workers)")
    g.addoption("--vg-batch-seeds", default="auto", choices=["auto", "on", "off"],
                help="on: train a remedy's seeds as one batched model (layerwise and user "
                     "optimizers never batch); auto (default) and off: one by one, which "
                     "with CUDA graphs was faster on an H200")
    g.addoption("--vg-compare", default=None, metavar="FILE",
                help="fail cases that moved beyond the tolerances in this reference file")
    g.addoption("--vg-allow-new", action="store_true",
                help="with --vg-compare: accept cases the reference has no entry for")
    g.addoption("--vg-save", default=None, metavar="FILE",
                help="merge this session's results into this reference file (only from a "
                     "session where every case finished and held)")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from vgbench import hookspec

    pluginmanager.add_hookspecs(hookspec)


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _register_user_remedies(config: pytest.Config) -> list[str]:
    """Remedies from pytest_vgbench_remedies implementations and --vg-remedies files."""
    added: list[str] = []
    try:
        for impl in config.hook.pytest_vgbench_remedies.get_hookimpls():
            origin = getattr(impl.plugin, "__file__", None) or impl.plugin_name
            kwargs = {"config": config} if "config" in impl.argnames else {}
            added += registry.register(impl.function(**kwargs) or [], origin)
        for path in config.getoption("vg_remedies"):
            added += registry.register(registry.load_file(path), path)
    except (registry.RemedyError, ValueError) as exc:
        registry.unregister(added)
        raise pytest.UsageError(f"vgbench user remedies: {exc}") from None
    return added


def _benchmark_folder(config: pytest.Config) -> Path | None:
    """pytest-benchmark's storage folder, where it is a local one (file://...)."""
    storage = str(config.getoption("benchmark_storage", None) or "")
    return Path(storage.removeprefix("file://")) if storage.startswith("file://") else None


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's, which creates its folder
def pytest_configure(config: pytest.Config) -> None:
    folder = _benchmark_folder(config)
    config.stash[NEW_BENCHMARK_FOLDER] = folder if folder and not folder.exists() else None
    config.stash[USER_REMEDIES] = _register_user_remedies(config)
    try:
        settings = harness.Settings(
            budget=config.getoption("vg_budget"), epochs=config.getoption("vg_epochs"),
            n_seeds=config.getoption("vg_seeds"), device=config.getoption("vg_device"),
            remedies=tuple(config.getoption("vg_remedy")), out=config.getoption("vg_out"),
            target=config.getoption("vg_target"), limit=config.getoption("vg_limit"),
            data_dir=config.getoption("vg_data_dir"),
            figures=not config.getoption("vg_no_figures"), set=config.getoption("vg_set"),
            depths=tuple(d for ds in config.getoption("vg_depth") for d in ds),
            batch_seeds=config.getoption("vg_batch_seeds"),
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
    _check_remote_args(config)
    comparison = None
    try:
        if config.getoption("vg_compare"):
            comparison = reference.Comparison(reference.load(config.getoption("vg_compare")),
                                              config.getoption("vg_allow_new"))
        if config.getoption("vg_save"):
            reference.check_save_target(config.getoption("vg_save"))
        if not config.getoption("help") and not config.getoption("collectonly"):
            files.check_writable(settings.out, "--vg-out")
    except ValueError as exc:  # ReferenceError included
        raise pytest.UsageError(str(exc)) from None
    config.pluginmanager.register(_Controller(config, settings, comparison), "vgbench-controller")


def _check_remote_args(config: pytest.Config) -> None:
    """pytest-xdist rewrites every argument that is a local path relative to its rsync
    roots (a feature deprecated since pytest-xdist 3) for workers on other hosts, and stops
    with an INTERNALERROR when it cannot; say what to write instead, before it does."""
    if config.getoption("dist", "no") == "no" or not config.getoption("tx", None):
        return
    try:
        import execnet
        from xdist.workermanage import parse_tx_spec_config
    except ImportError:
        return
    specs = [execnet.XSpec(s) for s in parse_tx_spec_config(config)]
    if not any(not s.popen or s.chdir for s in specs):
        return  # local workers only
    local = [a for a in config.invocation_params.args
             if not a.startswith("-") and os.path.exists(a.split("::")[0])]
    if local:
        raise pytest.UsageError(
            f"with workers on other hosts (--tx ssh=/socket= or popen with chdir=), "
            f"pytest-xdist cannot pass the local path {local[0]!r}: name the tests with "
            "-o testpaths=benchmarks instead of a path argument, and give path options as "
            "--option=value (e.g. --vg-compare=benchmarks/reference.json); see the README, "
            "'Across machines'")


def pytest_unconfigure(config: pytest.Config) -> None:
    registry.unregister(config.stash.get(USER_REMEDIES, []))
    folder = config.stash.get(NEW_BENCHMARK_FOLDER, None)
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()  # pytest-benchmark made it at start and saved nothing in it


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash[SETTINGS]
    if "vg_remedy" in metafunc.fixturenames:
        names = settings.names
        metafunc.parametrize("vg_remedy", names, ids=names)
        depths = settings.sweep_depths
        if depths:
            metafunc.parametrize("vg_depth", depths, ids=[f"depth{d}" for d in depths])
    if "vg_seed" in metafunc.fixturenames:
        seeds = settings.seeds
        metafunc.parametrize("vg_seed", seeds, ids=[f"seed{s}" for s in seeds])


def _case(item) -> harness.Case | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "vg_remedy" not in params:
        return None
    return harness.Case(params["vg_remedy"], params.get("vg_seed", harness.DEFAULT_SEED),
                        params.get("vg_depth"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Longest cases first (layerwise trains 4x, deep nets cost more), so xdist does not
    start one last."""
    settings = config.stash[SETTINGS]

    def cost(item) -> float:
        case = _case(item)
        return 0 if case is None else -harness.case_cost(settings, case)

    items.sort(key=cost)  # stable: registry order among equals, other tests untouched
    for item in items:  # a batch of seeds runs in one process (see pytest_xdist_make_scheduler)
        case = _case(item)
        if case is not None and settings.batched(registry.get(case.remedy), settings.config(
                registry.get(case.remedy), case.seed, case.depth)):
            item.add_marker(pytest.mark.xdist_group(case.key))
    controller = config.pluginmanager.get_plugin("vgbench-controller")
    if controller is not None:  # no xdist: this process collected the cases itself
        controller.expect(item.nodeid for item in items if _case(item) is not None)
    bs = getattr(config, "_benchmarksession", None)
    if bs is not None and any(cost(item) for item in items):
        # pytest-benchmark >= 5.3 would warn at exit that it was off under xdist; our
        # workers time the epochs and hand them over, so that warning would mislead
        bs.xdist_benchmark_found = False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With seeds trained batched, all of a remedy's seeds go to one worker (xdist's
    loadgroup scheduling, over the groups marked above). Else, for xdist's default 'load'
    mode, longest case first to whichever worker is free (_LongestFirst)."""
    settings = config.stash[SETTINGS]
    if settings.n_seeds > 1 and any(settings.batched(registry.get(n), registry.get(n).config)
                                    for n in settings.names):
        from xdist.scheduler import LoadGroupScheduling

        return LoadGroupScheduling(config, log)
    if config.getoption("dist", "no") == "load":
        return _longest_first(config, log)
    return None


def _longest_first(config: pytest.Config, log):
    """xdist's LoadScheduling, but its first round deals the (cost-sorted) cases out one
    by one, so that the two longest do not start on the same worker; afterwards each
    worker that finishes takes the longest case left. None where xdist's internals differ
    from what this expects (then xdist schedules as usual)."""
    try:
        from xdist.scheduler import LoadScheduling
    except ImportError:
        return None

    class LongestFirst(LoadScheduling):
        def schedule(self) -> None:
            if self.collection is not None or not self._check_nodes_have_same_collection():
                return super().schedule()
            self.collection = next(iter(self.node2collection.values()))
            self.pending[:] = range(len(self.collection))
            if not self.collection:
                return
            if self.maxschedchunk is None:
                self.maxschedchunk = len(self.collection)
            for _ in range(2):  # two cases each, dealt round-robin
                for node in self.nodes:
                    if self.pending:
                        self._send_tests(node, 1)
            if not self.pending:
                for node in self.nodes:
                    node.shutdown()

    if not all(hasattr(LoadScheduling, n) for n in ("_check_nodes_have_same_collection",
                                                     "_send_tests")):
        return None
    return LongestFirst(config, log)


def _host_key(spec) -> str:
    """Which host an execnet spec runs on: its ssh or socket target, else this one."""
    return getattr(spec, "ssh", None) or getattr(spec, "socket", None) or "local"


def _host_workers(config: pytest.Config) -> dict[str, int]:
    """xdist workers per host, from -n / --tx (each host sets its threads from its own
    cores)."""
    try:
        import execnet
        from xdist.workermanage import parse_tx_spec_config
    except ImportError:
        return {}
    counts: dict[str, int] = {}
    for spec in parse_tx_spec_config(config):
        key = _host_key(execnet.XSpec(spec))
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist, on the controller: tell each worker how many workers share its host."""
    counts = _host_workers(node.config)
    node.workerinput["vg_host_workers"] = counts.get(_host_key(node.gateway.spec), 1)


def _set_threads(config: pytest.Config) -> None:
    """Before each case (idempotent): workers x threads <= this host's cores, or
    --vg-threads."""
    import torch

    threads = config.getoption("vg_threads")
    if threads is None and _is_worker(config):
        n_workers = config.workerinput.get("vg_host_workers") or int(
            os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        threads = harness.worker_threads(n_workers) if n_workers > 1 else None
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture
def vg_inspect(request: pytest.FixtureRequest):
    """For your own model: vg_inspect(model, (inputs, targets), **bounds) runs
    vgbench.assert_gradient_flow (the verdict must be healthy unless allow= says otherwise;
    its AssertionError names the layer, the verdict and the numbers) and returns the report;
    each report is kept in the test's user_properties under 'vgbench_inspect'."""
    from vgbench import inspection

    def check(model, batch, **bounds) -> inspection.Report:
        __tracebackhide__ = True  # the failure shows the message, not vgbench's frames
        try:
            report = inspection.assert_gradient_flow(model, batch, **bounds)
        except AssertionError as exc:
            request.node.user_properties.append(("vgbench_inspect", str(exc)))
            raise
        request.node.user_properties.append(("vgbench_inspect", report.to_dict()))
        return report

    return check


@pytest.fixture
def vg_settings(request: pytest.FixtureRequest) -> harness.Settings:
    """This session's --vg-* settings."""
    return request.config.stash[SETTINGS]


@pytest.fixture
def vg_depth() -> int | None:
    """The case's depth; None (each remedy's own) unless --vg-depth or the sweep budget
    parametrizes it."""
    return None


@pytest.fixture
def vg_run(request, benchmark, vg_settings, vg_remedy, vg_depth, vg_seed):
    """Call it to train (vg_remedy, vg_depth, vg_seed), timed per epoch; returns the case's
    record."""

    def go() -> dict:
        _set_threads(request.config)

        def driver(run):
            if benchmark.disabled:  # under xdist: run.step() times each epoch itself
                benchmark.pedantic(lambda: [run.step() for _ in iter(lambda: run.done, True)])
            elif run.cfg.total_epochs:  # one round per epoch, the device synced in step()
                benchmark.pedantic(run.step, rounds=run.cfg.total_epochs, iterations=1)
        case = harness.Case(vg_remedy, vg_seed, vg_depth)
        try:
            record = harness.run_case(case, vg_settings, driver)
        except Exception as exc:
            request.node.user_properties.append((CRASH_KEY, harness.crash_info(case, exc)))
            if not benchmark._mode:  # it never reached timing: no 'fixture not used' warning
                benchmark._mode = "vgbench: the case crashed before timing"
            raise
        if not benchmark.disabled and not benchmark._mode and record["epoch_time"]:
            _book_epoch_times(benchmark, record["epoch_time"])
        node = request.node
        record.update(nodeid=node.nodeid, name=node.name, param=node.callspec.id,
                      params={"vg_remedy": vg_remedy, "vg_depth": vg_depth,
                              "vg_seed": vg_seed})
        benchmark.extra_info.update(_extra_info(record))
        node.user_properties.append((RECORD_KEY, record))
        return record

    return go


def _book_epoch_times(benchmark, seconds: list[float]) -> None:
    """A seed whose batch trained in an earlier case (--vg-batch-seeds on): that batch's
    epoch times are this case's too; into its benchmark, as its driver would have timed
    them (pytest-benchmark has no public call for times measured elsewhere)."""
    benchmark._mode = "vgbench: the epoch times of its batch of seeds"
    stats = benchmark._make_stats(1)
    for s in seconds:
        stats.update(s)


def _extra_info(record: dict) -> dict:
    """What pytest-benchmark's JSON keeps beside a case's epoch times."""
    extra = {k: record[k] for k in ("remedy", "depth", "seed", "budget", "device", "epochs")}
    extra["test_acc"] = record["metrics"]["test_acc"]
    extra["diverged_epoch"] = record["diverged_epoch"]
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
    """Registered on the controller (or the only process): collects records, reports.

    Whatever ends the session (failures, an interrupt, a bad reference, an unwritable
    --vg-save), the summary is written and printed with what finished; problems at the end
    become one-line errors and a failing exit status, never a traceback that hides it.
    """

    def __init__(self, config: pytest.Config, settings: harness.Settings, comparison):
        self.config, self.settings, self.comparison = config, settings, comparison
        self.records: list[dict] = []
        self.crashed: list[dict] = []
        self.expected: set[str] = set()
        self.errors: list[str] = []
        self.rows: list[dict] = []
        self.depth: list[dict] = []
        self.expectations: list[dict] = []
        self.status: dict = {}
        self.paths: list = []
        self.data_checked = False
        self.started = time.perf_counter()

    def expect(self, nodeids) -> None:
        """Cases collected (by this process, or by an xdist worker)."""
        self.expected.update(nodeids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        suffixes = {f"[{case.id}]" for case in self.settings.cases}
        mine = [i for i in ids if any(i.endswith(s) for s in suffixes)]
        self.expect(mine)
        if mine and not self.data_checked:  # before any worker runs a case
            self.data_checked = True
            try:
                data.ensure_local(self.settings.data_dir)
            except data.DataError as exc:
                self.errors.append(f"data: {str(exc).splitlines()[0]}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, record in report.user_properties:
            if key == CRASH_KEY:
                self.crashed.append(dict(record, nodeid=report.nodeid))
            if key == RECORD_KEY:
                self.records.append(record)
                _add_to_benchmark_session(self.config, record)
                try:
                    harness.bring_home(record, self.settings)
                except Exception as exc:  # noqa: BLE001 - reported, never hides the summary
                    self.errors.append(f"could not write {record['history']} here: "
                                       f"{type(exc).__name__}: {exc}")

    def _attempt(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one line in the report, the rest goes on
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        settings, records = self.settings, self.records
        done = {r["nodeid"] for r in records} | {c["nodeid"] for c in self.crashed}
        missing = sorted(self.expected - done)
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        self.status = {"complete": (not missing and not interrupted and bool(records)
                                    and not self.crashed),
                       "missing": [m.rsplit("[", 1)[-1].rstrip("]") for m in missing],
                       "errors": self.crashed}
        if interrupted and not missing:
            self.status["missing"] = ["(session interrupted)"]
        if not records and not self.crashed:
            return
        if records:
            self.rows = harness.summarize(records)
            self.depth = harness.depth_rows(records)
            self.expectations = (harness.depth_expectations(records, settings)
                                 + harness.interventions(records, settings))
        for e in self.expectations:
            if e["held"] is False:
                self.errors.append(f"expectation failed: {e['text']} ({e['detail']})")
        if self.comparison is not None and records:
            self._attempt("--vg-compare", lambda: self.comparison.run(records, settings))
        save = self.config.getoption("vg_save")
        if save:
            self._attempt("--vg-save", lambda: self._save(save))
        self._write_summary()
        self._attempt("report", lambda: self.paths.append(
            report.write(settings.out, figures=settings.figures)))
        if self.depth and settings.figures:
            self._attempt("depth figures", lambda: self.paths.extend(
                harness.write_depth_figures(records, settings.out)))
        failed = self.errors or (self.comparison is not None and self.comparison.failed)
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_summary(self) -> None:
        settings = self.settings
        self.status["errors"] = self.crashed + [
            {"case": None, "type": "vgbench", "message": e, "file": None, "line": None}
            for e in self.errors]
        comparison = None
        if self.comparison is not None and self.records:
            comparison = {"columns": list(reference.COLUMNS),
                          "rows": self.comparison.moved_first(),
                          "text": self.comparison.report()}
        command = " ".join(shlex.quote(a) for a in ("pytest", *self.config.invocation_params.args))
        self._attempt("summary", lambda: self.paths.extend(harness.write_summary(
            self.rows, settings.out, self.header(), image=settings.figures,
            status=self.status, depth=self.depth, expectations=self.expectations,
            cases=harness.case_entries(self.records, self.crashed), command=command,
            comparison=comparison)))

    def _save(self, path: str) -> None:
        failing = [f"{r['key']}-seed{r['seed']}" for r in self.records if r["failures"]]
        if not self.status["complete"]:
            raise RuntimeError(f"refused: {len(self.status['missing'])} case(s) produced no "
                               f"result ({', '.join(self.status['missing'][:5])}); a "
                               "reference is written only from a session where every case "
                               "finished")
        if failing:
            raise RuntimeError(f"refused: {', '.join(failing)} failed its checks; a reference "
                               "is written only from a session whose expectations held")
        reference.save(path, self.records, self.settings)
        self.saved = path

    def scheduling(self) -> str:
        """Wall time against the ideal: every epoch time summed, over the workers."""
        wall = time.perf_counter() - self.started
        workers = 1
        if self.config.getoption("dist", "no") != "no":
            from xdist.workermanage import parse_tx_spec_config

            workers = len(parse_tx_spec_config(self.config))
        busy = harness.epoch_seconds(self.records)
        if not busy:
            return f"wall {wall:.0f} s"
        return (f"wall {wall:.0f} s = {wall / (busy / workers):.2f} x the epochs' "
                f"{busy:.0f} s over {workers} worker{'s' * (workers > 1)}")

    def header(self) -> str:
        settings, records = self.settings, self.records
        devices = sorted({r["device"] for r in records})
        text = (f"budget {settings.budget} (epochs: all stages, layerwise included), "
                f"device {', '.join(devices)}"
                + (f", data limited to {settings.limit} per split" if settings.limit else "")
                + f"; {self.scheduling()}")
        checks = harness.self_check_words(records)
        if checks:
            text += f"; {checks}"
        if not self.status.get("complete", True):
            gone = [f"{len(self.status['missing'])} case(s) missing"] if self.status["missing"] else []
            gone += [f"{len(self.crashed)} crashed"] if self.crashed else []
            text += f"; INCOMPLETE: {', '.join(gone) or 'no case finished'}"
        return text

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.records or self.crashed:
            tr.write_sep("=", "vgbench summary")
            tr.write_line(self.header())
            if self.rows:
                tr.write_line(harness.table(self.rows))
            if self.depth:
                tr.write_sep("-", "vgbench depth sweep")
                tr.write_line(harness.depth_table(self.depth))
            for line in harness.format_expectations(self.expectations):
                tr.write_line(f"expectation: {line}")
            if self.paths:
                tr.write_line(f"wrote {', '.join(map(str, self.paths))} and each case's "
                              f"history and figures under {self.settings.out}/")
            if self.status["missing"]:
                tr.write_line("vgbench: incomplete, no result for: "
                              + ", ".join(self.status["missing"]))
            if self.comparison is not None:
                tr.write_sep("=", "vgbench reference comparison")
                tr.write_line(self.comparison.report())
            if getattr(self, "saved", None):
                tr.write_line(f"vgbench: merged this session's results into {self.saved}")
        for c in self.crashed:
            tr.write_line(f"vgbench: {harness.error_line(c)}", red=True)
        for e in self.errors:
            tr.write_line(f"vgbench: error: {e}", red=True)
