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

LIST_KINDS = tuple(KINDS) + ("tasks", "suites", "weights", "sources")


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
    """List registered encoders, datasets, tasks, suites, protocols, losses, augmentations, recipes,
    where each built-in encoder's weights come from (weights), or the download sources (sources)."""
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
    manager = _manager()
    if kind in ("suites", "weights", "sources"):
        return _list_suites_or_weights(kind, manager)
    if kind == "tasks":
        from asc_bench.tasks import discover_tasks

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
            row["weights"] = entry.weights_kind
        if kind == "protocols":
            row["params"] = [{"name": p.name, "default": p.default, "meaning": p.meaning,
                              "required": p.required} for p in entry.params]
        rows.append(row)
    clashes = manager.clashes_of(kind)
    if clashes:   # a column only when there is something to show, so plain listings stay as they were
        for row in rows:
            row["clash"] = "; ".join(f"also registered by '{c.refused_from}' (refused)"
                                     for c in clashes.get(row["name"], [])) or None
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
             "hooks": p.hooks, "error": p.error, "clashes": p.clashes} for p in manager.plugins]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table(title="plugins")
    for col in ("name", "source", "version", "hooks", "status"):
        table.add_column(col)
    for r in rows:
        status = f"[red]FAILED: {r['error']}[/]" if r["error"] else "[green]ok[/]"
        if r["clashes"]:
            status += "".join(f"\n[yellow]name refused: {c}[/]" for c in r["clashes"])
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

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        raise UsageError(f"value {text!r} is not valid YAML ({problem}); quote it or fix the brackets, "
                         f"e.g. --param class_pool='[a, b]'") from None


def _sweep(n_way: str | None, k_shot: str | None, params: dict[str, str]) -> list[dict[str, Any]]:
    base = {k: _yaml_value(v) for k, v in params.items()}
    axes = []
    for key, spec in (("n_way", n_way), ("k_shot", k_shot)):
        if spec is not None:
            values = [(key, _yaml_value(v)) for v in spec.split(",") if v.strip()]
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
@_guard
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
        encoder, task, _sweep(n_way, k_shot, _kv(params, "--param")),
        plugins=click.get_current_context().find_object(Context).plugins,
        data_root=data_root, cache_dir=cache_dir, results_dir=results_dir, seed=seed,
        checkpoint=checkpoint, random_init=random_init, encoder_options=_kv(encoder_options, "--encoder-option"),
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
                      f"{r['wall_time_s']:.1f}", _fmt(r["embedding"]["clips_per_s"]),
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
    from asc_bench.runner import is_main_process, extract, init_distributed

    init_distributed(device)
    done = extract(encoder, task, plugins=click.get_current_context().find_object(Context).plugins,
                   data_root=data_root, cache_dir=cache_dir, checkpoint=checkpoint, random_init=random_init,
                   encoder_options=_kv(encoder_options, "--encoder-option"), device=device,
                   batch_size=batch_size, on_bad_audio=on_bad_audio, shard_size=shard_size, show_progress=True)
    if is_main_process():
        r = done.result
        state = "already cached" if r.cache_hit else f"{r.clips_embedded} clips embedded in {r.seconds:.1f} s"
        out.print(f"{done.spec.dataset}: {len(done.clips)} clips, {state}; cache key {r.cache_key}", highlight=False)


# ------------------------------------------------------------------------------------------ compare
@cli.command("compare")
@click.option("--task", "tasks", required=True, multiple=True,
              help="Task whose stored records to compare (repeatable: Holm runs over every comparison of the call).")
