"""The import structure: no module imports another that (directly or through others) imports it back, and the
dependency rule holds (``service`` and ``training`` import ``model_store``, neither imports the other, and
``model_store`` imports neither). Read from the source with ``ast``, in-function and ``TYPE_CHECKING`` imports
included, so a cycle hidden behind a lazy import still shows."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "model_store", "training", "benchmarks")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (the longest known prefix of each imported name)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    deps.add(target)
        graph[name] = deps
    return graph


def related(a: str, b: str) -> bool:
    """A package and its own submodule: an ``__init__`` re-exporting its parts is not a circle."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if related(v, w):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_lazy_circle():
    assert cycles({"a.x": {"a.y"}, "a.y": {"a.x"}, "a": {"a.x"}}) == [["a.x", "a.y"]]
    assert cycles({"a": {"a.x"}, "a.x": {"a"}}) == []  # a package and its own part


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("service", "training"), ("training", "service"), ("model_store", "service"), ("model_store", "training")],
)
def test_the_dependency_rule(package, forbidden):
    graph = import_graph()
    offenders = sorted(
        m for m, deps in graph.items() if m.split(".")[0] == package and any(d.split(".")[0] == forbidden for d in deps)
    )
    assert offenders == [], f"{package} must not import {forbidden}"
