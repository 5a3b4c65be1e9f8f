"""BEATs (microsoft/unilm, iter3 family) as an asc-bench encoder, loading the official checkpoints."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl
from asc_bench.api import lazy


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    # Registration imports no torch: the builder is imported when called, the summary is closed-form.
    from asc_bench_plugins.beats.config import summary

    register("beats", lazy("asc_bench_plugins.beats.encoder:build_beats"), requires_weights=True,
             summary=summary,
             description="BEATs iter3 transformer (official .pt: pre-trained or AS2M fine-tuned); "
                         "mean of last-layer tokens, 768-d")
