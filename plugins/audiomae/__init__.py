"""AudioMAE (facebookresearch/AudioMAE, ViT-B AS-2M) as an asc-bench encoder, loading the official files."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    # Imported here so that listing plugins does not pay for building anything.
    from asc_bench_plugins.audiomae.encoder import build_audiomae, summary

    register("audiomae", build_audiomae, requires_weights=True, summary=summary,
             description="AudioMAE ViT-B (official pretrained.pth or finetuned.pth); mean of patch tokens "
                         "-> fc_norm, 768-d, 10.24 s windows")
