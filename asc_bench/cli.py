"""The `asc-bench` command line: a thin click layer over the library API."""
from __future__ import annotations

import itertools
import json
import sys
import traceback
from typing import Any, Callable, Iterable

import click
from rich.console import Console
from rich.table import Table

from asc_bench import distributed as dist
from asc_bench.api import AscBenchError, UsageError
from asc_bench.plugins import KINDS, get_manager

# Logs and pipes get wide tables instead of rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

LIST_KINDS = tuple(KINDS) + ("tasks",)


class Context:
    def __init__(self, plugins: tuple[str, ...], debug: bool):
        self.plugins = plugins
        self.debug = debug


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn asc-bench errors into a one-line message and the documented exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_object(Context).debug
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except AscBenchError as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
                      highlight=False, soft_wrap=True)
            sys.exit(1)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Load a local plugin module (repeatable); also via ASC_BENCH_PLUGINS.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="asc-bench")
@click.pass_context
def cli(ctx: click.Context, plugins: tuple[str, ...], debug: bool) -> None:
    """asc-bench: how well do audio representations transfer?"""
    ctx.obj = Context(plugins, debug)


def _manager():
    return get_manager(click.get_current_context().find_object(Context).plugins)


# ------------------------------------------------------------------------------------------------ list
@cli.command("list")
@click.argument("kind", type=click.Choice(LIST_KINDS))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_guard
def list_cmd(kind: str, as_json: bool) -> None:
    """List registered encoders, datasets, tasks, protocols, losses, augmentations or recipes."""
    rows = _list_rows(kind)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    table = Table(title=kind)
    for col in rows[0] if rows else ["name"]:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_fmt(v) for v in row.values()])
    out.print(table)


def _list_rows(kind: str) -> list[dict[str, Any]]:
    from asc_bench.tasks import discover_tasks

    manager = _manager()
    if kind == "tasks":
        return [{"name": t.name, "dataset": t.dataset, "protocol": t.protocol, "group": t.group,
                 "description": t.description} for t in sorted(discover_tasks(manager.task_dirs).values(),
                                                                key=lambda t: t.name)]
    rows = []
    for name, entry in sorted(manager.registries[kind].items()):
        row: dict[str, Any] = {"name": name, "plugin": entry.plugin, "description": entry.description}
        if kind == "encoders":
            facts = _summary(entry)
            row["params"] = facts.get("params")
            row["MACs/s"] = facts.get("macs_per_s")
            row["weights"] = "checkpoint" if entry.requires_weights else "none needed"
        if kind == "protocols":
            row["params"] = [{"name": p.name, "default": p.default, "meaning": p.meaning,
                              "required": p.required} for p in entry.params]
        rows.append(row)
    return rows


def _summary(entry: Any) -> dict[str, Any]:
    if entry.summary is None:
        return {}
    try:
        return dict(entry.summary())
    except Exception as exc:   # a summary is informative only; never fail the listing for it
        return {"params": f"error: {exc}"}


def _param_default(p: dict[str, Any]) -> str:
    if p.get("required"):
        return "(required)"
    d = p["default"]
    return "none" if d is None else d if isinstance(d, str) else json.dumps(d)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list) and all(isinstance(v, dict) and "meaning" in v for v in value):
        return "\n".join(f"{v['name']} = {_param_default(v)}: {v['meaning']}" for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.3g}" if value < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ------------------------------------------------------------------------------------------------ plugins
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True)
@_guard
def plugins_cmd(as_json: bool) -> None:
    """Loaded plugins, their versions, the hooks they implement, and failures."""
    manager = _manager()
    rows = [{"name": p.name, "source": p.source, "module": p.module, "version": p.version,
             "hooks": p.hooks, "error": p.error} for p in manager.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="plugins")
    for col in ("name", "source", "version", "hooks", "status"):
        table.add_column(col)
    for r in rows:
        status = f"[red]FAILED: {r['error']}[/]" if r["error"] else "[green]ok[/]"
        table.add_row(r["name"], r["source"], r["version"] or "-", ", ".join(r["hooks"]) or "-", status)
    out.print(table)


