"""Miniature copies of the official dataset layouts, written byte-for-byte in the official format
(folder and file names, delimiters, headers, line endings, BOMs, sample rates, bit depths, channels)
but with a few short clips per class, for adapter and end-to-end tests.

Every writer returns a `Mini`: `base` is the official top folder it created and `clips` maps each
clip's path relative to `base` to what the adapter must report for it (label, split, extras).
Audio is a class-specific tone plus noise, so an embedding can tell classes apart.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

TUT17_LABELS = ["beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home",
                "library", "metro_station", "office", "park", "residential_area", "train", "tram"]
TAU22_LABELS = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
                "street_pedestrian", "street_traffic", "tram"]
ICME24_LABELS = ["Airport", "Bar", "Bus", "Construction site", "Metro", "Public square", "Restaurant",
                 "Shopping mall", "Traffic street", "Urban park"]
ESC50_CLASSES = [(0, "dog"), (1, "rooster"), (10, "rain"), (11, "sea_waves"), (20, "crying_baby"),
                 (38, "clock_tick")]
SCV2_WORDS = ["backward", "bed", "dog", "yes", "zero", "visual"]
FSD_LABELS = ["Acoustic_guitar", "Bark", "Hi-hat", "Violin_or_fiddle", "Writing", "Gunshot_or_gunfire"]


@dataclass
class Mini:
    base: Path
    clips: dict[str, dict[str, Any]] = field(default_factory=dict)   # rel path -> label, split, extras

    def labels(self) -> dict[str, str]:
        return {rel: c["label"] for rel, c in self.clips.items()}


def tone(label: str, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A clip that depends on its class (tone frequency) and on `seed` (noise)."""
    rng = np.random.default_rng(seed)
    f = 150.0 + 90.0 * (zlib.crc32(label.encode()) % 40)
    t = np.arange(int(round(seconds * sr))) / sr
    x = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(t.size)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def write_wav(path: Path, label: str, seconds: float, sr: int, *, channels: int = 1, subtype: str = "PCM_16",
              seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(label, seconds, sr, channels, seed), sr, subtype=subtype, format="WAV")


def write_text(path: Path, lines: Sequence[str], *, crlf: bool = False, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + "".join(l + eol for l in lines).encode("utf-8"))


# --------------------------------------------------------------------------------------------- ESC-50
def esc50(parent: Path, *, classes: Sequence[tuple[int, str]] = ESC50_CLASSES, per_fold: int = 1,
          folds: int = 5, seconds: float = 0.25, crlf: bool = False, takes: int = 1) -> Mini:
    """With `takes` > 1, consecutive clips of one class and fold are takes A, B, ... of one Freesound
    source (one `src_file`), as in the real set."""
    base = parent / "ESC-50-master"
    mini = Mini(base)
    rows = []
    esc10 = {0, 1, 10, 11, 12, 20, 21, 38, 40, 41}
    n = 0
    for target, category in classes:
        for fold in range(1, folds + 1):
            for k in range(per_fold):
                n += 1
                src, take = 100000 + 37 * n, "ABC"[k % 3]
                if takes > 1:
                    src, take = 100000 + 37 * (n - k % takes), "ABCDEFGH"[k % takes]
                name = f"{fold}-{src}-{take}-{target}.wav"
                write_wav(base / "audio" / name, category, seconds, 44100, seed=n)
                rows.append(f"{name},{fold},{target},{category},{target in esc10},{src},{take}")
                mini.clips[f"audio/{name}"] = {"label": category, "split": f"fold{fold}",
                                               "target": str(target), "esc10": str(target in esc10)}
    write_text(base / "meta" / "esc50.csv", ["filename,fold,target,category,esc10,src_file,take", *sorted(rows)],
               crlf=crlf)
    (base / "README.md").write_text("ESC-50 miniature\n")
    return mini


