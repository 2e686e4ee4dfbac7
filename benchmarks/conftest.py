"""benchmarks/zoo runs only when named (pytest benchmarks/zoo): `pytest benchmarks -n auto`
is the suite of remedies, as it was."""

from pathlib import Path

ZOO = Path(__file__).resolve().parent / "zoo"


def pytest_ignore_collect(collection_path, config):
    if Path(collection_path).resolve() != ZOO:
        return None
    named = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    return True if not any(p == ZOO or ZOO in p.parents for p in named) else None
