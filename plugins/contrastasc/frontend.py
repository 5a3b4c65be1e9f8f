"""The two CP-JKU log-mel frontends, in plain torch (no torchaudio), batched, CPU or CUDA.

- ``dcase23`` (``AugmentMelSTFT`` in eval mode): pre-emphasis y[n] = x[n+1] - 0.97 x[n]; STFT with a
  symmetric Hann window of 3072 centred in a 4096-point FFT, hop 500, reflect centre padding; power;
  256 Kaldi-style triangular mel bands (mel = 1127 ln(1 + f/700)) from 0 to 15,500 Hz with a zero weight
  on the Nyquist bin; ln(x + 1e-5); (x + 4.5) / 5. Frames: 1 + (N - 1) // 500.
- ``dcase24`` (torchaudio ``MelSpectrogram`` defaults of the DCASE24 baseline, from 32 kHz onwards):
  periodic Hann 3072 in 4096, hop 500, reflect centre padding, power 2, HTK mel 0-16,000 Hz without area
  normalisation; ln(x + 1e-5). Frames: 1 + N // 500.
The DCASE23 filterbank is computed in float64, the DCASE24 one in float32 exactly as torchaudio builds it
(see `htk_mel_banks`); both are stored as float32 non-persistent buffers (the official checkpoints carry
no frontend tensors). Output (B, 256, T), frequency first, like the official modules.

Reflect padding needs more than n_fft/2 samples, so clips shorter than `min_samples` are zero-padded at
the end to that length (about 64 ms; no real clip is that short).
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Sizes and frame counts live in a torch-free module (`asc-bench list encoders` reads them).
from asc_bench_plugins.contrastasc.arch import FRONTENDS, HOP, N_FFT, N_MELS, SAMPLE_RATE, WIN, min_samples, n_frames  # noqa: F401,E501


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Kaldi triangles on mel = 1127 ln(1 + f/700); Nyquist column is 0."""
    n_bins = n_fft // 2
    mel = lambda f: 1127.0 * torch.log1p(torch.as_tensor(f, dtype=torch.float64) / 700.0)  # noqa: E731
    m_lo, m_hi = mel(f_min), mel(f_max)
    delta = (m_hi - m_lo) / (n_mels + 1)
    k = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    left, center, right = m_lo + k * delta, m_lo + (k + 1) * delta, m_lo + (k + 2) * delta
    m = mel(torch.arange(n_bins, dtype=torch.float64) * (sample_rate / n_fft)).unsqueeze(0)
    up = (m - left) / (center - left)
    down = (right - m) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.cat([banks, torch.zeros(n_mels, 1, dtype=torch.float64)], dim=1)


def htk_mel_banks(n_mels: int, n_fft: int, sample_rate: float, f_min: float, f_max: float,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangles as torchaudio's ``melscale_fbanks(mel_scale="htk", norm=None)``.

    Mel points equally spaced on 2595 log10(1 + f/700), slopes computed in Hz. With the default float32
    every step runs in torchaudio's dtype and order (the mel end points in Python floats, then float32
    ``linspace``, ``10 ** (m / 2595)``, slopes and their quotients), so the weights equal the official
    baseline's. ``dtype=torch.float64`` gives the exact triangles instead; they differ from the official
    ones by up to 1.6e-5 per weight, which reaches 3e-4 in the log-mel of some clips.
    """
    n_freqs = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=dtype)
    to_mel = lambda f: 2595.0 * math.log10(1.0 + (f / 700.0))  # noqa: E731
    m_pts = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2, dtype=dtype)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)          # (n_freqs, n_mels + 2)
    down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1, dtype=dtype), torch.min(down, up)).T.contiguous()


class LogMel(nn.Module):
    """`forward(wave[B, N]) -> logmel[B, 256, T]` for clips that all have N valid samples."""

    def __init__(self, kind: str = "dcase23"):
        super().__init__()
        if kind not in FRONTENDS:
            raise ValueError(f"frontend must be one of {list(FRONTENDS)}, got {kind!r}")
        self.kind = kind
        self.sample_rate = SAMPLE_RATE
        if kind == "dcase23":
            window = torch.hann_window(WIN, periodic=False, dtype=torch.float64)
            banks = kaldi_mel_banks(N_MELS, N_FFT, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2 - 1000 / 2)
        else:
            window = torch.hann_window(WIN, periodic=True, dtype=torch.float64)
            banks = htk_mel_banks(N_MELS, N_FFT, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2)
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel_banks", banks.float(), persistent=False)
        self.min_samples = min_samples(kind)

    def n_frames(self, n_samples: int) -> int:
        return n_frames(self.kind, n_samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected wave[B, N], got shape {tuple(wave.shape)}")
        if wave.shape[1] < self.min_samples:
            wave = nn.functional.pad(wave, (0, self.min_samples - wave.shape[1]))
        x = wave
        if self.kind == "dcase23":
            x = x[:, 1:] - 0.97 * x[:, :-1]
        window = self.window.to(dtype=x.dtype)
        spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WIN, window=window, center=True,
                          pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2                     # (B, 2049, T)
        mel = torch.matmul(self.mel_banks.to(dtype=power.dtype), power)
        logmel = torch.log(mel + 1e-5)
        if self.kind == "dcase23":
            logmel = (logmel + 4.5) / 5.0
        return logmel
