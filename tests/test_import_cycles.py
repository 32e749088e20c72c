"""No import circle inside the evaluation package: its import graph, read from the source with `ast`, has no cycle.

Imports inside functions count (a deferred import that closes a circle still means the modules cannot be read in
order); imports under `if TYPE_CHECKING:` do not, as they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import flat_pipeline

SOURCE = Path(flat_pipeline.__file__).parent.parent


def _modules(package: str, source: Path) -> dict[str, Path]:
    """Every module of a package by dotted name (a package by its own name, for its `__init__.py`)."""
    modules = {}
    for path in (source / package.replace(".", "/")).rglob("*.py"):
        parts = path.relative_to(source).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(name: str, path: Path) -> set[str]:
    """Every dotted name the module's import statements can load: the module, and module.attribute for
    `from module import attribute` (a submodule where there is one of that name)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: level - 1 packages up from the module's own package
                    parent = package[: len(package) - (node.level - 1)]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            visit(list(ast.iter_child_nodes(node)))

    visit([ast.parse(path.read_text(encoding="utf-8"))])
    return found


def import_graph(package: str, source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = _modules(package, source)
    return {name: (_imported(name, path) & set(modules)) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once all it reaches is explored
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := walk(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return None


def test_the_graph_reads_deferred_relative_and_type_checking_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n")
    assert import_graph("pkg", tmp_path) == {"pkg": set(), "pkg.a": {"pkg", "pkg.b"}, "pkg.b": set()}
    assert find_cycle(import_graph("pkg", tmp_path)) is None
    (package / "b.py").write_text("import pkg.a\n")
    assert find_cycle(import_graph("pkg", tmp_path)) == ["pkg.a", "pkg.b", "pkg.a"]


@pytest.mark.parametrize("package", ["flat_pipeline.evaluation"])
def test_the_package_has_no_import_cycle(package):
    graph = import_graph(package)
    assert len(graph) > 5 and any(graph.values())  # the graph was read: modules and their imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
