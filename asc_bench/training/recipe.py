"""What a training recipe gives the loop and what the loop gives a recipe.

``ParamGroup``/``Stage``/``Built`` are returned by ``Recipe.build``; ``TrainContext`` is passed to it.
The loop (``asc_bench.training.loop``) and the optimiser (``asc_bench.training.optim``) both read these
types, so they live here, below both, and neither imports the other's module for them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from asc_bench import distributed as dist
from asc_bench.training.config import TrainConfig

__all__ = ["Recipe", "ParamGroup", "Stage", "Built", "TrainContext"]


@dataclass
class ParamGroup:
    """Parameters that train together. ``layer_id(name)`` (with ``num_layers``) opts the group into
    layer-wise lr decay: scale = layer_decay ** (num_layers + 1 - layer_id), so id num_layers + 1 gets
    the full lr. ``lr_scale`` multiplies the config lr; ``weight_decay`` None means the config value."""

    name: str
    params: list[tuple[str, torch.nn.Parameter]]
    lr_scale: float = 1.0
    weight_decay: float | None = None
    layer_id: Callable[[str], int] | None = None
    num_layers: int = 0


@dataclass(frozen=True)
class Stage:
    """Steps ``[start, end)`` during which only the groups named in ``train`` receive gradients."""

    name: str
    start: int
    end: int
    train: tuple[str, ...]


@dataclass
class Built:
    """What ``Recipe.build`` returns. ``model`` holds every tensor a checkpoint must keep (trainable
    parts and evolving buffers such as queues); its ``forward(batch, step)`` returns the loss dict so
    that DDP sees the whole computation."""

    model: torch.nn.Module
    groups: list[ParamGroup]
    stages: list[Stage]


class Recipe(Protocol):
    """A training recipe (registered as a class with ``register(name, RecipeClass, description=...)``;
    the loop makes one instance per run).

    Attributes:
      ``config_class``: dataclass of the ``recipe:`` section (fields made with ``asc_bench.training.config.opt`` so
      unknown keys and bad values are reported by name).
      ``sample_rate``: audio rate the data stream decodes at. ``clip_seconds``: default crop length.
    Methods:
      ``build(config, ctx) -> Built``: create the model (on ``ctx.device``), its parameter groups and its
      stages (covering ``0..config.steps``). ``ctx.recipe_config`` holds the validated section.
      ``training_step(batch, step) -> dict``: losses of one micro-batch; key ``loss`` is what is
      minimised, every other scalar is logged. ``batch`` holds ``wave`` (B, T) float32, ``lengths``,
      ``label`` (class index into ``ctx.classes``), ``index`` (clip index into ``ctx.clips``),
      ``position`` (stream position). Call the model through ``ctx.model`` (it may be a DDP wrapper)
      and draw random numbers only from ``ctx.generator(name)``.
      ``export(out_dir) -> Path``: write the final artefact from the trained model; called on rank 0.
    Optional: ``validate(config, section)`` for checks across keys (raise ``ConfigError``);
    ``on_stage(stage)`` when a stage begins (also on resume); ``after_step(step)`` after each optimizer
    step (EMA updates); ``ddp_find_unused`` (bool attribute) when some trainable parameters may get no
    gradient in a step; ``extra_state() -> dict`` / ``load_extra_state(dict)`` for state that is not a
    tensor of the model (plain tensors/numbers only, it goes into ``state.pt``).
    """

    config_class: type
    sample_rate: int
    clip_seconds: float

    def build(self, config: TrainConfig, ctx: "TrainContext") -> Built: ...
    def training_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]: ...
    def export(self, out_dir: Path) -> Path: ...


@dataclass
class TrainContext:
    """What a recipe may use besides its config; ``model``/``step``/``micro`` are set by the loop."""

    config: TrainConfig
    recipe_config: Any
    recipe_name: str
    device: torch.device
    out_dir: Path
    cache_dir: Path
    clips: list[Any]
    classes: list[str]
    labels: np.ndarray
    manager: Any
    plugins: Sequence[str] = ()
    model: Any = None
    step: int = 0
    micro: int = 0
    stage: Stage | None = None

    def generator(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """A generator seeded from (seed, step, micro-step, rank, name): reproducible after resume."""
        salt = int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "little") & 0x7FFFFFFF
        seed = np.random.SeedSequence([self.config.seed, self.step, self.micro, dist.rank(), salt])
        g = torch.Generator(device=device or "cpu")
        g.manual_seed(int(seed.generate_state(1, np.uint64)[0] & 0x7FFF_FFFF_FFFF_FFFF))
        return g

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.config.autocast == "none" or self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.config.autocast == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)
