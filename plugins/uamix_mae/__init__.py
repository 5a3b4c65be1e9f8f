"""uaMix-MAE: the AudioMAE-architecture encoder it produces, its NNCLR loss, T-CutMix and the ablation
mixers, and the contrastive tuning recipe."""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    from asc_bench_plugins.uamix_mae.encoder import build_uamix, summary

    register("uamix-mae", build_uamix, summary=summary, requires_weights=True,
             description="AudioMAE ViT tuned by uaMix-MAE (NNCLR + T-CutMix); loads backbone./module. layouts")


@hookimpl
def register_losses(register: Callable[..., None]) -> None:
    from asc_bench_plugins.uamix_mae.nnclr import NNCLRLoss

    register("nnclr", NNCLRLoss, description="nearest-neighbour contrastive loss with a support queue (MAE-CT)")


@hookimpl
def register_augmentations(register: Callable[..., None]) -> None:
    from asc_bench_plugins.uamix_mae.mixing import MIXERS

    for name, cls in sorted(MIXERS.items()):
        register(name, cls, description=(cls.__doc__ or name).strip().splitlines()[0])


@hookimpl
def register_recipes(register: Callable[..., None]) -> None:
    from asc_bench_plugins.uamix_mae.recipe import UAMIX_RECIPE

    register("uamix-mae", UAMIX_RECIPE, description="uaMix-MAE contrastive tuning of AudioMAE: NNCLR + T-CutMix, "
             "head-only then top-half stages")
