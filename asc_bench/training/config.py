"""Training configuration: dataclasses read from YAML and validated field by field.

Every key a YAML file may hold is a dataclass field; an unknown key is an error that names the key
and lists the valid ones, a wrong type or value names the key and what it accepts. Recipes describe
their own section (``recipe:``) with a dataclass of the same kind and validate it with
``from_mapping``, so the rules and error messages are the same everywhere.

Field metadata understood by ``from_mapping``: ``choices`` (allowed values), ``min`` (inclusive lower
bound), ``help`` (one line shown by ``describe``).
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from asc_bench.api import UsageError

T = TypeVar("T")


class ConfigError(UsageError):
    """A training config key is unknown, missing, or has a value it does not accept."""


def opt(default: Any, help: str, *, choices: tuple[Any, ...] | None = None, min: float | None = None) -> Any:
    """A dataclass field with the metadata ``from_mapping`` checks (mutable defaults are copied)."""
    meta = {"help": help, "choices": choices, "min": min}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """The keys every recipe shares. ``recipe`` holds the recipe-specific section, validated later."""

    seed: int = opt(0, "seeds the data order, every augmentation and initialisation")
    steps: int = opt(1000, "optimizer steps of the full run (the lr schedule is laid out over them)", min=1)
    batch_size: int = opt(8, "global batch per micro-step (split evenly over torchrun ranks)", min=1)
    grad_accum: int = opt(1, "micro-steps per optimizer step (effective batch = batch_size x grad_accum)", min=1)
    lr: float = opt(1e-4, "peak learning rate (param groups may scale it)", min=0.0)
    weight_decay: float = opt(0.05, "AdamW decoupled weight decay (never on biases and norm weights)", min=0.0)
    betas: list = opt([0.9, 0.999], "AdamW betas")
    warmup_steps: int = opt(0, "linear warm-up steps (at the start of each stage with schedule_scope=stage)", min=0)
    lr_schedule: str = opt("cosine", "learning-rate shape after warm-up", choices=("cosine", "constant"))
    min_lr_ratio: float = opt(0.0, "cosine floor as a fraction of the peak lr", min=0.0)
    schedule_scope: str = opt("stage", "lay warm-up + cosine out over each stage (MAE-CT restarts the "
                                       "schedule per stage) or over the whole run", choices=("stage", "run"))
    layer_decay: float = opt(1.0, "layer-wise lr decay factor for groups that declare layer ids (1 = off)",
                             min=0.0)
    grad_clip: float = opt(0.0, "max global gradient norm (0 = no clipping)", min=0.0)
    autocast: str = opt("none", "mixed precision on CUDA", choices=("none", "bf16", "fp16"))
    device: str = opt("auto", "auto = cuda when available", choices=("auto", "cpu", "cuda"))
    deterministic: bool = opt(False, "torch.use_deterministic_algorithms (exact resume on GPU)")
    log_every: int = opt(10, "steps between metric log lines", min=1)
    checkpoint_every: int = opt(100, "steps between checkpoints", min=1)
    keep_checkpoints: int = opt(2, "checkpoints kept on disk (older ones are deleted)", min=1)
    dataset: str = opt("demo", "registered dataset name (asc-bench list datasets)")
    dataset_options: dict = opt({}, "options passed to the dataset adapter")
    data_root: str | None = opt(None, "dataset folder (--data-root overrides it)")
    cache_dir: str | None = opt(None, "cache folder for generated data and precomputed embeddings")
    split: list | None = opt(None, "train on clips whose split/fold is in this list (None = all clips)")
    num_workers: int = opt(0, "DataLoader worker processes", min=0)
    clip_seconds: float | None = opt(None, "crop/pad every clip to this length (None = recipe default)")
    crop: str = opt("random", "where training crops start", choices=("random", "start", "centre"))
    cache_audio: bool = opt(False, "keep decoded clips in memory (small datasets only)")
    recipe: dict = opt({}, "the recipe's own section (see the recipe's config class)")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------ validation
def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    """(accepted, converted value) for the annotation ``tp``; YAML 1.1 reads ``1e-4`` as a string."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is type(None):
                continue
            ok, conv = _type_ok(value, arg)
            if ok:
                return True, conv
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, (int, float)):
            return True, float(value)
        if isinstance(value, str):
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if tp in (dict, typing.Dict) or origin is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    if tp in (list, typing.List) or origin is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    return True, value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, section: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; every problem raises ``ConfigError`` naming the key."""
    data = dict(data or {})
    where = f"{section}." if section else ""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown config key '{where}{key}'{hint}. Valid keys"
                          f"{' in ' + section if section else ''}: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        f = fields[name]
        ok, conv = _type_ok(value, hints[name])
        if not ok:
            raise ConfigError(f"config key '{where}{name}' must be {_type_name(hints[name])}, got "
                              f"{value!r} ({type(value).__name__})")
        choices = f.metadata.get("choices")
        if choices is not None and conv not in choices:
            raise ConfigError(f"config key '{where}{name}' must be one of {', '.join(map(str, choices))}, "
                              f"got {conv!r}")
        low = f.metadata.get("min")
        if low is not None and conv is not None and conv < low:
            raise ConfigError(f"config key '{where}{name}' must be >= {low}, got {conv!r}")
        values[name] = conv
    missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ConfigError(f"config key '{where}{missing[0]}' is required")
    return cls(**values)


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) rows, for documentation and `asc-bench train --help-config`."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        rows.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
    return rows


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return dict(data)


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read and validate the common keys (the recipe section is validated by the recipe).

    ``overrides`` replace keys after reading; a dotted key (``recipe.head_steps``) sets one key inside
    a section and leaves its other keys alone.
    """
    data = read_yaml(path)
    for key, value in (overrides or {}).items():
        # "recipe.head_steps" sets one key of a section; a plain key replaces the value.
        *parents, leaf = str(key).split(".")
        node = data
        for part in parents:
            child = node.get(part)
            if not isinstance(child, Mapping):
                child = {}
            node[part] = child = dict(child)
            node = child
        node[leaf] = value
    cfg = from_mapping(TrainConfig, data)
    if len(cfg.betas) != 2 or not all(isinstance(b, (int, float)) for b in cfg.betas):
        raise ConfigError(f"config key 'betas' must be two numbers, got {cfg.betas!r}")
    if cfg.warmup_steps > cfg.steps:
        raise ConfigError(f"config key 'warmup_steps' ({cfg.warmup_steps}) exceeds 'steps' ({cfg.steps})")
    return cfg
