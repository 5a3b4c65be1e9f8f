"""FSDKaggle2018 (Zenodo 2552860): `FSDKaggle2018.audio_train/`, `FSDKaggle2018.audio_test/`,
`FSDKaggle2018.meta/{train_post_competition.csv, test_post_competition_scoring_clips.csv}`.

The Kaggle-era release (`audio_train/`, `audio_test/`, `train.csv`, `test_post_competition.csv`)
is accepted too; in `test_post_competition.csv` the padding clips (`usage` Ignored, label None) are
dropped. `split` is `train` / `test`. Extras: `manually_verified` ("1"/"0"; every test clip is
verified), and `freesound_id`, `license`, `usage` where the CSV has them. `group` is the `freesound_id`
(the Freesound upload a clip was cut from) where the CSV has it; the Kaggle-era `train.csv` has no such
column, so its clips have no group. Options: `splits`,
`verified_only` (keep manually verified clips only).
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "fsdkaggle2018"
SECTION = "FSDKaggle2018"
FOLDERS = ("FSDKaggle2018",)
META_DIR = "FSDKaggle2018.meta"
META = {"train": ("train_post_competition.csv", "train.csv"),
        "test": ("test_post_competition_scoring_clips.csv", "test_post_competition.csv")}
AUDIO = {"train": ("FSDKaggle2018.audio_train", "audio_train"),
         "test": ("FSDKaggle2018.audio_test", "audio_test")}
SPLITS = ("train", "test")
OPTIONS = ("splits", "verified_only")


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    splits = L.opt_list(opts, "splits", SPLITS, SPLITS, NAME)
    verified_only = L.opt_bool(opts, "verified_only", False, NAME)
    root = L.require_root(request.root, NAME)
    base = _base(root)
    clips: list[Clip] = []
    for split in splits:
        clips.extend(_read_split(base, split, verified_only))
    return L.sorted_clips(clips, base)


def _base(root: str) -> str:
    for marker in (META_DIR, "train.csv"):
        for d in (root, *(os.path.join(root, f) for f in FOLDERS)):
            if os.path.exists(os.path.join(d, marker)):
                return d
    return L.locate(root, META_DIR, FOLDERS, NAME, SECTION, what="metadata folder")


def _read_split(base: str, split: str, verified_only: bool) -> list[Clip]:
    meta_dirs = (os.path.join(base, META_DIR), base)
    meta = L.first_existing([os.path.join(d, n) for n in META[split] for d in meta_dirs])
    if meta is None:
        raise L.missing_file(NAME, [os.path.join(meta_dirs[0], n) for n in META[split]], SECTION,
                             what=f"{split} metadata")
    audio = L.first_existing([os.path.join(base, a) for a in AUDIO[split]])
    if audio is None:
        raise L.missing_file(NAME, os.path.join(base, AUDIO[split][0]), SECTION, what=f"{split} audio folder")
    table = L.read_table(meta, ",", NAME, SECTION, header="fname", default_columns=("fname", "label"),
                         min_fields=2)
    i_file, i_label = table.required(("fname", "label"), NAME, SECTION)
    i_ver, i_usage = table.optional("manually_verified"), table.optional("usage")
    extra_cols = [(n, table.columns[n]) for n in ("freesound_id", "license", "usage") if n in table.columns]
    clips: list[Clip] = []
    for row in table.rows:
        label = row[i_label].strip()
        if (i_usage is not None and i_usage < len(row) and row[i_usage].strip() == "Ignored") or label in ("", "None"):
            continue   # Kaggle leaderboard padding clips carry no label
        verified = row[i_ver].strip() if i_ver is not None and i_ver < len(row) else ("1" if split == "test" else "")
        if verified_only and verified != "1":
            continue
        extra = {"manually_verified": verified, **{n: row[i].strip() for n, i in extra_cols if i < len(row)}}
        name = row[i_file].strip()
        if not name.lower().endswith(".wav"):
            name += ".wav"
        clips.append(Clip(path=os.path.join(audio, name), label=label, split=split, extra=extra,
                          group=extra.get("freesound_id") or None))
    L.check_audio(NAME, [c.path for c in clips], meta, SECTION)
    return clips
