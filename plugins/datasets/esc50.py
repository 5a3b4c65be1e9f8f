"""ESC-50 as unpacked from the GitHub archive: `ESC-50-master/{audio/, meta/esc50.csv}`.

Labels are the `category` strings; `split` is `fold1`..`fold5` from the `fold` column (all fragments of
one Freesound clip share a fold, so cross-validation must use these folds). `group` is the Freesound
clip id (`src_file`, or the file name's second field when the column is missing): the fragments
(takes) of one source recording share it.
"""
from __future__ import annotations

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "esc50"
SECTION = "ESC-50"
FOLDERS = ("ESC-50-master", "ESC-50")
META = "meta/esc50.csv"
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
OPTIONS = ("esc10",)


def build(request: DatasetRequest) -> list[Clip]:
    """All 2,000 clips (or the ESC-10 subset with option `esc10: true`)."""
    opts = L.check_options(request.options, OPTIONS, NAME)
    esc10_only = L.opt_bool(opts, "esc10", False, NAME)
    root = L.require_root(request.root, NAME)
    base = L.locate(root, META, FOLDERS, NAME, SECTION)
    meta = L.join(base, META)
    table = L.read_table(meta, ",", NAME, SECTION, header="filename", default_columns=COLUMNS, min_fields=4)
    i_file, i_fold, i_cat = table.required(("filename", "fold", "category"), NAME, SECTION)
    i_esc10 = table.optional("esc10")
    extra_cols = [(n, table.columns[n]) for n in ("target", "esc10", "src_file", "take") if n in table.columns]
    audio = L.join(base, "audio")
    clips: list[Clip] = []
    for r, row in enumerate(table.rows):
        fold = row[i_fold].strip()
        if not fold.isdigit():
            raise L.malformed(NAME, table.where(r), f"fold {fold!r} is not a fold number", SECTION)
        if esc10_only and (i_esc10 is None or row[i_esc10].strip() != "True"):
            continue
        extra = {n: row[i].strip() for n, i in extra_cols if i < len(row)}
        name = row[i_file].strip()
        group = extra.get("src_file") or _src_of(name)
        clips.append(Clip(path=audio + "/" + name, label=row[i_cat].strip(),
                          split=f"fold{int(fold)}", extra=extra, group=group))
    L.check_audio(NAME, [c.path for c in clips], meta, SECTION)
    return L.sorted_clips(clips, base)


def _src_of(name: str) -> str | None:
    """`{fold}-{src_file}-{take}-{target}.wav` -> src_file (None for a name not in that form)."""
    parts = name.rsplit(".", 1)[0].split("-")
    return parts[1] if len(parts) == 4 and parts[1] else None
