"""A session's progress: the cases done, the running ones' epochs, the ETA; a live line on a
terminal, plain lines in a log."""

import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vgbench import progress
from vgbench.session import Settings

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_the_eta_is_the_cost_left_at_the_finished_cases_rate():
    settings = Settings(budget="quick", remedies=("baseline", "layerwise"))
    clock = Clock()
    p = progress.Progress(settings, workers=1, clock=clock)
    assert p.total == 2 and p.eta() is None  # nothing finished: no rate yet
    base, lw = "baseline-seed42", "layerwise-seed42"
    p.started(base)
    p.epoch(base, 2, 5)
    assert "baseline-seed42 2/5" in p.line()
    clock.t = 10.0
    p.finished(base, 8.0)  # its 5 epochs trained in 8 s
    rate = 8.0 / p.cost[base]
    assert p.eta() == pytest.approx(p.cost[lw] * rate)
    p.started(lw)
    p.epoch(lw, 5, 20)  # layerwise: 4 stages x 5 epochs; a quarter done
    assert p.eta() == pytest.approx(0.75 * p.cost[lw] * rate)
    assert p.line().startswith("vgbench: 1/2 cases done, running layerwise-seed42 5/20 | 10 s")
    p.finished(lw, None)  # crashed: done, no time learned from it
    assert p.line() == "vgbench: 2/2 cases done | 10 s"


def test_the_line_fits_the_width_and_collected_cases_count():
    settings = Settings(budget="quick", n_seeds=3, set="all")
    p = progress.Progress(settings, workers=2)
    for c in settings.cases[:6]:
        p.started(c.id)
    line = p.line(60)
    assert len(line) <= 59 and line.endswith(" s") and "..." in line
    p.expect([c.id for c in settings.cases[:4]])  # e.g. -k picked four
    assert p.total == 4 and p.line(200).startswith("vgbench: 0/4 cases done")


def test_notes_round_trip_and_ignore_what_is_not_one(tmp_path):
    progress.note(tmp_path, "relu-seed42", 3, 5)
    (tmp_path / "junk").write_text("not a note")
    assert progress.read_notes(tmp_path) == {"relu-seed42": (3, 5)}
    assert progress.read_notes(tmp_path / "absent") == {}
    assert progress.duration(65) == "1 min 05 s" and progress.duration(3720) == "1 h 02 min"


TINY = ["-p", "no:cacheprovider", "--vg-budget", "quick", "--vg-epochs", "2", "--vg-limit",
        "512", "--vg-remedy", "baseline", "--vg-seeds", "2", "--vg-no-figures",
        "--vg-device", "cpu"]


@pytest.fixture
def suite(pytester, real_data, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    return pytester


def test_a_log_gets_plain_lines(suite):
    """Not a terminal (CI): a plain line now and then (here every time: PLAIN_EVERY 0), the
    dots and the summary as ever, no notes folder left behind."""
    suite.makeconftest('pytest_plugins = ["vgbench.plugin"]\n'
                       "from vgbench.controller import Controller\n"
                       "Controller.PLAIN_EVERY = 0.0\n")
    res = suite.runpytest_subprocess(*TINY, "-n", "2", "--vg-out", "out")
    res.assert_outcomes(passed=2)
    out = res.stdout.str()
    assert "vgbench: 2/2 cases done" in out and "\r" not in out
    assert re.search(r"vgbench: 1/2 cases done.* \| \d+ s, about \d+ s left", out)
    assert "vgbench summary" in out and not (suite.path / "out" / progress.NOTES).exists()
    off = suite.runpytest_subprocess(*TINY, "--vg-progress", "off", "--vg-out", "out2")
    assert "cases done" not in off.stdout.str()


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["no-xdist", "xdist-2"])
def test_a_terminal_gets_one_live_line(suite, xdist):
    """On a terminal the line is redrawn in place (carriage returns, the epochs of running
    cases), the cases' dots give way to it, and the summary follows on its own line."""
    suite.makeconftest('pytest_plugins = ["vgbench.plugin"]\n')
    main, sub = pty.openpty()
    env = dict(os.environ, COLUMNS="100")
    env.pop("CI", None)
    # epochs long enough that the 1-second redraw lands inside a running case's epochs
    # (with TINY's two 0.07 s epochs, under load, it could miss every one: a flaky test)
    longer = list(TINY)
    longer[longer.index("--vg-epochs") + 1] = "6"
    longer[longer.index("--vg-limit") + 1] = "2048"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *longer, *xdist, "--vg-out", "out"],
                            cwd=suite.path, stdin=sub, stdout=sub, stderr=sub, env=env)
    os.close(sub)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 300)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    out = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode(errors="replace"))
    assert proc.returncode == 0, out[-3000:]
    frames = [f.strip() for f in out.split("\r")]
    assert any(f.startswith("vgbench: 2/2 cases done |") for f in frames), out[-3000:]
    assert any(re.match(r"vgbench: \d/2 cases done, running baseline-seed4\d \d/6", f)
               for f in frames), out[-3000:]
    assert "\n..\n" not in out and "vgbench summary" in out
