"""The content-addressed embedding cache.

Layout under `<cache_dir>/embeddings/`:
  `<key>.partial/shard-NNNNN.npy` + `.json`  finished shards of an extraction in progress
  `<key>/embeddings.npy` + `meta.json`         a committed entry (the partial folder renamed at once)
A shard is a fixed range of clip indices, written atomically when finished, so a killed extraction
resumes from the shards on disk and computes the rest exactly as an uninterrupted run would.
"""
from __future__ import annotations

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

from asc_bench.atomic import atomic_save_npy, atomic_write_json

FORMAT_VERSION = 2      # 2: Kaldi fbank computed in float64


def default_cache_dir() -> Path:
    return Path(os.environ.get("ASC_BENCH_CACHE") or platformdirs.user_cache_dir("asc-bench"))


def cache_key(payload: dict[str, Any]) -> str:
    body = json.dumps({**payload, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:40]


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


class EmbeddingCache:
    def __init__(self, root: str | Path):
        self.root = Path(root) / "embeddings"

    def final_dir(self, key: str) -> Path:
        return self.root / key

    def partial_dir(self, key: str) -> Path:
        return self.root / f"{key}.partial"

    def load(self, key: str) -> CacheEntry | None:
        d = self.final_dir(key)
        try:
            meta = json.loads((d / "meta.json").read_text())
            emb = np.load(d / "embeddings.npy", mmap_mode="r")
            valid = np.load(d / "valid.npy")
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            return None
        return CacheEntry(embeddings=emb, valid=valid, meta=meta)

    def has_shard(self, key: str, index: int) -> bool:
        return (self.partial_dir(key) / f"shard-{index:05d}.json").exists()

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Serialise shard writes and the commit of one key across processes (torchrun ranks, or two
        runs sharing a cache): a commit renames the shard folder, which must not happen mid-write."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

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

    def commit(self, key: str, n_shards: int, meta: dict[str, Any]) -> CacheEntry:
        """Join the finished shards into one matrix and publish the entry with one rename.

        When another process committed the key first, its entry is returned (same content by
        construction) and this process's leftover shards are removed.
        """
        with self._locked(key):
            entry = self.load(key)
            if entry is None:
                self._publish(key, n_shards, meta)
                entry = self.load(key)
            shutil.rmtree(self.partial_dir(key), ignore_errors=True)
        assert entry is not None, f"cache entry {self.final_dir(key)} vanished right after commit"
        return entry

    def _publish(self, key: str, n_shards: int, meta: dict[str, Any]) -> None:
        shards = [self.read_shard(key, i) for i in range(n_shards)]
        emb = np.concatenate([s.embeddings for s in shards], axis=0)
        valid = np.concatenate([s.valid for s in shards], axis=0)
        skipped = [item for s in shards for item in s.skipped]
        d = self.partial_dir(key)
        atomic_save_npy(d / "embeddings.npy", emb)
        atomic_save_npy(d / "valid.npy", valid)
        atomic_write_json(d / "meta.json", {**meta, "skipped": skipped, "shape": list(emb.shape)})
        for i in range(n_shards):
            (d / f"shard-{i:05d}.npy").unlink()
            (d / f"shard-{i:05d}.json").unlink()
        os.rename(d, self.final_dir(key))
