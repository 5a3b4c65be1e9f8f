"""TUT Acoustic Scenes 2017, development set: `TUT-acoustic-scenes-2017-development/{audio/, meta.txt,
evaluation_setup/fold{1..4}_{train,evaluate,test}.txt}`.

`meta.txt` (TAB, no header): `audio/<file>  <scene_label>  <location>`. A clip's `split` is the fold
whose `fold{N}_evaluate.txt` lists it (`fold1`..`fold4`), so fold N's test set is `split == foldN` and
its training set the other folds. Extras: `location` (segments of one location share a fold); `group` is the location too (the segments
of one recording share it).
"""
from __future__ import annotations

import os
import re

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "tut17"
SECTION = "TUT Acoustic Scenes 2017"
FOLDERS = ("TUT-acoustic-scenes-2017-development",)
META = "meta.txt"
SETUP = "evaluation_setup"
EVALUATE = re.compile(r"^fold(\d+)_evaluate\.(txt|csv)$")
OPTIONS = ()


def build(request: DatasetRequest) -> list[Clip]:
    L.check_options(request.options, OPTIONS, NAME)
    root = L.require_root(request.root, NAME)
    base = L.locate(root, META, FOLDERS, NAME, SECTION)
    meta = os.path.join(base, META)
    table = L.read_table(meta, "\t", NAME, SECTION, header=None,
                         default_columns=("filename", "scene_label", "identifier"), min_fields=2)
    fold_of = _folds(base)
    clips: list[Clip] = []
    for r, row in enumerate(table.rows):
        rel = row[0].strip().replace("\\", "/")
        label = row[1].strip()
        if not rel or not label:
            raise L.malformed(NAME, table.where(r), "empty file name or scene label", SECTION)
        name = rel.rsplit("/", 1)[-1]
        # dcase_util's identifier rule: the location is the file name up to the first '_'.
        location = row[2].strip() if len(row) > 2 and row[2].strip() else name.split("_", 1)[0]
        clips.append(Clip(path=L.join(base, rel), label=label, split=fold_of.get(name),
                          extra={"location": location}, group=location))
    L.check_audio(NAME, [c.path for c in clips], meta, SECTION)
    return L.sorted_clips(clips, base)


def _folds(base: str) -> dict[str, str]:
    """file name -> 'foldN' of the evaluate list that holds it (keyed by name so that a copy written
    without the `audio/` prefix still matches)."""
    setup = os.path.join(base, SETUP)
    files = []
    if os.path.isdir(setup):
        with os.scandir(setup) as it:
            files = sorted((int(m.group(1)), e.path) for e in it if (m := EVALUATE.match(e.name)))
    if not files:
        raise L.missing_file(NAME, os.path.join(setup, "fold1_evaluate.txt"), SECTION,
                             what="cross-validation setup (fold{1..4}_evaluate.txt)")
    fold_of: dict[str, str] = {}
    for fold, path in files:
        table = L.read_table(path, "\t", NAME, SECTION, header=None, default_columns=("filename",))
        for row in table.rows:
            fold_of.setdefault(row[0].strip().replace("\\", "/").rsplit("/", 1)[-1], f"fold{fold}")
    return fold_of
