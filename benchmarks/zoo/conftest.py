"""The zoo's modules import as `zoo`, benchmarks/peers.py as `peers` (benchmarks/ is no
package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


def pytest_configure(config):
    """Under xdist, workers x torch threads <= cores, as in the suite."""
    from vgbench.session import limit_xdist_threads

    limit_xdist_threads()
