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
