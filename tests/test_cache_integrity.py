"""The embedding cache never serves or publishes something corrupt: resumes with other settings,
damaged entries, temporary files left by a kill, file modes and stale lock files."""
from __future__ import annotations

import fcntl
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asc_bench.api import Clip
from asc_bench.atomic import atomic_write_json
from asc_bench.data.audio import CropPolicy
from asc_bench.embedding.cache import CacheError, EmbeddingCache, Manifest, Shard
from asc_bench.embedding.extract import embed_dataset

N_CLIPS = 20


class Tiny(torch.nn.Module):
    """Mean, max and length of each clip; raises after `fail_after` batches (a stand-in for a kill)."""

    sample_rate = 16000
    embed_dim = 3

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.fail_after, self.calls = fail_after, 0

    def forward(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("killed")
        mask = torch.arange(batch.shape[1])[None, :] < lengths[:, None]
        mean = (batch * mask).sum(1) / lengths
        peak = batch.masked_fill(~mask, -1.0).amax(1)
        return torch.stack([mean, peak, lengths.float()], dim=1)


@pytest.fixture
def clips(tmp_path) -> list[Clip]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(N_CLIPS):
        path = tmp_path / "audio" / f"{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, (0.3 * rng.standard_normal(400 + 37 * i)).astype(np.float32), 16000)
        out.append(Clip(path=str(path), label=f"c{i % 2}"))
    return out


def _embed(clips, cache, encoder=None, **kw):
    kw = {"shard_size": 4, "batch_size": 2, **kw}
    return embed_dataset(encoder or Tiny(), clips, key="k" * 40, cache=cache, policy=CropPolicy(),
                         show_progress=False, **kw)


def _interrupted(clips, cache, shards_done: int, **kw) -> None:
    """An extraction that stops after `shards_done` shards (2 batches of 2 per shard of 4)."""
    with pytest.raises(RuntimeError, match="killed"):
        _embed(clips, cache, Tiny(fail_after=2 * shards_done), **kw)
    assert len(list(cache.partial_dir("k" * 40).glob("shard-*.json"))) == shards_done


@pytest.fixture
def reference(clips, tmp_path) -> np.ndarray:
    return np.asarray(_embed(clips, EmbeddingCache(tmp_path / "ref")).embeddings)


@pytest.mark.parametrize("changed", [{"shard_size": 8}, {"shard_size": 3}, {"batch_size": 4}])
def test_resume_with_other_settings_restarts_and_commits_every_row(clips, tmp_path, reference, changed):
    cache = EmbeddingCache(tmp_path / "cache")
    _interrupted(clips, cache, shards_done=2)
    res = _embed(clips, cache, **changed)
    assert any(n.startswith("restarted") for n in res.notes)
    assert res.embeddings.shape == (N_CLIPS, 3)
    np.testing.assert_array_equal(res.embeddings, reference)
    meta = json.loads((cache.final_dir("k" * 40) / "meta.json").read_text())
    assert meta["n_clips"] == N_CLIPS and meta["shape"] == [N_CLIPS, 3]


def test_resume_with_the_same_settings_keeps_the_shards(clips, tmp_path, reference):
    cache = EmbeddingCache(tmp_path / "cache")
    _interrupted(clips, cache, shards_done=2)
    res = _embed(clips, cache)
    assert "resumed: 2 of 5 shards were already on disk" in res.notes
    assert res.clips_embedded == N_CLIPS - 8
    np.testing.assert_array_equal(res.embeddings, reference)


def test_resume_with_another_clip_listing_restarts(clips, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    _interrupted(clips, cache, shards_done=2)
    reordered = clips[4:8] + clips[:4] + clips[8:]
    res = _embed(reordered, cache)
    assert any("clips_sha256" in n for n in res.notes if n.startswith("restarted"))
    np.testing.assert_array_equal(res.embeddings, _embed(reordered, EmbeddingCache(tmp_path / "b")).embeddings)


def test_commit_refuses_shards_with_the_wrong_row_count(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    manifest = Manifest(n_clips=6, shard_size=4, batch_size=2, clips_sha256="x")
    assert cache.begin("k", manifest) is None
    for i, rows in enumerate((4, 4)):       # the last shard should have 2 rows
        cache.write_shard("k", i, Shard(np.zeros((rows, 3), np.float32), np.ones(rows, bool), []))
    assert cache.shard_ok("k", 0, 4) and not cache.shard_ok("k", 1, 2)
    with pytest.raises(CacheError, match="shard 1 has 4 rows, expected 2"):
        cache.commit("k", manifest, {})
    assert not cache.final_dir("k").exists()


@pytest.mark.parametrize("damage", ["truncate embeddings", "delete meta", "flip a byte", "delete valid"])
def test_damaged_entry_is_reported_and_rebuilt(clips, tmp_path, reference, damage, capfd):
    cache = EmbeddingCache(tmp_path / "cache")
    _embed(clips, cache)
    entry = cache.final_dir("k" * 40)
    emb = entry / "embeddings.npy"
    if damage == "truncate embeddings":
        emb.write_bytes(emb.read_bytes()[: emb.stat().st_size // 2])
    elif damage == "delete meta":
        (entry / "meta.json").unlink()
    elif damage == "flip a byte":
        data = bytearray(emb.read_bytes())
        data[-1] ^= 0xFF
        emb.write_bytes(bytes(data))
    else:
        (entry / "valid.npy").unlink()
    assert cache.load("k" * 40) is None
    res = _embed(clips, cache)
    assert not res.cache_hit
    assert any(f"cache entry {entry} is damaged" in n and n.endswith("rebuilding") for n in res.notes)
    assert f"cache entry {entry} is damaged" in capfd.readouterr().err
    np.testing.assert_array_equal(res.embeddings, reference)
    again = _embed(clips, cache)
    assert again.cache_hit
    np.testing.assert_array_equal(again.embeddings, reference)


def test_temp_file_left_by_a_kill_is_never_published(clips, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    _interrupted(clips, cache, shards_done=1)
    partial = cache.partial_dir("k" * 40)
    (partial / ".shard-00001.npy.3f9a1c.tmp").write_bytes(b"\x93NUMPY half a shard")
    _embed(clips, cache)
    assert sorted(p.name for p in cache.final_dir("k" * 40).iterdir()) == ["embeddings.npy", "meta.json", "valid.npy"]
    assert not partial.exists()


def test_files_are_created_with_the_umask_not_0600(clips, tmp_path):
    old = os.umask(0o022)
    try:
        cache = EmbeddingCache(tmp_path / "cache")
        _interrupted(clips, cache, shards_done=1)
        shard_modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.partial_dir("k" * 40).iterdir()}
        _embed(clips, cache)
        atomic_write_json(tmp_path / "record.json", {"a": 1})
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in cache.final_dir("k" * 40).iterdir()}
    modes["record.json"] = stat.S_IMODE((tmp_path / "record.json").stat().st_mode)
    assert set(shard_modes.values()) == {0o644} and set(modes.values()) == {0o644}, (shard_modes, modes)


def test_stale_lock_files_are_harmless_and_removed(clips, tmp_path, reference):
    cache = EmbeddingCache(tmp_path / "cache")
    cache.root.mkdir(parents=True)
    (cache.root / f"{'k' * 40}.lock").write_text("left by a killed run")
    (cache.root / "otherkey.lock").write_text("")
    held = cache.root / "busykey.lock"
    with open(held, "a") as busy:
        fcntl.flock(busy, fcntl.LOCK_EX)            # a live extraction of another key holds this one
        res = _embed(clips, cache)
        assert sorted(p.name for p in cache.root.glob("*.lock")) == ["busykey.lock"]
    np.testing.assert_array_equal(res.embeddings, reference)
    assert cache.sweep_locks() == 1 and not list(cache.root.glob("*.lock"))


def test_next_shard_is_decoded_during_the_forward_passes_and_never_further_ahead(clips, tmp_path, reference,
                                                                                monkeypatch):
    import threading

    import asc_bench.embedding.extract as extract

    decoded: list[int] = []                    # shard index of every clip decoded so far
    started = [threading.Event() for _ in range(N_CLIPS // 4)]
    real = extract.load_clip

    def load_clip(path, sample_rate, policy):
        shard = int(Path(path).stem) // 4
        decoded.append(shard)
        started[shard].set()
        return real(path, sample_rate, policy)

    class Watching(Tiny):
        """One batch per shard: shard k's forward waits for shard k+1's decode to begin."""

        seen: list[tuple[bool, int]] = []

        def forward(self, batch, lengths):
            k = self.calls
            overlapped = started[k + 1].wait(timeout=10) if k + 1 < len(started) else True
            self.seen.append((overlapped, max(decoded)))
            return super().forward(batch, lengths)

    monkeypatch.setattr(extract, "load_clip", load_clip)
    res = _embed(clips, EmbeddingCache(tmp_path / "cache"), Watching(), batch_size=4)
    np.testing.assert_array_equal(res.embeddings, reference)
    assert [ok for ok, _ in Watching.seen] == [True] * 5
    assert all(furthest <= k + 1 for k, (_, furthest) in enumerate(Watching.seen))   # one shard ahead at most
