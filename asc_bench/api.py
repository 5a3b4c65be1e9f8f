"""The public types plugins exchange with the core.

Everything a plugin needs to implement an encoder, dataset, protocol, loss, augmentation or training
recipe is defined here; the core imports no plugin by name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np


class AscBenchError(Exception):
    """An error whose message names the cause and the fix; the CLI prints it without a traceback."""


class UsageError(AscBenchError):
    """Bad command-line input (unknown name, bad option): exit code 2."""


class LayoutError(AscBenchError):
    """A dataset on disk does not have the layout its adapter expects."""


class CheckpointError(AscBenchError):
    """A checkpoint file is missing, unsafe, or does not fit the model."""


class BadAudioError(AscBenchError):
    """An audio file cannot be used (unreadable, empty, NaN/Inf, missing)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"bad audio file {self.path}: {reason}. Fix or remove the file, or pass "
                         f"--on-bad-audio skip to leave it out (the result record lists skipped files).")


# --------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class Clip:
    """One labelled audio file. `split` is the fold or split name the dataset defines (None if none)."""

    path: str
    label: str
    split: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetRequest:
    """What a dataset builder receives. `root` is None only for datasets that need no files (demo)."""

    root: Path | None
    options: Mapping[str, Any]
    cache_dir: Path


# --------------------------------------------------------------------------------------------- encoders
@dataclass(frozen=True)
class EncoderRequest:
    """What an encoder builder receives.

    `checkpoint` is None only when the user passed --random-init or the encoder declared
    `requires_weights=False`; a builder must never invent weights on its own.
    `options` are the `--encoder-option key=value` pairs, values still strings.
    """

    checkpoint: Path | None
    random_init: bool
    options: Mapping[str, str]
    device: str = "cpu"


class Encoder(Protocol):
    """The encoder contract (a `torch.nn.Module` in practice).

    `forward(wave[B, T] float32 at `sample_rate`, lengths[B] int64 valid samples) -> [B, embed_dim]`.
    Samples past `lengths[i]` are zero padding and must not change clip i's embedding beyond what the
    published model itself does. `config()` returns every setting that changes the embeddings (it goes
    into the cache key and the result record). `macs_per_second()` may return None when unknown.
    """

    sample_rate: int
    embed_dim: int

    def __call__(self, wave: Any, lengths: Any) -> Any: ...
    def config(self) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------- protocols
@dataclass
class EvalData:
    """Embeddings and labels handed to a protocol, rows aligned with the dataset's clip order."""

    embeddings: np.ndarray          # (N, D) float32
    labels: np.ndarray              # (N,) int64 class index into `classes`
    classes: list[str]
    splits: list[str | None]        # per clip
    extras: list[Mapping[str, str]]
    # Protocols may call report(done, total) as episodes/folds finish; the CLI shows it as a bar.
    report: Callable[[int, int], None] = field(default=lambda done, total: None, repr=False)


@dataclass
class ProtocolResult:
    """What a protocol returns.

    `scores` are the per-episode (or per-fold) scores the CI and paired tests are computed from.
    `episode_hash` is a sha256 over the sampled index arrays: two results pair only when it matches.
    `predictions` (optional) holds per-clip correctness for McNemar-style tests: a dict with
    `index` (int array of clip rows) and `correct` (bool array).
    """

    scores: np.ndarray
    episode_hash: str
    unit: str = "episode"           # "episode" or "fold"
    metric: str = "accuracy"
    params: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # Per-unit facts that differ between encoders and so are not params (e.g. the C chosen per
    # draw or fold); the runner stores them as the record's protocol.details (JSON-safe values).
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolParam:
    """One documented protocol parameter: `asc-bench list protocols` and docs/protocols.md show it."""

    name: str
    default: Any                    # the value used when the task does not set it
    meaning: str
    required: bool = False          # the task must set it (default is then None)


def check_params(protocol: str, params: Mapping[str, Any], table: Sequence[ProtocolParam]) -> None:
    """UsageError naming every unknown parameter and the valid ones; keys starting with "_" are
    the core's private keys and always allowed."""
    known = [p.name for p in table]
    unknown = sorted(str(k) for k in params if not str(k).startswith("_") and k not in known)
    if unknown:
        raise UsageError(f"protocol {protocol} does not know param(s) {unknown}; valid params: "
                         f"{', '.join(known)} (see docs/protocols.md or `asc-bench list protocols`)")


class ProtocolFn(Protocol):
    def __call__(self, data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult: ...


# --------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class EncoderEntry:
    name: str
    build: Callable[[EncoderRequest], Any]
    description: str = ""
    requires_weights: bool = True
    # Cheap facts for `asc-bench list encoders` (params, MACs per second...), computed not typed in.
    summary: Callable[[], dict[str, Any]] | None = None
    plugin: str = ""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    build: Callable[[DatasetRequest], Sequence[Clip]]
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    run: ProtocolFn
    description: str = ""
    plugin: str = ""
    # Documented parameters; when non-empty the core rejects unknown params before embedding.
    params: tuple[ProtocolParam, ...] = ()


@dataclass(frozen=True)
class LossEntry:
    name: str
    build: Callable[..., Any]       # build(**options) -> torch.nn.Module
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class AugmentationEntry:
    name: str
    build: Callable[..., Any]       # build(**options) -> callable mixing a batch
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class RecipeEntry:
    name: str
    recipe: Any                     # an object following asc_bench.training.loop.Recipe
    description: str = ""
    plugin: str = ""
