"""An example third-party plugin: a weight-free encoder, an encoder with bundled weights, and one task."""
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


WEIGHTS = Path(__file__).parent / "weights" / "projection.safetensors"


class ProjectedEnergy(torch.nn.Module):
    """FrameEnergyStats through a 4 -> 3 linear map whose weights ship inside this package."""

    sample_rate = 16000
    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.stats = FrameEnergyStats()
        self.proj = torch.nn.Linear(4, 3)

    def config(self) -> dict:
        return {**self.stats.config(), "proj": "4->3"}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stats(wave, lengths))


def build_projected(request):
    from asc_bench.embedding.checkpoints import load_into, read_checkpoint

    model = ProjectedEnergy()
    if not request.random_init:
        # request.bundled_weights holds the declared files (checked to exist), or a --checkpoint replaces them.
        path = request.checkpoint or request.bundled_weights[0]
        load_into(model.proj, read_checkpoint(path), source=path, layout="example projection")
    return model


@hookimpl
def register_encoders(register):
    register("example-frame-energy", build, description="example plugin: frame energy/ZCR statistics",
             requires_weights=False)
    register("example-bundled-projection", build_projected, bundled_weights=[WEIGHTS],
             description="example plugin: frame statistics through a projection shipped as package data")


@hookimpl
def register_task_dirs(register):
    register(Path(__file__).parent / "tasks")
