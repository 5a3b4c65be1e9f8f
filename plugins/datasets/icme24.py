"""ICME 2024 Grand Challenge ASC (CAS 2023) development set.

Audio: `ICME2024_GC_ASC_dev/<id>.wav` (flat). Labels: `ICME2024_ASC_dev_label.csv` from the official
baseline repository (comma, header `filename,scene_label`, CRLF, ids without `.wav`, empty label for
the unlabelled 80 %), or the APSIPA 2025 `APSIPA2025_GC_ASC_dev_metadata.csv` (BOM, extra columns
`location`, `record_time`). Whether the Zenodo zip ships the CSV is unverified, so it is looked for
next to the audio folder, inside it, and in a `data/` folder, or given with option `labels`.
There is no official split: `split` is None. `group`: the recording session `{location} {record_time}`
where the APSIPA metadata gives both (clips with the same city and start time); the baseline CSV carries
no recording identity, so there `group` is None (the `_1`/`_2` suffix of the ids is not documented as a
recording id and is not used).
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "icme24"
SECTION = "ICME 2024 Grand Challenge ASC"
AUDIO_FOLDER = "ICME2024_GC_ASC_dev"
LABEL_FILES = ("ICME2024_ASC_dev_label.csv", "APSIPA2025_GC_ASC_dev_metadata.csv")
OPTIONS = ("labelled", "labels")


def build(request: DatasetRequest) -> list[Clip]:
    """The labelled development clips (option `labelled: false`: the unlabelled ones, label "")."""
    opts = L.check_options(request.options, OPTIONS, NAME)
    labelled = L.opt_bool(opts, "labelled", True, NAME)
    return _clips(request.root, labelled, opts.get("labels"))


def unlabelled_clips(root: str | os.PathLike[str], labels: str | None = None) -> list[Clip]:
    """The 6,960 unlabelled development clips (label ""), for semi-supervised training recipes."""
    return _clips(root, False, labels)


def _clips(root_in: object, labelled: bool, labels: str | None) -> list[Clip]:
    root = L.require_root(root_in, NAME)
    audio = _audio_folder(root)
    meta = _label_file(root, audio, labels)
    table = L.read_table(meta, ",", NAME, SECTION, header="filename", default_columns=("filename", "scene_label"),
                         min_fields=1)
    i_file = table.index("filename", NAME, SECTION)
    i_label = table.index("scene_label", NAME, SECTION)
    extra_cols = [(n, table.columns[n]) for n in ("location", "record_time") if n in table.columns]
    clips: list[Clip] = []
    for r, row in enumerate(table.rows):
        if i_file >= len(row):
            raise L.malformed(NAME, table.where(r), "no file name", SECTION)
        label = row[i_label].strip() if i_label < len(row) else ""
        if bool(label) != labelled:
            continue
        name = row[i_file].strip()
        if not name:
            raise L.malformed(NAME, table.where(r), "empty file name", SECTION)
        if not name.lower().endswith(".wav"):
            name += ".wav"
        extra = {n: row[i].strip() for n, i in extra_cols if i < len(row)}
        session = (extra.get("location"), extra.get("record_time"))
        group = f"{session[0]} {session[1]}" if all(session) else None
        clips.append(Clip(path=os.path.join(audio, name), label=label, split=None, extra=extra, group=group))
    L.check_audio(NAME, [c.path for c in clips], meta, SECTION)
    return L.sorted_clips(clips, audio)


def _audio_folder(root: str) -> str:
    inside = os.path.join(root, AUDIO_FOLDER)
    if os.path.isdir(os.path.join(inside, AUDIO_FOLDER)):   # a zip unpacked into a folder of its own name
        return os.path.join(inside, AUDIO_FOLDER)
    if os.path.isdir(inside):
        return inside
    with os.scandir(root) as it:
        if any(e.name.lower().endswith(".wav") for e in it):
            return root
    raise L.missing_file(NAME, inside, SECTION, what="audio folder")


def _label_file(root: str, audio: str, given: str | None) -> str:
    if given:
        path = given if os.path.isabs(given) else os.path.join(root, given)
        if not os.path.isfile(path):
            raise L.missing_file(NAME, path, SECTION, what="label file (option 'labels')")
        return path
    parent = os.path.dirname(audio)
    folders = (root, os.path.join(root, "data"), audio, os.path.join(audio, "data"), parent,
               os.path.join(parent, "data"))
    candidates = [os.path.join(d, n) for n in LABEL_FILES for d in folders]
    found = L.first_existing(candidates)
    if found is None:
        raise L.missing_file(NAME, os.path.join(root, LABEL_FILES[0]), SECTION,
                             what=f"label file (ICME2024_ASC_dev_label.csv from the official baseline "
                                  f"repository's data/ folder; also looked in {audio} and {root}/data)")
    return found
