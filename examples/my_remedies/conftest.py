"""A user project: vgbench's suite plus two remedies of our own, through vgbench's hook."""

from my_remedies import REMEDIES


def pytest_vgbench_remedies(config):
    """vgbench calls this once per process, before collection."""
    return REMEDIES
