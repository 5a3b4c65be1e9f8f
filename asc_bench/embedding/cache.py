"""The content-addressed embedding cache.

Layout under `<cache_dir>/embeddings/`:
  `<key>.partial/manifest.json`                 what the extraction in progress is: clip count, clip
                                                listing hash, shard size, batch size
  `<key>.partial/shard-NNNNN.npy` + `.json`     its finished shards
  `<key>.commit/`                               an entry being assembled (only during a commit)
  `<key>/embeddings.npy` + `valid.npy` + `meta.json`   a committed entry, published with one rename
  `<key>.lock`                                  the key's lock file (removed once the key is committed)

Guarantees, and why:
- A shard is a fixed range of clip indices, written atomically when finished, so a killed extraction
  resumes from the shards on disk and computes the rest exactly as an uninterrupted run would. The
  manifest pins what a shard index means: a resume with another shard size, batch size or clip
  listing would otherwise join shards of two different layouts, so on a mismatch the partial is
  discarded and the extraction restarts (`begin`). A shard whose row count is not the one the
  manifest implies is recomputed, and `commit` checks every shard and the total against the manifest.
- A committed entry is assembled in a fresh `<key>.commit/` folder holding only the three entry
  files, so a temporary file left in the partial folder by a kill mid-write is never published.
- `meta.json` records each entry file's size and sha256; `open` verifies them (and that meta.json
  exists and parses), so a truncated or half-deleted entry is reported as damaged, never used, and
  `discard` removes it so the key is rebuilt instead of blocked.
- Files get the normal umask (see `asc_bench.atomic`), so a cache shared by a group works.
- A `.lock` file left by a killed process is harmless (`flock` locks die with their process) and is
  removed by the next commit of its key or by `sweep_locks`; a lock is taken on a file only after
  checking it is still the one at that path, which makes removing lock files safe.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import platformdirs

from asc_bench.api import AscBenchError
from asc_bench.atomic import atomic_save_npy, atomic_write_json

FORMAT_VERSION = 2      # 2: Kaldi fbank computed in float64
ENTRY_FILES = ("embeddings.npy", "valid.npy")   # checked against meta.json["files"]
_CHUNK = 1 << 22


class CacheError(AscBenchError):
    """The cache holds something inconsistent that asc-bench cannot repair by itself."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("ASC_BENCH_CACHE") or platformdirs.user_cache_dir("asc-bench"))


