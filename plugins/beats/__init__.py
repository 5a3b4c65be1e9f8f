"""BEATs (microsoft/unilm, iter3 family) as an asc-bench encoder, loading the official checkpoints."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    # Imported here so that listing plugins does not pay for building anything.
    from asc_bench_plugins.beats.encoder import build_beats, summary

    register("beats", build_beats, requires_weights=True, summary=summary,
             description="BEATs iter3 transformer (official .pt: pre-trained or AS2M fine-tuned); "
                         "mean of last-layer tokens, 768-d")
