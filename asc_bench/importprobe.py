"""Which heavy modules one CLI command imports, seen from a fresh interpreter.

`asc-bench --version`, `--help` and the listing commands must start in a fraction of a second, so
they may import none of `HEAVY` (each costs from a tenth of a second to seconds). `command_imports`
runs the command exactly as `python -m asc_bench ARGS` does, in a new process, and reports its exit
code, which of `HEAVY` ended up in `sys.modules`, and the wall time of the whole process
(interpreter start included). `tests/test_startup.py` asserts on it; `benchmarks/startup.py` times
with it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Sequence

HEAVY = ("torch", "scipy", "sklearn", "numba")
_MARK = "@@asc-bench-imports "
_WRAPPER = """
import json, runpy, sys
sys.argv = ["asc-bench"] + sys.argv[1:]
code = 0
try:
    runpy.run_module("asc_bench", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
print(%r + json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (_MARK, HEAVY)


@dataclass(frozen=True)
class ImportReport:
    code: int                   # the command's exit status
    heavy: tuple[str, ...]      # the modules of HEAVY it imported, in HEAVY's order
    seconds: float              # wall time of the whole process


def command_imports(args: Sequence[str], *, before: str = "", timeout: float = 300) -> ImportReport:
    """Run `asc-bench ARGS` in a fresh interpreter; `before` is Python run first (e.g. an import
    that must show up in the report, to check the check)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", before + _WRAPPER, *args], capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stderr.splitlines() if line.startswith(_MARK)]
    if not lines:
        raise RuntimeError(f"asc-bench {' '.join(args)} did not report its imports (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    report = json.loads(lines[-1][len(_MARK):])
    return ImportReport(int(report["code"]), tuple(report["heavy"]), seconds)
