"""VoxCeleb1 identification: `wav/<speaker>/<youtube>/<utt>.wav` plus `iden_split.txt`
(`<set> <speaker>/<youtube>/<utt>.wav`, space separated; 1 train, 2 validation, 3 test).

The label is the speaker id; extras `speaker` and `youtube`; `group` is the YouTube video id (the
utterances of one video share the recording session). The audio folder may be `wav/` (dev and
test zips unpacked together, as they are meant to be) or `vox1_dev_wav/wav` and `vox1_test_wav/wav`
unpacked apart. Options: `splits` (subset of train/validation/test), `speaker_set`: `all` (default) or
`veri_test` (only the 40 speakers of the verification test list `veri_test.txt`/`veri_test2.txt`, i.e.
the `vox1_test_wav` speakers: a few-shot pool that needs only the 1 GB test archive), `split_file`.
"""
from __future__ import annotations

import os

from asc_bench.api import Clip, DatasetRequest

from asc_bench_plugins.datasets import _layout as L

NAME = "voxceleb1"
SECTION = "VoxCeleb1"
SPLIT_FILE = "iden_split.txt"
VERI_FILES = ("veri_test2.txt", "veri_test.txt")
SETS = {"1": "train", "2": "validation", "3": "test"}
SPLITS = tuple(SETS.values())
AUDIO_BASES = ("wav", "vox1_dev_wav/wav", "vox1_test_wav/wav", "vox1_dev_wav", "vox1_test_wav")
OPTIONS = ("splits", "speaker_set", "split_file")


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    splits = set(L.opt_list(opts, "splits", SPLITS, SPLITS, NAME))
    speaker_set = L.opt_choice(opts, "speaker_set", ("all", "veri_test"), "all", NAME)
    root = L.require_root(request.root, NAME)
    split_file = _split_file(root, opts.get("split_file"))
    meta_dir = os.path.dirname(split_file)
    keep = _veri_speakers(meta_dir, root) if speaker_set == "veri_test" else None
    bases = _audio_bases(root, meta_dir)
    index = L.DirIndex()
    base_of: dict[str, str] = {}
    for b in bases:
        for speaker in index.names(b):
            base_of.setdefault(speaker, b)
    clips: list[Clip] = []
    for lineno, line in enumerate(L.read_lines(split_file, NAME, SECTION), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[0] not in SETS or fields[1].count("/") != 2:
            raise L.malformed(NAME, f"{split_file}:{lineno}", f"expected '<1|2|3> <speaker>/<youtube>/<utt>.wav', "
                              f"got {line.strip()[:200]!r}", SECTION)
        split = SETS[fields[0]]
        if split not in splits:
            continue
        speaker, youtube, utt = fields[1].split("/")
        if keep is not None and speaker not in keep:
            continue
        base = base_of.get(speaker, bases[0])
        clips.append(Clip(path=os.path.join(base, speaker, youtube, utt), label=speaker, split=split,
                          extra={"speaker": speaker, "youtube": youtube}, group=youtube))
    L.check_audio(NAME, [c.path for c in clips], split_file, SECTION, index)
    return L.sorted_clips(clips, root)


def _split_file(root: str, given: str | None) -> str:
    if given:
        path = given if os.path.isabs(given) else os.path.join(root, given)
        if not os.path.isfile(path):
            raise L.missing_file(NAME, path, SECTION, what="identification split (option 'split_file')")
        return path
    candidates = [os.path.join(d, SPLIT_FILE) for d in (root, os.path.join(root, "meta"), os.path.dirname(root))]
    found = L.first_existing(candidates)
    if found is None:   # a renamed dataset folder under the given root
        found = os.path.join(L.locate(root, SPLIT_FILE, ("VoxCeleb1", "voxceleb1", "vox1"), NAME, SECTION),
                             SPLIT_FILE)
    return found


def _audio_bases(root: str, meta_dir: str) -> list[str]:
    bases = []
    for d in dict.fromkeys((meta_dir, root)):
        bases += [os.path.join(d, b) for b in AUDIO_BASES if os.path.isdir(os.path.join(d, b))]
    if os.path.basename(root.rstrip(os.sep)) == "wav":
        bases.append(root)
    if not bases:
        raise L.missing_file(NAME, os.path.join(meta_dir, "wav"), SECTION,
                             what="audio folder (wav/<speaker>/<youtube>/<utt>.wav)")
    return list(dict.fromkeys(bases))


def _veri_speakers(meta_dir: str, root: str) -> set[str]:
    candidates = [os.path.join(d, n) for n in VERI_FILES for d in dict.fromkeys((meta_dir, root))]
    path = L.first_existing(candidates)
    if path is None:
        raise L.missing_file(NAME, os.path.join(meta_dir, VERI_FILES[1]), SECTION,
                             what="verification list (needed by speaker_set: veri_test)")
    speakers: set[str] = set()
    for lineno, line in enumerate(L.read_lines(path, NAME, SECTION), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3:
            raise L.malformed(NAME, f"{path}:{lineno}", "expected '<label> <path1> <path2>'", SECTION)
        speakers.update(f.split("/", 1)[0] for f in fields[1:])
    return speakers
