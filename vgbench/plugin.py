"""The pytest side of vgbench: --vg-* options, the remedy cases, epoch timing, the summary.

Only hooks and fixtures live here; the work is in vgbench.session, vgbench.summary,
vgbench.controller and vgbench.reference.

pytest-benchmark disables itself under pytest-xdist. Our workers then time every epoch
themselves (device synchronized, like benchmark.pedantic would) and send the times with the
test report; the controller adds them to pytest-benchmark's session, so its table,
--benchmark-json, --benchmark-autosave and --benchmark-compare(-fail) see them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vgbench import benchmark_adapter, files, options, progress, reference, registry, session
from vgbench.controller import CRASH_KEY, RECORD_KEY, Controller

SETTINGS = pytest.StashKey["session.Settings"]()
USER_REMEDIES = pytest.StashKey[list]()
NEW_BENCHMARK_FOLDER = pytest.StashKey["Path | None"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add(parser)


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
        settings = options.settings(config.getoption)
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
    controller = Controller(config, settings, comparison)
    controller.show_progress(config.getoption("vg_progress"))
    config.pluginmanager.register(controller, "vgbench-controller")


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
            "--option=value (e.g. --vg-compare=benchmarks/reference.json); see "
            "docs/multihost.md")


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


def _case(item) -> session.Case | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "vg_remedy" not in params:
        return None
    return session.Case(params["vg_remedy"], params.get("vg_seed", session.DEFAULT_SEED),
                        params.get("vg_depth"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Longest cases first (layerwise trains 4x, deep nets cost more), so xdist does not
    start one last."""
    settings = config.stash[SETTINGS]

    def cost(item) -> float:
        case = _case(item)
        return 0 if case is None else -session.case_cost(settings, case)

    items.sort(key=cost)  # stable: registry order among equals, other tests untouched
    controller = config.pluginmanager.get_plugin("vgbench-controller")
    if controller is not None:  # no xdist: this process collected the cases itself
        controller.expect(item.nodeid for item in items if _case(item) is not None)
    bs = benchmark_adapter.session(config)
    if bs is not None and any(cost(item) for item in items):
        benchmark_adapter.quiet_xdist_warning(bs)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With runs trained in groups, all of a group's cases go to one worker (_by_group).
    Else, for xdist's default 'load' mode, longest case first to whichever worker is free
    (_LongestFirst)."""
    settings = config.stash[SETTINGS]
    if any(settings.batched(case) for case in settings.cases):
        return _by_group(config, log, settings)
    if config.getoption("dist", "no") == "load":
        return _longest_first(config, log)
    return None


def _by_group(config: pytest.Config, log, settings: session.Settings):
    """xdist's LoadGroupScheduling over the session's groups (Settings.group): each group's
    cases are one scope, which one worker runs, where the first trains the group and the
    others take their histories. (Not its xdist_group markers: they rename node ids, which
    pytest 9.2 no longer lets pytest-xdist 3.8 do, so that every worker trained the groups
    of the cases it got.) None where xdist's internals differ from what this expects."""
    try:
        from xdist.scheduler import LoadGroupScheduling
    except ImportError:
        return None
    if not hasattr(LoadGroupScheduling, "_split_scope"):
        return None
    scopes = {f"[{c.id}]": f"group-{settings.group(c)[0].id}" for c in settings.cases
              if settings.batched(c)}

    class ByGroup(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scopes.get(nodeid[nodeid.rfind("["):], nodeid)

    return ByGroup(config, log)


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
    controller = node.config.pluginmanager.get_plugin("vgbench-controller")
    if controller is not None and controller.notes and _host_key(node.gateway.spec) == "local":
        node.workerinput["vg_progress_notes"] = str(controller.notes)


def _set_threads(config: pytest.Config) -> None:
    """Before each case (idempotent): workers x threads <= this host's cores, or
    --vg-threads."""
    import torch

    threads = config.getoption("vg_threads")
    if threads is None and _is_worker(config):
        n_workers = config.workerinput.get("vg_host_workers") or int(
            os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        threads = session.worker_threads(n_workers) if n_workers > 1 else None
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _epoch_teller(config: pytest.Config, case_id: str):
    """tell(done, total) after each epoch of a case: to the controller of this process, or
    into the notes folder it gave this worker; a no-op where no progress is shown."""
    controller = config.pluginmanager.get_plugin("vgbench-controller")
    if controller is not None and controller.progress is not None:
        return lambda done, total: controller.epoch(case_id, done, total)
    folder = getattr(config, "workerinput", {}).get("vg_progress_notes")
    if folder:
        return lambda done, total: progress.note(folder, case_id, done, total)
    return lambda done, total: None


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
def vg_settings(request: pytest.FixtureRequest) -> session.Settings:
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

        case = session.Case(vg_remedy, vg_seed, vg_depth)
        tell = _epoch_teller(request.config, case.id)

        def driver(run):
            total = run.cfg.total_epochs
            if benchmark.disabled:  # under xdist: run.step() times each epoch itself
                def steps():
                    while not run.done:
                        run.step()
                        tell(run.epoch_no, total)
                benchmark.pedantic(steps)
            elif total:  # one round per epoch, the device synced in step(); setup untimed
                benchmark.pedantic(run.step, setup=lambda: tell(run.epoch_no, total),
                                   rounds=total, iterations=1)
        try:
            record = session.run_case(case, vg_settings, driver)
        except Exception as exc:
            request.node.user_properties.append((CRASH_KEY, session.crash_info(case, exc)))
            benchmark_adapter.untimed(benchmark, "the case crashed before timing")
            raise
        if not benchmark_adapter.has_timed(benchmark) and record["epoch_time"]:
            # a case whose group trained in an earlier case (--vg-batch-seeds on): that
            # group's epoch times are this case's too (under xdist the worker's record
            # carries them to the controller's table)
            if benchmark.disabled:
                benchmark_adapter.untimed(benchmark, "timed by the case that trained its group")
            else:
                benchmark_adapter.book(benchmark, record["epoch_time"],
                                       "the epoch times of its group")
        node = request.node
        record.update(nodeid=node.nodeid, name=node.name, param=node.callspec.id,
                      params={"vg_remedy": vg_remedy, "vg_depth": vg_depth,
                              "vg_seed": vg_seed})
        benchmark.extra_info.update(benchmark_adapter.extra_info(record))
        node.user_properties.append((RECORD_KEY, record))
        return record

    return go
