"""The layers stay one-way: ``checks/`` (the plug-in interface) never reaches into ``watcher/`` (the daemon),
and no module of either package imports itself back through others.

The graph is read from the source with ``ast``, not by importing: every ``import`` counts, including those
inside functions and under ``TYPE_CHECKING``, because a reader follows them all. An edge goes to the module
named, or, for ``from package import name``, to ``package.name`` when that is a module of its own.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("watcher", "checks")

#: What checks/ may import from watcher/: leaf modules, importing nothing of the project (checks/__init__.py).
PLUGIN_API = frozenset({"watcher.units"})


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the two packages, by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(name: str, source: str, known: Collection[str], *, is_package: bool = False) -> Iterator[str]:
    """The project modules that the module ``name`` (``source``, a package's ``__init__`` if ``is_package``)
    imports, among the ``known`` ones."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        yield from (t for t in targets if t.split(".")[0] in PACKAGES)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: set(imported(name, path.read_text(), known, is_package=path.name == "__init__.py"))
        for name, path in known.items()
    }


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_checks_imports_only_the_plugin_interface_of_watcher() -> None:
    """A module of checks/ that imports watcher/ names it here, beside the import that is not allowed."""
    edges = graph()
    wrong = {
        f"{name} imports {target}"
        for name, targets in edges.items()
        if name.split(".")[0] == "checks"
        for target in targets
        if target.split(".")[0] == "watcher" and target not in PLUGIN_API
    }
    assert not wrong, sorted(wrong)


def test_the_plugin_interface_is_a_leaf() -> None:
    """What checks/ may import from watcher/ imports nothing of the project: it cannot drag the daemon in."""
    edges = graph()
    assert {name: sorted(edges[name]) for name in PLUGIN_API if edges[name]} == {}


def test_no_import_cycles() -> None:
    """No module of watcher/ or checks/ imports itself back, directly or through others."""
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"a"}}, [["a"]]),
    ],
)
def test_cycles_are_found(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    """The cycle finder reports a loop of three modules and a module that imports itself, and no more."""
    assert cycles(edges) == expected


SAMPLE = """
import watcher.config
from watcher import store
from watcher.store import Store
from . import sibling
from .sibling import name
from ..units import Duration
import json

if TYPE_CHECKING:
    from checks.base import Check


def later() -> None:
    from checks.clickhouse import client
"""


def test_the_graph_sees_every_kind_of_import() -> None:
    """Plain, from, relative, nested and TYPE_CHECKING imports all become edges, so that the tests above can
    fail; a name imported from a module is an edge to that module, a module imported from a package one to
    the module."""
    known = {"watcher.config", "watcher.store", "watcher.stages.sibling", "watcher.units", "checks.base",
             "checks.clickhouse.client"}  # fmt: skip
    edges = set(imported("watcher.stages.sample", SAMPLE, known))
    assert edges == known  # and not json
