"""The house rules the code and docs keep: small modules along their jobs, no import circle,
no private names across vgbench's own modules, no reference to a file that is not here,
generated docs in step with the code."""

import ast
import re
from pathlib import Path

import pytest

from vgbench import docgen

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vgbench"
MAX_LINES = 450
ADAPTER = "benchmark_adapter.py"
"""The one module allowed pytest-benchmark's private names."""


def modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def test_no_module_is_over_the_line_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Each vgbench module's vgbench imports, function-level ones included."""
    graph = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in mods:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    graph[m].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                graph[m].update(a.name for a in node.names if a.name in mods)
        graph[m] -= {m, "vgbench"}
    return graph


def test_no_import_circle():
    graph = imports(modules())
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_no_private_name_across_vgbench_modules():
    """obj._name is used only on self/cls, on torch's objects (its module classes and
    tensor versions, which vgbench cannot avoid), and in the benchmark adapter."""
    ours = {n.rpartition(".")[2] for n in modules()}
    bad = []
    for name, p in modules().items():
        if p.name == ADAPTER:
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vgbench"):
                bad += [f"{p.name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            base = node.value
            root = base
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if isinstance(root, ast.Name) and root.id in ("nn", "torch"):
                continue  # torch's own classes, e.g. nn.modules.batchnorm._BatchNorm
            if node.attr in ("_version", "_reversed_padding_repeated_twice", "_orig_mod"):
                continue  # a tensor's version counter, a Conv's padding, torch.compile's
                # wrapper's module: torch's
            bad.append(f"{p.name}:{node.lineno}: {ast.unparse(node)}")
            assert not (isinstance(root, ast.Name) and root.id in ours), bad[-1]
    assert bad == []


def test_pytest_benchmark_private_names_only_in_the_adapter():
    for name, p in modules().items():
        if p.name != ADAPTER:
            text = p.read_text()
            for private in ("_benchmarksession", "_make_stats", "._mode"):
                assert private not in text, f"{p.name} uses {private}: go through {ADAPTER}"


FILE_REF = re.compile(r"(?<![\w/.-])((?:vgbench|tests|benchmarks|examples|docs|\.ci)/[\w./-]*"
                      r"[\w/-]|[A-Z][A-Z_]+\.md)")


def referenced_files():
    """(where, path) for every repository path named in the code, tests, docs and README."""
    texts = [ROOT / "README.md", ROOT / "tox.ini", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    for folder in ("vgbench", "tests", "benchmarks", "examples", "docs"):
        texts += [p for p in (ROOT / folder).rglob("*")
                  if p.suffix in (".py", ".md", ".sh", ".yml", ".toml") and p.is_file()]
    for t in texts:
        for m in FILE_REF.finditer(t.read_text()):
            yield t.relative_to(ROOT), m.group(1).rstrip(".")


def test_every_file_named_exists():
    """No reference to a file that is not in the repository (a path relative to the root,
    or to the naming file's folder: docs pages link each other)."""
    outputs = ("vg-out", "runs")
    missing = set()
    for where, ref in referenced_files():
        if ref.startswith(outputs) or not re.search(r"\.(py|md|sh|json|toml|ini|yml|png|"
                                                     r"html|txt)$", ref) and not ref.endswith(
                                                         ("own_model", "my_remedies", "zoo")):
            continue  # a file; or a folder the docs name (a logger's key is not one)
        here = (ROOT / where).parent
        if not ((ROOT / ref).exists() or (here / ref).exists()
                or (ROOT / "benchmarks" / "zoo" / ref).exists()):
            missing.add(f"{where}: {ref}")
    assert sorted(missing) == []


def test_the_generated_docs_are_in_step_with_the_code():
    assert docgen.stale() == [], "run `python -m vgbench.docgen` and commit docs/"


def test_every_option_is_in_the_docs_and_in_pytest():
    from vgbench import options

    page = (ROOT / "docs" / "options.md").read_text()
    plugin_src = (PACKAGE / "plugin.py").read_text()
    for o in options.OPTIONS:
        assert f"`{o.flag}" in page
        assert o.dest in plugin_src or o.dest in (PACKAGE / "options.py").read_text() \
            or o.dest in (PACKAGE / "controller.py").read_text(), f"{o.flag} is never read"


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).exists(), link
