"""The package's import graph: no cycles anywhere, and the layering between subpackages.

Edges come from every ``import`` / ``from ... import`` statement of every module, at module level and
inside functions (a function-level import only hides a cycle until the function runs), read with
``ast`` without importing anything; imports under ``if TYPE_CHECKING:`` never run and are skipped.
``import a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit parent-package imports are not edges (every submodule would otherwise "import" its
package's ``__init__``, which imports the submodule back). ``from a.b import name`` is an edge to the
module ``a.b.name`` when there is one, else to ``a.b`` itself.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import flashocc

PACKAGE_ROOT = Path(flashocc.__file__).resolve().parent


def module_files(root: Path = PACKAGE_ROOT, package: str = "flashocc") -> dict[str, Path]:
    """Dotted module name -> file (``pkg/__init__.py`` is the module ``pkg``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(files: dict[str, Path], package: str = "flashocc") -> dict[str, set[str]]:
    """module -> the intra-package modules it imports (any scope)."""
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.module, node.level)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t == package or t.startswith(package + "."))
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def _runtime_nodes(tree: ast.AST):
    """Every node, without the bodies of ``if TYPE_CHECKING:`` blocks (their ``else`` runs)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, target: str | None, level: int) -> str:
    if level == 0:
        return target or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join(anchor + ([target] if target else []))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative DFS with colours)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def test_the_package_has_no_import_cycle(graph):
    assert len(graph) > 50 and graph["flashocc.config"]  # the walk found the package and its imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer, forbidden", [
    ("flashocc.models", ("flashocc.data", "flashocc.engine", "flashocc.cli")),
    ("flashocc.metrics", ("flashocc.models",)),
])
def test_layering(graph, layer, forbidden):
    """``layer``'s modules, and everything they import in turn, stay clear of ``forbidden``."""
    bad = []
    for module in graph:
        if module == layer or module.startswith(layer + "."):
            for dep in sorted(reachable(graph, module)):
                if any(dep == f or dep.startswith(f + ".") for f in forbidden):
                    bad.append(f"{module} -> {dep}")
    assert not bad, "layering broken: " + "; ".join(bad[:10])


def test_models_and_temporal_do_not_import_each_other_back(graph):
    # The issue that started this test: presets.py and temporal.py imported each other.
    assert "flashocc.models.presets" not in reachable(graph, "flashocc.models.temporal")


def test_the_checker_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "planted"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from planted.a import thing\n")
    (pkg / "a.py").write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import planted.d\n"
                              "thing = 1\n\ndef later():\n    from .sub import b\n")
    (pkg / "d.py").write_text("import planted.a\n")  # a type-only import back: not a cycle
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from planted import c\n")
    (pkg / "c.py").write_text("from planted.a import thing\n")  # a -> sub.b -> c -> a
    files = module_files(pkg, "planted")
    graph = import_graph(files, "planted")
    assert graph["planted.sub.b"] == {"planted.c"}  # 'from planted import c' is the module c
    assert "planted.sub" not in graph["planted.a"]  # the parent package of sub.b is not an edge
    assert "planted.d" not in graph["planted.a"]  # under TYPE_CHECKING
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"planted.a", "planted.sub.b", "planted.c"}
    (pkg / "c.py").write_text("thing = 2\n")  # break it
    assert find_cycle(import_graph(module_files(pkg, "planted"), "planted")) is None
