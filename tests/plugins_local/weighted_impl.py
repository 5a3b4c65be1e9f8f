"""The model of `tiny-weighted`: logmel mean/std (256-d) times a (256, 16) matrix.

Weights: `--checkpoint W.npy` (loaded with allow_pickle=False), or a fixed random matrix for
--random-init.
"""
import numpy as np
import torch

from asc_bench_plugins.baselines.logmel_stats import LogMelStats


class Weighted(LogMelStats):
    embed_dim = 16

    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.proj = torch.nn.Parameter(torch.from_numpy(np.asarray(weights, np.float32)), requires_grad=False)

    def forward(self, wave, lengths):
        return super().forward(wave, lengths) @ self.proj


def build(request):
    if request.checkpoint is not None:
        weights = np.load(request.checkpoint, allow_pickle=False)
    else:
        weights = np.random.default_rng(0).standard_normal((256, 16))
    return Weighted(weights)
