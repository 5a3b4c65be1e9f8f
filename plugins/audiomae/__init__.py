"""AudioMAE (facebookresearch/AudioMAE, ViT-B AS-2M) as an asc-bench encoder, loading the official files."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl
from asc_bench.api import lazy


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    # Registration imports no torch: the builder is imported when called, the summary is closed-form.
    from asc_bench_plugins.audiomae.config import summary

    register("audiomae", lazy("asc_bench_plugins.audiomae.encoder:build_audiomae"), requires_weights=True,
             summary=summary,
             description="AudioMAE ViT-B (official pretrained.pth or finetuned.pth); mean of patch tokens "
                         "-> fc_norm, 768-d, 10.24 s windows")
