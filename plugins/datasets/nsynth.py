"""NSynth: `nsynth-{train,valid,test}/{examples.json, audio/<note_str>.wav}` under the data root.

Option `label`: `family` (default, `instrument_family_str`), `instrument` (`instrument_str`) or `source`
(`instrument_source_str`). Option `splits`: which folders to read (default all three; the train
folder alone holds 289k notes). `split` is `train` / `valid` / `test`. Extras: instrument, family,
source, pitch, velocity (strings). `group` is the instrument (`instrument_str`: every note of one
instrument is recorded from the same source) with `label: family` or `source`; with `label:
instrument` the class is the instrument itself, so there is no finer identity and `group` is None.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

from asc_bench.api import Clip, DatasetRequest, LayoutError

from asc_bench_plugins.datasets import _layout as L

NAME = "nsynth"
SECTION = "NSynth"
SPLITS = ("train", "valid", "test")
LABEL_KEYS = {"family": "instrument_family_str", "instrument": "instrument_str",
              "source": "instrument_source_str"}
EXTRA_KEYS = {"instrument": "instrument_str", "family": "instrument_family_str",
              "source": "instrument_source_str", "pitch": "pitch", "velocity": "velocity"}
OPTIONS = ("label", "splits")


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    label_key = LABEL_KEYS[L.opt_choice(opts, "label", tuple(LABEL_KEYS), "family", NAME)]
    splits = L.opt_list(opts, "splits", SPLITS, SPLITS, NAME)
    root = L.require_root(request.root, NAME)
    clips: list[Clip] = []
    for split in splits:
        folder = _split_folder(root, split)
        clips.extend(_read_split(folder, split, label_key))
    if label_key != LABEL_KEYS["instrument"]:
        clips = [replace(c, group=c.extra.get("instrument")) for c in clips]
    return L.sorted_clips(clips, root)


def _split_folder(root: str, split: str) -> str:
    official = f"nsynth-{split}"
    if os.path.basename(root.rstrip(os.sep)) == official:   # the root is that split's folder itself
        return root
    for folder in (os.path.join(root, official), os.path.join(os.path.dirname(root), official)):
        if os.path.isfile(os.path.join(folder, "examples.json")):
            return folder
    raise L.missing_file(NAME, os.path.join(root, official, "examples.json"), SECTION,
                         what=f"{split} metadata (unpack nsynth-{split}.jsonwav.tar.gz into --data-root, or "
                              f"leave '{split}' out of option 'splits')")


def _read_split(folder: str, split: str, label_key: str) -> list[Clip]:
    meta = os.path.join(folder, "examples.json")
    try:
        with open(meta, encoding="utf-8-sig") as f:
            notes = json.load(f)
    except FileNotFoundError:
        raise L.missing_file(NAME, meta, SECTION) from None
    except json.JSONDecodeError as exc:
        raise LayoutError(f"dataset '{NAME}': malformed JSON at {meta}:{exc.lineno}: {exc.msg}; "
                          f"{L.hint(SECTION)}") from None
    if not isinstance(notes, dict):
        raise LayoutError(f"dataset '{NAME}': {meta} must hold one JSON object keyed by note_str; "
                          f"{L.hint(SECTION)}")
    audio = os.path.join(folder, "audio")
    clips: list[Clip] = []
    for note_str, info in notes.items():
        if not isinstance(info, dict) or label_key not in info:
            raise LayoutError(f"dataset '{NAME}': malformed entry '{note_str}' in {meta}: no '{label_key}' "
                              f"field; {L.hint(SECTION)}")
        extra = {k: str(info[src]) for k, src in EXTRA_KEYS.items() if src in info}
        clips.append(Clip(path=os.path.join(audio, f"{note_str}.wav"), label=str(info[label_key]),
                          split=split, extra=extra))
    L.check_audio(NAME, [c.path for c in clips], meta, SECTION)
    return clips
