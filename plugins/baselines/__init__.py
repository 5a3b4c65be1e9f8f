"""Weight-free reference encoders."""
from __future__ import annotations

from asc_bench import hookimpl
from asc_bench.api import lazy


@hookimpl
def register_encoders(register):
    register("logmel-stats", lazy("asc_bench_plugins.baselines.logmel_stats:build"), requires_weights=False,
             description="mean and std over time of 128 Kaldi log-mel bands (weight-free floor)",
             summary=lambda: {"params": 0, "macs_per_s": None})
