"""The one training loop every recipe shares (``asc-bench train RECIPE --config FILE.yaml``).

A recipe (registered with the ``register_recipes`` hook) supplies the model, its parameter groups,
its stages and its loss; this module supplies everything else: config validation, seeding, the data
stream (``asc_bench.training.data``), AdamW with warm-up + cosine and layer-wise lr decay, freezing by
stage, gradient accumulation, mixed precision on CUDA, torchrun/DDP, progress and a metrics JSONL log,
atomic checkpoints with exact resume (``asc_bench.training.checkpoint``) and the final export.

Exact resume: the data order, the crops and the global RNGs at every step are functions of
(seed, step, micro-step, rank); recipes derive every other random draw from ``ctx.generator(name)``.
Buffers that evolve (queues, memories, EMA weights) live in the recipe's module and are checkpointed
with it. So a run killed and resumed from a checkpoint ends with the same weights as an uninterrupted
one (bit-exact on CPU).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from asc_bench import distributed as dist
from asc_bench.api import UsageError
from asc_bench.training.checkpoint import (checkpoint_dirs, config_differences, load_checkpoint, rng_state,
                                           save_checkpoint, set_rng_state)
from asc_bench.training.config import ConfigError, TrainConfig, from_mapping, load_config
from asc_bench.training.data import ClipDataset, StreamBatches, make_loader
from asc_bench.training.log import TrainLogger, fmt, trim_metrics
from asc_bench.training.optim import build_optimizer, lr_factor, set_learning_rates
from asc_bench.training.recipe import Built, ParamGroup, Recipe, Stage, TrainContext

__all__ = ["Recipe", "ParamGroup", "Stage", "Built", "TrainContext", "TrainResult", "run_training",
           "ConfigError", "TrainConfig"]


@dataclass
class TrainResult:
    out_dir: Path
    export_path: Path | None
    steps_done: int
    start_step: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    steps_per_s: float | None = None


# ------------------------------------------------------------------------------------------ the run
RESUME_FREE = ("data_root", "cache_dir", "num_workers", "log_every", "checkpoint_every", "keep_checkpoints")


def instantiate(recipe: Any) -> Any:
    return recipe() if isinstance(recipe, type) else recipe


def prepare(recipe_name: str, config_path: str | Path, *, data_root: str | Path | None = None,
            overrides: Mapping[str, Any] | None = None, plugins: Sequence[str] = ()) -> tuple[Any, TrainConfig, Any, Any]:
    """(recipe instance, common config, validated recipe section, plugin manager)."""
    from asc_bench.plugins import get_manager

    manager = get_manager(plugins)
    recipe = instantiate(manager.get("recipes", recipe_name).recipe)
    extra = dict(overrides or {})
    if data_root is not None:
        extra["data_root"] = str(data_root)
    cfg = load_config(config_path, extra)
    section = from_mapping(recipe.config_class, cfg.recipe, section="recipe")
    if hasattr(recipe, "validate"):
        recipe.validate(cfg, section)
    return recipe, cfg, section, manager


def _device(cfg: TrainConfig) -> torch.device:
    info = dist.init("cuda" if cfg.device == "cuda" else ("cpu" if cfg.device == "cpu" else None))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is cuda but no CUDA device is available")
    if cfg.autocast != "none" and not info.device.startswith("cuda"):
        raise ConfigError(f"config key 'autocast' is {cfg.autocast}, which needs CUDA; use autocast: none on CPU")
    return torch.device(info.device)


def _clips(cfg: TrainConfig, manager: Any, cache_dir: Path) -> tuple[list[Any], list[str], np.ndarray]:
    from asc_bench.data.listing import list_clips

    clips = list_clips(manager, cfg.dataset, cfg.dataset_options, cfg.data_root, cache_dir)
    if cfg.split is not None:
        wanted = {str(s) for s in cfg.split}
        clips = [c for c in clips if str(c.split) in wanted]
        if not clips:
            raise ConfigError(f"config key 'split': no clip of dataset '{cfg.dataset}' has a split in {sorted(wanted)}")
    classes = sorted({c.label for c in clips})
    index = {c: i for i, c in enumerate(classes)}
    return clips, classes, np.array([index[c.label] for c in clips], dtype=np.int64)


def _seed_step(cfg: TrainConfig, step: int | None) -> None:
    # Global RNGs (dropout, drop-path, library code) depend on (seed, step, rank) only. step None is
    # the initialisation, identical on every rank (buffers such as queues are not broadcast by DDP).
    words = [cfg.seed, 0, 0, 977] if step is None else [cfg.seed, step + 1, dist.rank(), 977]
    s = np.random.SeedSequence(words).generate_state(2, np.uint32)
    torch.manual_seed(int(s[0]) << 32 | int(s[1]))
    np.random.seed(int(s[0]))


def run_training(recipe_name: str, config_path: str | Path, *, data_root: str | Path | None = None,
                 out_dir: str | Path | None = None, resume: bool = False, max_steps: int | None = None,
                 overrides: Mapping[str, Any] | None = None, plugins: Sequence[str] = (),
                 quiet: bool = False) -> TrainResult:
    """Train ``recipe_name`` with the YAML config at ``config_path``.

    ``out_dir`` (default ``runs/<recipe>``) receives ``checkpoints/``, ``metrics.jsonl``,
    ``param_groups.json`` and ``export/``. ``resume`` continues from the newest checkpoint there (the
    config must be the same except for the ``RESUME_FREE`` keys). ``max_steps`` stops after that many
    optimizer steps (the lr schedule still spans ``steps``, so a smoke run is a prefix of the full run).
    ``overrides`` replace config keys. Under torchrun every rank calls this; it joins the process group
    itself (from the config's ``device``), rank 0 writes the files.
    """
    from asc_bench.embedding.cache import default_cache_dir

    recipe, cfg, section, manager = prepare(recipe_name, config_path, data_root=data_root,
                                            overrides=overrides, plugins=plugins)
    if max_steps is not None and max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    device = _device(cfg)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    out = Path(out_dir) if out_dir is not None else Path("runs") / recipe_name
    ckpt_root = out / "checkpoints"
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    # Keys that only say where things are or how often to report may change between resumes.
    fixed = {k: v for k, v in cfg.as_dict().items() if k not in RESUME_FREE}
    saved_config = {"recipe_name": recipe_name, "config": json.loads(json.dumps(fixed, default=str))}

    start_step, restored = 0, None
    if resume and checkpoint_dirs(ckpt_root):
        latest = checkpoint_dirs(ckpt_root)[-1]
        restored = load_checkpoint(latest)
        diffs = config_differences({k: restored[1].get(k) for k in saved_config}, saved_config)
        if diffs:
            raise ConfigError(f"cannot resume from {latest}: the config differs ({'; '.join(diffs[:5])}). "
                              f"Resume with the same config, or train into a new --out folder")
        start_step = int(restored[2]["step"])
    elif not resume and checkpoint_dirs(ckpt_root):
        raise UsageError(f"{ckpt_root} already holds checkpoints: pass --resume to continue that run, or "
                         f"choose another --out folder")

    clips, classes, labels = _clips(cfg, manager, cache_dir)
    _seed_step(cfg, None)           # initialisation RNG: a function of the seed only
    ctx = TrainContext(config=cfg, recipe_config=section, recipe_name=recipe_name, device=device,
                       out_dir=out, cache_dir=cache_dir, clips=clips, classes=classes, labels=labels,
                       manager=manager, plugins=plugins)
    built = recipe.build(cfg, ctx)
    model = built.model.to(device)
    _check_stages(built, cfg)
    optimizer, group_info = build_optimizer(built.groups, cfg)
    scaler = torch.amp.GradScaler("cuda") if cfg.autocast == "fp16" and device.type == "cuda" else None
    if restored is not None:
        tensors, _, state = restored
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise ConfigError(f"checkpoint does not fit the recipe's model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if hasattr(recipe, "load_extra_state") and state.get("recipe") is not None:
            recipe.load_extra_state(state["recipe"])

    stop = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps
    rows = dist.global_batch_slice(cfg.batch_size, dist.rank(), dist.world_size())
    dataset = ClipDataset(clips, labels, recipe.sample_rate, cfg.clip_seconds or recipe.clip_seconds,
                          cfg.crop, cfg.seed, cfg.cache_audio)
    batches = make_loader(dataset, StreamBatches(len(clips), cfg.seed, cfg.batch_size, cfg.grad_accum, rows,
                                                 start_step, stop), cfg.num_workers)
    metrics_path = out / "metrics.jsonl"
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        trim_metrics(metrics_path, start_step)
        # What the optimizer does with each group (lr after layer decay, weight decay, sizes).
        (out / "param_groups.json").write_text(json.dumps(group_info, indent=1) + "\n")
    log = TrainLogger(metrics_path, stop - start_step, quiet or not dist.is_main())

    def checkpoint(step: int) -> None:
        if dist.is_main():
            save_checkpoint(ckpt_root, step, dist.unwrap(ctx.model).state_dict(), saved_config, {
                "step": step, "optimizer": optimizer.state_dict(), "scheduler": {"step": step},
                "rng": rng_state(), "scaler": scaler.state_dict() if scaler is not None else None,
                "recipe": recipe.extra_state() if hasattr(recipe, "extra_state") else None,
            }, cfg.keep_checkpoints)
        dist.barrier()

    stage: Stage | None = None
    t0, last = time.perf_counter(), {}
    with log:
        for step in range(start_step, stop):
            now = _stage_at(built.stages, step)
            if now != stage:
                stage = now
                ctx.model = _enter_stage(model, built.groups, stage, recipe)
                ctx.stage = stage
            factor = lr_factor(cfg, step, stage)
            set_learning_rates(optimizer, factor)
            _seed_step(cfg, step)
            ctx.step = step
            sums: dict[str, float] = {}
            for micro in range(cfg.grad_accum):
                ctx.micro = micro
                batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
                sync = micro == cfg.grad_accum - 1 or not hasattr(ctx.model, "no_sync")
                with (contextlib.nullcontext() if sync else ctx.model.no_sync()), ctx.autocast():
                    losses = recipe.training_step(batch, step)
                loss = losses["loss"] / cfg.grad_accum
                if not torch.isfinite(loss.detach()):
                    raise FloatingPointError(f"loss is {loss.item()} at step {step} ({fmt(losses)}); "
                                             f"lower lr or check the temperatures")
                with (contextlib.nullcontext() if sync else ctx.model.no_sync()):
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.grad_accum
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.grad_clip > 0:
                trainable = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if hasattr(recipe, "after_step"):
                recipe.after_step(step)
            done = step + 1
            if done % cfg.log_every == 0 or done == stop or done == start_step + 1:
                elapsed = time.perf_counter() - t0
                rate = (done - start_step) / elapsed if elapsed > 0 else None
                last = {k: float(dist.all_reduce_mean(torch.tensor(v))) for k, v in sums.items()}
                last.update({"lr": cfg.lr * factor, "stage": stage.name})
                log.write(done, last, rate, rate * cfg.batch_size * cfg.grad_accum if rate else None)
            log.advance(done, sums.get("loss"))
            if done % cfg.checkpoint_every == 0 and done < stop:
                checkpoint(done)
        if stop > start_step:
            checkpoint(stop)
    elapsed = time.perf_counter() - t0
    export_path = None
    if dist.is_main():
        export_path = recipe.export(out / "export")
    dist.barrier()
    return TrainResult(out_dir=out, export_path=export_path, steps_done=stop, start_step=start_step,
                       last_metrics=last, steps_per_s=(stop - start_step) / elapsed if elapsed > 0 else None)


def _check_stages(built: Built, cfg: TrainConfig) -> None:
    names = {g.name for g in built.groups}
    for s in built.stages:
        bad = [g for g in s.train if g not in names]
        if bad:
            raise ValueError(f"stage '{s.name}' trains unknown parameter groups {bad} (groups: {sorted(names)})")
    covered = sorted((s.start, s.end) for s in built.stages)
    if not covered or covered[0][0] > 0 or covered[-1][1] < cfg.steps or any(
            a[1] != b[0] for a, b in zip(covered, covered[1:])):
        raise ValueError(f"stages {[(s.name, s.start, s.end) for s in built.stages]} must tile 0..{cfg.steps}")


def _stage_at(stages: list[Stage], step: int) -> Stage:
    return next(s for s in stages if s.start <= step < s.end)


def _enter_stage(model: torch.nn.Module, groups: list[ParamGroup], stage: Stage, recipe: Any) -> torch.nn.Module:
    active = set(stage.train)
    for g in groups:
        for _, p in g.params:
            p.requires_grad_(g.name in active)
    if hasattr(recipe, "on_stage"):
        recipe.on_stage(stage)
    # DDP only reduces parameters that require grad when it is constructed: wrap anew per stage.
    return dist.wrap_ddp(model, find_unused=getattr(recipe, "ddp_find_unused", False))


def _fmt(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in values.items() if not isinstance(v, str))
