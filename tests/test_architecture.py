"""The import graph keeps labelloop's layers pointing one way (DESIGN.md, "Dependency direction").

The graph is read with ``ast`` from the source files, nothing is imported. Imports inside
functions count (a lazy import closes a cycle just as a top-level one does); imports under
``if TYPE_CHECKING:`` do not (they never run). ``from a import b`` is an edge to the module
``a.b`` when that is a module, else to ``a``. The rules:

(a) no import cycle among the modules of ``service``, ``learning``, ``embeddings`` (and ``lab``
    once it exists), apart from the edges in ``KNOWN_CYCLE_EDGES``;
(b) ``learning`` and ``embeddings`` import neither ``service`` nor ``lab``, nor the web and
    database frameworks: they take arrays and paths and return arrays and dataclasses;
(c) domain code (``service.crud``, ``service.loop``, ``service.pipelines``, ``service.jobs``,
    ``service.ingest``, ``service.formats``) imports neither ``fastapi`` nor ``starlette`` (it
    raises ``service.errors``, which the app maps to HTTP in one handler), nor the layers above
    it (``service.api``, ``service.main``, the CLI modules); and ``service.crud``, the bottom of
    the domain, imports neither ``service.loop`` nor ``service.jobs``;
(d) ``service.api`` reaches jobs only through their public API: it may import public names
    (no leading underscore) from ``service.jobs`` or ``service.jobs.runner`` (``enqueue``,
    ``request_cancel``, ``JobConflict``, ...), never another jobs module (job bodies, the
    scheduler, the checks) and never a private name;
(e) ``service`` imports ``lab`` only in ``service/cli.py``, the one place that registers
    the lab's commands.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [p for p in ("service", "learning", "embeddings", "lab") if (ROOT / p / "__init__.py").is_file()]

# Cycles that other parts of issue #24 are breaking now: (importer, imported) edges left out
# of the cycle check, each with the cycle it closes. The lead empties this list at the end;
# nothing may be added to it.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {
}

DOMAIN = ("service.crud", "service.loop", "service.pipelines", "service.jobs", "service.ingest", "service.formats")
WEB = ("fastapi", "starlette")
JOBS_PUBLIC_MODULES = ("service.jobs", "service.jobs.runner")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module: ``a.b`` for ``from a import b`` when that is a module, else ``a``
    names: tuple[str, ...]  # names taken by ``from target import ...``; () for ``import target``
    where: str  # path:line

    def __str__(self) -> str:
        what = f"from {self.target} import {', '.join(self.names)}" if self.names else f"import {self.target}"
        return f"{self.where}: {self.source} -> {what}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement below ``node``, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                found += [stmt] if isinstance(stmt, (ast.Import, ast.ImportFrom)) else _import_nodes(stmt)
        else:
            found += _import_nodes(child)
    return found


def build_graph() -> tuple[set[str], list[Import]]:
    files = sorted(f for p in PACKAGES for f in (ROOT / p).rglob("*.py"))
    modules = {module_name(f) for f in files}
    imports: list[Import] = []
    for f in files:
        src, is_pkg = module_name(f), f.name == "__init__.py"
        rel = f.relative_to(ROOT)
        for node in _import_nodes(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
            where = f"{rel}:{node.lineno}"
            if isinstance(node, ast.Import):
                imports += [Import(src, a.name, (), where) for a in node.names]
                continue
            base = node.module or ""
            if node.level:
                pkg = src.split(".") if is_pkg else src.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            names = [a.name for a in node.names]
            subs = [n for n in names if f"{base}.{n}" in modules]
            imports += [Import(src, f"{base}.{n}", (), where) for n in subs]
            rest = tuple(n for n in names if n not in subs)
            if rest:
                imports.append(Import(src, base, rest, where))
    return modules, imports


MODULES, IMPORTS = build_graph()
CLI = tuple(sorted(m for m in MODULES if m == "service.cli" or m.startswith("service.cli_")))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def find_cycles(imports: list[Import], skip: set[tuple[str, str]]) -> list[list[Import]]:
    """One concrete cycle per strongly connected component of the graph without ``skip``."""
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.target in MODULES and imp.source != imp.target and (imp.source, imp.target) not in skip:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: set[str] = set()
            while v not in comp:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for comp in components:  # the shortest way from the component's first module back to it
        start = min(comp)
        came: dict[str, list[Import]] = {start: []}
        frontier, back = [start], None
        while back is None:
            nxt = []
            for v in frontier:
                for w, imp in sorted(edges.get(v, {}).items()):
                    if w == start and back is None:
                        back = came[v] + [imp]
                    elif w in comp and w not in came:
                        came[w] = came[v] + [imp]
                        nxt.append(w)
            frontier = nxt
        cycles.append(back)
    return cycles


def test_graph_is_read() -> None:
    """The rules below mean something only if the reader finds the imports."""
    assert {"service", "learning", "embeddings"} <= set(PACKAGES)
    edges = {(i.source, i.target) for i in IMPORTS}
    assert ("service.main", "service.config") in edges  # a top-level import
    assert ("service.cli", "service.main") in edges  # one inside a function


def test_known_cycle_edges_still_exist() -> None:
    """The allow-list only shrinks: an entry whose import is gone must go too."""
    edges = {(i.source, i.target) for i in IMPORTS}
    stale = [f"{a} -> {b} ({why})" for (a, b), why in KNOWN_CYCLE_EDGES.items() if (a, b) not in edges]
    assert not stale, "remove these KNOWN_CYCLE_EDGES entries, the import is gone:\n  " + "\n  ".join(stale)


def test_no_import_cycles() -> None:
    cycles = find_cycles(IMPORTS, set(KNOWN_CYCLE_EDGES))
    report = "\n\n".join(
        " -> ".join([c[0].source] + [i.target for i in c]) + "\n" + "\n".join(f"  {i}" for i in c) for c in cycles)
    assert not cycles, f"import cycles (break them by moving the shared code down a layer):\n{report}"


def _job_internal(i: Import) -> bool:
    return i.target not in JOBS_PUBLIC_MODULES or any(n.startswith("_") for n in i.names)


# rule -> (importers, forbidden targets, which of those imports break it)
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[[Import], bool]]] = {
    "ml-imports-service": (("learning", "embeddings"), ("service", "lab", *WEB, "sqlmodel", "sqlalchemy"),
                           lambda i: True),
    "domain-imports-web": (DOMAIN, WEB, lambda i: True),
    "domain-imports-api": (DOMAIN, ("service.api", "service.main", *CLI), lambda i: True),
    "crud-imports-loop-or-jobs": (("service.crud",), ("service.loop", "service.jobs"), lambda i: True),
    "api-imports-job-internals": (("service.api",), ("service.jobs",), _job_internal),
    "service-imports-lab": (("service",), ("lab",), lambda i: i.source != "service.cli"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_layers_point_one_way(rule: str) -> None:
    sources, targets, breaks = RULES[rule]
    bad = [i for i in IMPORTS if _within(i.source, sources) and _within(i.target, targets) and breaks(i)]
    assert not bad, f"{rule} (the rules are in tests/test_architecture.py's docstring):\n" + "\n".join(
        f"  {i}" for i in bad)
