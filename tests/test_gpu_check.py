"""benchmarks/gpu_check.sh on a machine (or with devices hidden) where torch sees no GPU."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_stops_at_once_without_a_gpu(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    out = tmp_path / "gc"
    p = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert "sees no CUDA device, so nothing was measured" in p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["env.txt"]  # no step ran
    assert "cuda available: False" in (out / "env.txt").read_text()


def test_its_default_folder_is_ignored_by_git(tmp_path):
    """Run from elsewhere with no OUT_DIR, it writes vg-out/gpu-check in the repo, a folder
    git ignores: a clean clone stays clean."""
    root = SCRIPT.parents[1]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    p = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.returncode == 2
    assert (root / "vg-out" / "gpu-check" / "env.txt").is_file()
    assert list(tmp_path.iterdir()) == []
    if (root / ".git").exists():
        ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q",
                                  "vg-out/gpu-check/env.txt"])
        assert ignored.returncode == 0
