"""The package's shape, checked mechanically so it cannot quietly regress (issue 22).

Over every module of ``napari_labeleff`` (benchmarks and tests are not part of it):

* no import circle between modules (the import graph read with ``ast``, imports inside
  functions included: a lazy import still ties two modules together);
* no import of a private module (``_name.py``) from outside the package that holds it:
  a room offers what others need through its ``__init__``;
* no module over :data:`MAX_MODULE_LINES` lines, no function over
  :data:`MAX_FUNCTION_LINES` lines.

Known offenders are listed in the allow-lists below, each with its owner: shrink them,
never grow them. A test also fails when an allow-listed offender is gone, so the list
stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_labeleff"
ROOT = PACKAGE.name
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 120

#: Import circles still allowed (the modules of each); each names who removes it.
ALLOWED_CYCLES: list[set[str]] = [
    # inside the rules package (function-level imports): Rules' facade methods (learn,
    # template, violations) call the modules that build Rules objects
    {"napari_labeleff.rules._check", "napari_labeleff.rules._learn",
     "napari_labeleff.rules._model", "napari_labeleff.rules._templates"},
]

#: (importer, private module) pairs still allowed; each names who removes it.
ALLOWED_PRIVATE_IMPORTS: set[tuple[str, str]] = set()

#: Modules allowed over MAX_MODULE_LINES (owner in the comment).
ALLOWED_LONG_MODULES: set[str] = set()

#: Functions allowed over MAX_FUNCTION_LINES: "module:qualified name" (owner in the comment).
ALLOWED_LONG_FUNCTIONS: set[str] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str) -> str | None:
    """The module ``name`` is, or lies in (``pkg.mod.attr`` -> ``pkg.mod``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> modules of the package it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = _target(module, path, node)
                names = [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == ROOT and (known := _known(name)) and known != module:
                    edges.add(known)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """(importer, private module) pairs where the importer lies outside the package
    holding the private module."""
    out = set()
    for importer, targets in graph.items():
        for target in targets:
            owner, _, leaf = target.rpartition(".")
            if leaf.startswith("_") and not (importer == owner or importer.startswith(owner + ".")):
                out.add((importer, target))
    return out


def function_lengths(source: str) -> dict[str, int]:
    """Qualified function name -> lines, for every function in ``source``."""
    out = {}

    def walk(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out[name] = child.end_lineno - child.lineno + 1
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source))
    return out


def long_functions() -> dict[str, int]:
    return {f"{module}:{name}": n for module, path in MODULES.items()
            for name, n in function_lengths(path.read_text(encoding="utf-8")).items()
            if n > MAX_FUNCTION_LINES}


def long_modules() -> dict[str, int]:
    return {m: n for m, p in MODULES.items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}


def test_no_import_circles():
    found = [set(c) for c in cycles(import_graph())]
    assert [c for c in found if c not in ALLOWED_CYCLES] == []
    assert [c for c in ALLOWED_CYCLES if c not in found] == [], "fixed: remove it from the allow-list"


def test_no_private_module_imported_from_another_package():
    found = private_imports(import_graph())
    assert found - ALLOWED_PRIVATE_IMPORTS == set(), "import what the package's __init__ offers"
    assert ALLOWED_PRIVATE_IMPORTS - found == set(), "fixed: remove it from the allow-list"


def test_module_sizes():
    found = set(long_modules())
    assert found - ALLOWED_LONG_MODULES == set(), long_modules()
    assert ALLOWED_LONG_MODULES - found == set(), "fixed: remove it from the allow-list"


def test_function_sizes():
    found = long_functions()
    assert set(found) - ALLOWED_LONG_FUNCTIONS == set(), found
    assert ALLOWED_LONG_FUNCTIONS - set(found) == set(), "fixed: remove it from the allow-list"


@pytest.mark.parametrize("broken", ["circle", "private", "long"])
def test_the_checks_see_what_they_look_for(broken):
    """Each check finds a planted offender (so none of them passes by seeing nothing)."""
    if broken == "circle":
        assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    elif broken == "private":
        graph = {"napari_labeleff.cli._batch": {"napari_labeleff.cohort.services._qa",
                                                 "napari_labeleff.cli._common",
                                                 "napari_labeleff._errors"}}
        assert private_imports(graph) == {("napari_labeleff.cli._batch",
                                           "napari_labeleff.cohort.services._qa")}
    else:
        body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
        lengths = function_lengths(f"class A:\n    def f(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n"
                                   "def g():\n    pass\n")
        assert lengths == {"A.f": MAX_FUNCTION_LINES + 1, "g": 2}
        assert "napari_labeleff.cohort._project" in MODULES
