"""Start-up time of the commands users wait on, and whether they import torch.

    python benchmarks/startup.py [--repeat 5]

Each command runs in a fresh interpreter, exactly as `python -m asc_bench ...` would, through
`asc_bench.importprobe.command_imports`, which reports which heavy modules (torch, scipy, sklearn,
numba) were imported. Wall time is measured around the whole subprocess (interpreter start-up
included) and given as best and median of `--repeat` runs; the reference row is a bare `python -c pass`, so the difference is asc-bench's own
cost. Runs of the commands are interleaved so that all rows see the same machine load.
Goal (issue 15): `--version` imports neither torch nor scipy; `list encoders` builds no model and
imports no torch.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

from asc_bench.importprobe import HEAVY, command_imports

COMMANDS: dict[str, list[str]] = {
    "python -c pass (reference)": [],
    "asc-bench --version": ["--version"],
    "asc-bench --help": ["--help"],
    "asc-bench list encoders": ["list", "encoders"],
    "asc-bench plugins": ["plugins"],
}


def run_once(args: list[str]) -> tuple[float, dict]:
    if not args:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300)
        return time.perf_counter() - t0, {"code": proc.returncode, "heavy": []}
    report = command_imports(args)
    return report.seconds, {"code": report.code, "heavy": list(report.heavy)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    reports: dict[str, dict] = {}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            wall, report = run_once(argv)
            times[name].append(wall)
            reports[name] = report

    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"{args.repeat} runs each, interleaved; wall time of the whole process")
    print(f"{'command':<30}{'best s':>9}{'median s':>10}{'exit':>6}  heavy modules imported")
    for name in COMMANDS:
        heavy = ", ".join(reports[name]["heavy"]) or "none"
        print(f"{name:<30}{min(times[name]):>9.3f}{statistics.median(times[name]):>10.3f}"
              f"{reports[name]['code']:>6}  {heavy}")
    ok = all(not r["heavy"] and r["code"] == 0 for r in reports.values())
    print(f"goal (none of {', '.join(HEAVY)} for --version and list encoders): {'met' if ok else 'NOT met'}")

    def key(name: str) -> str:
        return name.replace("asc-bench ", "").replace("--", "").replace(" ", "_")

    fields = [f"python_s={statistics.median(times['python -c pass (reference)']):.3f}"]
    for name in ("asc-bench --version", "asc-bench list encoders"):
        fields.append(f"{key(name)}_s={statistics.median(times[name]):.3f}")
        fields.append(f"{key(name)}_torch={int('torch' in reports[name]['heavy'])}")
    fields.append(f"scipy_imported={int(any('scipy' in r['heavy'] for r in reports.values()))}")
    print(" ".join(fields))


if __name__ == "__main__":
    main()
