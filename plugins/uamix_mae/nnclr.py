"""NNCLR with a support queue, as MAE-CT implements it (uaMix-MAE tunes AudioMAE with it).

Facts: specs/contrastasc.md section 6.1. The queue holds L2-normalised projections and the sample id of
each row. For a batch: neighbours are looked up (without gradient) before the batch is enqueued; the
loss of view pair (0, 1) is ½[L(pred_0, NN(proj_1)) + L(pred_1, NN(proj_0))] with
L(pred, nn) = CE(nn · normalise(pred)ᵀ / T, diagonal) (or `transposed`: normalise(pred) · nnᵀ / T);
then the view-0 projections are enqueued (FIFO).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def nnclr_loss(predicted: torch.Tensor, neighbours: torch.Tensor, temperature: float, *,
               transposed: bool = False, targets: torch.Tensor | None = None,
               label_offset: int = 0) -> torch.Tensor:
    """Cross-entropy of neighbour/prediction similarities.

    Default logits = neighbours · normalise(predicted)ᵀ / T (row i: neighbour i must pick prediction i);
    `transposed` uses normalise(predicted) · neighboursᵀ / T. The hard target of row i is column
    i + `label_offset` (use the rank offset when `predicted` or `neighbours` are all-gathered across DDP
    ranks for the columns). `targets[B, n_columns]` replaces the hard targets with soft ones (rows summing
    to one), e.g. T-CutMix virtual labels: row i's target is the distribution over the columns.
    """
    pred = F.normalize(predicted, dim=-1)
    nn_ = neighbours.to(pred.dtype)
    logits = (pred @ nn_.T if transposed else nn_ @ pred.T) / temperature
    if targets is not None:
        return F.cross_entropy(logits, targets.to(logits.dtype))
    labels = torch.arange(logits.shape[0], device=logits.device) + label_offset
    return F.cross_entropy(logits, labels)


@dataclass
class Lookup:
    neighbours: torch.Tensor     # (B, D) normalised queue rows
    index: torch.Tensor          # (B,) queue rows used
    candidates: torch.Tensor | None = None   # (B, k) with top-k
    dice: torch.Tensor | None = None         # (B,) position chosen among the candidates


class NNCLRLoss(nn.Module):
    """NNCLR loss owning its support queue (buffers `queue`, `queue_id`, `queue_ptr`).

    - `topk=0`: the neighbour is the most similar queue row; `topk=k`: one of the k most similar rows,
      chosen uniformly with `torch.randint` from the module's seeded generator (or from given `dice`).
    - Rows carrying the same sample id as the query get similarity -1 before the search (own-id exclusion).
    - `forward(..., update_queue=True)` enqueues the normalised view-0 projections after the lookup.
      Under DDP pass `update_queue=False` and call `enqueue(all_gather(proj0), all_gather(ids))` on every
      rank with the same tensors, so the queues stay identical (start every rank from the same `seed`).
    The queue starts as random unit vectors with id -1 (no real sample has a negative id).
    """

    def __init__(self, dim: int = 256, queue_size: int = 65536, temperature: float = 0.15, topk: int = 0,
                 transposed: bool = False, seed: int = 0):
        super().__init__()
        if queue_size < 1 or topk < 0 or topk > queue_size:
            raise ValueError(f"need queue_size >= 1 and 0 <= topk <= queue_size (got {queue_size}, {topk})")
        self.temperature, self.topk, self.transposed = temperature, topk, transposed
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim, generator=g), dim=-1))
        self.register_buffer("queue_id", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.generator = torch.Generator().manual_seed(seed + 1)

    @torch.no_grad()
    def find_nn(self, projected: torch.Tensor, ids: torch.Tensor, *, dice: torch.Tensor | None = None) -> Lookup:
        query = F.normalize(projected.detach(), dim=-1).to(self.queue.dtype)
        sim = query @ self.queue.T
        sim = sim.masked_fill(ids.to(self.queue_id.device)[:, None] == self.queue_id[None, :], -1.0)
        if self.topk == 0:
            index = sim.argmax(dim=1)
            return Lookup(self.queue[index], index)
        candidates = sim.topk(self.topk, dim=1, sorted=True).indices
        if dice is None:
            dice = torch.randint(self.topk, (candidates.shape[0],), generator=self.generator)
        dice = dice.to(candidates.device).long()
        index = candidates.gather(1, dice[:, None]).squeeze(1)
        return Lookup(self.queue[index], index, candidates, dice)

    def forward(self, predicted0: torch.Tensor, predicted1: torch.Tensor, projected0: torch.Tensor,
                projected1: torch.Tensor, ids: torch.Tensor, *, targets: torch.Tensor | None = None,
                dice0: torch.Tensor | None = None, dice1: torch.Tensor | None = None,
                update_queue: bool = True) -> torch.Tensor:
        nn0 = self.find_nn(projected0, ids, dice=dice0).neighbours
        nn1 = self.find_nn(projected1, ids, dice=dice1).neighbours
        kw = dict(transposed=self.transposed, targets=targets)
        loss = 0.5 * (nnclr_loss(predicted0, nn1, self.temperature, **kw)
                      + nnclr_loss(predicted1, nn0, self.temperature, **kw))
        if update_queue:
            self.enqueue(projected0, ids)
        return loss

    @torch.no_grad()
    def enqueue(self, projected: torch.Tensor, ids: torch.Tensor) -> None:
        """FIFO insert of normalised `projected` rows with their `ids` (all-gathered under DDP)."""
        rows = F.normalize(projected.detach(), dim=-1).to(self.queue.dtype)
        ids = ids.to(self.queue_id.device).long().reshape(-1)
        size = self.queue.shape[0]
        if rows.shape[0] > size:            # only the newest `size` rows can stay
            rows, ids = rows[-size:], ids[-size:]
        pos = (int(self.queue_ptr) + torch.arange(rows.shape[0], device=self.queue.device)) % size
        self.queue[pos] = rows
        self.queue_id[pos] = ids
        self.queue_ptr.fill_((int(self.queue_ptr) + rows.shape[0]) % size)
