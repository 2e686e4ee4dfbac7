"""The controller of a pytest session (or its only process): it collects every case's
record, writes each case's files here, and at the end the summary, the report and the
terminal table, whatever ended the session."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from vgbench import benchmark_adapter, data, progress, reference, report, session_checks, summary
from vgbench.session import Settings, bring_home

RECORD_KEY = "vgbench_record"
"""user_properties key of a finished case: its record (session.run_case)."""
CRASH_KEY = "vgbench_crash"
"""user_properties key of a case that raised: session.crash_info's dict."""


def _to_benchmark_session(config: pytest.Config, record: dict) -> None:
    """Under xdist, pytest-benchmark is off: give it the epoch times the worker measured."""
    bs = benchmark_adapter.session(config)
    if bs is None or not record["epoch_time"] or not benchmark_adapter.off_for_xdist(config, bs):
        return
    benchmark_adapter.add(bs, record["name"], record["nodeid"], record["param"],
                          record["params"], dict(benchmark_adapter.extra_info(record),
                                                 timed_by="vgbench xdist worker"),
                          record["epoch_time"])


def _workers(config: pytest.Config) -> int:
    """How many processes run cases: xdist's workers, else this one."""
    if config.getoption("dist", "no") == "no":
        return 1
    from xdist.workermanage import parse_tx_spec_config

    return len(parse_tx_spec_config(config))


def _case_id(nodeid: str) -> str:
    """'benchmarks/test_remedies.py::test_remedy[relu-seed42]' -> 'relu-seed42'."""
    return nodeid.rsplit("[", 1)[-1].rstrip("]")


class Controller:
    """Registered on the controller (or the only process): collects records, reports.

    Whatever ends the session (failures, an interrupt, a bad reference, an unwritable
    --vg-save), the summary is written and printed with what finished; problems at the end
    become one-line errors and a failing exit status, never a traceback that hides it.
    """

    def __init__(self, config: pytest.Config, settings: Settings, comparison):
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
        self.progress: progress.Progress | None = None
        """Cases done, running, the ETA; None: --vg-progress off."""
        self.live = False
        """Redraw one line in place (a terminal), else a plain line now and then."""
        self.notes: Path | None = None
        """Where this machine's workers note their epochs (progress.note)."""
        self._drawn = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # --- progress ---------------------------------------------------------------------------
    PLAIN_EVERY = 60.0
    """Seconds between two plain progress lines (not a terminal: a CI log)."""

    def show_progress(self, mode: str) -> None:
        """mode: 'auto' (a live line on a terminal outside CI, else a plain line at most
        every PLAIN_EVERY seconds), 'on' (live where the output is a terminal) or 'off'."""
        if mode == "off" or self.config.getoption("collectonly"):
            return
        tty = sys.stdout.isatty() and (mode == "on" or not os.environ.get("CI"))
        self.live = tty and self.config.get_verbosity() <= 0
        if self.config.getoption("dist", "no") != "no":
            self.notes = Path(self.settings.out).resolve() / progress.NOTES
        self.progress = progress.Progress(self.settings, _workers(self.config))

    def epoch(self, case_id: str, done: int, total: int) -> None:
        """A case of this process finished an epoch."""
        self.progress.epoch(case_id, done, total)
        self._draw()

    def _draw(self) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if self.progress is None or tr is None:
            return
        if not (self.progress.running or self.progress.done):
            return  # nothing to say yet (xdist is still starting its workers)
        with self._lock:
            now = time.monotonic()
            if not self.live and now - self._drawn < self.PLAIN_EVERY:
                return  # plain: not before PLAIN_EVERY seconds since the start or the last
            if self.notes is not None:
                for cid, (done, total) in progress.read_notes(self.notes).items():
                    self.progress.epoch(cid, done, total)
            width = shutil.get_terminal_size().columns
            capture = self.config.pluginmanager.get_plugin("capturemanager")
            # during a case of this process its output is captured: write past that
            with (capture.global_and_fixture_disabled() if capture is not None
                  else contextlib.nullcontext()):
                if self.live:
                    tr.rewrite(self.progress.line(width), erase=True)
                else:
                    tr.write_line(self.progress.line(10 ** 6))
            self._drawn = now

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._draw()

    def pytest_sessionstart(self, session) -> None:
        if self.progress is None:
            return
        if self.notes is not None:  # a crashed session's notes: not this one's
            shutil.rmtree(self.notes, ignore_errors=True)
        self._drawn = time.monotonic() if not self.live else 0.0
        if self.live and self.notes is not None:  # workers elsewhere: redraw on a clock
            threading.Thread(target=self._tick, daemon=True, name="vgbench-progress").start()

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        if self.progress is not None and nodeid in self.expected:
            self.progress.started(_case_id(nodeid))
            self._draw()

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report, config):
        """A live line stands for the cases' dots (their counts and failures stay)."""
        result = yield
        if self.live and result and report.nodeid in self.expected:
            return result[0], "", ""
        return result

    def expect(self, nodeids) -> None:
        """Cases collected (by this process, or by an xdist worker)."""
        self.expected.update(nodeids)
        if self.progress is not None:
            self.progress.expect(_case_id(n) for n in self.expected)

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
        if self.progress is not None and report.nodeid in self.expected:
            seconds = next((sum(r["epoch_time"]) for k, r in report.user_properties
                            if k == RECORD_KEY), None)
            self.progress.finished(_case_id(report.nodeid), seconds)
            self._draw()
        for key, record in report.user_properties:
            if key == CRASH_KEY:
                self.crashed.append(dict(record, nodeid=report.nodeid))
            if key == RECORD_KEY:
                self.records.append(record)
                _to_benchmark_session(self.config, record)
                try:
                    bring_home(record, self.settings)
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
        if self.progress is not None:
            self._stop.set()
            if self.live:
                self._draw()
            if self.notes is not None:
                shutil.rmtree(self.notes, ignore_errors=True)
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
            self.rows = summary.summarize(records)
            self.depth = summary.depth_rows(records)
            self.expectations = (session_checks.depth_expectations(records, settings)
                                 + session_checks.interventions(records, settings))
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
                summary.write_depth_figures(records, settings.out)))
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
        self._attempt("summary", lambda: self.paths.extend(summary.write_summary(
            self.rows, settings.out, self.header(), image=settings.figures,
            status=self.status, depth=self.depth, expectations=self.expectations,
            cases=summary.case_entries(self.records, self.crashed), command=command,
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
        workers = _workers(self.config)
        busy = summary.epoch_seconds(self.records)
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
        checks = summary.self_check_words(records)
        if checks:
            text += f"; {checks}"
        if not self.status.get("complete", True):
            missing = self.status["missing"]
            gone = [f"{len(missing)} case(s) missing"] if missing else []
            gone += [f"{len(self.crashed)} crashed"] if self.crashed else []
            text += f"; INCOMPLETE: {', '.join(gone) or 'no case finished'}"
        return text

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.records or self.crashed:
            tr.write_sep("=", "vgbench summary")
            tr.write_line(self.header())
            if self.rows:
                tr.write_line(summary.table(self.rows))
            if self.depth:
                tr.write_sep("-", "vgbench depth sweep")
                tr.write_line(summary.depth_table(self.depth))
            for line in session_checks.format_expectations(self.expectations):
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
            tr.write_line(f"vgbench: {summary.error_line(c)}", red=True)
        for e in self.errors:
            tr.write_line(f"vgbench: error: {e}", red=True)
