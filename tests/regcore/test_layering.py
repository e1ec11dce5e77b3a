"""regcore is the shared core: it imports neither server, nor the bench, the test harness or the
application package, and each of its modules imports on its own in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import regcore

ROOT = Path(regcore.__file__).resolve().parent
FORBIDDEN = ("origin", "edge", "bench", "harness", "quayside")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imported_modules(path: Path, module: str) -> set[str]:
    return imports_of(
        path.read_text(encoding="utf-8"), module, is_package=path.name == "__init__.py"
    )


def imports_of(source: str, module: str, *, is_package: bool = False) -> set[str]:
    """Every module named by an import anywhere in ``source`` (functions and ``TYPE_CHECKING``
    blocks included, ``importlib.import_module`` too), relative imports resolved against
    ``module``."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0] if node.args else None
            out.add(arg.value if isinstance(arg, ast.Constant) else "<dynamic import>")
    return out


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


def test_the_walker_sees_what_it_must() -> None:
    """The checker itself: relative, nested, TYPE_CHECKING and dynamic imports are found."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..up import thing\n"
        "if TYPE_CHECKING:\n    from edge.app import Edge\n"
        "def f():\n    import origin.app\n    importlib.import_module('bench.suite')\n"
    )
    found = imports_of(source, "regcore.client.probe")
    assert {"regcore.client.sibling", "regcore.up.thing", "edge.app", "origin.app"} <= found
    assert "bench.suite" in found
    assert "regcore.client.sibling" in imports_of(
        "from .sibling import x", "regcore.client", is_package=True
    )


def test_regcore_imports_no_server_bench_harness_or_app() -> None:
    offenders = {
        module: sorted(
            name
            for name in imported_modules(path, module)
            if name.split(".")[0] in FORBIDDEN or name == "<dynamic import>"
        )
        for module, path in MODULES.items()
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def _import_alone(module: str) -> tuple[str, int, str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return module, out.returncode, out.stderr[-2000:]


def test_every_regcore_module_imports_alone_in_a_fresh_interpreter() -> None:
    """An import cycle inside regcore shows up as an ImportError ("partially initialized
    module") when the cycle is entered from the wrong side; each module is tried first."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_import_alone, sorted(MODULES)))
    failed = {module: err for module, rc, err in results if rc != 0}
    assert failed == {}
    assert len(results) == len(MODULES) > 20


def module_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Import edges between ``modules`` (every import :func:`imports_of` finds; ``from m import
    name`` is an edge to ``m``). Edges to the importer's own parent packages are left out: Python
    runs them first anyway, and a package ``__init__`` re-exporting its children is no circle."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for name in imported_modules(path, module):
            target = name if name in modules else name.rpartition(".")[0]
            if target in modules and target != module and not module.startswith(target + "."):
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_regcore() -> None:
    """No two regcore modules import each other, directly or around a circle (imports inside
    functions and under TYPE_CHECKING count: they are circles that merely happen to load)."""
    assert cycles(module_graph(MODULES)) == []