@click.argument("encoders", nargs=-1, required=True)
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records are (default as for run).")
@click.option("--seed", type=int, help="Seed of the records to pair (default: the latest common one).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Pick the sweep cell (repeatable), e.g. --param n_way=5 --param k_shot=1.")
@click.option("--all-pairs", is_flag=True, help="Test every pair, not only each encoder against the first.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--margin", type=click.FloatRange(0, min_open=True),
              help="Equivalence margin in points (accuracy %): adds a TOST test that can say 'equivalent within ±X points'.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def compare_cmd(tasks: tuple[str, ...], encoders: tuple[str, ...], results_dir: str | None, seed: int | None,
                params: tuple[str, ...], all_pairs: bool, alpha: float, margin: float | None, as_json: bool) -> None:
    """Paired tests between models (labels, or encoder names with one model) on identical episodes, from
    stored records (docs/statistics.md)."""
    from asc_bench.evaluation.compare import compare_family
    from asc_bench.evaluation.records import load_records

    if len(encoders) < 2:
        raise UsageError("compare needs at least two encoders")
    records = load_records(results_dir)
    cell = {k: _yaml_value(v) for k, v in _kv(params, "--param").items()} or None
    # margins are given in points for accuracy; the first task's metric decides after loading
    cmps = compare_family(records, list(tasks), list(encoders), seed=seed, alpha=alpha, all_pairs=all_pairs,
                          params=cell, margin=None if margin is None else margin / 100.0)
    if any(c.metric != "accuracy" for c in cmps) and margin is not None:
        raise UsageError("--margin is in accuracy points; a task here reports another metric")
    if as_json:
        if len(cmps) == 1:
            click.echo(cmps[0].dumps())
        else:
            click.echo(json.dumps({"comparisons": [c.to_json() for c in cmps]}, indent=2, sort_keys=True,
                                  allow_nan=False))
        return
    for cmp in cmps:
        scale = 100.0 if cmp.metric == "accuracy" else 1.0
        table = Table(title=f"{cmp.task}: seed {cmp.seed}, {cmp.summaries[cmp.encoders[0]]['n']} {cmp.unit}s, "
                            f"episode hash {cmp.episode_hash[:12]}")
        kinds = sorted({iv.kind for p in cmp.pairs for iv in p.intervals},
                       key=["episode", "fold", "bootstrap", "class", "group"].index)
        cols = ["encoder", "vs", "mean diff"] + [f"95% {k} CI" for k in kinds] + [
            "primary p", "Holm p", "Wilcoxon p*", "McNemar p*", "verdict"] + (
            [f"±{margin:g} pts"] if margin is not None else [])
        for col in cols:
            table.add_column(col)
        for p in cmp.pairs:
            by_kind = {iv.kind: iv for iv in p.intervals}
            ivs = [f"[{by_kind[k].low * scale:+.2f}, {by_kind[k].high * scale:+.2f}]"
                   if k in by_kind and by_kind[k].low == by_kind[k].low else "-" for k in kinds]
            equiv = ([] if margin is None else
                     ["cannot test" if p.equivalent is None else "equivalent" if p.equivalent else "not shown"])
            table.add_row(p.encoder, p.reference, f"{p.mean_diff * scale:+.2f}", *ivs, _p(p.p_primary),
                          _p(p.p_primary_holm), _p(p.p_wilcoxon), _p(p.mcnemar.p_value) if p.mcnemar else "-",
                          p.decision, *equiv)
        out.print(table)
        tests = sorted({p.primary_test for p in cmp.pairs})
        out.print(f"primary test: {'; '.join(tests)}; * secondary, unadjusted", highlight=False)
        seen = {}
        for p in cmp.pairs:
            for iv in p.intervals:
                seen.setdefault(iv.kind, iv)
        for k in kinds:
            iv = seen[k]
            out.print(f"{k} CI: {iv.method}; covers {iv.covers}; conditions on {iv.conditions_on}",
                      highlight=False)
        for p in cmp.pairs:
            out.print(f"{p.encoder} - {p.reference}: {p.verdict}" + (f"; {p.equivalence}" if p.equivalence else ""),
                      highlight=False)
        for note in cmp.notes:
            out.print(f"note: {note}", highlight=False)


def _p(value: float) -> str:
    """A p-value for a table: '-' when untestable, '<1e-300' when it underflows."""
    if value != value:
        return "-"
    return "<1e-300" if value == 0 else f"{value:.3g}"


# ------------------------------------------------------------------------------------------ leaderboard
@cli.command("leaderboard")
@click.option("--results-dir", type=click.Path(file_okay=False), help="Where records are (default as for run).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Only cells with these protocol params (repeatable), e.g. --param k_shot=1.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default="leaderboard/README.md", show_default=True)
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False), help="Also write PNG plots here.")
@click.option("--interval", type=click.Choice(["class", "episode"]), default="class", show_default=True,
              help="Interval printed in the cells: class-level jackknife (where records have it) or episode/fold CI.")
@click.option("--margin", type=click.FloatRange(0, min_open=True),
              help="Equivalence margin in points: ≡ marks entries equivalent to the best within ±X (TOST).")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--suite", help="Print a suite's paper-shaped table with the published rows and consistency checks "
                              "(written to --out only when --out is given).")
@click.option("--papers-ci", is_flag=True, help="With --suite: compute our CI the papers' way (1.96·σ/√n, "
                                                "population σ) for the consistency check.")
