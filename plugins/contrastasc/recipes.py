"""The ContrastASC training recipes (``asc-bench train contrastasc-teacher|contrastasc-student``).

Register them from the plugin's ``register_recipes`` hook with ``register_contrastasc_recipes(register)``
or by hand: ``register("contrastasc-teacher", TEACHER_RECIPE, description=...)``. Each object is a class
following ``asc_bench.training.loop.Recipe``; the training loop makes one instance per run.
"""
from __future__ import annotations

from typing import Callable

from asc_bench_plugins.contrastasc.student import StudentRecipe
from asc_bench_plugins.contrastasc.teacher import TeacherRecipe

TEACHER_RECIPE = TeacherRecipe
STUDENT_RECIPE = StudentRecipe

DESCRIPTIONS = {
    "contrastasc-teacher": "ContrastASC stage 1: BEATs + cosine head, mixup-aware SupCon fine-tuning",
    "contrastasc-student": "ContrastASC stage 2: CP-Mobile student distilled with CE + KD + CRD from cached "
                           "teacher embeddings",
}


def register_contrastasc_recipes(register: Callable[..., None]) -> None:
    register("contrastasc-teacher", TEACHER_RECIPE, description=DESCRIPTIONS["contrastasc-teacher"])
    register("contrastasc-student", STUDENT_RECIPE, description=DESCRIPTIONS["contrastasc-student"])
