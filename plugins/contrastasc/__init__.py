"""ContrastASC: CP-Mobile student encoders and the distillation/contrastive losses they are trained with.

Entry point (pyproject, group `asc_bench`): `contrastasc = "asc_bench_plugins.contrastasc"`.
Registration imports no torch (`asc-bench list` stays fast): builders, losses and recipes are `lazy`
stand-ins, and the presets' names and sizes come in closed form from `arch.py`.
"""
from __future__ import annotations

import functools
from typing import Callable

from asc_bench import hookimpl
from asc_bench.api import lazy


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    from asc_bench_plugins.contrastasc.arch import PRESETS, description, preset_name, summary_of

    build = lazy("asc_bench_plugins.contrastasc.encoder:build_encoder")
    for preset in PRESETS:
        name, base = preset_name(preset), preset.config()
        register(name, functools.partial(build, name=name, base=base), description=description(preset),
                 requires_weights=True, summary=functools.partial(summary_of, base))


@hookimpl
def register_losses(register: Callable[..., None]) -> None:
    losses = "asc_bench_plugins.contrastasc.losses"
    register("supcon", lazy(f"{losses}:build_supcon"), description="supervised contrastive loss (SupContrast), "
             "with mixup soft masks; SimCLR without labels")
    register("crd", lazy(f"{losses}:build_crd"), description="contrastive representation distillation "
             "(RepDistiller): embedding heads, two momentum memory banks, NCE with K negatives")
    register("kd", lazy(f"{losses}:build_kd"), description="logit distillation at temperature T; reduction must be "
             "batchmean (RepDistiller) or batch_class_mean (CP-JKU)")


@hookimpl
def register_recipes(register: Callable[..., None]) -> None:
    from asc_bench_plugins.contrastasc.recipes import register_contrastasc_recipes

    register_contrastasc_recipes(register)
