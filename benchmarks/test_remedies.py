"""Every experiment of the registry, trained for the session's budget and checked.

    pytest benchmarks -n auto                  # full budget (100 epochs), the course remedies
    pytest benchmarks -n auto --vg-budget quick
    pytest benchmarks -n auto --vg-set literature
    pytest benchmarks -n auto --vg-budget sweep  # depths 3, 7, 15, 30
    pytest benchmarks --vg-remedy relu --vg-seeds 3

Test ids come from the registry (vgbench/registry.py), where each remedy declares the
outcome it must show at each budget; see vgbench/plugin.py for the --vg-* options. The
test itself lives in vgbench/suite.py, so that user projects run the very same one.
"""

from vgbench.suite import test_remedy  # noqa: F401