@_guard
def leaderboard_cmd(results_dir: str | None, params: tuple[str, ...], out_path: str, plots_dir: str | None,
                    interval: str, margin: float | None, alpha: float, suite: str | None, papers_ci: bool) -> None:
    """Markdown tables (mean ± one declared interval, best in bold, † = not separable from the best at α) from records."""
    from asc_bench.atomic import atomic_write_bytes

    if suite:
        _suite_leaderboard(suite, results_dir, out_path, papers_ci)
        return
    from asc_bench.evaluation.leaderboard import render_leaderboard, select_cells, write_plots
    from asc_bench.evaluation.records import load_records, results_dir_or_default

    records = load_records(results_dir)
    if not records:
        raise UsageError(f"no result records in {results_dir_or_default(results_dir)}; run "
                         f"`asc-bench run --encoder NAME --task TASK` first")
    records = select_cells(records, {k: _yaml_value(v) for k, v in _kv(params, "--param").items()})
    text = render_leaderboard(records, alpha, interval=interval, margin=None if margin is None else margin / 100.0)
    atomic_write_bytes(out_path, text.encode("utf-8"))
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


# ------------------------------------------------------------------------------------------ episodes
@cli.command("episodes")
@click.option("--task", required=True, help="Task name or path to a task YAML file.")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--seed", type=int, help="Episode seed (default: the task's).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a protocol parameter of the task (repeatable), as in `run`.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Cache (only for datasets generated or "
              "unpacked there, e.g. demo, hf).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="JSON-lines file to write.")
@_guard
def episodes_cmd(task: str, data_root: str | None, seed: int | None, params: tuple[str, ...], cache_dir: str | None,
                 out_path: str) -> None:
    """Write the task's episodes, draws or folds (one JSON line each) without embedding anything."""
    from asc_bench.evaluation.export import export_episodes

    s = export_episodes(task, out_path, plugins=click.get_current_context().find_object(Context).plugins,
                        data_root=data_root, cache_dir=cache_dir, seed=seed,
                        overrides={k: _yaml_value(v) for k, v in _kv(params, "--param").items()})
    policy = {True: "group-disjoint", False: "not group-disjoint", None: "folds"}[s.group_disjoint]
    other = "test clips" if s.kind == "folds" else "queries"
    out.print(f"wrote {s.units} {s.kind} to {s.path} ({policy}; {s.grouped_clips} clips with a group; "
              f"{s.leaks} {s.kind} with {other} sharing a group with their "
              f"{'training' if s.kind == 'folds' else 'support'} clips)", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------ suites
def _list_suites_or_weights(kind: str, manager: Any) -> list[dict[str, Any]]:
    if kind == "weights":
        from asc_bench.embedding.weight_sources import weight_rows

        return weight_rows(manager)
    if kind == "sources":
        from asc_bench.data.download import load_registry

        return [{"name": s.name, "dataset": s.dataset, "files": len(s.files) or "manual", "page": s.page,
                 "layout": s.layout, "verified by": "; ".join(s.notes) or "-"}
                for s in sorted(load_registry().values(), key=lambda s: s.name)]
    from asc_bench.evaluation.suites import discover_suites

    return [{"name": s.name, "columns": ", ".join(c.label for c in s.columns),
             "models": ", ".join(m.label for m in s.models), "published rows": len(s.published),
             "description": s.description} for s in sorted(discover_suites(manager.suite_dirs).values(),
                                                            key=lambda s: s.name)]


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
@_guard
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
    manager = _manager()
    spec = resolve_suite(suite, manager.suite_dirs)
    if models:
        spec = spec.with_models([parse_model_arg(m) for m in models])
    settings = BenchSettings(results_dir=results_dir, cache_dir=cache_dir, data_roots=_kv(data_roots, "--data-root"),
                             device=device, batch_size=batch_size, seed=seed, force=force, keep_going=keep_going,
                             plugins=click.get_current_context().find_object(Context).plugins)
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


def _suite_leaderboard(suite: str, results_dir: str | None, out_path: str, papers_ci: bool) -> None:
    from click.core import ParameterSource

    from asc_bench.atomic import atomic_write_bytes
    from asc_bench.evaluation.records import results_dir_or_default
    from asc_bench.evaluation.suite_table import render_suite_table, suite_records
    from asc_bench.evaluation.suites import resolve_suite

    spec = resolve_suite(suite, _manager().suite_dirs)
    records = suite_records(spec, results_dir_or_default(results_dir))
    if not records:
        raise UsageError(f"no records of suite '{spec.name}' in {results_dir_or_default(results_dir)}; run "
                         f"`asc-bench bench {spec.name}` first")
    text = render_suite_table(spec, records, papers_ci=papers_ci)
    click.echo(text)
    if click.get_current_context().get_parameter_source("out_path") != ParameterSource.DEFAULT:
        atomic_write_bytes(out_path, text.encode("utf-8"))
        err.print(f"wrote {out_path}", highlight=False)


# ------------------------------------------------------------------------------------------ data
@cli.group("data")
def data_group() -> None:
    """Download official datasets and check datasets on disk."""


@data_group.command("download")
@click.argument("name")
@click.option("--to", "target", type=click.Path(file_okay=False),
              help="Target folder (default $ASC_BENCH_DATA/<dataset>); pass it to --data-root afterwards.")
@click.option("--registry", type=click.Path(dir_okay=False, exists=True),
              help="YAML file of sources replacing built-ins of the same name (also $ASC_BENCH_DATA_SOURCES).")
@click.option("--keep-archives", is_flag=True, help="Keep the archives after unpacking.")
@_guard
def data_download_cmd(name: str, target: str | None, registry: str | None, keep_archives: bool) -> None:
    """Fetch a dataset's official archives (pooch), verify, resume, and unpack into the adapter's layout."""
    import os

    from asc_bench.evaluation.data_check import check_dataset
    from asc_bench.data.download import download, get_source
    from asc_bench.data.listing import DATA_ENV

    src = get_source(name, registry)
    if src.manual:
        out.print(src.manual, highlight=False)
        sys.exit(1)
    if target is None:
        base = os.environ.get(DATA_ENV)
        if not base:
            raise UsageError(f"give --to DIR or set ${DATA_ENV} (the dataset goes to ${DATA_ENV}/{src.dataset})")
        target = os.path.join(base, src.dataset)
    report = download(name, target, registry=registry, keep_archives=keep_archives)
    for f, offset in report.resumed.items():
        out.print(f"{f}: resumed at byte {offset:,}", highlight=False)
    out.print(f"{name}: {len(report.downloaded)} file(s) downloaded and verified, {len(report.already)} already "
              f"done; unpacked into {report.target}", highlight=False)
    for note in report.notes:
        out.print(f"note: {note}", highlight=False)
    check = check_dataset(src.dataset, report.target, plugins=click.get_current_context().find_object(Context).plugins)
    _print_check(check)


@data_group.command("check")
@click.argument("name")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--decode", is_flag=True, help="Also decode every listed file.")
@click.option("--json", "as_json", is_flag=True)
@_guard
def data_check_cmd(name: str, data_root: str | None, decode: bool, as_json: bool) -> None:
    """Validate a dataset's layout: classes, clips per class, splits, groups, which tasks it serves."""
    from dataclasses import asdict

    from asc_bench.evaluation.data_check import check_dataset

    check = check_dataset(name, data_root, decode=decode, plugins=click.get_current_context().find_object(Context).plugins)
    if as_json:
        click.echo(json.dumps({**asdict(check), "ok": check.ok}, indent=1))
    else:
        _print_check(check)
    if not check.ok:
        sys.exit(1)


def _print_check(check: Any) -> None:
    out.print(f"[bold]{check.dataset}[/] at {check.root}", highlight=False)
    if check.listing_error:
        out.print(f"[yellow]default listing:[/] {check.listing_error}", highlight=False, soft_wrap=True)
    if check.n_clips:
        counts = sorted(check.classes.values())
        out.print(f"{check.n_clips:,} clips, {len(check.classes)} classes, clips per class {counts[0]}–{counts[-1]} "
                  f"(median {counts[len(counts) // 2]})", highlight=False)
        out.print("classes: " + ", ".join(f"{k} ({v})" for k, v in check.classes.items()), highlight=False,
                  soft_wrap=True)
        out.print("splits: " + ", ".join(f"{k} ({v})" for k, v in check.splits.items()), highlight=False)
        if check.groups:
            out.print("groups: " + ", ".join(f"{v} {k}s" for k, v in check.groups.items()), highlight=False)
    for t in check.tasks:
        mark = "[green]ok[/]" if t.ok else "[red]needs more[/]"
        out.print(f"task {t.task}: {mark} {t.detail}", highlight=False, soft_wrap=True)
    if check.decoded or check.bad_files:
        out.print(f"decoded {check.decoded} file(s), {len(check.bad_files)} failed", highlight=False)
        for path, why in check.bad_files[:20]:
            out.print(f"  [red]{path}[/]: {why}", highlight=False)


# Must stay last: it adds --debug to every command defined above.
def _debug_after_subcommand(group: click.Group) -> None:
    """`asc-bench run ... --debug` works like `asc-bench --debug run ...` (every subcommand)."""
    def turn_on(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.find_object(Context).debug = True

    for command in group.commands.values():
        if not any(p.name == "debug" for p in command.params):
            command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True,
                                               callback=turn_on, help="Show tracebacks."))
        if isinstance(command, click.Group):
            _debug_after_subcommand(command)


_debug_after_subcommand(cli)
