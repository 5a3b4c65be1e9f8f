"""`asc-bench data download` and `asc-bench data check`: official archives and datasets on disk."""
from __future__ import annotations

import json
import sys
from typing import Any

import click

from asc_bench.api import UsageError
from asc_bench.cli.app import cli, context_plugins, guard, out


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
@guard
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
    check = check_dataset(src.dataset, report.target, plugins=context_plugins())
    _print_check(check)


@data_group.command("check")
@click.argument("name")
@click.option("--data-root", type=click.Path(file_okay=False), help="Dataset root (default $ASC_BENCH_DATA/<dataset>).")
@click.option("--decode", is_flag=True, help="Also decode every listed file.")
@click.option("--json", "as_json", is_flag=True)
@guard
def data_check_cmd(name: str, data_root: str | None, decode: bool, as_json: bool) -> None:
    """Validate a dataset's layout: classes, clips per class, splits, groups, which tasks it serves."""
    from dataclasses import asdict

    from asc_bench.evaluation.data_check import check_dataset

    check = check_dataset(name, data_root, decode=decode, plugins=context_plugins())
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
