"""Batch mixing for uaMix-MAE's instance discrimination: T-CutMix and the paper's ablations.

Every mixer is a callable `(x, y, generator) -> (x_mixed, y_virtual)`:
- `x`: fbank batch [B, 1, T, F] or [B, T, F] (time on axis -2, frequency on axis -1);
- `y`: soft labels [B, C] (rows summing to one) or None, meaning the instance-discrimination labels
  of the batch, the identity [B, B] ("sample i's label vector is 1 at its own positive");
- `generator`: a torch.Generator (None: torch's global generator); every draw comes from it, the
  Beta draws through a NumPy generator seeded from it, so a seeded generator reproduces the batch.
The partner of sample i is j = perm[i] with perm a uniform random permutation (j may equal i, as in
CutMix, which then leaves the sample unchanged). `alpha` (Beta(α, α)) and the probability `p` of mixing
a batch are unpublished for uaMix-MAE: the defaults are CutMix's α = 1 and p = 1. By default one λ is
drawn per batch (CutMix); `per_sample=True` draws one per sample. After each call `last` holds the
draws (`MixInfo`) for logging and tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

Mixer = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (x, y, generator) -> (x_mixed, y_virtual)


@dataclass
class MixInfo:
    perm: torch.Tensor               # (B,) partner of each sample
    lam: torch.Tensor                # (B,) weight of the sample itself in x_mixed and y_virtual
    start: torch.Tensor | None = None     # (B,) first replaced time frame (cutmix)
    length: torch.Tensor | None = None    # (B,) number of replaced time frames
    f_start: torch.Tensor | None = None   # (B,) tf-cutmix: first replaced frequency bin
    f_length: torch.Tensor | None = None


def _labels(y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if y is None:
        return torch.eye(x.shape[0], dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    if y.dim() != 2 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be [B, C] soft labels for B={x.shape[0]}, got {tuple(y.shape)}")
    return y


def _check(x: torch.Tensor) -> None:
    if x.dim() not in (3, 4) or (x.dim() == 4 and x.shape[1] != 1):
        raise ValueError(f"x must be [B, 1, T, F] or [B, T, F], got {tuple(x.shape)}")


def _beta(alpha: float, n: int, generator: torch.Generator | None) -> torch.Tensor:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, size=n))


def _uniform_int(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One integer in [0, high_b] (inclusive) per row."""
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64)
    return torch.minimum((u * (high + 1).double()).long(), high)


