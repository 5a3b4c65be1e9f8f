"""Embedding extraction through the cache: decode -> resample -> batch by length -> encoder -> shards.

Clips are cut into fixed shards of `shard_size` clip indices. Each shard is decoded (the next one
in a background thread while the current one is embedded), sorted by length, batched, embedded and
written atomically; the entry is committed when every shard exists. The
shard boundaries do not depend on the number of processes, so a resumed run, or a run under torchrun
where rank r takes shards r, r+W, ..., computes every shard exactly as one uninterrupted process does.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from asc_bench import distributed as dist
from asc_bench.api import BadAudioError, Clip
from asc_bench.data.audio import CropPolicy, load_clip
from asc_bench.embedding.cache import CacheError, EmbeddingCache, Manifest, Shard, cache_key, listing_hash
from asc_bench.progress import Tracker, progress

DEFAULT_SHARD_SIZE = 256


@dataclass
class EmbedResult:
    embeddings: np.ndarray          # (N, D) float32, rows aligned with the clips
    valid: np.ndarray               # (N,) bool: False for skipped clips
    skipped: list[dict[str, str]]
    cache_key: str
    cache_hit: bool
    forward_passes: int = 0         # batches run through the encoder in this process
    clips_embedded: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def clips_per_s(self) -> float | None:
        return self.clips_embedded / self.seconds if self.clips_embedded and self.seconds > 0 else None


def embedding_key(encoder_id: dict[str, Any], policy: CropPolicy, sample_rate: int, files_fingerprint: str) -> str:
    return cache_key({"encoder": encoder_id, "crop": policy.as_dict(), "sample_rate": sample_rate,
                      "dataset": files_fingerprint})


def embed_dataset(encoder: torch.nn.Module, clips: Sequence[Clip], *, key: str, cache: EmbeddingCache,
                  policy: CropPolicy, batch_size: int = 16, device: str = "cpu",
                  on_bad_audio: str = "fail", shard_size: int = DEFAULT_SHARD_SIZE,
                  show_progress: bool = True, prefetch: bool = True) -> EmbedResult:
    """Embed `clips` into the cache entry `key` (or read it when committed and intact).

    Decoding of the next shard runs in a background thread while the encoder works on the current
    one (soundfile and soxr release the GIL), so end to end costs about the forward passes alone
    wherever the decoding finds a free core: on a GPU, or beside a model that leaves cores idle. A
    model whose threads already fill every core pays for the decoding's CPU time on top.
    At most one shard is decoded ahead, so memory stays bounded. Shards are still embedded and
    written in index order, one atomic write each, so kill/resume and the torchrun rank split behave
    exactly as without the overlap (`prefetch=False` turns it off, for measurements; the result is the
    same). A damaged committed entry is reported on stderr and in the notes, removed and rebuilt.
    """
    notes: list[str] = []
    hit, damage = cache.open(key)
    if damage is not None:
        # Every rank may get here; `discard` re-checks under the key's lock, so one of them removes it.
        damage = cache.discard(key)
        if damage is not None:
            msg = f"cache entry {cache.final_dir(key)} is damaged: {damage}; rebuilding"
            notes.append(msg)
            print(f"warning: {msg}", file=sys.stderr, flush=True)
    if hit is not None:
        skipped = hit.meta.get("skipped", [])
        if skipped and on_bad_audio == "fail":
            raise BadAudioError(skipped[0]["path"], skipped[0]["reason"])
        return EmbedResult(np.asarray(hit.embeddings), hit.valid, skipped, key, cache_hit=True)

    manifest = Manifest(n_clips=len(clips), shard_size=shard_size, batch_size=batch_size,
                        clips_sha256=listing_hash(c.path for c in clips))
    if dist.is_main():
        restarted = cache.begin(key, manifest)
        if restarted:
            notes.append(restarted)
        cache.sweep_locks()
    dist.barrier()              # no rank reads shards before rank 0 has checked the manifest
    n_shards = manifest.n_shards
    rank, world = dist.rank(), dist.world_size()
    mine = [i for i in range(n_shards) if i % world == rank]
    todo = [i for i in mine if not cache.shard_ok(key, i, manifest.rows(i))]
    result = EmbedResult(np.empty((0, 0), np.float32), np.empty(0, bool), [], key, cache_hit=False, notes=notes)
    if len(todo) < len(mine):
        result.notes.append(f"resumed: {len(mine) - len(todo)} of {len(mine)} shards were already on disk")
    for i in mine:
        if i not in todo and on_bad_audio == "fail":
            done = cache.read_shard(key, i)
            if done.skipped:
                raise BadAudioError(done.skipped[0]["path"], done.skipped[0]["reason"])
    start = time.perf_counter()
    encoder.eval().to(device)
    sr = int(encoder.sample_rate)
    min_samples = int(getattr(encoder, "min_samples", 1))
    todo_clips = sum(manifest.rows(i) for i in todo)

    def part_of(i: int) -> Sequence[Clip]:
        return clips[i * shard_size:(i + 1) * shard_size]

    with progress("embedding", todo_clips, enabled=show_progress and dist.is_main()) as bar, \
            ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="asc-bench-prefetch") as ahead:
        def decode_shard(i: int) -> list[np.ndarray | BadAudioError]:
            return list(pool.map(lambda c: _decode(c, sr, policy, min_samples), part_of(i)))

        upcoming: Future | None = ahead.submit(decode_shard, todo[0]) if todo else None
        try:
            for n, i in enumerate(todo):
                assert upcoming is not None
                waves = upcoming.result()
                # Start decoding the next shard now, so it overlaps this shard's forward passes.
                upcoming = ahead.submit(decode_shard, todo[n + 1]) if n + 1 < len(todo) else None
                if not prefetch and upcoming is not None:
                    upcoming.result()           # measurement mode: decode, then embed, never both
                shard, batches = _embed_shard(encoder, waves, batch_size, device, on_bad_audio, bar)
                del waves
                result.forward_passes += batches
                result.clips_embedded += int(shard.valid.sum())
                if not cache.write_shard(key, i, shard):
                    result.notes.append("another process committed the same cache entry first; using it")
                    break
        finally:
            if upcoming is not None:
                upcoming.cancel()
    result.seconds = time.perf_counter() - start
    dist.barrier()
    if dist.is_main():
        cache.commit(key, manifest, {"n_clips": len(clips), "batch_size": batch_size})
    dist.barrier()
    entry = cache.load(key)
    if entry is None:
        raise CacheError(f"cache entry {cache.final_dir(key)} is missing or damaged right after its commit")
    result.embeddings, result.valid = np.asarray(entry.embeddings), entry.valid
    result.skipped = entry.meta.get("skipped", [])
    return result


def _decode(clip: Clip, sample_rate: int, policy: CropPolicy, min_samples: int) -> np.ndarray | BadAudioError:
    try:
        wave = load_clip(clip.path, sample_rate, policy)
    except BadAudioError as exc:
        return exc
    if wave.shape[0] < min_samples:
        # Checked per file here, so the error names the file and skip mode can leave out just this one.
        return BadAudioError(clip.path, f"{wave.shape[0]} samples after decoding, fewer than the encoder's "
                                        f"minimum of {min_samples} ({min_samples / sample_rate:.3f} s)")
    return wave


def _embed_shard(encoder: torch.nn.Module, waves: Sequence[np.ndarray | BadAudioError], batch_size: int,
                 device: str, on_bad_audio: str, bar: Tracker) -> tuple[Shard, int]:
    skipped: list[dict[str, str]] = []
    for wave in waves:
        if isinstance(wave, BadAudioError):
            if on_bad_audio != "skip":
                raise wave
            skipped.append({"path": wave.path, "reason": wave.reason})
    valid = np.array([not isinstance(w, BadAudioError) for w in waves], bool)
    emb = np.zeros((len(waves), int(encoder.embed_dim)), np.float32)
    # Batches of similar length waste little padding; the order is fixed, so results are repeatable.
    order = sorted(np.flatnonzero(valid), key=lambda j: (waves[j].shape[0], j))
    batches = 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            lengths = torch.tensor([waves[j].shape[0] for j in idx], dtype=torch.int64)
            batch = torch.zeros(len(idx), int(lengths.max()), dtype=torch.float32)
            for row, j in enumerate(idx):
                batch[row, :waves[j].shape[0]] = torch.from_numpy(waves[j])
            out = encoder(batch.to(device), lengths.to(device))
            emb[idx] = out.float().cpu().numpy()
            batches += 1
            bar.advance(len(idx))
    bar.advance(int((~valid).sum()))
    return Shard(embeddings=emb, valid=valid, skipped=skipped), batches
