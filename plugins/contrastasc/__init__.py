"""ContrastASC: CP-Mobile student encoders and the distillation/contrastive losses they are trained with.

Entry point (pyproject, group `asc_bench`): `contrastasc = "asc_bench_plugins.contrastasc"`.
"""
from __future__ import annotations

from typing import Callable

from asc_bench import hookimpl


@hookimpl
def register_encoders(register: Callable[..., None]) -> None:
    from asc_bench_plugins.contrastasc.encoder import registrations

    for name, build, summary, description in registrations():
        register(name, build, description=description, requires_weights=True, summary=summary)


@hookimpl
def register_losses(register: Callable[..., None]) -> None:
    from asc_bench_plugins.contrastasc import losses

    register("supcon", losses.build_supcon, description="supervised contrastive loss (SupContrast), with "
             "mixup soft masks; SimCLR without labels")
    register("crd", losses.build_crd, description="contrastive representation distillation (RepDistiller): "
             "embedding heads, two momentum memory banks, NCE with K negatives")
    register("kd", losses.build_kd, description="logit distillation at temperature T; reduction must be "
             "batchmean (RepDistiller) or batch_class_mean (CP-JKU)")


@hookimpl
def register_recipes(register: Callable[..., None]) -> None:
    from asc_bench_plugins.contrastasc.recipes import register_contrastasc_recipes

    register_contrastasc_recipes(register)
