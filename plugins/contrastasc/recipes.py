"""The ContrastASC training recipes (``asc-bench train contrastasc-teacher|contrastasc-student``).

Register them from the plugin's ``register_recipes`` hook with ``register_contrastasc_recipes(register)``
or by hand: ``register("contrastasc-teacher", TEACHER_RECIPE, description=...)``. Each object is a class
following ``asc_bench.training.loop.Recipe`` (a ``lazy`` stand-in: the recipe modules, and torch, are
imported when the training loop makes its instance, not when plugins are listed).
"""
from __future__ import annotations

from typing import Callable

from asc_bench.api import lazy

TEACHER_RECIPE = lazy("asc_bench_plugins.contrastasc.teacher:TeacherRecipe")
STUDENT_RECIPE = lazy("asc_bench_plugins.contrastasc.student:StudentRecipe")

DESCRIPTIONS = {
    "contrastasc-teacher": "ContrastASC stage 1: BEATs + cosine head, mixup-aware SupCon fine-tuning",
    "contrastasc-student": "ContrastASC stage 2: CP-Mobile student distilled with CE + KD + CRD from cached "
                           "teacher embeddings",
}


def register_contrastasc_recipes(register: Callable[..., None]) -> None:
    register("contrastasc-teacher", TEACHER_RECIPE, description=DESCRIPTIONS["contrastasc-teacher"])
    register("contrastasc-student", STUDENT_RECIPE, description=DESCRIPTIONS["contrastasc-student"])
