"""The zoo's modules import as `zoo`, benchmarks/peers.py as `peers` (benchmarks/ is no
package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))


def pytest_configure(config):
    """Under xdist, workers x torch threads <= cores, as in the suite (a worker at torch's
    default of every core thrashes beside the others)."""
    import os

    n_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if n_workers > 1:
        import torch

        from vgbench.session import worker_threads

        torch.set_num_threads(worker_threads(n_workers))
