"""AdamW parameter groups (weight decay, layer-wise lr decay) and the warm-up + cosine schedule."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from asc_bench.training.config import TrainConfig
from asc_bench.training.recipe import ParamGroup, Stage


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    # Biases, norm weights/biases, scalars, tokens and position tables are not decayed (BEiT/MAE rule).
    return p.ndim <= 1 or name.endswith(".bias") or name.endswith(("cls_token", "pos_embed"))


def build_optimizer(groups: Sequence[ParamGroup], cfg: TrainConfig) -> tuple[torch.optim.AdamW, list[dict[str, Any]]]:
    """One AdamW over every group from the start (frozen parameters get no gradient, so AdamW leaves
    them and their state alone); each (group, layer scale, decay/no-decay) is one optimizer group
    whose ``base_lr`` the schedule multiplies."""
    seen: dict[int, str] = {}
    param_groups: list[dict[str, Any]] = []
    for g in groups:
        buckets: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        for name, p in g.params:
            if id(p) in seen:
                raise ValueError(f"parameter {name} is in groups '{seen[id(p)]}' and '{g.name}'")
            seen[id(p)] = g.name
            scale = 1.0
            if g.layer_id is not None and cfg.layer_decay != 1.0:
                scale = cfg.layer_decay ** (g.num_layers + 1 - g.layer_id(name))
            wd = 0.0 if _no_decay(name, p) else (cfg.weight_decay if g.weight_decay is None else g.weight_decay)
            buckets.setdefault((scale, wd), []).append(p)
        for (scale, wd), params in sorted(buckets.items(), key=lambda kv: (-kv[0][0], -kv[0][1])):
            base = cfg.lr * g.lr_scale * scale
            param_groups.append({"params": params, "lr": base, "base_lr": base, "weight_decay": wd,
                                 "group": g.name, "layer_scale": scale})
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    info = [{k: v for k, v in pg.items() if k != "params"} | {"n": sum(p.numel() for p in pg["params"])}
            for pg in param_groups]
    return optimizer, info


def lr_factor(cfg: TrainConfig, step: int, stage: Stage | None) -> float:
    """Linear warm-up to 1, then cosine down to ``min_lr_ratio`` (or constant), over the run or stage."""
    start, end = (stage.start, stage.end) if cfg.schedule_scope == "stage" and stage is not None else (0, cfg.steps)
    local, length = step - start, max(1, end - start)
    warm = min(cfg.warmup_steps, length)
    if local < warm:
        return (local + 1) / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    progress = (local - warm) / max(1, length - warm)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_learning_rates(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for pg in optimizer.param_groups:
        pg["lr"] = pg["base_lr"] * factor
