"""`asc-bench bench SUITE`: every (model, task) cell of a suite, inline or through a cluster launcher."""
from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from asc_bench.cli.app import cli, context_plugins, err, guard, kv, out, plugin_manager


@cli.command("bench")
@click.argument("suite")
@click.option("--model", "models", multiple=True, metavar="LABEL=ENCODER:CHECKPOINT",
              help="Replace the suite's models (repeatable); CHECKPOINT is a path, 'random' or 'none'.")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records go (default as for run).")
@click.option("--data-root", "data_roots", multiple=True, metavar="DATASET=DIR",
              help="Root of one dataset (repeatable; default $ASC_BENCH_DATA/<dataset>).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Embedding cache (shared by all cells).")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", type=int, help="Episode seed for every cell (default: each task's).")
@click.option("--force", is_flag=True, help="Rerun cells that already have a valid record.")
@click.option("--keep-going", is_flag=True, help="Run the cells that pass the checks even if others fail them.")
@click.option("--launcher", type=click.Choice(["inline", "local", "slurm"]), default="inline", show_default=True,
              help="inline: this process; local: local worker processes; slurm: submitit array jobs.")
@click.option("--jobs", default=1, show_default=True, type=click.IntRange(min=1), help="local: worker processes.")
@click.option("--gpus", default=0, show_default=True, type=click.IntRange(min=0), help="slurm: GPUs per cell.")
@click.option("--cpus", default=4, show_default=True, type=click.IntRange(min=1), help="slurm: CPUs per cell.")
@click.option("--time", "timeout_min", default=60, show_default=True, type=click.IntRange(min=1),
              help="slurm: time limit per cell, minutes.")
@click.option("--mem-gb", type=float, help="slurm: memory per cell.")
@click.option("--partition", help="slurm: partition.")
@click.option("--array-parallelism", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--retries", default=1, show_default=True, type=click.IntRange(min=0),
              help="slurm: resubmit cells whose job crashed (node failure, time limit) this many times.")
@click.option("--submitit-cluster", default="slurm", hidden=True, help="submitit cluster (tests: local).")
@guard
def bench_cmd(suite: str, models: tuple[str, ...], results_dir: str | None, data_roots: tuple[str, ...], cache_dir: str | None,
              device: str, batch_size: int, seed: int | None, force: bool, keep_going: bool, launcher: str, jobs: int,
              gpus: int, cpus: int, timeout_min: int, mem_gb: float | None, partition: str | None,
              array_parallelism: int, retries: int, submitit_cluster: str) -> None:
    """Run every (model, task) cell of a suite: checks first, resumable, one progress view, a summary.

    Exit code 0 when every cell is done or skipped (valid record), 1 when a cell failed, 2 on bad usage
    or when cells fail the checks (nothing embedded then)."""
    from asc_bench.evaluation.bench import BenchSettings, run_suite
    from asc_bench.evaluation.suites import parse_model_arg, resolve_suite
    from asc_bench.evaluation.launchers import make_launcher
    from asc_bench.evaluation.records import results_dir_or_default
    from asc_bench.progress import progress

    results_dir = str(results_dir_or_default(results_dir))
    manager = plugin_manager()
    spec = resolve_suite(suite, manager.suite_dirs)
    if models:
        spec = spec.with_models([parse_model_arg(m) for m in models])
    settings = BenchSettings(results_dir=results_dir, cache_dir=cache_dir, data_roots=kv(data_roots, "--data-root"),
                             device=device, batch_size=batch_size, seed=seed, force=force, keep_going=keep_going,
                             plugins=context_plugins())
    runner = make_launcher(launcher, suite=spec.name, jobs=jobs, cluster=submitit_cluster, timeout_min=timeout_min,
                           gpus_per_node=gpus, cpus_per_task=cpus, mem_gb=mem_gb, partition=partition,
                           array_parallelism=array_parallelism, retries=retries)
    n_cells = len(spec.models) * len(spec.columns)
    err.print(f"{spec.name}: {len(spec.models)} models x {len(spec.columns)} columns = {n_cells} cells; "
              f"checking all cells before embedding", highlight=False)
    with progress(f"bench {spec.name}", total=n_cells) as bar:
        def on_outcome(o: Any) -> None:
            bar.advance(1)
            if o.status == "failed":
                err.print(f"[red]failed[/] {o.cell_id}: {o.message}", highlight=False, soft_wrap=True)

        report = run_suite(spec, settings, launcher=runner, on_outcome=on_outcome,
                           on_start=lambda cell: bar.describe(f"bench {spec.name}: {cell}"))
    table = Table(title=f"bench {spec.name}")
    for col in ("cell", "status", "score ± 95% CI", "record / reason"):
        table.add_column(col)
    for o in report.outcomes:
        score = f"{100 * o.mean:.2f} ± {100 * o.half_width:.2f} %" if o.mean is not None and o.half_width is not None \
            and o.half_width == o.half_width else ("-" if o.mean is None else f"{100 * o.mean:.2f} %")
        style = {"done": "green", "skipped": "cyan", "failed": "red"}[o.status]
        table.add_row(o.cell_id, f"[{style}]{o.status}[/]", score, o.record_path or o.message)
    out.print(table)
    out.print(f"{report.count('done')} done, {report.count('skipped')} skipped (valid record), "
              f"{report.count('failed')} failed; records in {results_dir}", highlight=False)
    if not report.ok:
        sys.exit(1)
