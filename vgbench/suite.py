"""The one test of the suite: every (remedy, depth, seed) case of the registry.

`benchmarks/test_remedies.py` imports it; a user project that brings its own remedies
(docs/own-remedy.md) imports it the same way:

    from vgbench.suite import test_remedy  # noqa: F401
"""

import pytest


def test_remedy(vg_run):
    """Train the case (epochs timed by pytest-benchmark); its expected outcome must hold."""
    record = vg_run()
    if record["failures"]:
        pytest.fail("\n".join(record["failures"]), pytrace=False)
    if not record["checks"]:
        pytest.skip(f"{record['remedy']} declares no checks for the {record['budget']} budget "
                    f"at depth {record['depth']}: trained and summarized, nothing asserted")
