"""Any dataset described by a CSV file: one row per clip with a path, a label and optionally a split.

Options: `file` (required; relative to the data root when one is given), `path_column` (default
`path`), `label_column` (`label`), `split_column` (`split`; used when the header has it), `group_column`
(`group`; the clip's recording/source identity, used when the header has it; empty = no group),
`delimiter` (default: TAB if the header has one, else `;` if it has one and no comma, else comma),
`relative_to` (`root` or `file`: what relative audio paths are relative to; default the data root
when one is given, else the CSV's folder). A header line is required. Other columns become extras.
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest, LayoutError, UsageError

from asc_bench_plugins.datasets import _layout as L

NAME = "csv"
SECTION = "CSV file lists"
OPTIONS = ("file", "path_column", "label_column", "split_column", "group_column", "delimiter", "relative_to")


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    if not opts.get("file"):
        raise UsageError(f"dataset '{NAME}' needs option 'file' (the CSV listing path,label[,split])")
    root = L.require_root(request.root, NAME) if request.root is not None else None
    file = os.fspath(opts["file"])
    if not os.path.isabs(file):
        file = os.path.join(root if root is not None else os.getcwd(), file)
    file = os.path.normpath(file)
    if not os.path.isfile(file):
        raise L.missing_file(NAME, file, SECTION, what="CSV file (option 'file')")
    relative_to = L.opt_choice(opts, "relative_to", ("root", "file"), "root" if root is not None else "file", NAME)
    if relative_to == "root" and root is None:
        raise UsageError(f"dataset '{NAME}': relative_to: root needs --data-root")
    base = root if relative_to == "root" else os.path.dirname(file)

    lines = L.read_lines(file, NAME, SECTION)
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise LayoutError(f"dataset '{NAME}': {file} is empty; it needs a header line and one row per clip")
    delimiter = opts.get("delimiter") or _sniff(lines[first])
    table = L.read_table(file, delimiter, NAME, SECTION, header=L.split_fields(lines[first], delimiter)[0].strip())
    names = {k: str(opts.get(f"{k}_column", k)) for k in ("path", "label", "split", "group")}
    for key in ("path", "label"):
        if names[key] not in table.columns:
            raise LayoutError(f"dataset '{NAME}': {file}:{first + 1}: the header has no '{names[key]}' column "
                              f"(header: {', '.join(table.columns)}); a header line naming the path and label "
                              f"columns is required (set options path_column / label_column to rename)")
    i_path, i_label = table.columns[names["path"]], table.columns[names["label"]]
    i_split = table.columns.get(names["split"])
    if i_split is None and "split_column" in opts:
        raise LayoutError(f"dataset '{NAME}': {file} has no '{names['split']}' column (option split_column); "
                          f"header: {', '.join(table.columns)}")
    i_group = table.columns.get(names["group"])
    if i_group is None and "group_column" in opts:
        raise LayoutError(f"dataset '{NAME}': {file} has no '{names['group']}' column (option group_column); "
                          f"header: {', '.join(table.columns)}")
    used = {i_path, i_label, i_split, i_group}
    extra_cols = [(n, i) for n, i in table.columns.items() if i not in used]
    width = len(table.columns)
    clips: list[Clip] = []
    for r, row in enumerate(table.rows):
        if len(row) != width:
            raise L.malformed(NAME, table.where(r), f"expected {width} fields like the header, got {len(row)}",
                              SECTION)
        rel, label = row[i_path].strip(), row[i_label].strip()
        if not rel or not label:
            raise L.malformed(NAME, table.where(r), "empty path or label", SECTION)
        path = rel if os.path.isabs(rel) else os.path.normpath(os.path.join(base, rel))
        split = row[i_split].strip() or None if i_split is not None else None
        group = row[i_group].strip() or None if i_group is not None else None
        clips.append(Clip(path=path, label=label, split=split, extra={n: row[i].strip() for n, i in extra_cols},
                          group=group))
    L.check_audio(NAME, [c.path for c in clips], file, SECTION)
    return clips


def _sniff(header: str) -> str:
    if "\t" in header:
        return "\t"
    if ";" in header and "," not in header:
        return ";"
    return ","