# --------------------------------------------------------------------------------------------- TUT17
def tut17(parent: Path, *, labels: Sequence[str] = TUT17_LABELS[:5], per_fold: int = 2, folds: int = 4,
          seconds: float = 0.2, crlf: bool = False) -> Mini:
    """24-bit stereo 44.1 kHz; one recording location per class and fold (a location is in one fold)."""
    base = parent / "TUT-acoustic-scenes-2017-development"
    mini = Mini(base)
    meta, evaluate = [], {f: [] for f in range(1, folds + 1)}
    n = 0
    for c, label in enumerate(labels):
        for fold in range(1, folds + 1):
            location = f"{'ab'[c % 2]}{c * 10 + fold:03d}"
            for k in range(per_fold):
                n += 1
                name = f"{location}_{k * 10}_{k * 10 + 10}.wav"
                write_wav(base / "audio" / name, label, seconds, 44100, channels=2, subtype="PCM_24", seed=n)
                meta.append(f"audio/{name}\t{label}\t{location}")
                evaluate[fold].append(f"audio/{name}\t{label}")
                mini.clips[f"audio/{name}"] = {"label": label, "split": f"fold{fold}", "location": location}
    write_text(base / "meta.txt", meta, crlf=crlf)
    setup = base / "evaluation_setup"
    for fold in range(1, folds + 1):
        train = [r for f, rows in evaluate.items() if f != fold for r in rows]
        write_text(setup / f"fold{fold}_train.txt", train, crlf=crlf)
        write_text(setup / f"fold{fold}_evaluate.txt", evaluate[fold], crlf=crlf)
        write_text(setup / f"fold{fold}_test.txt", [r.split("\t")[0] for r in evaluate[fold]], crlf=crlf)
    (base / "README.html").write_text("<html>TUT17 miniature</html>\n")
    return mini


# --------------------------------------------------------------------------------------------- TAU22
def tau22(parent: Path, *, labels: Sequence[str] = TAU22_LABELS[:5], train_per_class: int = 3,
          eval_per_class: int = 3, extra_unsplit: int = 2, seconds: float = 0.2) -> Mini:
    """24-bit mono 44.1 kHz 1-s pieces (shortened); meta.csv and fold1 lists TAB separated with headers."""
    base = parent / "TAU-urban-acoustic-scenes-2022-mobile-development"
    mini = Mini(base)
    cities = ["lisbon", "helsinki", "paris"]
    devices = ["a", "b", "c", "s1", "s4"]
    meta = ["filename\tscene_label\tidentifier\tsource_label"]
    lists: dict[str, list[str]] = {"train": [], "evaluate": []}
    n = 0
    for c, label in enumerate(labels):
        plan = [("train", train_per_class), ("evaluate", eval_per_class), (None, extra_unsplit)]
        for split, count in plan:
            for k in range(count):
                n += 1
                city = cities[n % len(cities)]
                location = 1000 + (c * 10 + (split == "evaluate")) * 3
                device = devices[n % len(devices)] if split else "s5"
                rel = f"audio/{label}-{city}-{location}-{40000 + n * 10}-{k % 10}-{device}.wav"
                write_wav(base / rel, label, seconds, 44100, subtype="PCM_24", seed=n)
                identifier = f"{city}-{location}"
                meta.append(f"{rel}\t{label}\t{identifier}\t{device}")
                if split:
                    lists[split].append(f"{rel}\t{label}")
                    mini.clips[rel] = {"label": label, "split": split, "device": device, "city": city,
                                       "identifier": identifier}
    write_text(base / "meta.csv", meta)
    setup = base / "evaluation_setup"
    write_text(setup / "fold1_train.csv", ["filename\tscene_label", *lists["train"]])
    write_text(setup / "fold1_evaluate.csv", ["filename\tscene_label", *lists["evaluate"]])
    write_text(setup / "fold1_test.csv", ["filename", *(r.split("\t")[0] for r in lists["evaluate"])])
    return mini


