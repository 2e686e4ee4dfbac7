"""Every experiment of the registry, trained for the session's budget and checked.

    pytest benchmarks -n auto                  # full budget (100 epochs), every remedy
    pytest benchmarks -n auto --vg-budget quick
    pytest benchmarks --vg-remedy relu --vg-seeds 3

Test ids come from the registry (vgbench/registry.py), where each remedy declares the
outcome it must show at each budget; see vgbench/plugin.py for the --vg-* options.
"""

import pytest


def test_remedy(vg_run):
    """Train the remedy (epochs timed by pytest-benchmark); its expected outcome must hold."""
    record = vg_run()
    assert record["checks"], f"{record['remedy']} declares no checks for this budget"
    if record["failures"]:
        pytest.fail("\n".join(record["failures"]), pytrace=False)
