"""Batched Kaldi-compatible log-mel filterbank (the front end of BEATs, AudioMAE and uaMix-MAE).

Reproduces torchaudio's `compliance.kaldi.fbank` for the options both models use (16 kHz, 128 mel bins,
25 ms / 10 ms frames, `snip_edges`, no dither, no energy column) without importing torchaudio, on a
padded batch of clips of different lengths. Every clip's frames come from its own valid samples only,
so a clip gives the same filterbank alone or in any batch. Plain torch ops: runs on CPU and CUDA.

Precision: the filterbank is computed in float64 and returned in the input's dtype. torchaudio computes it
in float32, and the float32 result of an FFT/BLAS kernel depends on the CPU (AVX2 or AVX-512) and on the
thread count; in low-energy mel bins that noise reaches several 1e-3 in the log. In float64 the result is
the same on every CPU and thread count up to the final rounding, and its distance from torchaudio's output
is torchaudio's own float32 error (2.0e-3 at BEATs' scale, 5.9e-4 at AudioMAE's on the kaldi_fbank fixture),
a fixed number instead of one that moves with the machine. The cost is a few milliseconds per 10-s clip,
under 1 % of a BEATs or AudioMAE forward. ``compute_dtype=torch.float32`` gives torchaudio's precision.

Besides the filterbank this module holds only the two model-specific normalisations (BEATs' and
AudioMAE's); windowing of long clips and everything else belongs to the encoders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from asc_bench.api import BadAudioError

SAMPLE_RATE = 16000
FRAME_LENGTH = 400          # 25 ms
FRAME_SHIFT = 160           # 10 ms
N_FFT = 512                 # next power of two above the frame length
NUM_MEL_BINS = 128
LOW_FREQ = 20.0
HIGH_FREQ = SAMPLE_RATE / 2
PREEMPHASIS = 0.97
# Kaldi floors energies at float32 machine epsilon whatever the working precision.
ENERGY_FLOOR = float(torch.finfo(torch.float32).eps)

BEATS_MEAN, BEATS_STD = 15.41663, 6.55582
AUDIOMAE_MEAN, AUDIOMAE_STD = -4.2677393, 4.5689974
AUDIOMAE_FRAMES = 1024


@dataclass(frozen=True)
class FbankSettings:
    """The per-model parts of the front end (everything else is shared)."""

    scale: float            # waveform multiplier before framing (BEATs feeds int16-range samples)
    window: str             # "povey" or "hanning"
    remove_clip_mean: bool  # subtract the clip's mean before framing (AudioMAE)


BEATS = FbankSettings(scale=32768.0, window="povey", remove_clip_mean=False)
AUDIOMAE = FbankSettings(scale=1.0, window="hanning", remove_clip_mean=True)


class ClipTooShortError(BadAudioError, ValueError):
    """A clip has fewer samples than one analysis frame (or than a model's smallest input)."""


def num_frames(lengths: torch.Tensor) -> torch.Tensor:
    """Frames per clip with snip_edges: 1 + floor((N - 400) / 160)."""
    return 1 + torch.div(lengths - FRAME_LENGTH, FRAME_SHIFT, rounding_mode="floor")


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


@lru_cache(maxsize=8)
def _mel_banks(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(128, 257) triangular filters, evaluated in the mel domain at the FFT bin frequencies."""
    mel_low = 1127.0 * math.log(1.0 + LOW_FREQ / 700.0)
    mel_high = 1127.0 * math.log(1.0 + HIGH_FREQ / 700.0)
    delta = (mel_high - mel_low) / (NUM_MEL_BINS + 1)
    n = torch.arange(NUM_MEL_BINS, device=device, dtype=dtype).unsqueeze(1)
    left, center, right = mel_low + n * delta, mel_low + (n + 1.0) * delta, mel_low + (n + 2.0) * delta
    mel = _mel(torch.arange(N_FFT // 2, device=device, dtype=dtype) * (SAMPLE_RATE / N_FFT)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))   # the Nyquist bin gets no weight


@lru_cache(maxsize=8)
def _window(kind: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    hann = torch.hann_window(FRAME_LENGTH, periodic=False, device=device, dtype=dtype)
    if kind == "hanning":
        return hann
    if kind == "povey":
        return hann.pow(0.85)
    raise ValueError(f"unknown window {kind!r}; use 'povey' or 'hanning'")


def kaldi_fbank(wave: torch.Tensor, lengths: torch.Tensor | None, settings: FbankSettings,
                compute_dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel filterbank of a padded batch.

    wave: (B, T) float, lengths: (B,) valid samples per clip (None = all T).
    Returns (fbank (B, F_max, 128) in wave's dtype, frames (B,) int64) where F_max is the largest clip's
    frame count. Rows past a clip's own frame count are 0.0, which is also AudioMAE's padding value.
    Computed in `compute_dtype` (see the module docstring for why float64 is the default).
    """
    if wave.dim() != 2:
        raise ValueError(f"wave must be (batch, samples), got shape {tuple(wave.shape)}")
    batch, total = wave.shape
    if lengths is None:
        lengths = torch.full((batch,), total, dtype=torch.long)
    lengths = lengths.to(device=wave.device, dtype=torch.long)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if bool((lengths > total).any()):
        raise ValueError(f"a length exceeds the {total} samples of the batch: {lengths.tolist()}")
    short = (lengths < FRAME_LENGTH).nonzero().flatten().tolist()
    if short:
        i = short[0]
        raise ClipTooShortError(f"clip {i} of the batch", f"it has {int(lengths[i])} samples; the Kaldi "
                                f"filterbank needs at least {FRAME_LENGTH} (one 25 ms frame at 16 kHz)")
    frames = num_frames(lengths)
    f_max = int(frames.max())
    out_dtype = wave.dtype
    wave = wave.to(compute_dtype)
    if settings.remove_clip_mean:
        # The mean covers every valid sample, also those after the last full frame. One reduction per
        # clip over exactly its samples keeps the float32 summation order of the single-clip case, so a
        # clip's filterbank does not depend on the batch it is in (a masked batched sum would).
        mean = torch.stack([wave[i, :n].mean() for i, n in enumerate(lengths.tolist())])
        wave = wave - mean.unsqueeze(1)
    wave = wave[:, :FRAME_LENGTH + (f_max - 1) * FRAME_SHIFT]
    if settings.scale != 1.0:
        wave = wave * settings.scale

    x = wave.unfold(1, FRAME_LENGTH, FRAME_SHIFT)                      # (B, F, 400), a view
    x = x - x.mean(dim=-1, keepdim=True)                                # DC removal per frame
    previous = torch.cat([x[..., :1], x[..., :-1]], dim=-1)             # x[-1] := x[0]
    x = (x - PREEMPHASIS * previous) * _window(settings.window, x.device, x.dtype)
    x = torch.nn.functional.pad(x, (0, N_FFT - FRAME_LENGTH))
    power = torch.fft.rfft(x).abs().pow(2.0)                            # (B, F, 257)
    mel = torch.matmul(power, _mel_banks(x.device, x.dtype).t())
    fbank = torch.clamp(mel, min=ENERGY_FLOOR).log()
    valid_rows = torch.arange(f_max, device=wave.device) < frames.unsqueeze(1)
    return (fbank * valid_rows.unsqueeze(-1)).to(out_dtype), frames


def beats_normalise(fbank: torch.Tensor, mean: float = BEATS_MEAN, std: float = BEATS_STD) -> torch.Tensor:
    """BEATs' model input: (x - mean) / (2 std); frames past a clip's end stay whatever they were."""
    return (fbank - mean) / (2 * std)


def audiomae_input(fbank: torch.Tensor, target_frames: int = AUDIOMAE_FRAMES, mean: float = AUDIOMAE_MEAN,
                   std: float = AUDIOMAE_STD) -> torch.Tensor:
    """AudioMAE's model input (B, 1, target_frames, 128): zero-pad (log-mel value 0) or cut, then normalise.

    `fbank` rows past a clip's frame count must already be 0.0 (as `kaldi_fbank` returns them).
    """
    n = fbank.shape[1]
    if n < target_frames:
        fbank = torch.nn.functional.pad(fbank, (0, 0, 0, target_frames - n))
    else:
        fbank = fbank[:, :target_frames]
    return ((fbank - mean) / (2 * std)).unsqueeze(1)