# --------------------------------------------------------------------------------------------- ICME24
def icme24(parent: Path, *, labels: Sequence[str] = ICME24_LABELS[:5], per_class: int = 3, unlabelled: int = 4,
           seconds: float = 0.2, csv_dir: str = "", apsipa: bool = False) -> Mini:
    """Flat `ICME2024_GC_ASC_dev/<id>.wav`; the label CSV (CRLF, ids without .wav, empty label for the
    unlabelled part) in `parent/csv_dir`. With `apsipa`, the APSIPA 2025 metadata (BOM, more columns)."""
    base = parent / "ICME2024_GC_ASC_dev"
    mini = Mini(base)
    rows = []
    rng = np.random.default_rng(7)
    plan = [(label, k) for label in labels for k in range(per_class)] + [("", k) for k in range(unlabelled)]
    for n, (label, k) in enumerate(plan):
        ident = "".join(rng.choice(list("0123456789abcdef"), 32)) + f"{n % 90 + 10}_{k % 2 + 1}"
        write_wav(base / f"{ident}.wav", label or "unlabelled", seconds, 44100, seed=n)
        if apsipa:
            rows.append(f"{ident},Shanghai,2023-05-0{n % 9 + 1} 12:00:00,{label}")
        else:
            rows.append(f"{ident},{label}")
        mini.clips[f"{ident}.wav"] = {"label": label, "split": None}
    if apsipa:
        write_text(parent / csv_dir / "APSIPA2025_GC_ASC_dev_metadata.csv",
                   ["filename,location,record_time,scene_label", *rows], crlf=True, bom=True)
    else:
        write_text(parent / csv_dir / "ICME2024_ASC_dev_label.csv", ["filename,scene_label", *rows], crlf=True)
    return mini


# --------------------------------------------------------------------------------------------- NSynth
NSYNTH_FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string",
                   "synth_lead", "vocal"]
NSYNTH_SOURCES = ["acoustic", "electronic", "synthetic"]
NSYNTH_QUALITIES = ["bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic",
                    "nonlinear_env", "percussive", "reverb", "tempo-synced"]


def nsynth(parent: Path, *, splits: Sequence[str] = ("valid", "test"),
           instruments: Sequence[tuple[str, str, int]] = (("keyboard", "acoustic", 4), ("bass", "synthetic", 9),
                                                          ("guitar", "electronic", 21), ("reed", "acoustic", 3),
                                                          ("string", "acoustic", 14), ("flute", "synthetic", 2)),
           notes_per_instrument: int = 3, seconds: float = 0.25) -> Mini:
    """`nsynth-<split>/examples.json` as Python 2 `json.dump(indent=4)` wrote it, and 16 kHz 16-bit mono."""
    mini = Mini(parent)
    note_id = 0
    for s, split in enumerate(splits):
        folder = parent / f"nsynth-{split}"
        examples = {}
        for i, (family, source, number) in enumerate(instruments):
            instrument_str = f"{family}_{source}_{number + 100 * s:03d}"
            for k in range(notes_per_instrument):
                note_id += 1
                pitch, velocity = 40 + 7 * k, (25, 50, 75, 100, 127)[k % 5]
                note_str = f"{instrument_str}-{pitch:03d}-{velocity:03d}"
                qualities = [int((k + q) % 4 == 0) for q in range(10)]
                examples[note_str] = {
                    "qualities": qualities, "pitch": pitch, "note": note_id,
                    "instrument_source_str": source, "velocity": velocity, "instrument_str": instrument_str,
                    "instrument": 1000 * s + i, "sample_rate": 16000,
                    "qualities_str": [q for q, on in zip(NSYNTH_QUALITIES, qualities) if on],
                    "instrument_source": NSYNTH_SOURCES.index(source), "note_str": note_str,
                    "instrument_family": NSYNTH_FAMILIES.index(family), "instrument_family_str": family}
                write_wav(folder / "audio" / f"{note_str}.wav", instrument_str, seconds, 16000, seed=note_id)
                mini.clips[f"nsynth-{split}/audio/{note_str}.wav"] = {
                    "label": family, "split": split, "instrument": instrument_str, "family": family,
                    "source": source, "pitch": str(pitch), "velocity": str(velocity)}
        text = json.dumps(examples, indent=4, separators=(", ", ": ")) + "\n"   # Python 2 item separator
        (folder / "examples.json").write_text(text)
    return mini


