"""Losses of ContrastASC: SupCon (teacher), CRD and logit KD (student). Facts: specs/contrastasc.md s.5.

Defaults that are not published for ContrastASC are the reference implementations' own (SupContrast:
T = base T = 0.07; RepDistiller CRD: feat_dim 128, K 16384, T 0.07, momentum 0.5) and are marked
as such; KD has no default temperature or averaging convention on purpose (see `KDLoss`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from asc_bench_plugins.contrastasc.heads import ProjectionHead

CONTRAST_MODES = ("all", "one")
KD_REDUCTIONS = ("batchmean", "batch_class_mean")
NEGATIVE_MODES = ("uniform", "other_class")


# ------------------------------------------------------------------------------------------------ SupCon
class SupConLoss(nn.Module):
    """Supervised contrastive loss (Khosla et al.; SupContrast `SupConLoss`), SimCLR without labels.

    `forward(features[B, V, D] (or [B, D] = one view), labels=None | mask=None | soft_labels=None)`.
    Features must already be L2-normalised. Rows are stacked view-major (row v·B + i); anchors are all
    rows (`contrast_mode="all"`) or view 0 only (`"one"`). Positive weights M_ab come from
    - `labels[B]`: 1 when the labels match;
    - `soft_labels[B, C]` (mixup soft labels Y): M = Y·Yᵀ, the mixup-aware "Soft-SupCon" weight;
    - `mask[B, B]`: given directly (kept in the features' dtype; the official code casts it to float32);
    - none: identity, i.e. only the other views of the same sample (SimCLR).
    The self-pair is removed from M and from the denominator. Per anchor
    loss_a = -(T / T_base) · Σ_b M_ab log p_ab / Σ_b M_ab, with the denominator replaced by 1 when it is
    below 1e-6: an anchor without positives ("lonely") contributes 0 and still counts in the mean.
    """

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07, contrast_mode: str = "all"):
        super().__init__()
        if contrast_mode not in CONTRAST_MODES:
            raise ValueError(f"contrast_mode must be one of {list(CONTRAST_MODES)}, got {contrast_mode!r}")
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError("temperatures must be positive")
        self.temperature, self.base_temperature, self.contrast_mode = temperature, base_temperature, contrast_mode

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                soft_labels: torch.Tensor | None = None) -> torch.Tensor:
        if features.dim() == 2:
            features = features.unsqueeze(1)
        if features.dim() != 3:
            raise ValueError(f"features must be [B, V, D] or [B, D], got {tuple(features.shape)}")
        if sum(x is not None for x in (labels, mask, soft_labels)) > 1:
            raise ValueError("give at most one of labels, mask, soft_labels")
        b, v, _ = features.shape
        if labels is not None:
            labels = labels.reshape(-1)
            if labels.numel() != b:
                raise ValueError(f"{labels.numel()} labels for {b} samples")
            pos = (labels[:, None] == labels[None, :]).to(features.dtype)
        elif soft_labels is not None:
            y = soft_labels.to(features.dtype)
            pos = y @ y.T
        elif mask is not None:
            pos = mask.to(features.dtype)
        else:
            pos = torch.eye(b, dtype=features.dtype, device=features.device)
        contrast = features.transpose(0, 1).reshape(v * b, -1)
        n_anchor_views = v if self.contrast_mode == "all" else 1
        anchors = contrast[: n_anchor_views * b]
        logits = anchors @ contrast.T / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()   # stability only
        not_self = torch.ones_like(logits)
        rows = torch.arange(n_anchor_views * b, device=logits.device)
        not_self[rows, rows] = 0
        weights = pos.repeat(n_anchor_views, v) * not_self
        log_prob = logits - torch.log((torch.exp(logits) * not_self).sum(dim=1, keepdim=True))
        n_pos = weights.sum(dim=1)
        n_pos = torch.where(n_pos < 1e-6, torch.ones_like(n_pos), n_pos)
        mean_log_prob_pos = (weights * log_prob).sum(dim=1) / n_pos
        return (-(self.temperature / self.base_temperature) * mean_log_prob_pos).mean()


# --------------------------------------------------------------------------------------------------- CRD
@dataclass
class CRDStep:
    """Everything one CRD call computed (tests and logging read it; training uses `loss`)."""

    loss: torch.Tensor
    s_loss: torch.Tensor
    t_loss: torch.Tensor
    out_s: torch.Tensor          # (B, K+1) student anchor vs teacher memory, divided by Z_v1
    out_t: torch.Tensor          # (B, K+1) teacher anchor vs student memory, divided by Z_v2
    embed_s: torch.Tensor
    embed_t: torch.Tensor
    contrast_idx: torch.Tensor


def nce_loss(x: torch.Tensor, n_data: int, eps: float = 1e-7) -> torch.Tensor:
    """RepDistiller `ContrastLoss`: column 0 is the positive, the K others noise with P_n = 1/N."""
    b, m = x.shape[0], x.shape[1] - 1
    m_pn = m / n_data
    log_d1 = torch.log(x[:, 0] / (x[:, 0] + m_pn + eps))
    log_d0 = torch.log(m_pn / (x[:, 1:] + m_pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / b


class CRDLoss(nn.Module):
    """Contrastive representation distillation (Tian et al.; RepDistiller `CRDLoss` + `ContrastMemory`).

    - Heads: `embed_s` (s_dim -> feat_dim) and `embed_t` (t_dim -> feat_dim), L2-normalised. Default is
      RepDistiller's single linear layer; `head_hidden > 0` gives ContrastASC's two-layer head, with a
      LayerNorm when `head_norm="layer"`. A network's own head (e.g. `CPMobile.projection`) can be passed
      as `embed_s` so the student checkpoint keeps it.
    - Memory: buffers `memory_v1` (student side) and `memory_v2` (teacher side), N x feat_dim, uniform in
      [-s, s], s = 1/sqrt(feat_dim/3), drawn from `seed` (give every DDP rank the same seed).
    - Scores: out_s = exp(<memory_v2[c], e_s>/T) / Z_v1, out_t = exp(<memory_v1[c], e_t>/T) / Z_v2 for
      the K+1 indices c of each item (column 0 = the item itself). Z_v1/Z_v2 (buffer `z`, -1 = unset) are
      set once at the first call to mean(unnormalised scores)·N and then kept (they are in the state dict).
    - Negatives: `contrast_idx` (B, K+1) may be passed; otherwise drawn with a seeded torch.Generator:
      `"other_class"` (when `dataset_labels` is given, as RepDistiller's dataset does): K items of other
      classes, without replacement unless K exceeds their number; `"uniform"`: K+1 uniform draws with
      replacement over all N with column 0 overwritten (the memory's own alias sampler).
    - Loss: NCE per side, total = L(out_s) + L(out_t). The banks are then updated with momentum m:
      memory[idx] <- normalise(m·memory[idx] + (1-m)·e).

    DDP: call `forward(..., update_memory=False)` and then, on every rank, `update_memory(idx, e_s, e_t)`
    with the all-gathered idx and detached embeddings of the whole global batch: the banks then stay
    identical across ranks. After the first step call `sync_normalizers()` so every rank keeps rank 0's
    Z constants. Seed the negative sampler differently per rank (`sampler_seed`).
    """

    def __init__(self, s_dim: int, t_dim: int, n_data: int, feat_dim: int = 128, nce_k: int = 16384,
                 nce_t: float = 0.07, nce_m: float = 0.5, *, head_hidden: int = 0, head_norm: str = "none",
                 embed_s: nn.Module | None = None, embed_t: nn.Module | None = None,
                 dataset_labels: torch.Tensor | None = None, negatives: str | None = None, seed: int = 0,
                 sampler_seed: int | None = None, eps: float = 1e-7):
        super().__init__()
        if nce_k < 1 or n_data < 2:
            raise ValueError(f"need nce_k >= 1 and n_data >= 2 (got {nce_k}, {n_data})")
        self.n_data, self.feat_dim, self.nce_k = n_data, feat_dim, nce_k
        self.nce_t, self.nce_m, self.eps = nce_t, nce_m, eps
        self.embed_s = embed_s if embed_s is not None else ProjectionHead(s_dim, feat_dim, head_hidden, head_norm)
        self.embed_t = embed_t if embed_t is not None else ProjectionHead(t_dim, feat_dim, head_hidden, head_norm)
        g = torch.Generator().manual_seed(seed)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_v1", torch.rand(n_data, feat_dim, generator=g) * (2 * stdv) - stdv)
        self.register_buffer("memory_v2", torch.rand(n_data, feat_dim, generator=g) * (2 * stdv) - stdv)
        self.register_buffer("z", torch.full((2,), -1.0, dtype=torch.float64))
        self.negatives = negatives or ("other_class" if dataset_labels is not None else "uniform")
        if self.negatives not in NEGATIVE_MODES:
            raise ValueError(f"negatives must be one of {list(NEGATIVE_MODES)}, got {self.negatives!r}")
        if self.negatives == "other_class" and dataset_labels is None:
            raise ValueError("negatives='other_class' needs dataset_labels (the class of every dataset item)")
        self.sampler = torch.Generator().manual_seed(seed + 1 if sampler_seed is None else sampler_seed)
        self._pools = _class_pools(torch.as_tensor(dataset_labels)) if dataset_labels is not None else None

    # -- negatives
    def sample_contrast_idx(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, K+1) indices: column 0 = idx, then K negatives (see the class docstring)."""
        idx = idx.detach().cpu().long()
        b, k = idx.numel(), self.nce_k
        if self.negatives == "uniform":
            out = torch.randint(0, self.n_data, (b, k + 1), generator=self.sampler)
            out[:, 0] = idx
            return out
        labels, flat, offsets, sizes = self._pools
        size = sizes[labels[idx]]                                             # (B,) pool size per row
        if k <= int(size.min()):
            pos = _draw_without_replacement(size, k, self.sampler)
        else:
            pos = (torch.rand(b, k, generator=self.sampler, dtype=torch.float64) * size[:, None]).long()
        negatives = flat[offsets[labels[idx]][:, None] + pos]
        return torch.cat([idx[:, None], negatives], dim=1)

    # -- main
    def step(self, f_s: torch.Tensor, f_t: torch.Tensor, idx: torch.Tensor,
             contrast_idx: torch.Tensor | None = None, *, update_memory: bool = True) -> CRDStep:
        e_s, e_t = self.embed_s(f_s), self.embed_t(f_t)
        if contrast_idx is None:
            contrast_idx = self.sample_contrast_idx(idx)
        contrast_idx = contrast_idx.to(self.memory_v1.device).long()
        b, k1 = contrast_idx.shape
        w_v2 = self.memory_v2.index_select(0, contrast_idx.reshape(-1)).view(b, k1, -1).detach()
        w_v1 = self.memory_v1.index_select(0, contrast_idx.reshape(-1)).view(b, k1, -1).detach()
        out_s = torch.exp(torch.bmm(w_v2.to(e_s.dtype), e_s.unsqueeze(2)).squeeze(2) / self.nce_t)
        out_t = torch.exp(torch.bmm(w_v1.to(e_t.dtype), e_t.unsqueeze(2)).squeeze(2) / self.nce_t)
        if float(self.z[0]) < 0:
            with torch.no_grad():
                self.z[0] = out_s.mean().double() * self.n_data
                self.z[1] = out_t.mean().double() * self.n_data
        out_s = out_s / self.z[0].to(out_s.dtype)
        out_t = out_t / self.z[1].to(out_t.dtype)
        s_loss = nce_loss(out_s, self.n_data, self.eps)
        t_loss = nce_loss(out_t, self.n_data, self.eps)
        if update_memory:
            self.update_memory(idx, e_s, e_t)
        return CRDStep(s_loss + t_loss, s_loss, t_loss, out_s, out_t, e_s, e_t, contrast_idx)

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, idx: torch.Tensor,
                contrast_idx: torch.Tensor | None = None, *, update_memory: bool = True) -> torch.Tensor:
        return self.step(f_s, f_t, idx, contrast_idx, update_memory=update_memory).loss

    @torch.no_grad()
    def update_memory(self, idx: torch.Tensor, e_s: torch.Tensor, e_t: torch.Tensor) -> None:
        """Momentum update of both banks at rows `idx` (pass all-gathered tensors under DDP)."""
        idx = idx.to(self.memory_v1.device).long().reshape(-1)
        for bank, e in ((self.memory_v1, e_s), (self.memory_v2, e_t)):
            mixed = bank.index_select(0, idx) * self.nce_m + e.detach().to(bank.dtype) * (1 - self.nce_m)
            bank.index_copy_(0, idx, mixed / mixed.norm(dim=1, keepdim=True))

    @torch.no_grad()
    def sync_normalizers(self, src: int = 0, group: Any = None) -> None:
        """Under torch.distributed, make every rank use rank `src`'s Z constants (no-op otherwise)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.z, src=src, group=group)


def _class_pools(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """For every class c, the dataset indices of the *other* classes, concatenated: (labels as 0..C-1,
    flat pools, offset of pool c, size of pool c)."""
    classes, labels = torch.unique(labels.long().cpu(), return_inverse=True)
    everything = torch.arange(labels.numel())
    pools = [everything[labels != c] for c in range(classes.numel())]
    sizes = torch.tensor([p.numel() for p in pools])
    if int(sizes.min()) == 0:
        raise ValueError("other_class negatives need at least two classes in dataset_labels")
    offsets = torch.cumsum(sizes, 0) - sizes
    return labels, torch.cat(pools), offsets, sizes


def _draw_without_replacement(size: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """(B, k) distinct positions in [0, size_b) per row: draw, then redraw later duplicates until none are
    left. Every step is symmetric under relabelling the pool, so each k-subset is equally likely."""
    size = size[:, None].double()
    pos = (torch.rand(size.shape[0], k, generator=g, dtype=torch.float64) * size).long()
    while True:
        ordered, order = pos.sort(dim=1)
        dup_sorted = torch.zeros_like(pos, dtype=torch.bool)
        dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
        if not bool(dup_sorted.any()):
            return pos
        dup = torch.zeros_like(dup_sorted).scatter_(1, order, dup_sorted)
        redraw = (torch.rand(pos.shape, generator=g, dtype=torch.float64) * size).long()
        pos = torch.where(dup, redraw, pos)


# ---------------------------------------------------------------------------------------------------- KD
class KDLoss(nn.Module):
    """Logit distillation T²·KL(softmax(t/T) ‖ softmax(s/T)) with an explicit averaging convention.

    - `reduction="batchmean"`: KL summed over classes, averaged over the batch (RepDistiller
      `DistillKL`, Hinton et al.);
    - `reduction="batch_class_mean"`: element-wise KL averaged over batch *and* classes (CP-JKU's
      `KLDivLoss(log_target=True, reduction="none").mean()`), i.e. the batchmean value / C.
    Loss weights tuned for one are C times off for the other, so neither is a default.
    """

    def __init__(self, temperature: float, reduction: str):
        super().__init__()
        if reduction not in KD_REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(KD_REDUCTIONS)} (batchmean = RepDistiller, "
                             f"batch_class_mean = CP-JKU), got {reduction!r}")
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature, self.reduction = float(temperature), reduction

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        log_p_s = F.log_softmax(student_logits / t, dim=1)
        log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
        kl = torch.exp(log_p_t) * (log_p_t - log_p_s)
        value = kl.sum() / kl.shape[0] if self.reduction == "batchmean" else kl.mean()
        return value * t * t


# ------------------------------------------------------------------------------------------- registries
def build_supcon(**options: Any) -> SupConLoss:
    return SupConLoss(**options)


def build_crd(**options: Any) -> CRDLoss:
    return CRDLoss(**options)


def build_kd(**options: Any) -> KDLoss:
    missing = [k for k in ("temperature", "reduction") if k not in options]
    if missing:
        raise ValueError(f"kd needs {missing}: temperature (RepDistiller uses 4, CP-JKU 2) and reduction, one "
                         f"of {list(KD_REDUCTIONS)}")
    return KDLoss(**options)
