"""A tiny recipe that exercises every feature of the training loop in milliseconds.

Loaded as a plugin (``ASC_BENCH_PLUGINS=train_toy_recipe`` with ``tests/`` on the path). Two parameter
groups with layer ids, two stages, dropout (global RNG) and a noise augmentation drawn from
``ctx.generator`` so that exact resume and rank-count independence are tested on all sources of
randomness. The loss is per-sample (no batch coupling), so 2 ranks must match 1 process.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asc_bench import hookimpl
from asc_bench.training.config import opt
from asc_bench.training.loop import Built, ParamGroup, Stage


@dataclass
class ToyConfig:
    hidden: int = opt(32, "hidden width", min=1)
    head_steps: int = opt(2, "steps of stage 1 (body frozen)", min=0)
    noise: float = opt(0.1, "std of the feature noise augmentation", min=0.0)
    dropout: float = opt(0.1, "dropout probability", min=0.0)


class ToyModel(nn.Module):
    def __init__(self, n_classes: int, hidden: int, dropout: float, recipe: "ToyRecipe"):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_classes)
        self.recipe = [recipe]       # a list so the recipe is not registered as a submodule

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave[:, : (wave.shape[1] // 64) * 64].reshape(wave.shape[0], -1, 64)
        return torch.log(frames.pow(2).mean(1) + 1e-6)

    def forward(self, batch: dict, step: int) -> dict:
        x = self.features(batch["wave"])
        ctx = self.recipe[0].ctx
        x = x + ctx.recipe_config.noise * torch.randn(x.shape, generator=ctx.generator("noise"))
        logits = self.head(self.drop(self.body(x)))
        ce = nn.functional.cross_entropy(logits, batch["label"])
        return {"loss": ce, "ce": ce, "acc": (logits.argmax(1) == batch["label"]).float().mean()}


class ToyRecipe:
    config_class = ToyConfig
    sample_rate = 16000
    clip_seconds = 0.5

    def build(self, config, ctx) -> Built:
        self.ctx, rc = ctx, ctx.recipe_config
        self.model = ToyModel(len(ctx.classes), rc.hidden, rc.dropout, self)
        body = [(f"body.{n}", p) for n, p in self.model.body.named_parameters()]
        head = [(f"head.{n}", p) for n, p in self.model.head.named_parameters()]
        stages = [Stage("head", 0, rc.head_steps, ("head",)), Stage("all", rc.head_steps, config.steps, ("head", "body"))]
        stages = [s for s in stages if s.end > s.start]
        return Built(self.model, [ParamGroup("body", body, layer_id=lambda n: int(n.split(".")[1]) // 2 + 1,
                                             num_layers=2), ParamGroup("head", head)], stages)

    def training_step(self, batch, step):
        return self.ctx.model(batch, step)

    def export(self, out_dir: Path) -> Path:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "toy.safetensors"
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path))
        return path


@hookimpl
def register_recipes(register):
    register("toy", ToyRecipe, description="test-only recipe")
