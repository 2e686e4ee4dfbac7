"""Hooks vgbench offers to other plugins and to a user's conftest.py (registered through
pytest_addhooks); implement them there, nothing of vgbench is edited."""

import pluggy
import pytest

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_vgbench_remedies(config: pytest.Config):
    """Return a list of `vgbench.Remedy` to add to the registry.

    Called once per process (the controller and every xdist worker) at configure time, so
    implement it in a conftest.py that pytest loads before collection (the rootdir's, or
    the one beside the test path given on the command line) or in a plugin. The remedies
    run, list and report like the built-in ones; their set is 'user', so they join every
    --vg-set. A name that is taken, a remedy without checks or a check on an unknown metric
    is a usage error naming the file and the remedy.
    """
