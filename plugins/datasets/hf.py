"""A Hugging Face dataset: a `save_to_disk` folder, parquet file(s), or a hub name when online.

Read with `datasets` and the audio column cast to `Audio(decode=False)`: datasets never decodes
(its decoder needs torchcodec, which asc-bench does not use); asc-bench decodes the files itself.
Audio held as bytes (parquet, and `save_to_disk`, which embeds the files) is written once to
`<cache_dir>/hf-audio/<sha256[:2]>/<sha256><ext>` (content-addressed, atomic), so `Clip.path` is a
real file. Options: `path` (default: the data root; relative to it when one is given), `split`
(default: every split, `Clip.split` = the split name), `label_column` (`label`; ClassLabel ints
become their names), `audio_column` (`audio`), `group_column` (none by default: the column holding
each clip's recording/source identity, e.g. a speaker or recording id). Rows without a label (None, or
-1 in a ClassLabel) are left out.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any

from asc_bench.api import Clip, DatasetRequest, LayoutError, UsageError
from asc_bench.atomic import atomic_write_bytes

from asc_bench_plugins.datasets import _layout as L

NAME = "hf"
SECTION = "Hugging Face datasets"
OPTIONS = ("path", "split", "label_column", "audio_column", "group_column")
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")
BATCH = 256


def build(request: DatasetRequest) -> list[Clip]:
    opts = L.check_options(request.options, OPTIONS, NAME)
    label_col = str(opts.get("label_column", "label"))
    audio_col = str(opts.get("audio_column", "audio"))
    group_col = str(opts["group_column"]) if opts.get("group_column") else None
    split = opts.get("split")
    source = _source(request.root, opts.get("path"))
    splits = _load(source, split, request.cache_dir)
    store = os.path.join(os.path.abspath(os.fspath(request.cache_dir)), "hf-audio")
    local_dir = source if os.path.isdir(source) else os.path.dirname(source) if os.path.exists(source) else None
    clips: list[Clip] = []
    for split_name, ds in splits:
        clips.extend(_clips(ds, split_name, label_col, audio_col, store, local_dir, source, group_col))
    return clips


def _source(root: Any, path: Any) -> str:
    if path is None:
        if root is None:
            raise UsageError(f"dataset '{NAME}' needs option 'path' (a save_to_disk folder, parquet file(s) or "
                             f"a hub name) or --data-root")
        return os.path.abspath(os.fspath(root))
    path = os.fspath(path)
    if os.path.isabs(path) or root is None:
        return path if not os.path.exists(path) else os.path.abspath(path)
    joined = os.path.join(os.path.abspath(os.fspath(root)), path)
    return joined if os.path.exists(joined) else path   # not a local path: maybe a hub name


def _load(source: str, split: Any, cache_dir: Any) -> list[tuple[str, Any]]:
    """[(split name, datasets.Dataset)] for the requested split, or every split."""
    import datasets   # an optional dependency, imported only when this adapter runs

    hf_cache = os.path.join(os.fspath(cache_dir), "hf")
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if os.path.isdir(source) and any(os.path.isfile(os.path.join(source, f))
                                         for f in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(source)
        elif os.path.isfile(source):
            if not source.endswith(".parquet"):
                raise UsageError(f"dataset '{NAME}': {source} is neither a save_to_disk folder nor a .parquet file")
            loaded = datasets.load_dataset("parquet", data_files={str(split or "train"): source},
                                           cache_dir=hf_cache)
        elif os.path.isdir(source):
            loaded = datasets.load_dataset(source, cache_dir=hf_cache)   # a folder of parquet files
        elif os.path.isabs(source) or source.startswith("."):
            raise L.missing_file(NAME, source, SECTION, what="dataset folder or parquet file")
        else:
            loaded = datasets.load_dataset(source, cache_dir=hf_cache)   # a hub name (needs network)
    except (UsageError, LayoutError):
        raise
    except Exception as exc:   # datasets raises many types for unreadable or unreachable data
        raise LayoutError(f"dataset '{NAME}': cannot load {source!r} with the datasets library "
                          f"({type(exc).__name__}: {exc}); give a save_to_disk folder, parquet file(s), or a hub "
                          f"name while online; {L.hint(SECTION)}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    if isinstance(loaded, datasets.Dataset):
        return [(str(split) if split else "train", loaded)]
    names = list(loaded.keys())
    if split is None:
        return [(n, loaded[n]) for n in names]
    if str(split) not in names:
        raise UsageError(f"dataset '{NAME}': split {split!r} not in {source} (splits: {', '.join(names)})")
    return [(str(split), loaded[str(split)])]


def _clips(ds: Any, split: str, label_col: str, audio_col: str, store: str, local_dir: str | None,
           source: str, group_col: str | None = None) -> list[Clip]:
    from datasets import Audio, ClassLabel

    for col in (label_col, audio_col, *([group_col] if group_col else [])):
        if col not in ds.column_names:
            raise LayoutError(f"dataset '{NAME}': split '{split}' of {source} has no column '{col}' (columns: "
                              f"{', '.join(ds.column_names)}); set option label_column / audio_column / "
                              f"group_column")
    feature = ds.features[label_col]
    names = feature.names if isinstance(feature, ClassLabel) else None
    group_names = None
    if group_col:
        g_feature = ds.features[group_col]
        group_names = g_feature.names if isinstance(g_feature, ClassLabel) else None
    columns = [audio_col, label_col, *([group_col] if group_col else [])]
    ds = ds.cast_column(audio_col, Audio(decode=False)).select_columns(columns)
    clips: list[Clip] = []
    files: list[str] = []
    row = 0
    for batch in ds.iter(batch_size=BATCH):
        groups = batch[group_col] if group_col else [None] * len(batch[label_col])
        for audio, label, group in zip(batch[audio_col], batch[label_col], groups):
            row += 1
            if label is None or (names is not None and label < 0):
                continue
            path = _audio_file(audio, store, local_dir, f"{source} split '{split}' row {row - 1}")
            files.append(path)
            if group is not None and group_names is not None:
                group = group_names[group] if group >= 0 else None
            clips.append(Clip(path=path, label=names[label] if names is not None else str(label), split=split,
                              group=None if group is None or str(group) == "" else str(group)))
    L.check_audio(NAME, files, f"{source} (split '{split}')", SECTION)
    return clips


def _audio_file(audio: Any, store: str, local_dir: str | None, where: str) -> str:
    if not isinstance(audio, dict):
        raise LayoutError(f"dataset '{NAME}': {where}: the audio column holds {type(audio).__name__}, not an "
                          f"audio record (bytes/path)")
    data, name = audio.get("bytes"), audio.get("path") or ""
    if data:
        digest = hashlib.sha256(data).hexdigest()
        ext = os.path.splitext(name)[1].lower()
        path = os.path.join(store, digest[:2], digest + (ext if ext in AUDIO_EXTS else _sniff_ext(data)))
        if not os.path.exists(path):
            # content-addressed: no fsync (one per clip would dominate for 100k clips); umask applies
            atomic_write_bytes(path, data, fsync=False)
        return path
    if not name:
        raise LayoutError(f"dataset '{NAME}': {where}: audio has neither bytes nor a path")
    if os.path.isabs(name) or local_dir is None:
        return os.path.abspath(name)
    return os.path.normpath(os.path.join(local_dir, name))


def _sniff_ext(data: bytes) -> str:
    head = data[:12]
    if head[:4] == b"RIFF":
        return ".wav"
    if head[:4] == b"fLaC":
        return ".flac"
    if head[:4] == b"OggS":
        return ".ogg"
    if head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    return ".bin"
