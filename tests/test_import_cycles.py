"""No import cycles inside any package of the project: the core, each plugin, the example plugin.

The graph is built from the source with ``ast``, without importing anything:
an edge ``a -> b`` for every ``import b`` / ``from b import x`` in module
``a`` (``from pkg import mod`` is an edge to ``pkg.mod`` when that is a
module). Every import counts, wherever it is: at the top, inside a function,
and under ``if TYPE_CHECKING:``. A function-level import is still a cycle
at run time (it only hides it), and a type-only import still ties the two
modules' designs together, so none of them is a way around this test. The
implicit import of a parent package (``import a.b`` runs ``a/__init__``) is
not an edge: a package re-exporting its own modules is not a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = [
    ROOT / "genievm_core",
    *sorted(p for p in (ROOT / "plugins").glob("*/genievm_*") if (p / "__init__.py").exists()),
    ROOT / "docs" / "examples" / "genievm-dirvm" / "genievm_dirvm",
]

ALLOWED_CYCLES: list[frozenset[str]] = []  # none: the last one (genievm_kvm's cbt) went with issue 20


def _modules(package: Path) -> dict[str, Path]:
    out = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imported(module: str, path: Path, known: set[str]) -> Iterator[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def import_graph(package: Path) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {
        name: {m for m in _imported(name, path, known) if m in known and m != name} for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.name)
def test_no_import_cycles(package: Path) -> None:
    found = cycles(import_graph(package))
    unexpected = [sorted(c) for c in found if c not in ALLOWED_CYCLES]
    assert not unexpected, f"import cycles in {package.name}: {unexpected}"


def test_the_allowed_cycles_still_exist() -> None:
    """An allowed cycle that is gone must leave the list, so it cannot come back unnoticed."""
    found = {c for package in PACKAGES for c in cycles(import_graph(package))}
    assert [sorted(c) for c in ALLOWED_CYCLES if c not in found] == []


def test_type_only_function_level_and_relative_imports_are_edges(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import A\n")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\nA = 1\n"
    )
    (package / "b.py").write_text("from . import a\nB = 1\n")
    (package / "c.py").write_text("def late() -> None:\n    import pkg.d\n")
    (package / "d.py").write_text("from .c import late\n")
    assert sorted(sorted(c) for c in cycles(import_graph(package))) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