# ------------------------------------------------------------------------------------------------ run
def _kv(values: Iterable[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        if "=" not in item:
            raise UsageError(f"{what} expects key=value, got '{item}'")
        key, value = item.split("=", 1)
        pairs[key.strip()] = value.strip()
    return pairs


def _yaml_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def _sweep(n_way: str | None, k_shot: str | None, params: dict[str, str]) -> list[dict[str, Any]]:
    base = {k: _yaml_value(v) for k, v in params.items()}
    axes = []
    for key, spec in (("n_way", n_way), ("k_shot", k_shot)):
        if spec:
            axes.append([(key, _yaml_value(v)) for v in spec.split(",") if v.strip()])
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
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a protocol parameter of the task (repeatable), e.g. episodes=500.")
@click.option("--n-way", help="Sweep: comma-separated N values; one record per cell.")
@click.option("--k-shot", help="Sweep: comma-separated K values; one record per cell.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--seed", type=int, help="Episode seed (default: the task's).")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Embedding cache (default: user cache dir).")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records go (default leaderboard/results).")
@click.option("--on-bad-audio", type=click.Choice(["fail", "skip"]), default="fail", show_default=True)
@click.option("--shard-size", default=256, hidden=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON on stdout.")
@_guard
def run_cmd(encoder: str, task: str, checkpoint: str | None, random_init: bool, encoder_options: tuple[str, ...],
            params: tuple[str, ...], n_way: str | None, k_shot: str | None, data_root: str | None, seed: int | None,
            device: str, batch_size: int, cache_dir: str | None, results_dir: str | None, on_bad_audio: str,
            shard_size: int, as_json: bool) -> None:
    """Embed the task's dataset (cached), run its protocol, print the score with its 95% CI."""
    from asc_bench.runner import run_task

    dist.init(device=device)
    records = []
    for overrides in _sweep(n_way, k_shot, _kv(params, "--param")):
        records.append(run_task(
            encoder, task, plugins=click.get_current_context().find_object(Context).plugins,
            data_root=data_root, cache_dir=cache_dir, results_dir=results_dir, seed=seed, overrides=overrides,
            checkpoint=checkpoint, random_init=random_init, encoder_options=_kv(encoder_options, "--encoder-option"),
            device=device, batch_size=batch_size, on_bad_audio=on_bad_audio, shard_size=shard_size,
            show_progress=not as_json))
    if not dist.is_main():
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
        table.add_row(task, r["encoder"]["name"], f"{r['encoder']['params']:,}",
                      f"{100 * s['mean']:.2f} ± {100 * s['half_width']:.2f} %", f"{s['n']} {r['protocol']['unit']}s",
                      f"{r['wall_time_s']:.1f}", _fmt(r["embedding"]["clips_per_s"]),
                      "hit" if r["embedding"]["cache_hit"] else "computed")
    console.print(table)
    for r in records:
        if r["skipped_files"]:
            console.print(f"[yellow]skipped {len(r['skipped_files'])} bad file(s)[/], e.g. "
                          f"{r['skipped_files'][0]['path']}: {r['skipped_files'][0]['reason']}", highlight=False)
        if r.get("_path"):
            console.print(f"record: {r['_path']}", highlight=False)


def main() -> None:
    cli(prog_name="asc-bench")


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
@_guard
def extract_cmd(encoder: str, task: str, checkpoint: str | None, random_init: bool, encoder_options: tuple[str, ...],
                data_root: str | None, device: str, batch_size: int, cache_dir: str | None, on_bad_audio: str,
                shard_size: int) -> None:
    """Only embed a task's dataset into the cache (e.g. under torchrun, one shard set per rank)."""
    from asc_bench.runner import extract

    dist.init(device=device)
    done = extract(encoder, task, plugins=click.get_current_context().find_object(Context).plugins,
                   data_root=data_root, cache_dir=cache_dir, checkpoint=checkpoint, random_init=random_init,
                   encoder_options=_kv(encoder_options, "--encoder-option"), device=device,
                   batch_size=batch_size, on_bad_audio=on_bad_audio, shard_size=shard_size, show_progress=True)
    if dist.is_main():
        r = done.result
        state = "already cached" if r.cache_hit else f"{r.clips_embedded} clips embedded in {r.seconds:.1f} s"
        out.print(f"{done.spec.dataset}: {len(done.clips)} clips, {state}; cache key {r.cache_key}", highlight=False)


# ------------------------------------------------------------------------------------------ compare
@cli.command("compare")
@click.option("--task", required=True, help="Task name whose stored records to compare.")
@click.argument("encoders", nargs=-1, required=True)
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records are (default leaderboard/results).")
@click.option("--seed", type=int, help="Seed of the records to pair (default: the latest common one).")
@click.option("--all-pairs", is_flag=True, help="Test every pair, not only each encoder against the first.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--json", "as_json", is_flag=True)
@_guard
def compare_cmd(task: str, encoders: tuple[str, ...], results_dir: str | None, seed: int | None, all_pairs: bool,
                alpha: float, as_json: bool) -> None:
    """Paired tests between encoders on identical episodes, from stored records."""
    from asc_bench.evaluation.compare import compare_records
    from asc_bench.evaluation.records import DEFAULT_RESULTS_DIR, load_records

    if len(encoders) < 2:
        raise UsageError("compare needs at least two encoders")
    records = load_records(results_dir or DEFAULT_RESULTS_DIR)
    cmp = compare_records(records, task, list(encoders), seed=seed, alpha=alpha, all_pairs=all_pairs)
    if as_json:
        click.echo(cmp.dumps())
        return
    scale = 100.0 if cmp.metric == "accuracy" else 1.0
    table = Table(title=f"{task}: seed {cmp.seed}, {cmp.summaries[cmp.encoders[0]]['n']} {cmp.unit}s, "
                        f"episode hash {cmp.episode_hash[:12]}")
    for col in ("encoder", "vs", "mean diff", "95% CI", "p (t)", "p (Wilcoxon)", "Holm p (t)", "McNemar p", "verdict"):
        table.add_column(col)
    for p in cmp.pairs:
        table.add_row(p.encoder, p.reference, f"{p.mean_diff * scale:+.2f}",
                      f"[{p.ci_low * scale:+.2f}, {p.ci_high * scale:+.2f}]", f"{p.p_t:.3g}", f"{p.p_wilcoxon:.3g}",
                      f"{p.p_t_holm:.3g}", f"{p.mcnemar.p_value:.3g}" if p.mcnemar else "-", p.verdict)
    out.print(table)
    for note in cmp.notes:
        out.print(f"note: {note}", highlight=False)


# ------------------------------------------------------------------------------------------ leaderboard
@cli.command("leaderboard")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records are (default leaderboard/results).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="leaderboard/README.md", show_default=True)
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Also write PNG plots here.")
@_guard
def leaderboard_cmd(results_dir: str | None, out_path: str, plots_dir: str | None) -> None:
    """Markdown tables (mean ± CI, best in bold, † = not significantly worse than the best) from records."""
    from asc_bench.atomic import atomic_write_bytes
    from asc_bench.evaluation.leaderboard import render_leaderboard, write_plots
    from asc_bench.evaluation.records import DEFAULT_RESULTS_DIR, load_records

    records = load_records(results_dir or DEFAULT_RESULTS_DIR)
    if not records:
        raise UsageError(f"no result records in {results_dir or DEFAULT_RESULTS_DIR}; run `asc-bench run` first")
    atomic_write_bytes(out_path, render_leaderboard(records).encode("utf-8"))
    out.print(f"wrote {out_path} from {len(records)} records", highlight=False)
    if plots_dir:
        for path in write_plots(records, plots_dir):
            out.print(f"plot: {path}", highlight=False)


# ------------------------------------------------------------------------------------------ train
@cli.command("train")
@click.argument("recipe")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Recipe config (YAML; unknown keys are errors).")
@click.option("--data-root", type=click.Path(file_okay=False), help="Root of the training dataset.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Run folder (default runs/<recipe>).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
@click.option("--max-steps", type=click.IntRange(min=1), help="Stop after N optimizer steps (smoke runs).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@_guard
def train_cmd(recipe: str, config_path: str, data_root: str | None, out_dir: str | None, resume: bool,
              max_steps: int | None, overrides: tuple[str, ...]) -> None:
    """Train a recipe (ContrastASC teacher/student, uaMix-MAE tuning) in the shared loop; torchrun-aware."""
    from asc_bench.training.loop import run_training

    result = run_training(recipe, config_path, data_root=data_root, out_dir=out_dir, resume=resume,
                          max_steps=max_steps, plugins=click.get_current_context().find_object(Context).plugins,
                          overrides={k: _yaml_value(v) for k, v in _kv(overrides, "--set").items()})
    if dist.is_main():
        rate = f", {result.steps_per_s:.2f} steps/s" if result.steps_per_s else ""
        out.print(f"{recipe}: steps {result.start_step}..{result.steps_done}{rate}; run folder {result.out_dir}",
                  highlight=False)
        if result.export_path:
            out.print(f"exported: {result.export_path}", highlight=False)
