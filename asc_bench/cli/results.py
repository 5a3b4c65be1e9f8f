"""`asc-bench compare` and `asc-bench leaderboard`: paired tests and tables from stored records."""
from __future__ import annotations

import json

import click
from rich.table import Table

from asc_bench.api import UsageError
from asc_bench.cli.app import cli, err, guard, out, plugin_manager, yaml_kv


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
@guard
def compare_cmd(tasks: tuple[str, ...], encoders: tuple[str, ...], results_dir: str | None, seed: int | None,
                params: tuple[str, ...], all_pairs: bool, alpha: float, margin: float | None, as_json: bool) -> None:
    """Paired tests between models (labels, or encoder names with one model) on identical episodes, from
    stored records (docs/statistics.md)."""
    from asc_bench.evaluation.compare import compare_family
    from asc_bench.evaluation.records import load_records

    if len(encoders) < 2:
        raise UsageError("compare needs at least two encoders")
    records = load_records(results_dir)
    cell = yaml_kv(params, "--param") or None
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
@guard
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
    records = select_cells(records, yaml_kv(params, "--param"))
    text = render_leaderboard(records, alpha, interval=interval, margin=None if margin is None else margin / 100.0)
    atomic_write_bytes(out_path, text.encode("utf-8"))
    out.print(f"wrote {out_path} from {len(records)} records", highlight=False)
    if plots_dir:
        for path in write_plots(records, plots_dir):
            out.print(f"plot: {path}", highlight=False)


def _suite_leaderboard(suite: str, results_dir: str | None, out_path: str, papers_ci: bool) -> None:
    from click.core import ParameterSource

    from asc_bench.atomic import atomic_write_bytes
    from asc_bench.evaluation.records import results_dir_or_default
    from asc_bench.evaluation.suite_table import render_suite_table, suite_records
    from asc_bench.evaluation.suites import resolve_suite

    spec = resolve_suite(suite, plugin_manager().suite_dirs)
    records = suite_records(spec, results_dir_or_default(results_dir))
    if not records:
        raise UsageError(f"no records of suite '{spec.name}' in {results_dir_or_default(results_dir)}; run "
                         f"`asc-bench bench {spec.name}` first")
    text = render_suite_table(spec, records, papers_ci=papers_ci)
    click.echo(text)
    if click.get_current_context().get_parameter_source("out_path") != ParameterSource.DEFAULT:
        atomic_write_bytes(out_path, text.encode("utf-8"))
        err.print(f"wrote {out_path}", highlight=False)
