"""Resolving a dataset to its clips, and fingerprinting them without reading audio."""
from __future__ import annotations

import gc
import hashlib
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from asc_bench.api import Clip, DatasetRequest, LayoutError
from asc_bench.plugins import PluginManager

DATA_ENV = "ASC_BENCH_DATA"


def dataset_root(name: str, data_root: str | Path | None) -> Path | None:
    """`--data-root`, else `$ASC_BENCH_DATA/<name>`, else None (only datasets needing no files accept it)."""
    if data_root is not None:
        return Path(data_root).expanduser().resolve()
    base = os.environ.get(DATA_ENV)
    return (Path(base).expanduser() / name).resolve() if base else None


@contextmanager
def paused_gc() -> Iterator[None]:
    """Listing 150k metadata rows allocates ~1M small acyclic objects; the cyclic garbage collections
    they trigger cost ~40 % of the time, for nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# How a dataset adapter treats listed clips whose audio file is absent: "fail" (a LayoutError counting
# them) or "skip" (keep them listed; decoding then reports each as bad audio, "file not found", and
# `--on-bad-audio skip` leaves it out by name). A context variable, not an adapter argument, so the
# adapters' signature (the plugin API) stays as it is; it is set only while `list_clips` runs.
_MISSING_AUDIO: ContextVar[str] = ContextVar("asc_bench_missing_audio", default="fail")


def missing_audio_policy() -> str:
    """"fail" or "skip": what `check_audio`-style existence checks should do right now."""
    return _MISSING_AUDIO.get()


def list_clips(manager: PluginManager, name: str, options: Mapping[str, Any], data_root: str | Path | None,
               cache_dir: Path, on_missing_audio: str = "fail") -> list[Clip]:
    """The dataset's clips, checked: none outside the data root, no path listed twice.

    on_missing_audio: "fail" (default) or "skip", see `missing_audio_policy`; the runner passes its
    `--on-bad-audio` setting.
    """
    entry = manager.get("datasets", name)
    root = dataset_root(name, data_root)
    token = _MISSING_AUDIO.set(on_missing_audio)
    try:
        with paused_gc():
            clips = list(entry.build(DatasetRequest(root=root, options=dict(options), cache_dir=cache_dir)))
    finally:
        _MISSING_AUDIO.reset(token)
    if not clips:
        raise LayoutError(f"dataset '{name}' has no clips under {root}; check "
                          f"--data-root (or ${DATA_ENV}) and the task's dataset_options")
    check_listing(name, clips, root, extra_bases=[cache_dir, *_option_folders(options)])
    return clips


def check_listing(name: str, clips: Sequence[Clip], root: Path | None, extra_bases: Sequence[str | Path] = ()
                  ) -> None:
    """Refuse a clip whose path leaves the data root (a metadata row with '..' or an absolute path
    elsewhere: asc-bench must read only the dataset) and a clip path listed twice (it would count
    twice in every episode and statistic).

    Besides the data root, a clip may lie under `extra_bases`: the cache folder (adapters such as
    `hf` write audio there) and the folders the task's dataset_options name by absolute path (the
    user chose those explicitly; a metadata row did not). Without a data root there is nothing to
    escape from and only duplicates are checked. Symlinks inside the root are followed as the user
    set them up: the check is on the path as listed, normalised, not resolved."""
    if root is not None:
        top = os.path.normpath(str(root))
        prefixes = tuple(dict.fromkeys(os.path.normpath(os.path.abspath(os.fspath(b))).rstrip(os.sep) + os.sep
                                       for b in (top, *extra_bases)))
        for i, clip in enumerate(clips):
            p = clip.path
            if p.startswith(prefixes[0]) and os.sep + "." not in p[len(prefixes[0]) - 1:]:
                continue        # the fast, common case: under the root, no '.' or '..' segment
            if not os.path.normpath(os.path.join(top, p)).startswith(prefixes):
                raise LayoutError(f"dataset '{name}': the listed clip {p!r} (row {i + 1} of the listing, label "
                                  f"{clip.label!r}) is outside the data root {top}; metadata paths must stay "
                                  f"inside the dataset folder ('..' or absolute paths elsewhere are refused). "
                                  f"Fix that row of the metadata, or move the file into {top}")
    seen: dict[str, int] = {}
    for i, clip in enumerate(clips):
        first = seen.setdefault(clip.path, i)
        if first != i:
            other = clips[first]
            raise LayoutError(f"dataset '{name}': {clip.path} is listed twice (rows {first + 1} and {i + 1} of "
                              f"the listing, labels {other.label!r} and {clip.label!r}); every clip must appear "
                              f"once. Remove the duplicate row from the metadata")


def _option_folders(options: Mapping[str, Any]) -> list[str]:
    """Folders named by absolute path in dataset_options (a file's folder for a file)."""
    out = []
    for value in options.values():
        if isinstance(value, (str, Path)) and os.path.isabs(value):
            out.append(os.fspath(value) if os.path.isdir(value) else os.path.dirname(os.fspath(value)))
    return out


def fingerprints(clips: Sequence[Clip]) -> tuple[str, str]:
    """(listing fingerprint, files fingerprint), both sha256 hex, computed without reading audio.

    The listing fingerprint covers (relative path, label, split) of every clip in order, and the clip's
    group where it has one: it seeds the episodes, and the group-disjoint sampler reads the groups, so
    equal listing fingerprints mean equal episodes on every machine (a clip without a group hashes as
    before groups existed). The files fingerprint covers
    (relative path, size, mtime) of every clip in order, not labels or splits: it keys the embedding
    cache, so an edited file invalidates it while tasks that label or split the same files differently
    (NSynth instrument vs family, one suite's columns) share one embedding pass.
    Paths are relative to the clips' common folder, so moving the dataset changes neither.
    """
    paths = [c.path for c in clips]
    common = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    cut = len(common) + 1
    listing, files = hashlib.sha256(), hashlib.sha256()
    with paused_gc():
        _hash_rows(clips, cut, listing, files)
    return listing.hexdigest(), files.hexdigest()


def _hash_rows(clips: Sequence[Clip], cut: int, listing: Any, files: Any) -> None:
    for clip in clips:
        rel = clip.path[cut:]
        row = f"{rel}\0{clip.label}\0{clip.split}\n".encode()
        group = clip.group
        listing.update(row if group is None else row[:-1] + f"\0{group}\n".encode())
        try:
            st = os.stat(clip.path)
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"   # reported by name when the file is decoded
        files.update(f"{rel}\0{stamp}\n".encode())
