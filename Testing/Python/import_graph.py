"""The product code's import graph, read from its source (nothing is imported): layers and cycles.

Layers, bottom to top (DESIGN.md): the engine ``SAMSegmenterLib``; the Qt-free MRML layer
``SAMSegmenterMRML``; the front ends (``SAMSegmenterWeb``, the Slicer effect ``SegmentEditorSAMLib``
and module ``SAMSegmenter``). A module may import its own layer and the layers below it, never one
above. A runtime cycle is a circle of imports that run when a module is loaded: module-level ones,
not those inside a function or under ``if TYPE_CHECKING:``; importing ``a.b.c`` also runs ``a`` and
``a.b``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

LAYERS = {"SAMSegmenterLib": 0, "SAMSegmenterMRML": 1, "SAMSegmenterWeb": 2, "SegmentEditorSAMLib": 2,
          "SAMSegmenter": 2}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    runtime: bool  # runs when ``source`` is loaded


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the layers' packages and modules under ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[0] not in LAYERS:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.stmt, bool]]:
    """Every import statement with whether it runs at module load."""
    out: list[tuple[ast.stmt, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.append((child, runtime))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), runtime)
            else:
                visit(child, runtime)

    visit(tree, True)
    return out


def edges(root: Path) -> list[Edge]:
    """Imports between the product's own modules (targets resolved to the most specific known module)."""
    known = modules(root)
    out: list[Edge] = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, runtime in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
            for target in targets:
                parts = target.split(".")
                if parts[0] not in LAYERS:
                    continue
                for depth in range(1, len(parts) + 1):  # the packages above run too
                    prefix = ".".join(parts[:depth])
                    if prefix in known and prefix != name:
                        out.append(Edge(name, prefix, node.lineno, runtime))
    return out


def upward(root: Path) -> list[Edge]:
    """Imports from a lower layer into a higher one."""
    return [e for e in edges(root) if LAYERS[e.target.split(".")[0]] > LAYERS[e.source.split(".")[0]]]


def cycles(root: Path) -> list[list[str]]:
    """Runtime import circles, each as the list of modules around it (one per strongly connected group)."""
    graph: dict[str, set[str]] = {}
    for e in edges(root):
        if e.runtime:
            graph.setdefault(e.source, set()).add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return groups