# --------------------------------------------------------------------------------------------- SCv2
def scv2(parent: Path, *, words: Sequence[str] = SCV2_WORDS[:5], speakers: int = 6, seconds: float = 1.0) -> Mini:
    """No top folder: word folders, `_background_noise_`, validation/testing lists (LF) in `parent`.
    Speakers are assigned to splits as the official hash would: one speaker, one split."""
    base = parent
    mini = Mini(base)
    hashes = [f"{zlib.crc32(str(s).encode()):08x}" for s in range(speakers)]
    split_of = {h: ("validation" if i % 3 == 1 else "testing" if i % 3 == 2 else "train")
                for i, h in enumerate(hashes)}
    lists: dict[str, list[str]] = {"validation": [], "testing": []}
    n = 0
    for word in words:
        for h in hashes:
            for rep in range(1 if n % 2 else 2):
                n += 1
                rel = f"{word}/{h}_nohash_{rep}.wav"
                write_wav(base / rel, word, seconds * (0.7 if rep else 1.0), 16000, seed=n)
                mini.clips[rel] = {"label": word, "split": split_of[h], "speaker": h, "utterance": str(rep)}
                if split_of[h] != "train":
                    lists[split_of[h]].append(rel)
    for name in ("white_noise", "running_tap"):
        write_wav(base / "_background_noise_" / f"{name}.wav", name, 1.0, 16000)
    (base / "_background_noise_" / "README.md").write_text("background noise\n")
    write_text(base / "validation_list.txt", sorted(lists["validation"]))
    write_text(base / "testing_list.txt", sorted(lists["testing"]))
    (base / "LICENSE").write_text("CC BY 4.0\n")
    (base / "README.md").write_text("Speech Commands miniature\n")
    return mini


# --------------------------------------------------------------------------------------------- VoxCeleb1
def voxceleb1(parent: Path, *, speakers: Sequence[str] = ("id10001", "id10002", "id10003", "id10270", "id10271",
                                                          "id10272"),
              test_speakers: Sequence[str] = ("id10270", "id10271", "id10272"), videos: int = 2,
              utts: int = 3, seconds: float = 0.25, separate_test_folder: bool = False) -> Mini:
    """`wav/<speaker>/<youtube>/<NNNNN>.wav` (16 kHz 16-bit mono), `iden_split.txt`, `veri_test.txt`.
    The last utterance of each video is validation (2) or test (3), alternating; the rest train (1)."""
    base = parent
    mini = Mini(base)
    iden = []
    n = 0
    for s, speaker in enumerate(speakers):
        wav = base / ("vox1_test_wav/wav" if separate_test_folder and speaker in test_speakers else "wav")
        for v in range(videos):
            youtube = f"{'xY' if s % 2 else 'Ab'}{zlib.crc32(f'{speaker}{v}'.encode()):09x}"[:11]
            for u in range(1, utts + 1):
                n += 1
                rel = f"{speaker}/{youtube}/{u:05d}.wav"
                code = "1" if u < utts else ("2" if v % 2 == 0 else "3")
                write_wav(wav / rel, speaker, seconds, 16000, seed=n)
                iden.append(f"{code} {rel}")
                key = str((wav / rel).relative_to(base))
                mini.clips[key] = {"label": speaker, "split": {"1": "train", "2": "validation", "3": "test"}[code],
                                   "speaker": speaker, "youtube": youtube}
    write_text(base / "iden_split.txt", iden)
    test_rows = [r.split(" ")[1] for r in iden if r.split(" ")[1].split("/")[0] in test_speakers]
    veri = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}" for a, b in zip(test_rows, reversed(test_rows))]
    write_text(base / "veri_test.txt", veri)
    return mini


