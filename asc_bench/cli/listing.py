"""`asc-bench list KIND` and `asc-bench plugins`: what is registered, without building any model."""
from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from asc_bench.cli.app import cli, fmt, guard, out, plugin_manager
from asc_bench.plugins import KINDS

LIST_KINDS = tuple(KINDS) + ("tasks", "suites", "weights", "sources")


@cli.command("list")
@click.argument("kind", type=click.Choice(LIST_KINDS))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@guard
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
        table.add_row(*[fmt(v) for v in row.values()])
    out.print(table)


def _list_rows(kind: str) -> list[dict[str, Any]]:
    manager = plugin_manager()
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


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True)
@guard
def plugins_cmd(as_json: bool) -> None:
    """Loaded plugins, their versions, the hooks they implement, and failures."""
    manager = plugin_manager()
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
