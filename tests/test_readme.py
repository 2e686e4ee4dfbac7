"""The README's three paths, run as written: its *see it* commands print what it shows (the
numbers masked: another CPU may round the last digit differently), and its own-model test
fails on its model with the message it shows, and passes on the twin it names."""

import re
import shutil
import subprocess
import sys
from pathlib import Path


pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def masked(line: str) -> str:
    return re.sub(r"\d+(\.\d+)?(e[-+]\d+)?", "N", line.strip())


def test_see_it_prints_what_the_readme_shows(real_data, tmp_path):
    see = section("See it")
    commands = [c for c in blocks(see, "sh")[0].splitlines() if c.strip()]
    shown = blocks(see, "text")
    assert len(commands) == len(shown) == 2
    vgbench = Path(sys.executable).with_name("vgbench")
    for command, expected in zip(commands, shown):
        args = command.split()
        assert args[0] == "vgbench"
        out = subprocess.run([str(vgbench), *args[1:]], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, check=True).stdout
        got = {masked(line) for line in out.splitlines()}
        for line in expected.splitlines():
            assert masked(line) in got, f"{command}: README shows {line!r}; printed:\n{out}"
        accuracy = float(re.search(r"Accuracy: ([\d.]+)", out).group(1))
        verdict = re.search(r"diagnosis at init: (\w+)", out).group(1)
        assert verdict == re.search(r"diagnosis at init: (\w+)", expected).group(1)
        name = args[2]
        assert (accuracy <= 0.15) if name == "baseline" else (accuracy >= 0.6), out
        assert (tmp_path / "runs" / f"{name}-seed42" / "history.json").is_file()


def test_the_own_model_test_fails_as_shown_and_its_twin_passes(pytester, monkeypatch):
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    own = section("Check your own model")
    code = blocks(own, "python")[0]
    message = blocks(own, "text")[0].strip()
    shutil.copy(ROOT / "conftest.py", pytester.path / "conftest.py")
    twin = code.replace("layers += [nn.Linear(128, 128), nn.Sigmoid()]",
                        "layers += [nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU()]")
    twin = twin.replace("nn.Linear(784, 128), nn.Sigmoid()", "nn.Linear(784, 128), nn.ReLU()")
    twin = twin.replace("def test_my_model_passes_gradient", "def test_its_twin")
    assert twin.count("ReLU") == 2, "the README's twin sentence no longer fits its code"
    pytester.makepyfile(test_own=code, test_twin=twin)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    res.assert_outcomes(failed=1, passed=1)
    out = res.stdout.str()
    assert any(masked(message) in masked(line) for line in out.splitlines()), out