def _mix_labels(y: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    lam = lam.to(device=y.device, dtype=y.dtype)[:, None]
    return lam * y + (1 - lam) * y[perm.to(y.device)]


class _Base:
    def __init__(self, alpha: float = 1.0, p: float = 1.0, per_sample: bool = False):
        if alpha <= 0 or not 0 <= p <= 1:
            raise ValueError(f"need alpha > 0 and 0 <= p <= 1 (got {alpha}, {p})")
        self.alpha, self.p, self.per_sample = float(alpha), float(p), bool(per_sample)
        self.last: MixInfo | None = None

    def _draw(self, b: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(perm, lam) or None when this batch is left unmixed (probability 1 - p)."""
        if self.p < 1 and float(torch.rand((), generator=generator)) >= self.p:
            return None
        perm = torch.randperm(b, generator=generator)
        lam = _beta(self.alpha, b if self.per_sample else 1, generator).expand(b).clone()
        return perm, lam

    def _identity(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        self.last = MixInfo(torch.arange(b), torch.ones(b, dtype=torch.float64))
        return x, y


class TCutMix(_Base):
    """T-CutMix: CutMix along time only (uaMix-MAE).

    λ ~ Beta(α, α); L = round((1 - λ)·T) frames; start s uniform in {0, ..., T - L} (the span lies fully
    inside the clip); the binary mask M over (T, F) is 0 on frames [s, s + L) for every frequency bin and 1
    elsewhere; x_mixed_i = M ⊙ x_i + (1 - M) ⊙ x_perm[i]. λ is then recomputed from the span actually
    cut, λ' = 1 - L/T, and the virtual label is λ'·y_i + (1 - λ')·y_perm[i].
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check(x)
        y = _labels(y, x)
        b, t = x.shape[0], x.shape[-2]
        drawn = self._draw(b, generator)
        if drawn is None:
            return self._identity(x, y)
        perm, lam = drawn
        length = torch.round((1 - lam) * t).long().clamp(0, t)
        start = _uniform_int(t - length, generator)
        frames = torch.arange(t)
        cut = (frames[None, :] >= start[:, None]) & (frames[None, :] < (start + length)[:, None])   # (B, T)
        cut = cut.view(b, *([1] * (x.dim() - 3)), t, 1).to(x.device)
        x_mixed = torch.where(cut, x[perm.to(x.device)], x)
        lam_eff = 1 - length.double() / t
        self.last = MixInfo(perm, lam_eff, start, length)
        return x_mixed, _mix_labels(y, perm, lam_eff)


class TFCutMix(_Base):
    """TF-CutMix (ablation): CutMix with a box in time *and* frequency.

    λ ~ Beta(α, α); the box has round(√(1-λ)·T) frames and round(√(1-λ)·F) bins, its corner drawn
    uniformly so it lies inside the spectrogram; x_mixed = M ⊙ x_i + (1 - M) ⊙ x_perm[i] with M = 0 in the
    box; λ' = 1 - box area / (T·F); virtual label λ'·y_i + (1 - λ')·y_perm[i].
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check(x)
        y = _labels(y, x)
        b, t, f = x.shape[0], x.shape[-2], x.shape[-1]
        drawn = self._draw(b, generator)
        if drawn is None:
            return self._identity(x, y)
        perm, lam = drawn
        ratio = torch.sqrt(1 - lam)
        t_len = torch.round(ratio * t).long().clamp(0, t)
        f_len = torch.round(ratio * f).long().clamp(0, f)
        t0 = _uniform_int(t - t_len, generator)
        f0 = _uniform_int(f - f_len, generator)
        tt, ff = torch.arange(t), torch.arange(f)
        in_t = (tt[None] >= t0[:, None]) & (tt[None] < (t0 + t_len)[:, None])
        in_f = (ff[None] >= f0[:, None]) & (ff[None] < (f0 + f_len)[:, None])
        box = (in_t[:, :, None] & in_f[:, None, :]).view(b, *([1] * (x.dim() - 3)), t, f).to(x.device)
        x_mixed = torch.where(box, x[perm.to(x.device)], x)
        lam_eff = 1 - (t_len * f_len).double() / (t * f)
        self.last = MixInfo(perm, lam_eff, t0, t_len, f0, f_len)
        return x_mixed, _mix_labels(y, perm, lam_eff)


class MixupLS(_Base):
    """MixUp + label smoothing (ablation): λ ~ Beta(α, α); x_mixed = λ x_i + (1 - λ) x_perm[i];
    virtual label (1 - ε)(λ y_i + (1 - λ) y_perm[i]) + ε / C with C the label width (B for instance
    labels). `smoothing` ε defaults to 0.1 (unpublished for uaMix-MAE)."""

    def __init__(self, alpha: float = 1.0, p: float = 1.0, per_sample: bool = False, smoothing: float = 0.1):
        super().__init__(alpha, p, per_sample)
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check(x)
        y = _labels(y, x)
        drawn = self._draw(x.shape[0], generator)
        if drawn is None:
            x_mixed, y_mixed = self._identity(x, y)
        else:
            perm, lam = drawn
            lam_x = lam.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
            x_mixed = lam_x * x + (1 - lam_x) * x[perm.to(x.device)]
            y_mixed = _mix_labels(y, perm, lam)
            self.last = MixInfo(perm, lam)
        return x_mixed, (1 - self.smoothing) * y_mixed + self.smoothing / y.shape[1]


class NoMix(_Base):
    """No mixing (ablation): returns x unchanged and y (identity instance labels when y is None)."""

    def __init__(self, **_: Any):
        super().__init__()

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        _check(x)
        return self._identity(x, _labels(y, x))


MIXERS: dict[str, type[_Base]] = {"t-cutmix": TCutMix, "mixup-ls": MixupLS, "tf-cutmix": TFCutMix, "none": NoMix}


def build_mixer(name: str, **options: Any) -> _Base:
    """A mixer by name (`t-cutmix`, `mixup-ls`, `tf-cutmix`, `none`); options go to its constructor."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; valid: {', '.join(MIXERS)}")
    return MIXERS[name](**options)
