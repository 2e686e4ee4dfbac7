"""The session's HTML report (vgbench/report.py): self-contained, rendered in a real browser
(headless Chromium), rebuilt by `vgbench report DIR`; crashed cases reported."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_plugin import not_an_xdist_worker, tiny  # noqa: F401 - autouse
from vgbench import report
from vgbench.cli import main

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def session(pytester, real_data):
    """A small real session: two remedies, two seeds, one epoch, figures on."""
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    args = [a for a in tiny("baseline") if a != "--vg-no-figures"]
    res = pytester.runpytest_subprocess(*args, "--vg-remedy", "relu", "--vg-out", "out")
    res.assert_outcomes(passed=4)
    return pytester.path / "out", res


def test_every_session_leaves_a_self_contained_report(session):
    out, res = session
    page = (out / "report.html").read_text()
    assert f"{out.name}/report.html" in res.stdout.str()  # named with the files written
    assert not re.search(r"https?://|<script|<link|<img|<iframe|url\(", page)  # no resource
    summary = json.loads((out / "summary.json").read_text())
    ids = [c["id"] for c in summary["cases"]]
    assert ids == ["baseline-seed42", "baseline-seed43", "relu-seed42", "relu-seed43"]
    for cid in ids:  # each case has its section, reachable from the table
        assert f'id="case-{cid}"' in page and f'href="#case-{cid}"' in page
    assert page.count("<svg") == 4 * 4  # curves, accuracy, gradient flow, weight change
    assert summary["command"].startswith("pytest ") and "--vg-remedy relu" in summary["command"]


def test_vgbench_report_rebuilds_the_same_page(session, capsys):
    """One path: the controller's page and `vgbench report DIR`'s are the same function of the
    same files."""
    out, _ = session
    first = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text() == first
    assert main(["report", str(out), "--no-figures"]) == 0
    assert "<svg" not in (out / "report.html").read_text()
    with pytest.raises(SystemExit, match="has no summary.json; pass the --vg-out folder"):
        main(["report", str(out / "nowhere")])


def in_chromium(page: Path, tmp_path: Path, height: int = 1600):
    """The page rendered by headless Chromium: (screenshot pixels, the DOM it built)."""
    from matplotlib.image import imread

    if CHROMIUM is None:
        if os.environ.get("VGBENCH_REQUIRE_CHROMIUM"):  # .ci/run: never skipped in CI
            pytest.fail("VGBENCH_REQUIRE_CHROMIUM is set but chromium is not on PATH")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); "
                    ".ci/run installs it")
    url = page.resolve().as_uri()
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--window-size=1280,{height}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    pixels = imread(shot)[..., :3]  # (height, width, rgb) in [0, 1]
    assert pixels.shape[:2] == (height, 1280)
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return pixels, dom


def test_the_report_renders_in_chromium(session, tmp_path):
    out, _ = session
    pixels, dom = in_chromium(out / "report.html", tmp_path)
    ink = (pixels.min(axis=2) < 0.9).mean()
    assert 0.02 < ink < 0.6, f"{ink:.3f} of the screenshot is not white"
    assert "<table>" in dom and "vgbench report" in dom
    for cid in ("baseline-seed42", "baseline-seed43", "relu-seed42", "relu-seed43"):
        assert f'id="case-{cid}"' in dom
    assert dom.count("<svg") == 16 and "<polyline" in dom


def test_a_depth_sweep_has_its_table_and_charts(pytester, real_data):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    args = [a for a in tiny("baseline", 1) if a != "--vg-no-figures"]
    res = pytester.runpytest_subprocess(*args, "--vg-remedy", "relu", "--vg-depth", "2,3",
                                        "--vg-out", "out")
    res.assert_outcomes(passed=2, skipped=2)  # no expectations declared at these depths
    page = (pytester.path / "out" / "report.html").read_text()
    sweep = page.split("<h2>Depth sweep</h2>")[1].split("<h2>")[0]
    assert "trainable" in sweep and "test accuracy by depth" in sweep
    assert sweep.count("<svg") == 2 and sweep.count("<polyline") == 4  # 2 remedies x 2 charts
    assert 'id="case-relu-depth3-seed42"' in page


CRASHES = '''
import torch
from torch import nn
from vgbench import SMALL, Check, Parts, Remedy


class Broken(nn.Module):
    def forward(self, x):
        raise ValueError("my activation is broken")


REMEDIES = [Remedy("broken", "raises in forward", SMALL, parts=Parts(activation=Broken),
                   quick=(Check("test_acc", ">=", 0.5, "never reached"),))]
'''


def test_a_session_whose_only_case_crashed_says_so(pytester, real_data):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    (pytester.path / "broken.py").write_text(CRASHES)
    res = pytester.runpytest_subprocess(*tiny("broken", 1), "--vg-remedies", "broken.py",
                                        "--vg-out", "out")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "was not used" not in out  # pytest-benchmark's noise for a case never timed
    assert re.search(r"vgbench: broken-seed42 crashed: ValueError: my activation is broken "
                     r"\(.*broken\.py:9\)", out)
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    assert not summary["complete"] and summary["rows"] == []
    [err] = summary["errors"]
    assert err["case"] == "broken-seed42" and err["type"] == "ValueError"
    assert err["message"] == "my activation is broken"
    assert err["file"].endswith("broken.py") and err["line"] == 9
    assert "INCOMPLETE: 1 crashed" in summary["header"]
    page = (pytester.path / "out" / "report.html").read_text()
    assert "INCOMPLETE session" in page and "my activation is broken" in page
    assert 'id="case-broken-seed42"' in page and "crashed: ValueError" in page


def test_a_crash_beside_finished_cases(pytester, real_data):
    shutil.copy(ROOT / "benchmarks" / "test_remedies.py", pytester.path / "test_remedies.py")
    (pytester.path / "broken.py").write_text(CRASHES)
    res = pytester.runpytest_subprocess(*tiny("broken", 1), "--vg-remedy", "baseline",
                                        "--vg-remedies", "broken.py", "--vg-out", "out", "-n", "2")
    res.assert_outcomes(failed=1, passed=1)
    summary = json.loads((pytester.path / "out" / "summary.json").read_text())
    assert [r["remedy"] for r in summary["rows"]] == ["baseline"]
    assert [e["case"] for e in summary["errors"]] == ["broken-seed42"]
    assert [c["id"] for c in summary["cases"]] == ["baseline-seed42", "broken-seed42"]
    md = (pytester.path / "out" / "summary.md").read_text()
    assert "broken-seed42 crashed: ValueError: my activation is broken (" in md


def test_ticks_and_gaps():
    """The charts' own arithmetic: decades on a log axis; None and inf are gaps."""
    assert [t for _, t in report._ticks(-5.2, 0.3, True)] == ["1e-5", "1e-4", "1e-3", "1e-2",
                                                               "1e-1", "1e0"]
    labels = [t for _, t in report._ticks(2.3094, 2.3256, False)]
    assert len(set(labels)) == 5  # enough decimals to tell the ticks apart
    svg = report.svg_chart([("a", [1.0, None, float("inf"), 2.0, 3.0])], "t")
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "no finite values" in report.svg_chart([("a", [None])], "t")


