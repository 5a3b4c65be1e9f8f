"""uaMix-MAE: the AudioMAE-architecture encoder it produces, its NNCLR loss, T-CutMix and the ablation
mixers, and the contrastive tuning recipe.

Registration imports no torch (`asc-bench list` stays fast): everything heavy is a `lazy` stand-in.
"""
from __future__ import annotations

from typing import Any, Callable

from asc_bench import hookimpl
from asc_bench.api import lazy

# name -> (class in mixing.py, its docstring's first line); tests/test_mixing.py checks this table
# against mixing.MIXERS so it cannot drift.
MIXER_TABLE: dict[str, tuple[str, str]] = {
    "mixup-ls": ("MixupLS", "MixUp + label smoothing (ablation): λ ~ Beta(α, α); x_mixed = λ x_i + (1 - λ) x_perm[i];"),
    "none": ("NoMix", "No mixing (ablation): returns x unchanged and y (identity instance labels when y is None)."),
    "t-cutmix": ("TCutMix", "T-CutMix: CutMix along time only (uaMix-MAE)."),
    "tf-cutmix": ("TFCutMix", "TF-CutMix (ablation): CutMix with a box in time *and* frequency."),
}


def summary() -> dict[str, Any]:
    """AudioMAE ViT-B facts in closed form (no torch), for `asc-bench list encoders`."""
    from asc_bench_plugins.audiomae.config import summary as vit_summary

    return {**vit_summary(), "note": "AudioMAE ViT-B architecture; no official checkpoint released"}


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    register("uamix-mae", lazy("asc_bench_plugins.uamix_mae.encoder:build_uamix"), summary=summary,
             requires_weights=True,
             description="AudioMAE ViT tuned by uaMix-MAE (NNCLR + T-CutMix); loads backbone./module. layouts")


@hookimpl
def register_losses(register: Callable[..., None]) -> None:
    register("nnclr", lazy("asc_bench_plugins.uamix_mae.nnclr:NNCLRLoss"),
             description="nearest-neighbour contrastive loss with a support queue (MAE-CT)")


@hookimpl
def register_augmentations(register: Callable[..., None]) -> None:
    for name, (cls, description) in sorted(MIXER_TABLE.items()):
        register(name, lazy(f"asc_bench_plugins.uamix_mae.mixing:{cls}"), description=description)


@hookimpl
def register_recipes(register: Callable[..., None]) -> None:
    register("uamix-mae", lazy("asc_bench_plugins.uamix_mae.recipe:UAMIX_RECIPE"),
             description="uaMix-MAE contrastive tuning of AudioMAE: NNCLR + T-CutMix, head-only then top-half stages")
