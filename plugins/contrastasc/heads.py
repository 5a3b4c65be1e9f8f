"""Embedding heads that map pooled features to the normalised space contrastive losses work in.

`ProjectionHead(hidden_dim=0)` is RepDistiller's CRD `Embed` (one linear layer, then L2 normalisation;
its weights are named `linear.*` as there, so RepDistiller state dicts load). With `hidden_dim > 0` it
is the two-layer projection ContrastASC reportedly uses for CRD: Linear -> [LayerNorm] -> ReLU ->
Linear -> L2 normalisation. Where exactly the LayerNorm sits in that head is not published; we put it
after the first layer, where SimCLR/SupContrast-style heads put their normalisation.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# The configuration lives in a torch-free module (`asc-bench list encoders` reads it).
from asc_bench_plugins.contrastasc.arch import HEAD_NORMS, ProjectionConfig  # noqa: F401


class ProjectionHead(nn.Module):
    """`x[..., in_dim] -> L2-normalised [..., out_dim]` (see the module docstring for the layout)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden_dim: int = 0, norm: str = "none"):
        super().__init__()
        if norm not in HEAD_NORMS:
            raise ValueError(f"head norm must be one of {list(HEAD_NORMS)}, got {norm!r}")
        self.in_dim, self.out_dim, self.hidden_dim, self.norm_kind = in_dim, out_dim, hidden_dim, norm
        if hidden_dim == 0:
            self.linear = nn.Linear(in_dim, out_dim)
            self.norm = nn.LayerNorm(out_dim) if norm == "layer" else None
        else:
            self.fc1 = nn.Linear(in_dim, hidden_dim)
            self.norm = nn.LayerNorm(hidden_dim) if norm == "layer" else None
            self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hidden_dim == 0:
            x = self.linear(x)
            if self.norm is not None:
                x = self.norm(x)
        else:
            x = self.fc1(x)
            if self.norm is not None:
                x = self.norm(x)
            x = self.fc2(F.relu(x))
        return F.normalize(x, dim=-1)
