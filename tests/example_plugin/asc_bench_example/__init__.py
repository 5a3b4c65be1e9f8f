"""An example third-party plugin: one weight-free encoder and one task."""
from __future__ import annotations

from pathlib import Path

import torch

from asc_bench import hookimpl


class FrameEnergyStats(torch.nn.Module):
    """Mean and std over 25 ms frames of log energy and zero-crossing rate (a 4-d embedding)."""

    sample_rate = 16000
    embed_dim = 4

    def config(self) -> dict:
        return {"frame": 400, "hop": 160}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = []
        for x, n in zip(wave, lengths):
            frames = x[: int(n)].unfold(0, 400, 160)
            energy = frames.pow(2).mean(1).add(1e-8).log()
            zcr = (frames[:, 1:].sign() != frames[:, :-1].sign()).float().mean(1)
            out.append(torch.stack([energy.mean(), energy.std(), zcr.mean(), zcr.std()]))
        return torch.stack(out)


def build(request):
    return FrameEnergyStats()


@hookimpl
def register_encoders(register):
    register("example-frame-energy", build, description="example plugin: frame energy/ZCR statistics",
             requires_weights=False)


@hookimpl
def register_task_dirs(register):
    register(Path(__file__).parent / "tasks")
