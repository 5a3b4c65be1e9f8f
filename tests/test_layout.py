"""The core's folders show the flow, and no two core modules import each other (directly or around a loop)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import asc_bench

CORE = Path(asc_bench.__file__).parent
STAGES = {"data", "embedding", "evaluation", "training"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every asc_bench module this file imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "asc_bench":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if (CORE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "asc_bench")
    return found


def test_core_modules_have_no_import_cycle():
    graph = {_module_name(p): _imports(p) for p in CORE.rglob("*.py")}
    graph = {m: {d for d in deps if d in graph and d != m and d != "asc_bench"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_each_stage_of_the_flow_is_a_folder():
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert STAGES <= folders
    top = sorted(p.stem for p in CORE.glob("*.py"))
    assert len(top) <= 12, f"the core's top level should hold only the spine, found {top}"


def test_import_asc_bench_alone_works_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", "import asc_bench, asc_bench.api, asc_bench.runner, asc_bench.cli"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
