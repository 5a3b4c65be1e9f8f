"""Contributes the task specs (`tasks/`, package `asc_bench_tasks`) and benchmark suites (`suites/`,
package `asc_bench_suites`) shipped with asc-bench."""
from __future__ import annotations

from importlib import resources

from asc_bench import hookimpl


@hookimpl
def register_task_dirs(register):
    register(resources.files("asc_bench_tasks"))


@hookimpl
def register_suite_dirs(register):
    """The benchmark suites shipped with asc-bench (the `suites/` folder, package `asc_bench_suites`)."""
    register(resources.files("asc_bench_suites"))
