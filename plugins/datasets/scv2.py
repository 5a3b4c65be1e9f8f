"""Speech Commands v0.02 as unpacked from `speech_commands_v0.02.tar.gz` (no top folder):
`<word>/<speaker>_nohash_<n>.wav`, `validation_list.txt`, `testing_list.txt`, `_background_noise_/`.

The label is the word folder's name (35 words). `split` is `validation` / `testing` when the official
list names the file, else `train`. `_background_noise_` (long noise recordings) is left out.
Option `splits` picks a subset, e.g. `[testing]`. Extras: `speaker` (the hash), `utterance` (n).
`group` is the speaker (one speaker records many words: the group spans classes).
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "scv2"
SECTION = "Speech Commands v0.02"
FOLDERS = ("speech_commands_v0.02", "SpeechCommands")
LISTS = {"validation": "validation_list.txt", "testing": "testing_list.txt"}
SPLITS = ("train", "validation", "testing")
OPTIONS = ("splits",)


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    splits = set(L.opt_list(opts, "splits", SPLITS, SPLITS, NAME))
    root = L.require_root(request.root, NAME)
    base = L.locate(root, LISTS["testing"], FOLDERS, NAME, SECTION)
    split_of: dict[str, str] = {}
    for split, file in LISTS.items():
        path = os.path.join(base, file)
        for lineno, line in enumerate(L.read_lines(path, NAME, SECTION), start=1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            if rel.count("/") != 1 or not rel.endswith(".wav"):
                raise L.malformed(NAME, f"{path}:{lineno}", f"expected '<word>/<file>.wav', got {rel!r}",
                                  SECTION)
            split_of[rel] = split
    index = L.DirIndex()
    words = sorted(n for n in index.names(base)
                   if not n.startswith(("_", ".")) and os.path.isdir(os.path.join(base, n)))
    clips: list[Clip] = []
    for word in words:
        folder = os.path.join(base, word)
        for name in sorted(index.names(folder)):
            if not name.endswith(".wav"):
                continue
            split = split_of.get(f"{word}/{name}", "train")
            if split not in splits:
                continue
            speaker, _, n = name[:-4].partition("_nohash_")
            clips.append(Clip(path=os.path.join(folder, name), label=word, split=split,
                              extra={"speaker": speaker, "utterance": n}, group=speaker or None))
    # Files named by the official lists must exist (a partly unpacked archive would shift the splits).
    listed = [os.path.join(base, *rel.split("/")) for rel, s in split_of.items() if s in splits]
    L.check_audio(NAME, listed, " and ".join(os.path.join(base, f) for f in LISTS.values()), SECTION, index)
    return clips
