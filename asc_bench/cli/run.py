"""`asc-bench run`, `extract` and `episodes`: one task on one encoder, its embeddings alone, its episodes alone."""
from __future__ import annotations

import itertools
import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from asc_bench.api import UsageError
from asc_bench.cli.app import cli, context_plugins, err, fmt, guard, kv, out, yaml_kv, yaml_value


def _sweep(n_way: str | None, k_shot: str | None, params: dict[str, str]) -> list[dict[str, Any]]:
    base = {k: yaml_value(v) for k, v in params.items()}
    axes = []
    for key, spec in (("n_way", n_way), ("k_shot", k_shot)):
        if spec is not None:
            values = [(key, yaml_value(v)) for v in spec.split(",") if v.strip()]
            if not values:
                raise UsageError(f"--{key.replace('_', '-')} needs comma-separated values, e.g. "
                                 f"--{key.replace('_', '-')} 3,5; got {spec!r}")
            axes.append(values)
    if not axes:
        return [base]
    return [{**base, **dict(cell)} for cell in itertools.product(*axes)]


@cli.command("run")
@click.option("--encoder", required=True, help="Encoder name (see `asc-bench list encoders`).")
@click.option("--task", required=True, help="Task name or path to a task YAML file.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights file for the encoder.")
@click.option("--random-init", is_flag=True, help="Use random weights (must be asked for explicitly).")
@click.option("--encoder-option", "encoder_options", multiple=True, metavar="KEY=VALUE",
              help="Encoder option (repeatable); recorded in the result.")
@click.option("--label", help="Row label in tables, compare and leaderboard (default e.g. beats@3f2a1c, "
                              "'beats (random init)').")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a protocol parameter of the task (repeatable), e.g. episodes=500.")
@click.option("--n-way", help="Sweep: comma-separated N values; one record per cell.")
@click.option("--k-shot", help="Sweep: comma-separated K values; one record per cell.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--seed", type=int, help="Episode seed (default: the task's).")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Embedding cache (default: user cache dir).")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records go (default $ASC_BENCH_RESULTS, else the user data dir; see README).")
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--shard-size", default=256, hidden=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON on stdout.")
@guard
def run_cmd(encoder: str, task: str, checkpoint: str | None, random_init: bool, encoder_options: tuple[str, ...],
            label: str | None, params: tuple[str, ...], n_way: str | None, k_shot: str | None, data_root: str | None, seed: int | None,
            device: str, batch_size: int, cache_dir: str | None, results_dir: str | None, on_bad_audio: str,
            shard_size: int, as_json: bool) -> None:
    """Embed the task's dataset (cached), run its protocol, print the score with its 95% CI."""
    import shlex

    from asc_bench.runner import is_main_process, init_distributed, run_cells

    init_distributed(device)
    # Every cell is checked against the listing before any audio is decoded (runner.preflight).
    records = run_cells(
        encoder, task, _sweep(n_way, k_shot, kv(params, "--param")),
        plugins=context_plugins(),
        data_root=data_root, cache_dir=cache_dir, results_dir=results_dir, seed=seed,
        checkpoint=checkpoint, random_init=random_init, encoder_options=kv(encoder_options, "--encoder-option"),
        label=label, device=device, batch_size=batch_size, on_bad_audio=on_bad_audio, shard_size=shard_size,
        show_progress=not as_json, command=shlex.join(["asc-bench", *sys.argv[1:]]))
    if not is_main_process():
        return
    _print_runs(records, console=err if as_json else out)
    if as_json:
        from asc_bench.evaluation.records import json_safe

        public = [json_safe({k: v for k, v in r.items() if not k.startswith("_")}) for r in records]
        click.echo(json.dumps(public[0] if len(public) == 1 else public, indent=1))