def test_a_watched_runs_page_renders_in_chromium_and_is_rebuilt(tmp_path, capsys):
    """vgbench.watch's report.html: a tanh net whose learning rate jumps 30x at step 20;
    its verdict strip, onsets and charts in a real browser; `vgbench report DIR` rebuilds
    the same page from history.json."""
    from tests.test_monitor import lr_jump

    out = tmp_path / "w"
    lr_jump(40, out)
    page = (out / "report.html").read_text()
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").read_text() == page
    pixels, dom = in_chromium(out / "report.html", tmp_path, height=1400)
    ink = (pixels.min(axis=2) < 0.9).mean()
    assert 0.02 < ink < 0.6, f"{ink:.3f} of the screenshot is not white"
    assert "vgbench watch: Sequential" in dom and "<table>" in dom
    assert re.search(r'<td class="num">20</td><td>[^<]+</td><td class="num">5</td>'
                     r'<td><span class="bad">exploding',
                     dom), "the onset of exploding at step 20 is not in the table"
    assert dom.count("<svg") == 6 and dom.count("<polyline") >= 8
    assert dom.count("<title>step ") == 8  # one cell per sampled step
    (out / "history.json").write_text("{}")
    with pytest.raises(SystemExit, match="is not a watched run's history"):
        main(["report", str(out)])
