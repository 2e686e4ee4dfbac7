"""Loads the vgbench pytest plugin (options --vg-*, the remedy tests' fixtures, the summary)."""

pytest_plugins = ["vgbench.plugin"]
