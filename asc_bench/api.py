"""The public types plugins exchange with the core.

Everything a plugin needs to implement an encoder, dataset, protocol, loss, augmentation or training
recipe is defined here; the core imports no plugin by name.
"""
from __future__ import annotations

import copyreg
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

if TYPE_CHECKING:                   # annotations only: `asc-bench --version` need not import numpy
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
    """One labelled audio file. `split` is the fold or split name the dataset defines (None if none).

    `group` is the clip's recording/source identity (ESC-50 `src_file`, a TUT17 location, a
    VoxCeleb1 video, a Speech Commands speaker...), None where the dataset has none. Clips of one
    group are not independent: the few-shot protocols never put a query in an episode whose support
    holds a clip of the same group (see asc_bench.evaluation.episodes).
    """

    path: str
    label: str
    split: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None


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
    `bundled_weights` are the entry's declared package-data weight files, checked to exist (empty when
    the entry declares none, or when --checkpoint or --random-init replaces them).
    """

    checkpoint: Path | None
    random_init: bool
    options: Mapping[str, str]
    device: str = "cpu"
    bundled_weights: tuple[Path, ...] = ()


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
    # Per-clip recording/source identity (Clip.group); None when the dataset defines no groups.
    groups: list[str | None] | None = None


@dataclass
class EpisodeOutcome:
    """Who was in each episode/draw and which queries were right (few-shot protocols).

    `support` [E, ...] clip rows of each episode's support (flattened per episode), `query`
    [E, Q] clip rows of its queries with -1 as padding, `correct` [E, Q] bool (False at padding).
    Row e's score must equal the accuracy over its real queries. The runner turns these into the
    class-level (clip labels) and group-level (clip groups) intervals of the record; they are not
    stored themselves.
    """

    support: np.ndarray
    query: np.ndarray
    correct: np.ndarray


@dataclass
class ProtocolResult:
    """What a protocol returns.

    `scores` are the per-episode (or per-fold) scores the CI and paired tests are computed from.
    `episode_hash` is a sha256 over the sampled index arrays: two results pair only when it matches.
    `predictions` (optional) holds per-clip correctness for McNemar-style tests: a dict with
    `index` (int array of clip rows) and `correct` (bool array). Give it only when every clip is
    predicted once (e.g. official test folds): McNemar assumes independent clips.
    `outcome` (optional, few-shot protocols): per-episode members and correctness, for the
    class- and group-level intervals (see EpisodeOutcome).
    `fold_sizes` (optional, fold protocols): {"n_train": [...], "n_test": [...]} clips per fold,
    for the Nadeau-Bengio corrected t-test.
    """

    scores: np.ndarray
    episode_hash: str
    unit: str = "episode"           # "episode" or "fold"
    metric: str = "accuracy"
    params: dict[str, Any] = field(default_factory=dict)
    predictions: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    outcome: EpisodeOutcome | None = None
    fold_sizes: dict[str, list[int]] | None = None
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
    # Identity of the weights the builder will load when the request names no checkpoint (bundled
    # weights' sha256, a hub model's resolved commit...), computed WITHOUT building the model: it
    # enters the cache key, so a fully cached run never imports the encoder's module.
    # It returns a string ("sha256:<hex>", "hf:<repo>@<commit>"...) or an object with `.id` (that string)
    # and `.as_dict()` (what the id was computed from, recorded), e.g. embedding.weights.WeightsIdentity.
    weights_id: Callable[[EncoderRequest], Any] | None = None
    # Weight files shipped inside the plugin's package (package data). When given, no --checkpoint is
    # needed, `list encoders` shows "bundled", and their sha256 keys the cache and is recorded.
    bundled_weights: Sequence[str | Path] = ()

    def __post_init__(self) -> None:
        paths = [self.bundled_weights] if isinstance(self.bundled_weights, (str, Path)) else self.bundled_weights
        object.__setattr__(self, "bundled_weights", tuple(Path(p) for p in paths))

    @property
    def weights_kind(self) -> str:
        """How the weights arrive: "checkpoint" (--checkpoint), "bundled" (package data) or "none needed"."""
        if self.bundled_weights:
            return "bundled"
        return "checkpoint" if self.requires_weights else "none needed"


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    build: Callable[[DatasetRequest], Sequence[Clip]]
    description: str = ""
    plugin: str = ""


class EpisodesFn(Protocol):
    """Lists a protocol's evaluation units without embeddings (for `asc-bench episodes`).

    `data.embeddings` is an empty (clips, 0) array and must not be read. Returns one mapping per
    episode/draw/fold, in scoring order: `{"support": rows, "query": rows}` (few-shot) or
    `{"train": rows, "test": rows}` (folds), rows being clip row indices into `data`; the units
    must be exactly those `run` scores with the same params and seed.
    """

    def __call__(self, data: EvalData, params: Mapping[str, Any], seed: int
                 ) -> Sequence[Mapping[str, Any]]: ...


def clip_groups(clips: Sequence[Clip]) -> list[str | None] | None:
    """`EvalData.groups` for `clips`: their groups, or None when no clip has one."""
    groups = [c.group for c in clips]
    return groups if any(g is not None for g in groups) else None


@dataclass(frozen=True)
class ListingInfo:
    """What a protocol's pre-check sees: the dataset listing, before any audio is decoded.

    Rows are aligned with `clips`; `labels` index into `classes` (sorted label names), as in
    `EvalData`. Clips later skipped as bad audio are still here, so a check that passes can still
    fail after embedding; one that fails would certainly fail then.
    """

    clips: Sequence[Clip]
    classes: list[str]
    labels: np.ndarray              # (N,) int64
    splits: list[str | None]
    extras: list[Mapping[str, str]]
    groups: list[str | None] | None = None    # per clip (Clip.group); None when the dataset has none

    @classmethod
    def from_clips(cls, clips: Sequence[Clip]) -> "ListingInfo":
        import numpy as np

        classes = sorted({c.label for c in clips})
        index = {label: i for i, label in enumerate(classes)}
        return cls(clips=clips, classes=classes,
                   labels=np.array([index[c.label] for c in clips], dtype=np.int64),
                   splits=[c.split for c in clips], extras=[dict(c.extra) for c in clips],
                   groups=clip_groups(clips))

    def as_eval_data(self, dim: int = 1) -> "EvalData":
        """The listing as protocol input with all-zero embeddings, for dry runs in pre-checks."""
        import numpy as np

        return EvalData(embeddings=np.zeros((len(self.clips), dim), np.float32), labels=self.labels,
                        classes=list(self.classes), splits=list(self.splits), extras=list(self.extras),
                        groups=None if self.groups is None else list(self.groups))


class ProtocolCheck(Protocol):
    """Raise UsageError (naming the param and the fix) when `params` cannot run on the listing."""

    def __call__(self, info: ListingInfo, params: Mapping[str, Any], seed: int) -> None: ...


@dataclass(frozen=True)
class ProtocolEntry:
    name: str
    run: ProtocolFn
    description: str = ""
    plugin: str = ""
    # Optional: the protocol's episodes/folds without embeddings; None = cannot export episodes.
    episodes: EpisodesFn | None = None
    # Optional pre-check run before any audio is decoded (unknown/invalid params, class counts
    # against K + Q...): `asc-bench run` calls it for every sweep cell before embedding.
    check: ProtocolCheck | None = None
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


# --------------------------------------------------------------------------------------------- lazy imports
def lazy(target: str) -> type:
    """A stand-in for ``"package.module:attr"`` that imports the module only when it is called.

    Plugins register heavy callables (an encoder builder, a loss class, a recipe class) through it, so
    that loading the plugins for `asc-bench list` or `asc-bench plugins` imports no torch. Calling the
    stand-in imports the module and returns ``attr(*args, **kwargs)``: the builder's result, or an
    instance of the class. It is itself a class, so code that instantiates registered classes (the
    training loop does ``recipe()``) works unchanged; ``.resolve()`` returns the target itself.
    A missing module or attribute raises ImportError naming the target, at the first call. Stand-ins
    pickle by target.
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"lazy target must look like 'package.module:attr', got {target!r}")

    def resolve(cls: type) -> Any:
        import importlib

        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ImportError(f"lazy target {target!r}: {module_name} has no attribute {attr!r}") from None
        return obj

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        return cls.resolve()(*args, **kwargs)

    return _LazyType(f"lazy[{target}]", (), {"__new__": new, "resolve": classmethod(resolve), "target": target,
                                              "__doc__": f"Imports and calls {target} on first use."})


class _LazyType(type):
    """Metaclass of `lazy` stand-ins, so that they pickle as `lazy(target)` (e.g. in cluster job
    payloads; pickle stores other classes by module and name, which a stand-in has not)."""


def _reduce_lazy(cls: _LazyType) -> tuple[Any, tuple[str]]:
    return lazy, (cls.target,)                          # type: ignore[attr-defined]


copyreg.pickle(_LazyType, _reduce_lazy)
