"""`logmel-stats`: mean and standard deviation over time of each log-mel band. Weight-free.

A floor every learned encoder should beat; it uses the same Kaldi filterbank as BEATs/AudioMAE
(128 bands, 25 ms / 10 ms frames, 16 kHz, no waveform scaling, clip mean removed).
"""
from __future__ import annotations

from typing import Any

import torch

from asc_bench.api import EncoderRequest
from asc_bench.embedding.frontends import AUDIOMAE, FRAME_LENGTH, NUM_MEL_BINS, SAMPLE_RATE, kaldi_fbank


class LogMelStats(torch.nn.Module):
    sample_rate = SAMPLE_RATE
    embed_dim = 2 * NUM_MEL_BINS
    min_samples = FRAME_LENGTH      # one Kaldi frame

    def config(self) -> dict[str, Any]:
        return {"frontend": "kaldi-fbank-128", "window": AUDIOMAE.window, "stats": ["mean", "std"]}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        fbank, frames = kaldi_fbank(wave, lengths, AUDIOMAE)           # padded rows are 0
        n = frames.to(fbank.dtype).view(-1, 1)
        mean = fbank.sum(1) / n
        valid = (torch.arange(fbank.shape[1], device=fbank.device) < frames.view(-1, 1)).unsqueeze(-1)
        var = ((fbank - mean.unsqueeze(1)) * valid).pow(2).sum(1) / n.clamp(min=2).sub(1)
        return torch.cat([mean, var.sqrt()], dim=1)


def build(request: EncoderRequest) -> LogMelStats:
    if request.options:
        from asc_bench.api import UsageError

        raise UsageError(f"encoder 'logmel-stats' takes no options (got {sorted(request.options)})")
    return LogMelStats()
