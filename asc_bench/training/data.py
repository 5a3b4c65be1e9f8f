"""Training data: a sample stream whose order depends on (seed, step) only.

The stream is the concatenation of per-epoch permutations of the clip indices, epoch e using
``numpy.random.default_rng([seed, e])``. Micro-batch m of optimizer step s holds stream positions
``[(s·A + m)·B, (s·A + m + 1)·B)`` (A = grad_accum, B = global batch); a torchrun rank takes its
contiguous share of those rows. Random crops are drawn from ``default_rng([seed, position, 1])``.
So a resumed run, a run with workers, and a run on N ranks all see exactly the same samples at the
same step, with no sampler state to save.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from asc_bench.api import Clip
from asc_bench.data.audio import decode


def stream_indices(n: int, seed: int, start: int, stop: int) -> np.ndarray:
    """Clip indices at stream positions ``start..stop-1`` (see the module docstring)."""
    out = np.empty(stop - start, dtype=np.int64)
    pos = start
    while pos < stop:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(n - offset, stop - pos)
        out[pos - start:pos - start + take] = perm[offset:offset + take]
        pos += take
    return out


@dataclass(frozen=True)
class Item:
    position: int       # stream position (drives the crop)
    index: int          # clip index into the training clip list


class StreamBatches:
    """Yields this rank's micro-batches (lists of ``Item``) for optimizer steps ``start..stop-1``."""

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int, rows: slice,
                 start_step: int, stop_step: int):
        self.n, self.seed, self.size, self.accum, self.rows = n, seed, batch_size, grad_accum, rows
        self.start, self.stop = start_step, stop_step

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accum

    def batch(self, i: int) -> list[Item]:
        """Micro-batch ``i`` of this range (0-based, ``i < len(self)``)."""
        step, micro = divmod(i, self.accum)
        first = ((self.start + step) * self.accum + micro) * self.size
        idx = stream_indices(self.n, self.seed, first, first + self.size)
        positions = range(first, first + self.size)
        return [Item(p, int(j)) for p, j in zip(positions[self.rows], idx[self.rows])]

    def __iter__(self) -> Iterator[list[Item]]:
        return (self.batch(i) for i in range(len(self)))


class ClipDataset(Dataset):
    """Decodes clip ``Item.index`` at ``sample_rate`` and cuts/pads it to ``seconds``."""

    def __init__(self, clips: Sequence[Clip], labels: np.ndarray, sample_rate: int, seconds: float,
                 crop: str, seed: int, cache_audio: bool = False):
        self.clips, self.labels = list(clips), labels
        self.sample_rate, self.length = sample_rate, int(round(seconds * sample_rate))
        self.crop, self.seed = crop, seed
        self._memo: dict[int, np.ndarray] | None = {} if cache_audio else None

    def __len__(self) -> int:
        return len(self.clips)

    def _wave(self, index: int) -> np.ndarray:
        if self._memo is not None and index in self._memo:
            return self._memo[index]
        wave = decode(self.clips[index].path, self.sample_rate)
        if self._memo is not None:
            self._memo[index] = wave
        return wave

    def __getitem__(self, item: Item) -> dict[str, Any]:
        wave = self._wave(item.index)
        n, target = wave.shape[0], self.length
        if n > target:
            if self.crop == "random":
                start = int(np.random.default_rng([self.seed, item.position, 1]).integers(0, n - target + 1))
            elif self.crop == "centre":
                start = (n - target) // 2
            else:
                start = 0
            wave = wave[start:start + target]
        out = np.zeros(target, dtype=np.float32)
        out[:min(n, target)] = wave[:target]
        return {"wave": torch.from_numpy(out), "length": min(n, target), "label": int(self.labels[item.index]),
                "index": item.index, "position": item.position}


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "wave": torch.stack([it["wave"] for it in items]),
        "lengths": torch.tensor([it["length"] for it in items], dtype=torch.int64),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.int64),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.int64),
        "position": torch.tensor([it["position"] for it in items], dtype=torch.int64),
    }


class _BatchDataset(Dataset):
    """Adapter: one DataLoader item = one whole micro-batch, so workers decode in parallel and the
    order stays exactly the stream order whatever ``num_workers`` is."""

    def __init__(self, base: ClipDataset, batches: StreamBatches):
        self.base, self.batches = base, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return collate([self.base[item] for item in self.batches.batch(i)])


def make_loader(dataset: ClipDataset, batches: StreamBatches, num_workers: int) -> Iterator[dict[str, torch.Tensor]]:
    """Iterate this rank's micro-batches in stream order."""
    if num_workers == 0:
        return (collate([dataset[item] for item in b]) for b in batches)
    return iter(DataLoader(_BatchDataset(dataset, batches), batch_size=None, shuffle=False,
                           num_workers=num_workers, persistent_workers=False))
