"""No import cycle in edge/: every module imports alone in a fresh interpreter, and the graph
of edge modules importing each other at run time (anywhere in a module, functions included;
``if TYPE_CHECKING:`` blocks aside) has no cycle."""

from __future__ import annotations

import ast
import asyncio
import sys
from pathlib import Path

import edge

EDGE_DIR = Path(edge.__file__).parent
MODULES = sorted(f"edge.{p.stem}" for p in EDGE_DIR.glob("*.py") if p.stem != "__init__")


async def test_every_edge_module_imports_alone_in_a_fresh_interpreter() -> None:
    gate = asyncio.Semaphore(2)

    async def import_alone(module: str) -> tuple[str, int, bytes]:
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                f"import {module}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
            return module, proc.returncode or 0, out

    results = await asyncio.gather(*(import_alone(m) for m in MODULES))
    failed = {m: out.decode(errors="replace")[-2000:] for m, rc, out in results if rc != 0}
    assert not failed, failed
    assert len(results) >= 20  # every module under edge/ was tried


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> set[str]:
    """The ``edge.*`` modules ``path`` imports outside ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("edge."))
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module == "edge":  # from edge import peers
                found.update(f"edge.{a.name}" for a in node.names)
            elif node.module.startswith("edge."):
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & set(MODULES)


def test_edge_modules_import_each_other_without_a_cycle() -> None:
    graph = {m: _runtime_imports(EDGE_DIR / f"{m.split('.', 1)[1]}.py") for m in MODULES}
    assert "edge.node" in graph["edge.app"]  # the graph is read (app wires the node)
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join([*path, module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            walk(dep, [*path, module])
        done.add(module)

    for module in MODULES:
        walk(module, [])
    # nothing but the entry point reaches back to the application module
    assert {m for m, deps in graph.items() if "edge.app" in deps} == {"edge.__main__"}
