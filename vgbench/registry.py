"""Every remedy of this process, found by name: the built-in ones (vgbench/remedies/) and a
user's, which join through `register` (the pytest hook `pytest_vgbench_remedies`,
`--vg-remedies FILE`, `vgbench run --remedies FILE`). Test ids, CLI choices, summary rows
and plot legends all come from REMEDIES."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from vgbench.remedies.control import CONTROL
from vgbench.remedies.course import COURSE
from vgbench.remedies.literature import LITERATURE
from vgbench.remedy import SETS, Remedy

BUILTIN: tuple[Remedy, ...] = (
    *(replace(r, set="course", source="course project (docs/protocol.md)", origin="vgbench")
      for r in COURSE),
    *(replace(r, set="literature", origin="vgbench") for r in LITERATURE),
    *(replace(r, set="control", origin="vgbench") for r in CONTROL),
)
"""The remedies vgbench ships: the course protocol's, the literature's, then the positive
controls of the diagnosis."""

REMEDIES: dict[str, Remedy] = {r.name: r for r in BUILTIN}
"""Every remedy of this process, built-in and registered, by name (registry order)."""


class UnknownRemedy(ValueError):
    """A remedy name that is not in the registry."""


class RemedyError(ValueError):
    """A user's remedy that cannot be registered; the message names the file and remedy."""


def names(sets: str | tuple[str, ...] = SETS) -> list[str]:
    """Names of the registered remedies in these sets ('all' or a tuple of SETS), in
    registry order."""
    sets = SETS if sets == "all" else (sets,) if isinstance(sets, str) else sets
    return [n for n, r in REMEDIES.items() if r.set in sets]


def get(name: str) -> Remedy:
    """The remedy called name; an unknown name is an error listing the valid ones."""
    try:
        return REMEDIES[name]
    except KeyError:
        raise UnknownRemedy(f"unknown remedy {name!r}; choose from "
                            f"{', '.join(REMEDIES)}") from None


def register(remedies, origin: str) -> list[str]:
    """Add a user's remedies (from `origin`, a file or plugin) to the registry; returns
    their names. Anything but a list of Remedy objects, a set other than 'user', or a name
    that is taken is a RemedyError naming the origin and the remedy; nothing is added
    then."""
    if isinstance(remedies, Remedy) or not isinstance(remedies, (list, tuple)):
        raise RemedyError(f"{origin}: expected a list of vgbench Remedy objects, got "
                          f"{type(remedies).__name__}")
    new: dict[str, Remedy] = {}
    for r in remedies:
        if not isinstance(r, Remedy):
            raise RemedyError(f"{origin}: expected vgbench Remedy objects, got {r!r}")
        if r.set != "user":
            raise RemedyError(f"{origin}: remedy {r.name!r} has set {r.set!r}; "
                              "user remedies are in set 'user' (leave set= out)")
        clash = REMEDIES.get(r.name) or new.get(r.name)
        if clash is not None:
            raise RemedyError(f"{origin}: remedy {r.name!r} is already declared by "
                              f"{clash.origin}; give it another name")
        new[r.name] = replace(r, origin=origin)
    REMEDIES.update(new)
    return list(new)


def unregister(names_: list[str]) -> None:
    """Remove user remedies registered earlier (built-in ones stay)."""
    for n in names_:
        if n in REMEDIES and REMEDIES[n].set == "user":
            del REMEDIES[n]


def import_file(path: Path):
    """Import a user's Python file as a module; an exception it raises is a RemedyError
    naming the file and the line."""
    mod_name = f"vgbench_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # so that pickling and dataclasses can find it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - reported with the file and line, not hidden
        del sys.modules[mod_name]
        frames = [f for f in traceback.extract_tb(exc.__traceback__)
                  if Path(f.filename).resolve() == path.resolve()]
        line = f", line {frames[-1].lineno}" if frames else ""
        raise RemedyError(f"{path}{line}: {type(exc).__name__}: {exc}") from None
    return module


def load_file(path: str | Path) -> list[Remedy]:
    """Import a user's remedies file (a Python module exposing REMEDIES, a list of Remedy);
    any problem is a RemedyError naming the file (and the line, for errors raised in it)."""
    path = Path(path)
    if not path.is_file():
        raise RemedyError(f"{path}: no such remedies file (a Python file whose REMEDIES "
                          "lists vgbench Remedy objects)")
    module = import_file(path)
    if not hasattr(module, "REMEDIES"):
        raise RemedyError(f"{path}: defines no REMEDIES; add `REMEDIES = [Remedy(...), ...]`")
    return module.REMEDIES