def cache_key(payload: dict[str, Any]) -> str:
    body = json.dumps({**payload, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:40]


def file_digest(path: Path) -> dict[str, Any]:
    """{"size": bytes, "sha256": hex} of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


@dataclass
class Shard:
    embeddings: np.ndarray      # (n, D) float32; rows of skipped clips are zero
    valid: np.ndarray           # (n,) bool
    skipped: list[dict[str, str]]


@dataclass
class CacheEntry:
    embeddings: np.ndarray      # (N, D) float32, memory-mapped
    valid: np.ndarray           # (N,) bool
    meta: dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """What the shards of a partial extraction mean; all fields must match for a resume."""

    n_clips: int
    shard_size: int
    batch_size: int
    clips_sha256: str           # hash of the clip paths in order

    @property
    def n_shards(self) -> int:
        return (self.n_clips + self.shard_size - 1) // self.shard_size

    def rows(self, index: int) -> int:
        """Rows of shard `index`: `shard_size`, fewer for the last one."""
        return min(self.shard_size, self.n_clips - index * self.shard_size)

    def as_dict(self) -> dict[str, Any]:
        return {"n_clips": self.n_clips, "shard_size": self.shard_size, "batch_size": self.batch_size,
                "clips_sha256": self.clips_sha256}


def listing_hash(paths: Any) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p).encode() + b"\0")
    return h.hexdigest()


class EmbeddingCache:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "embeddings"

    def final_dir(self, key: str) -> Path:
        return self.root / key

    def partial_dir(self, key: str) -> Path:
        return self.root / f"{key}.partial"

    def _commit_dir(self, key: str) -> Path:
        return self.root / f"{key}.commit"

    def _lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    # ---------------------------------------------------------------------------------- committed entries
    def open(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """(entry, None) for a verified entry, (None, None) when there is none, (None, why) when the
        entry on disk is damaged (it is never returned then)."""
        d = self.final_dir(key)
        if not d.exists():
            return None, None
        try:
            meta = json.loads((d / "meta.json").read_text())
        except FileNotFoundError:
            return None, "meta.json is missing"
        except (OSError, ValueError) as exc:
            return None, f"meta.json cannot be read ({exc})"
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict) or set(files) != set(ENTRY_FILES):
            return None, "meta.json has no size and checksum of the entry files (written by an older version)"
        for name in ENTRY_FILES:
            path = d / name
            if not path.exists():
                return None, f"{name} is missing"
            size = path.stat().st_size
            if size != files[name].get("size"):
                return None, f"{name} has {size} bytes, meta.json says {files[name].get('size')}"
            if file_digest(path)["sha256"] != files[name].get("sha256"):
                return None, f"{name} does not match its sha256 in meta.json"
        try:
            emb = np.load(d / "embeddings.npy", mmap_mode="r")
            valid = np.load(d / "valid.npy")
        except (OSError, ValueError) as exc:
            return None, f"the arrays cannot be read ({exc})"
        if list(emb.shape) != meta.get("shape") or valid.shape != (emb.shape[0],) \
                or emb.shape[0] != meta.get("n_clips", emb.shape[0]):
            return None, f"shapes {list(emb.shape)}/{list(valid.shape)} disagree with meta.json"
        return CacheEntry(embeddings=emb, valid=valid, meta=meta), None

    def load(self, key: str) -> CacheEntry | None:
        """The verified entry, or None when there is none or it is damaged."""
        return self.open(key)[0]

    def discard(self, key: str) -> str | None:
        """Remove the committed entry of `key` if it is (still) damaged; return why, else None."""
        with self._locked(key):
            entry, damage = self.open(key)
            if damage is None:
                return None
            doomed = self.root / f"{key}.damaged"
            shutil.rmtree(doomed, ignore_errors=True)
            os.rename(self.final_dir(key), doomed)   # one rename: no reader sees a half-removed entry
            shutil.rmtree(doomed, ignore_errors=True)
        return damage

    # ---------------------------------------------------------------------------------- partial extraction
    def begin(self, key: str, manifest: Manifest) -> str | None:
        """Make the partial folder of `key` describe `manifest`; return a note when an existing
        partial made with other settings (or without a manifest) was discarded."""
        with self._locked(key):
            if self.final_dir(key).is_dir():
                return None
            d = self.partial_dir(key)
            note = None
            if d.exists():
                try:
                    old = json.loads((d / "manifest.json").read_text())
                except (OSError, ValueError):
                    old = None
                if old == manifest.as_dict():
                    return None
                if old is None:
                    why = "it has no readable manifest.json"
                else:
                    why = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in manifest.as_dict().items()
                                    if old.get(k) != v)
                note = (f"restarted: the partial extraction in {d} was made with other settings ({why}); "
                        f"its shards were discarded")
                shutil.rmtree(d)
            atomic_write_json(d / "manifest.json", manifest.as_dict())
            return note

    def shard_ok(self, key: str, index: int, rows: int) -> bool:
        """True when shard `index` is finished and has `rows` rows (else it is to be computed)."""
        d = self.partial_dir(key)
        try:
            info = json.loads((d / f"shard-{index:05d}.json").read_text())
            emb = np.load(d / f"shard-{index:05d}.npy", mmap_mode="r")
        except (OSError, ValueError):
            return False
        return len(info.get("valid", ())) == rows and emb.ndim == 2 and emb.shape[0] == rows

    def has_shard(self, key: str, index: int) -> bool:
        return (self.partial_dir(key) / f"shard-{index:05d}.json").exists()

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Serialise shard writes and the commit of one key across processes (torchrun ranks, or two
        runs sharing a cache): a commit renames the shard folder, which must not happen mid-write.

        The lock is held on the file that is at the lock path once locked (re-checked after `flock`),
        so a lock file removed by another process's cleanup is never shared by two holders."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._lock_path(key)
        while True:
            lock = open(path, "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if _same_file(lock, path):
                    break
            except BaseException:
                lock.close()
                raise
            lock.close()
        try:
            yield
            if self.final_dir(key).is_dir():   # committed: nobody needs this lock file any more
                _unlink_quietly(path)
        finally:
            lock.close()

    def sweep_locks(self) -> int:
        """Remove lock files no process holds; return how many were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob("*.lock"):
            try:
                lock = open(path, "a")
            except OSError:
                continue
            with lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        continue       # held: in use
                    raise
                if _same_file(lock, path):
                    _unlink_quietly(path)
                    removed += 1
        return removed

    def write_shard(self, key: str, index: int, shard: Shard) -> bool:
        """Write one finished shard; False when another process has already committed the key."""
        with self._locked(key):
            if self.final_dir(key).is_dir():
                return False
            d = self.partial_dir(key)
            atomic_save_npy(d / f"shard-{index:05d}.npy", np.ascontiguousarray(shard.embeddings, np.float32))
            # The .json is written last: its presence marks the shard as finished.
            atomic_write_json(d / f"shard-{index:05d}.json",
                              {"valid": shard.valid.astype(bool).tolist(), "skipped": shard.skipped})
        return True

    def read_shard(self, key: str, index: int) -> Shard:
        d = self.partial_dir(key)
        info = json.loads((d / f"shard-{index:05d}.json").read_text())
        emb = np.load(d / f"shard-{index:05d}.npy")
        return Shard(embeddings=emb, valid=np.asarray(info["valid"], bool), skipped=info["skipped"])

    def commit(self, key: str, manifest: Manifest, meta: dict[str, Any]) -> CacheEntry:
        """Join the finished shards into one matrix and publish the entry with one rename.

        Every shard must have the rows the manifest implies and the total must be `n_clips` (else
        CacheError, nothing published). When another process committed the key first, its entry is
        returned (same content by construction) and this process's leftover shards are removed.
        """
        with self._locked(key):
            entry = self.load(key)
            if entry is None:
                self._publish(key, manifest, meta)
                entry = self.load(key)
            shutil.rmtree(self.partial_dir(key), ignore_errors=True)
        if entry is None:
            raise CacheError(f"cache entry {self.final_dir(key)} failed verification right after commit")
        return entry

    def _publish(self, key: str, manifest: Manifest, meta: dict[str, Any]) -> None:
        d = self.partial_dir(key)
        try:
            written = json.loads((d / "manifest.json").read_text())
        except (OSError, ValueError):
            written = None
        if written != manifest.as_dict():
            raise CacheError(f"cannot commit {d}: its manifest.json ({written}) is not {manifest.as_dict()}; "
                             f"rerun to restart the extraction")
        shards = [self.read_shard(key, i) for i in range(manifest.n_shards)]
        for i, s in enumerate(shards):
            if s.embeddings.shape[0] != manifest.rows(i) or s.valid.shape[0] != manifest.rows(i):
                raise CacheError(f"cannot commit {d}: shard {i} has {s.embeddings.shape[0]} rows, expected "
                                 f"{manifest.rows(i)}; delete the folder and rerun")
        emb = np.concatenate([s.embeddings for s in shards], axis=0)
        valid = np.concatenate([s.valid for s in shards], axis=0)
        if emb.shape[0] != manifest.n_clips:
            raise CacheError(f"cannot commit {d}: {emb.shape[0]} rows for {manifest.n_clips} clips")
        skipped = [item for s in shards for item in s.skipped]
        out = self._commit_dir(key)
        shutil.rmtree(out, ignore_errors=True)      # left by a kill mid-commit
        atomic_save_npy(out / "embeddings.npy", emb)
        atomic_save_npy(out / "valid.npy", valid)
        files = {name: file_digest(out / name) for name in ENTRY_FILES}
        atomic_write_json(out / "meta.json", {**meta, **manifest.as_dict(), "skipped": skipped,
                                              "shape": list(emb.shape), "files": files})
        os.rename(out, self.final_dir(key))


def _same_file(handle: Any, path: Path) -> bool:
    try:
        a, b = os.fstat(handle.fileno()), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
