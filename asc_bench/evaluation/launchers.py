"""Where the cells of `asc-bench bench` run: local processes, or a cluster through submitit.

A suite is a grid of independent cells, so it scales out as one job per cell, not as one distributed job
(a single cell still spreads over GPUs with torchrun). Both launchers call the same
`asc_bench.evaluation.bench.execute_cell` in another process, so a cell's record is the same wherever it
ran (episodes and scores depend only on task, seed and data; timestamps and timings differ). All cells write
into one results folder and share one embedding cache (`--cache-dir`, which must then be on a shared
file system; the cache's locks make concurrent writers of one key safe).

Logs: one file per cell under `<results>/_logs/<suite>/` (local) or submitit's folder
`<results>/_submitit/<suite>/` (one `<job id>_<task>_log.out/.err` pair per array task).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from asc_bench.api import UsageError
from asc_bench.evaluation.bench import BenchSettings, CellOutcome, CellPlan, safe_name, execute_cell

LAUNCHERS = ("inline", "local", "slurm")


@dataclass
class LocalLauncher:
    """Cells in `jobs` fresh local processes (spawned: no state shared with the parent)."""

    jobs: int = 1
    suite: str = "suite"

    def run(self, plans: Sequence[CellPlan], settings: BenchSettings, emit: Callable[[CellOutcome], None]) -> None:
        if not plans:
            return
        logs = Path(settings.results_dir) / "_logs" / safe_name(self.suite)
        logs.mkdir(parents=True, exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, self.jobs), mp_context=ctx) as pool:
            futures = {pool.submit(execute_cell, p, settings, str(logs / f"{safe_name(p.cell.id)}.log")): p
                       for p in plans}
            for fut in as_completed(futures):
                plan = futures[fut]
                try:
                    emit(fut.result())
                except Exception as exc:        # the worker process died (killed, out of memory)
                    emit(CellOutcome(plan.cell.id, "failed", f"worker process failed: {type(exc).__name__}: {exc}"))


@dataclass
class SubmititLauncher:
    """Cells as a submitit array job (`cluster="slurm"`; `"local"` runs submitit's local executor).

    `retries` resubmits the cells whose *job* failed (node failure, time limit, preemption: the job
    raised instead of returning an outcome); a cell that failed inside asc-bench (bad data, a bug) fails
    the same way again and is not resubmitted: fix it and rerun `bench`, which skips the finished cells.
    """

    cluster: str = "slurm"
    suite: str = "suite"
    timeout_min: int = 60
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: float | None = None
    partition: str | None = None
    array_parallelism: int = 64
    retries: int = 1
    extra: Mapping[str, Any] = field(default_factory=dict)

    def executor(self, folder: Path) -> Any:
        import submitit

        ex = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        params: dict[str, Any] = {"timeout_min": self.timeout_min, "gpus_per_node": self.gpus_per_node,
                                  "cpus_per_task": self.cpus_per_task, "name": f"asc-bench-{self.suite}",
                                  "slurm_array_parallelism": self.array_parallelism}
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        params.update(self.extra)
        ex.update_parameters(**params)
        return ex

    def run(self, plans: Sequence[CellPlan], settings: BenchSettings, emit: Callable[[CellOutcome], None]) -> None:
        if not plans:
            return
        folder = Path(settings.results_dir) / "_submitit" / safe_name(self.suite)
        ex = self.executor(folder)
        pending = list(plans)
        for attempt in range(self.retries + 1):
            jobs = ex.map_array(execute_cell, pending, [settings] * len(pending))
            crashed = []
            for plan, job in zip(pending, jobs):
                try:
                    emit(job.result())
                except Exception as exc:   # the job itself failed: resubmit while retries remain
                    if attempt < self.retries:
                        crashed.append(plan)
                    else:
                        last = (str(exc).strip().splitlines() or [""])[-1]
                        emit(CellOutcome(plan.cell.id, "failed",
                                         f"job {job.job_id} failed after {attempt + 1} attempt(s): "
                                         f"{type(exc).__name__}: {last}; logs in {folder}"))
            if not crashed:
                return
            pending = crashed


def make_launcher(name: str, *, suite: str, jobs: int = 1, **slurm: Any) -> Any:
    """None for in-process runs, else a launcher object with `run(plans, settings, emit)`."""
    if name == "inline":
        return None
    if name == "local":
        return LocalLauncher(jobs=jobs, suite=suite)
    if name == "slurm":
        return SubmititLauncher(suite=suite, **slurm)
    raise UsageError(f"--launcher must be one of {', '.join(LAUNCHERS)}, got '{name}'")
