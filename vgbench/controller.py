"""The controller of a pytest session (or its only process): it collects every case's
record, writes each case's files here, and at the end the summary, the report and the
terminal table, whatever ended the session."""

from __future__ import annotations

import shlex
import time

import pytest

from vgbench import benchmark_adapter, data, reference, report, session_checks, summary
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
        workers = 1
        if self.config.getoption("dist", "no") != "no":
            from xdist.workermanage import parse_tx_spec_config

            workers = len(parse_tx_spec_config(self.config))
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