# --------------------------------------------------------------------------------------------- FSDKaggle2018
def fsdkaggle2018(parent: Path, *, labels: Sequence[str] = FSD_LABELS[:5], train_per_class: int = 3,
                  test_per_class: int = 2, seconds: float = 0.2, kaggle_era: bool = False) -> Mini:
    """Zenodo layout (`FSDKaggle2018.audio_train/` ...) or, with `kaggle_era`, the Kaggle release
    (`audio_train/`, `train.csv` with three columns, `test_post_competition.csv` with padding clips)."""
    base = parent / "FSDKaggle2018"
    mini = Mini(base)
    train_dir = "audio_train" if kaggle_era else "FSDKaggle2018.audio_train"
    test_dir = "audio_test" if kaggle_era else "FSDKaggle2018.audio_test"
    meta = base if kaggle_era else base / "FSDKaggle2018.meta"
    train_rows, test_rows = [], []
    n = 0
    for label in labels:
        for k in range(train_per_class):
            n += 1
            name = f"{zlib.crc32(f'tr{n}'.encode()):08x}.wav"
            verified = str(k % 2)
            write_wav(base / train_dir / name, label, seconds, 44100, seed=n)
            if kaggle_era:
                train_rows.append(f"{name},{label},{verified}")
            else:
                train_rows.append(f"{name},{label},{verified},{300000 + n},Attribution")
            mini.clips[f"{train_dir}/{name}"] = {"label": label, "split": "train", "manually_verified": verified}
        for k in range(test_per_class):
            n += 1
            name = f"{zlib.crc32(f'te{n}'.encode()):08x}.wav"
            write_wav(base / test_dir / name, label, seconds, 44100, seed=n)
            test_rows.append(f"{name},{label},{'Public' if k % 2 else 'Private'},{400000 + n},Creative Commons 0")
            mini.clips[f"{test_dir}/{name}"] = {"label": label, "split": "test", "manually_verified": "1"}
    if kaggle_era:
        write_text(meta / "train.csv", ["fname,label,manually_verified", *train_rows])
        padding = [f"{zlib.crc32(f'pad{i}'.encode()):08x}.wav,None,Ignored,0,None" for i in range(3)]
        write_text(meta / "test_post_competition.csv", ["fname,label,usage,freesound_id,license", *test_rows,
                                                        *padding])
    else:
        write_text(meta / "train_post_competition.csv",
                   ["fname,label,manually_verified,freesound_id,license", *train_rows])
        write_text(meta / "test_post_competition_scoring_clips.csv",
                   ["fname,label,usage,freesound_id,license", *test_rows])
    return mini


# --------------------------------------------------------------------------------------------- checks
def listing(clips: Sequence[Any], base: Path) -> dict[str, dict[str, Any]]:
    """What an adapter listed, keyed like `Mini.clips` (path relative to `base`)."""
    out = {}
    for c in clips:
        assert isinstance(c.path, str) and Path(c.path).is_absolute(), c.path
        rel = Path(c.path).relative_to(base.resolve() if not Path(c.path).is_relative_to(base) else base)
        out[rel.as_posix()] = {"label": c.label, "split": c.split, **dict(c.extra)}
    return out


def assert_lists(clips: Sequence[Any], mini: Mini, *, keys: Sequence[str] | None = None) -> None:
    """The adapter listed exactly the miniature's clips, each with the expected label, split and extras."""
    got = listing(clips, mini.base)
    assert len(got) == len(clips), "a clip is listed twice"
    assert sorted(got) == sorted(mini.clips)
    for rel, want in mini.clips.items():
        fields = keys if keys is not None else list(want)
        assert {k: got[rel].get(k) for k in fields} == {k: want.get(k) for k in fields}, rel
