"""TAU Urban Acoustic Scenes 2022 Mobile, development set:
`TAU-urban-acoustic-scenes-2022-mobile-development/{audio/, meta.csv, evaluation_setup/fold1_*.csv}`.

`meta.csv` (TAB, header `filename scene_label identifier source_label`) gives label, location and
device; the official split is `evaluation_setup/fold1_train.csv` / `fold1_evaluate.csv` (TAB, header
`filename scene_label`). Clips in neither list (the extra S4-S6 material) are left out.
Extras: `device` (a, b, c, s1..s6), `city`, `identifier` (`{city}-{location}`). `group` is the
identifier (the recording location: its segments, from every device, share it; None if unknown).
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "tau22"
SECTION = "TAU Urban Acoustic Scenes 2022 Mobile"
FOLDERS = ("TAU-urban-acoustic-scenes-2022-mobile-development",)
META = "meta.csv"
META_COLUMNS = ("filename", "scene_label", "identifier", "source_label")
SPLITS = ("train", "evaluate")
OPTIONS = ("splits",)


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    splits = L.opt_list(opts, "splits", SPLITS, SPLITS, NAME)
    root = L.require_root(request.root, NAME)
    base = L.locate(root, META, FOLDERS, NAME, SECTION)
    meta = _read_meta(os.path.join(base, META))
    clips: list[Clip] = []
    listed_in = []
    for split in splits:
        path = os.path.join(base, "evaluation_setup", f"fold1_{split}.csv")
        if not os.path.isfile(path):
            raise L.missing_file(NAME, path, SECTION, what=f"official {split} list")
        listed_in.append(path)
        table = L.read_table(path, "\t", NAME, SECTION, header="filename",
                             default_columns=("filename", "scene_label"), min_fields=1)
        i_file = table.index("filename", NAME, SECTION)
        i_label = table.optional("scene_label")
        for r, row in enumerate(table.rows):
            rel = row[i_file].strip()
            info = meta.get(rel.rpartition("/")[2])
            if info is None:   # not in meta.csv: fall back to the fold list and the file-name convention
                label, identifier, device = _from_name(
                    rel, row[i_label].strip() if i_label is not None and i_label < len(row) else "")
                if not label:
                    raise L.malformed(NAME, table.where(r), f"{rel!r} is in neither meta.csv nor labelled "
                                      f"here", SECTION)
                info = (label, _extra(identifier, device))
            clips.append(Clip(path=L.join(base, rel), label=info[0], split=split, extra=info[1],
                              group=info[1]["identifier"] or None))
    L.check_audio(NAME, [c.path for c in clips], " and ".join(listed_in), SECTION)
    return L.sorted_clips(clips, base)


def _read_meta(path: str) -> dict[str, tuple[str, dict[str, str]]]:
    """file name -> (scene_label, extras), columns matched by header name."""
    table = L.read_table(path, "\t", NAME, SECTION, header="filename", default_columns=META_COLUMNS,
                         min_fields=2)
    i_file, i_label = table.required(("filename", "scene_label"), NAME, SECTION)
    i_id, i_dev = table.optional("identifier"), table.optional("source_label")
    both = i_id is not None and i_dev is not None
    width = max(i_id, i_dev) + 1 if both else 0
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for row in table.rows:
        rel = row[i_file].strip()
        if both and len(row) >= width:
            ident, dev = row[i_id].strip(), row[i_dev].strip()
        else:   # an older copy without these columns: the file-name convention carries them too
            _, ident, dev = _from_name(rel, "")
        out[rel.rpartition("/")[2]] = (row[i_label].strip(), _extra(ident, dev))
    return out


def _extra(identifier: str, device: str) -> dict[str, str]:
    return {"device": device, "city": identifier.partition("-")[0], "identifier": identifier}


def _from_name(rel: str, label: str) -> tuple[str, str, str]:
    """`{scene}-{city}-{location}-{segment}-{sub}-{device}.wav` -> (label, identifier, device)."""
    parts = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0].split("-")
    if len(parts) >= 6:
        return label or parts[0], f"{parts[1]}-{parts[2]}", parts[-1]
    return label, "", ""