def _print_runs(records: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="asc-bench results")
    for col in ("task", "encoder", "params", "score ± 95% CI", "n", "wall s", "clips/s", "cache"):
        table.add_column(col)
    for r in records:
        s = r["summary"]
        p = r["protocol"]["params"]
        task = r["task"]["name"] + (f" ({p.get('n_way')}-way {p.get('k_shot')}-shot)" if "n_way" in p else "")
        from asc_bench.evaluation.records import display_label

        table.add_row(task, display_label(r), f"{r['encoder']['params']:,}",
                      f"{100 * s['mean']:.2f} ± {100 * s['half_width']:.2f} %", f"{s['n']} {r['protocol']['unit']}s",
                      f"{r['wall_time_s']:.1f}", fmt(r["embedding"]["clips_per_s"]),
                      "hit" if r["embedding"]["cache_hit"] else "computed")
    console.print(table)
    for r in records:
        if r["skipped_files"]:
            console.print(f"[yellow]skipped {len(r['skipped_files'])} bad file(s)[/], e.g. "
                          f"{r['skipped_files'][0]['path']}: {r['skipped_files'][0]['reason']}", highlight=False)
        for kind in ("class", "group"):
            iv = (r.get("intervals") or {}).get(kind)
            if iv and iv.get("half_width") is not None:
                console.print(f"{r['encoder']['name']} on {r['task']['name']}: {kind}-level 95% interval "
                              f"± {100 * iv['half_width']:.2f} % ({iv['method']}, {iv['n_units']} "
                              f"{'classes' if kind == 'class' else 'groups'}; the CI above covers only the "
                              f"episode draw)", highlight=False)
        if r.get("_path"):
            console.print(f"record: {r['_path']}", highlight=False)


@cli.command("extract")
@click.option("--encoder", required=True)
@click.option("--task", required=True, help="Task whose dataset and crop policy to embed.")
@click.option("--checkpoint", type=click.Path(dir_okay=False))
@click.option("--random-init", is_flag=True)
@click.option("--encoder-option", "encoder_options", multiple=True, metavar="KEY=VALUE")
@click.option("--data-root", type=click.Path(file_okay=False))
@click.option("--device", default="cpu")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--cache-dir", type=click.Path(file_okay=False))
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--shard-size", default=256, hidden=True, type=click.IntRange(min=1))
@guard
def extract_cmd(encoder: str, task: str, checkpoint: str | None, random_init: bool, encoder_options: tuple[str, ...],
                data_root: str | None, device: str, batch_size: int, cache_dir: str | None, on_bad_audio: str,
                shard_size: int) -> None:
    """Only embed a task's dataset into the cache (e.g. under torchrun, one shard set per rank)."""
    from asc_bench.runner import is_main_process, extract, init_distributed

    init_distributed(device)
    done = extract(encoder, task, plugins=context_plugins(),
                   data_root=data_root, cache_dir=cache_dir, checkpoint=checkpoint, random_init=random_init,
                   encoder_options=kv(encoder_options, "--encoder-option"), device=device,
                   batch_size=batch_size, on_bad_audio=on_bad_audio, shard_size=shard_size, show_progress=True)
    if is_main_process():
        r = done.result
        state = "already cached" if r.cache_hit else f"{r.clips_embedded} clips embedded in {r.seconds:.1f} s"
        out.print(f"{done.spec.dataset}: {len(done.clips)} clips, {state}; cache key {r.cache_key}", highlight=False)


@cli.command("episodes")
@click.option("--task", required=True, help="Task name or path to a task YAML file.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--seed", type=int, help="Episode seed (default: the task's).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a protocol parameter of the task (repeatable), as in `run`.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache (only for datasets generated or "
              "unpacked there, e.g. demo, hf).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="JSON-lines file to write.")
@guard
def episodes_cmd(task: str, data_root: str | None, seed: int | None, params: tuple[str, ...], cache_dir: str | None,
                 out_path: str) -> None:
    """Write the task's episodes, draws or folds (one JSON line each) without embedding anything."""
    from asc_bench.evaluation.export import export_episodes

    s = export_episodes(task, out_path, plugins=context_plugins(),
                        data_root=data_root, cache_dir=cache_dir, seed=seed,
                        overrides=yaml_kv(params, "--param"))
    policy = {True: "group-disjoint", False: "not group-disjoint", None: "folds"}[s.group_disjoint]
    other = "test clips" if s.kind == "folds" else "queries"
    out.print(f"wrote {s.units} {s.kind} to {s.path} ({policy}; {s.grouped_clips} clips with a group; "
              f"{s.leaks} {s.kind} with {other} sharing a group with their "
              f"{'training' if s.kind == 'folds' else 'support'} clips)", highlight=False, soft_wrap=True)
