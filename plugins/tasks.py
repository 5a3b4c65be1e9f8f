"""Contributes the task specs shipped with asc-bench (the `tasks/` folder, package `asc_bench_tasks`)."""
from __future__ import annotations

from importlib import resources

from asc_bench import hookimpl


@hookimpl
def register_task_dirs(register):
    register(resources.files("asc_bench_tasks"))
