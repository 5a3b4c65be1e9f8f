"""Training throughput of each recipe at a realistic size, on this machine.

Times one optimizer step (forward, loss, backward, AdamW) of the recipes' own models, built through
the recipes with random weights at full size, on random 10-s waveforms; decoding audio is not included
(the loop overlaps it with ``num_workers``). Each case runs ``--warmup`` steps, then ``--steps`` timed
steps; the table shows the median step time, steps/s and clips/s.

    python benchmarks/training.py                 # all cases
    python benchmarks/training.py --only student  # one case
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from asc_bench.training.config import TrainConfig, from_mapping
from asc_bench.training.loop import TrainContext, _enter_stage
from asc_bench.training.optim import build_optimizer


def context(recipe: Any, section: dict[str, Any], n_classes: int, n_clips: int, **common: Any) -> tuple[TrainConfig, TrainContext]:
    cfg = from_mapping(TrainConfig, {"steps": 1000, "lr": 1e-4, **common})
    rc = from_mapping(recipe.config_class, section, section="recipe")
    ctx = TrainContext(config=cfg, recipe_config=rc, recipe_name="bench", device=torch.device("cpu"),
                       out_dir=Path("/tmp"), cache_dir=Path("/tmp"), clips=[None] * n_clips,
                       classes=[f"c{i}" for i in range(n_classes)],
                       labels=np.arange(n_clips) % n_classes, manager=None)
    return cfg, ctx


def time_steps(recipe: Any, cfg: TrainConfig, ctx: TrainContext, stage_index: int, batch: int, seconds: float,
               sample_rate: int, warmup: int, steps: int) -> list[float]:
    built = recipe.build(cfg, ctx)
    stage = built.stages[stage_index]
    ctx.model = _enter_stage(built.model, built.groups, stage, recipe)
    optimizer, _ = build_optimizer(built.groups, cfg)
    g = torch.Generator().manual_seed(0)
    times = []
    for step in range(warmup + steps):
        ctx.step = stage.start + step
        data = {"wave": 0.1 * torch.randn(batch, int(seconds * sample_rate), generator=g),
                "lengths": torch.full((batch,), int(seconds * sample_rate)),
                "label": torch.randint(0, len(ctx.classes), (batch,), generator=g),
                "index": torch.randperm(len(ctx.clips), generator=g)[:batch]}
        start = time.perf_counter()
        loss = recipe.training_step(data, ctx.step)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(recipe, "after_step"):
            recipe.after_step(ctx.step)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def teacher_case(stage: int) -> Callable[[], tuple[Any, TrainConfig, TrainContext, int]]:
    def make():
        from asc_bench_plugins.contrastasc.teacher import TeacherRecipe

        recipe = TeacherRecipe()
        cfg, ctx = context(recipe, {"random_init": True, "head_steps": 100}, 10, 1000)
        return recipe, cfg, ctx, stage
    return make


def student_case():
    from asc_bench_plugins.contrastasc import student as mod

    recipe = mod.StudentRecipe()
    n_clips = 139_620                                   # TAU22 fold1_train size (spec: ~139.6K)

    def fake_teacher(ctx: Any, rc: Any):               # precomputed teacher outputs (cache hit)
        g = torch.Generator().manual_seed(1)
        return torch.randn(n_clips, 768, generator=g), 10 * torch.randn(n_clips, 10, generator=g), list(ctx.classes)

    mod.teacher_outputs = fake_teacher
    cfg, ctx = context(recipe, {"teacher": "precomputed"}, 10, n_clips)
    return recipe, cfg, ctx, 0


def uamix_case(stage: int) -> Callable[[], tuple[Any, TrainConfig, TrainContext, int]]:
    def make():
        from asc_bench_plugins.uamix_mae.recipe import UamixRecipe

        recipe = UamixRecipe()
        cfg, ctx = context(recipe, {"random_init": True, "head_steps": 100}, 10, 20_000, layer_decay=0.65)
        return recipe, cfg, ctx, stage
    return make


CASES = {
    # name: (factory, batch, seconds, sample rate, description)
    "teacher-A": (teacher_case(0), 8, 10.0, 16000, "BEATs iter3 size (90M), heads only (backbone frozen)"),
    "teacher-B": (teacher_case(1), 8, 10.0, 16000, "BEATs iter3 size (90M), all trainable, SupCon + CE"),
    "student": (student_case, 64, 10.0, 32000, "CP-Mobile 126k (dcase23, LN head), CE + KD + CRD K=16384"),
    "uamix-1": (uamix_case(0), 8, 10.0, 16000, "AudioMAE ViT-B (86M) stage 1: NNCLR head only, T-CutMix"),
    "uamix-2": (uamix_case(1), 8, 10.0, 16000, "AudioMAE ViT-B stage 2: top 6 blocks + head, layer decay"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to run (default: all)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for name in args.only or list(CASES):
        make, batch, seconds, sr, desc = CASES[name]
        torch.manual_seed(0)
        recipe, cfg, ctx, stage = make()
        times = time_steps(recipe, cfg, ctx, stage, batch, seconds, sr, args.warmup, args.steps)
        med = statistics.median(times)
        rows.append((name, desc, batch, med, 1 / med, batch / med))
        print(f"{name}: {med:.2f} s/step", flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps after "
          f"{args.warmup} warm-up (median)\n")
    print("| case | model | batch x 10 s | s/step | steps/s | clips/s |\n|---|---|---|---|---|---|")
    for name, desc, batch, med, sps, cps in rows:
        print(f"| {name} | {desc} | {batch} | {med:.2f} | {sps:.3f} | {cps:.2f} |")


if __name__ == "__main__":
    main()
