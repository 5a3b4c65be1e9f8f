"""One benchmark run: task -> clips -> pre-checks -> cached embeddings -> protocol -> statistics -> record.

Order, and why:
1. Everything that can be checked without audio is checked first (`preflight`): options, every
   sweep cell's protocol params against the listing (class counts against K + Q...), the
   writability of the results and cache folders, the checkpoint. A mistake costs seconds, not the
   hours of an extraction.
2. The model identity (`ModelIdentity`: name + weights + options + plugin version) is computed
   without building the encoder, and it keys the embedding cache. When every embedding is cached,
   neither torch nor the encoder's module is imported: the facts a record needs (config, parameter
   count, MACs) were stored beside the cache when the model was last built.
3. Protocols score every cell on the one embedding matrix; each cell writes one sealed record.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

import asc_bench
from asc_bench.api import (AscBenchError, BadAudioError, CheckpointError, Clip, EncoderEntry, EncoderRequest,
                           EvalData, ListingInfo, UsageError, clip_groups)
from asc_bench.atomic import atomic_write_json
from asc_bench.data.listing import fingerprints, list_clips
from asc_bench.embedding.cache import EmbeddingCache, cache_key, default_cache_dir
from asc_bench.embedding.weights import files_identity, sha256_file
from asc_bench.evaluation import stats
from asc_bench.evaluation.records import (RANDOM_WEIGHTS, SCHEMA, check_writable, json_safe, package_versions,
                                          results_dir_or_default, seal, utc_now, write_record)
from asc_bench.plugins import PluginManager, get_manager
from asc_bench.progress import progress
from asc_bench.tasks import TaskSpec, resolve_task

BAD_AUDIO_POLICIES = ("fail", "skip")
DEFAULT_SHARD_SIZE = 256            # asc_bench.embedding.extract.DEFAULT_SHARD_SIZE (that module imports torch)
HEAR_PREFIX = "hear:"               # asc_bench.embedding.hear.PREFIX (likewise)
HF_PREFIX = "hf:"                   # asc_bench.embedding.hf.PREFIX (that module imports torch)
KEY_VERSION = 3                     # 3: the key is the model identity, not the built module's config()


# ------------------------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class ModelIdentity:
    """What makes two embeddings of the same audio equal, known before the model is built.

    `weights`: "sha256:<hex>" of --checkpoint, "random" (--random-init), an entry's `weights_id`
    (bundled weights' hash, a hub commit...), or "none" for weight-free encoders. `plugin`: the
    distribution and version that provided the encoder (a HEAR module's own version or source
    hash), so a changed plugin never reuses old embeddings.
    """

    name: str
    weights: str
    options: Mapping[str, str]
    plugin: str
    label: str
    checkpoint: str | None = None
    # What `weights` was computed from when it is not a checkpoint: {"source", "id", "files"} for
    # bundled package data or a Hugging Face snapshot/folder (recorded, not part of the key).
    source: Mapping[str, Any] | None = None
    bundled: tuple[str, ...] = ()

    @property
    def random(self) -> bool:
        return self.weights == RANDOM_WEIGHTS

    def key_payload(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "options": dict(sorted(self.options.items())),
                "plugin": self.plugin}


def default_label(name: str, weights: str, options: Mapping[str, str]) -> str:
    """`beats@3f2a1c`, `beats (random init)`, `beats@3f2a1c (layer=8)`, `logmel-stats`."""
    base = name
    if weights.startswith("sha256:"):
        base += "@" + weights[len("sha256:"):][:6]
    elif weights not in ("none", RANDOM_WEIGHTS):
        base += "@" + weights.split(":")[-1][:8]
    extra = (["random init"] if weights == RANDOM_WEIGHTS else []) + [f"{k}={v}" for k, v in sorted(options.items())]
    return base + (f" ({', '.join(extra)})" if extra else "")


def _dist_of_module(module: str) -> str | None:
    top = module.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    if not dists:
        return None
    return f"{dists[0]} {metadata.version(dists[0])}"


def plugin_version(manager: PluginManager, plugin: str) -> str:
    """'<distribution> <version>' of a loaded plugin (its module's distribution, or __version__)."""
    for info in manager.plugins:
        if info.name == plugin and not info.error:
            if info.version:
                return info.version
            found = _dist_of_module(info.module) if info.module else None
            if found:
                return found
            mod = sys.modules.get(info.module)
            return f"{info.module} {getattr(mod, '__version__', 'unversioned')}"
    return plugin or "unknown"


def _hear_version(module_name: str) -> str:
    """The HEAR module's distribution version, else the sha256 of its source file (no import)."""
    found = _dist_of_module(module_name)
    if found:
        return found
    import importlib.util

    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        raise UsageError(f"HEAR module '{module_name}' cannot be found; install it or add its folder to "
                         f"PYTHONPATH")
    return f"{module_name} source sha256:{sha256_file(Path(spec.origin))[:16]}"


def _entry(manager: PluginManager, name: str) -> EncoderEntry:
    if name.startswith(HEAR_PREFIX):
        from asc_bench.embedding.hear import hear_entry

        return hear_entry(name)
    if name.startswith(HF_PREFIX):
        from asc_bench.embedding.hf import hf_entry

        return hf_entry(name)
    return manager.get("encoders", name)


def _hf_version() -> str:
    """hf: models are loaded by transformers: its version is the 'plugin' that keys their cache."""
    try:
        return f"transformers {metadata.version('transformers')}"
    except metadata.PackageNotFoundError:
        return "transformers (not installed)"


def resolve_identity(manager: PluginManager, name: str, *, checkpoint: str | Path | None = None,
                     random_init: bool = False, options: Mapping[str, str] | None = None,
                     label: str | None = None) -> ModelIdentity:
    """The identity of the model a run will evaluate; checks the weights choice, builds nothing."""
    options = {str(k): str(v) for k, v in (options or {}).items()}
    if checkpoint is not None and random_init:
        raise UsageError("--checkpoint and --random-init exclude each other: pick one")
    hear = name.startswith(HEAR_PREFIX)
    entry = None if hear else _entry(manager, name)
    bundled = tuple(entry.bundled_weights) if entry is not None and checkpoint is None and not random_init else ()
    if entry is not None and entry.requires_weights and not bundled and checkpoint is None and not random_init:
        raise CheckpointError(f"encoder '{name}' needs weights: pass --checkpoint PATH with the downloaded "
                              f"checkpoint, or --random-init to ask for random weights explicitly")
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    if ckpt is not None and not ckpt.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist")
    if ckpt is not None:
        weights = "sha256:" + sha256_file(ckpt)
    elif random_init:
        weights = RANDOM_WEIGHTS
    source: Mapping[str, Any] | None = None
    if ckpt is not None or random_init:
        pass
    elif bundled:
        missing = [str(p) for p in bundled if not Path(p).is_file()]
        if missing:
            raise CheckpointError(f"encoder '{name}' ships its weights as package data, but {missing[0]} is "
                                  f"missing: reinstall '{entry.plugin}' (its pyproject must list the file in "
                                  f"the tool.setuptools.package-data table)")
        ident = files_identity("bundled", [Path(p) for p in bundled])
        weights, source = ident.id, ident.as_dict()
    else:
        wid = None
        if entry is not None and entry.weights_id is not None:
            wid = entry.weights_id(EncoderRequest(checkpoint=None, random_init=False, options=options))
        if wid is not None and not isinstance(wid, str):       # a WeightsIdentity-like object
            weights, source = str(wid.id), dict(wid.as_dict())
        else:
            weights = str(wid) if wid else "none"
    if hear:
        plugin = _hear_version(name[len(HEAR_PREFIX):])
    elif name.startswith(HF_PREFIX):
        plugin = _hf_version()
    else:
        plugin = plugin_version(manager, entry.plugin)
    if label is not None and not label.strip():
        raise UsageError("--label must not be empty")
    return ModelIdentity(name=name, weights=weights, options=options, plugin=plugin,
                         label=label.strip() if label else default_label(name, weights, options),
                         checkpoint=str(ckpt) if ckpt is not None else None, source=source,
                         bundled=tuple(str(p) for p in bundled))


def embedding_key(identity: ModelIdentity, spec: TaskSpec, files_fingerprint: str) -> str:
    """Cache key: model identity + crop policy + the files (paths, sizes, mtimes) of the listing."""
    return cache_key({"encoder": identity.key_payload(), "crop": spec.audio.as_dict(),
                      "dataset": files_fingerprint, "key_version": KEY_VERSION})


# ------------------------------------------------------------------------------------------- building
@dataclass
class BuiltEncoder:
    module: Any                      # a torch.nn.Module
    name: str
    config: dict[str, Any]
    checkpoint_sha256: str | None
    params: int
    macs_per_s: float | None
    weights: str = "none"                               # ModelIdentity.weights
    weights_source: Mapping[str, Any] | None = None      # ModelIdentity.source (bundled / hf files)

    def identity(self) -> dict[str, Any]:
        """The built module's settings (kept for callers that key on them, e.g. training recipes)."""
        return {"name": self.name, "config": self.config, "checkpoint_sha256": self.checkpoint_sha256}

    def facts(self) -> dict[str, Any]:
        return {"config": self.config, "params": self.params, "macs_per_s": self.macs_per_s,
                "sample_rate": int(self.module.sample_rate), "embed_dim": int(self.module.embed_dim)}


def check_device(device: str) -> None:
    """The device string now (no torch); whether CUDA is there is checked when the model is built."""
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got '{device}'")


def _check_cuda(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use --device cpu")


def build_encoder(manager: PluginManager, name: str, *, checkpoint: str | Path | None = None,
                  random_init: bool = False, options: Mapping[str, str] | None = None,
                  device: str = "cpu") -> BuiltEncoder:
    check_device(device)
    ident = resolve_identity(manager, name, checkpoint=checkpoint, random_init=random_init, options=options)
    return _build(manager, ident, device)


def _build(manager: PluginManager, ident: ModelIdentity, device: str) -> BuiltEncoder:
    _check_cuda(device)
    entry = _entry(manager, ident.name)
    ckpt = Path(ident.checkpoint) if ident.checkpoint else None
    module = entry.build(EncoderRequest(checkpoint=ckpt, random_init=ident.random, options=dict(ident.options),
                                        device=device, bundled_weights=tuple(Path(p) for p in ident.bundled)))
    config = dict(module.config()) if hasattr(module, "config") else {}
    macs = getattr(module, "macs_per_second", None)
    macs_value = macs() if callable(macs) else None
    # Modules whose weights are not torch parameters (a TensorFlow HEAR model) count them themselves.
    counted = module.num_parameters() if callable(getattr(module, "num_parameters", None)) else None
    return BuiltEncoder(
        module=module, name=ident.name, config=config,
        checkpoint_sha256=ident.weights[len("sha256:"):] if ckpt is not None else None,
        params=int(counted) if counted is not None else sum(p.numel() for p in module.parameters()),
        macs_per_s=float(macs_value) if macs_value is not None else None,
        weights=ident.weights, weights_source=ident.source)


# ------------------------------------------------------------------------------------------- settings
@dataclass
class RunSettings:
    data_root: str | Path | None = None
    cache_dir: str | Path | None = None
    results_dir: str | Path | None = None
    seed: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | Path | None = None
    random_init: bool = False
    encoder_options: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None
    device: str = "cpu"
    batch_size: int = 16
    on_bad_audio: str = "fail"
    shard_size: int = DEFAULT_SHARD_SIZE
    show_progress: bool = False
    write: bool = True
    command: str | None = None        # the command line recorded in the provenance


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE") or 1)


def is_main_process() -> bool:
    # Single process: no need to import torch.distributed (seconds) to know we are rank 0.
    if _world() <= 1:
        return True
    from asc_bench import distributed as dist

    return dist.is_main()


def init_distributed(device: str) -> None:
    """Join torchrun's process group when launched under it (imports torch only then)."""
    if _world() > 1:
        from asc_bench import distributed as dist

        dist.init(device=device)


def run_task(encoder: str, task: str | Path, *, plugins: Sequence[str] = (), **settings: Any) -> dict[str, Any]:
    """Run `task` with `encoder`; return the result record (also written unless write=False).

    Keyword settings are the fields of `RunSettings` (data_root, cache_dir, results_dir, seed,
    overrides, checkpoint, random_init, encoder_options, label, device, batch_size, on_bad_audio, ...).
    """
    overrides = dict(settings.pop("overrides", None) or {})
    return run_cells(encoder, task, [overrides], plugins=plugins, **settings)[0]


def run_cells(encoder: str, task: str | Path, cells: Sequence[Mapping[str, Any]], *,
              plugins: Sequence[str] = (), **settings: Any) -> list[dict[str, Any]]:
    """Run every cell (protocol param overrides) of a sweep: all cells are checked first, the
    dataset is embedded once, then each cell is scored and writes its own record."""
    opts = RunSettings(**settings)
    if not cells:
        raise UsageError("the sweep has no cells: give at least one value to --n-way/--k-shot")
    manager = get_manager(plugins)
    plan = preflight(manager, encoder, task, cells, opts)
    done = _embed_planned(manager, plan, opts)
    records = []
    for i, spec in enumerate(plan.specs):
        if i == 1 and not done.result.cache_hit:
            # Later cells reuse the entry the first one computed: for them it is a cache hit.
            r = done.result
            done = replace(done, result=CachedEmbedding(r.embeddings, r.valid, r.skipped, r.cache_key,
                                                        notes=list(r.notes)))
        records.append(_score(manager, spec, done, opts, plan))
    return records


@dataclass
class Plan:
    """Everything settled before any audio is decoded."""

    specs: list[TaskSpec]
    identity: ModelIdentity
    clips: list[Clip]
    listing_fp: str
    files_fp: str
    cache_dir: Path
    results_dir: Path | None
    seed: int


def preflight(manager: PluginManager, encoder: str, task: str | Path, cells: Sequence[Mapping[str, Any]],
              opts: RunSettings, *, check_protocol: bool = True) -> Plan:
    """Every check that needs no audio: options, identity and checkpoint, folders, listing, and each
    cell's protocol params against the listing (the protocol's optional `check`)."""
    if opts.on_bad_audio not in BAD_AUDIO_POLICIES:
        raise UsageError(f"--on-bad-audio must be one of {', '.join(BAD_AUDIO_POLICIES)}")
    check_device(opts.device)
    base = resolve_task(str(task), manager.task_dirs)
    specs = [base.with_params(dict(c)) for c in cells]
    seed = base.seed if opts.seed is None else opts.seed
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed!r}")
    protocol = manager.get("protocols", base.protocol) if check_protocol else None
    ident = resolve_identity(manager, encoder, checkpoint=opts.checkpoint, random_init=opts.random_init,
                             options=opts.encoder_options, label=opts.label)
    cache_dir = Path(opts.cache_dir).expanduser() if opts.cache_dir is not None else default_cache_dir()
    results_dir = None
    if check_protocol and opts.write and is_main_process():
        results_dir = check_writable(results_dir_or_default(opts.results_dir), "results folder", "--results-dir")
    check_writable(cache_dir, "cache folder", "--cache-dir")
    clips = list_clips(manager, base.dataset, base.dataset_options, opts.data_root, cache_dir,
                       on_missing_audio=opts.on_bad_audio)
    listing_fp, files_fp = fingerprints(clips)
    if protocol is not None and protocol.check is not None:
        info = ListingInfo.from_clips(clips)
        for spec in specs:
            try:
                protocol.check(info, _protocol_params(spec, listing_fp), seed)
            except AscBenchError as exc:
                where = spec.path or spec.name
                cell = f" (cell {_public(spec.params)})" if len(specs) > 1 else ""
                raise UsageError(f"task {where}{cell}: {exc}") from None
    return Plan(specs, ident, clips, listing_fp, files_fp, cache_dir, results_dir, seed)


def _protocol_params(spec: TaskSpec, listing_fp: str) -> dict[str, Any]:
    return {**spec.params, "_spec_hash": spec.spec_hash, "_fingerprint": listing_fp}


# ------------------------------------------------------------------------------------------- embedding
@dataclass
class CachedEmbedding:
    """The fields of `asc_bench.embedding.extract.EmbedResult` for a cache hit, without importing
    that module (it imports torch)."""

    embeddings: np.ndarray
    valid: np.ndarray
    skipped: list[dict[str, str]]
    cache_key: str
    cache_hit: bool = True
    forward_passes: int = 0
    clips_embedded: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    clips_per_s: float | None = None


@dataclass
class Embedded:
    spec: TaskSpec
    clips: list[Clip]
    listing_fp: str
    files_fp: str
    encoder: dict[str, Any]          # facts: config, params, macs_per_s, sample_rate, embed_dim
    result: Any                      # EmbedResult or CachedEmbedding
    identity: ModelIdentity | None = None


def _facts_path(cache_dir: Path, ident: ModelIdentity) -> Path:
    return cache_dir / "models" / f"{cache_key({'encoder': ident.key_payload(), 'key_version': KEY_VERSION})}.json"


def _read_facts(path: Path) -> dict[str, Any] | None:
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    need = ("config", "params", "macs_per_s", "sample_rate", "embed_dim")
    return facts if isinstance(facts, dict) and all(k in facts for k in need) else None


def _embed_planned(manager: PluginManager, plan: Plan, opts: RunSettings) -> Embedded:
    ident, spec = plan.identity, plan.specs[0]
    key = embedding_key(ident, spec, plan.files_fp)
    cache = EmbeddingCache(plan.cache_dir)
    facts_path = _facts_path(plan.cache_dir, ident)
    facts = _read_facts(facts_path)
    hit = cache.load(key) if facts is not None else None
    if hit is not None and facts is not None:
        skipped = list(hit.meta.get("skipped", []))
        if skipped and opts.on_bad_audio == "fail":
            raise BadAudioError(skipped[0]["path"], skipped[0]["reason"])
        result: Any = CachedEmbedding(np.asarray(hit.embeddings), np.asarray(hit.valid, bool), skipped, key)
        return Embedded(spec, plan.clips, plan.listing_fp, plan.files_fp, facts, result, ident)
    from asc_bench.embedding.extract import embed_dataset

    enc = _build(manager, ident, opts.device)
    facts = enc.facts()
    if is_main_process():
        try:
            atomic_write_json(facts_path, json_safe(facts))
        except OSError as exc:
            raise AscBenchError(f"cannot write {facts_path}: {exc.strerror or exc}; free space or pass "
                                f"--cache-dir DIR") from None
    try:
        emb = embed_dataset(enc.module, plan.clips, key=key, cache=cache, policy=spec.audio,
                            batch_size=opts.batch_size, device=opts.device, on_bad_audio=opts.on_bad_audio,
                            shard_size=opts.shard_size, show_progress=opts.show_progress)
    except OSError as exc:
        where = exc.filename or cache.root
        raise AscBenchError(f"embedding cache write failed at {where}: {exc.strerror or exc}. Free space "
                            f"or pass --cache-dir DIR; finished shards are kept and a re-run resumes.") from None
    return Embedded(spec, plan.clips, plan.listing_fp, plan.files_fp, facts, emb, ident)


def extract(encoder: str, task: str | Path, *, plugins: Sequence[str] = (), **settings: Any) -> Embedded:
    """Only embed the task's dataset into the cache (no protocol, no record); torchrun-aware."""
    opts = RunSettings(**settings)
    manager = get_manager(plugins)
    plan = preflight(manager, encoder, task, [{}], opts, check_protocol=False)
    return _embed_planned(manager, plan, opts)


# ------------------------------------------------------------------------------------------- scoring
def _score(manager: PluginManager, spec: TaskSpec, done: Embedded, opts: RunSettings, plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    protocol = manager.get("protocols", spec.protocol)
    seed = plan.seed
    clips, listing_fp, files_fp, emb, facts = done.clips, done.listing_fp, done.files_fp, done.result, done.encoder
    ident = plan.identity
    rows = np.flatnonzero(emb.valid)
    kept = [clips[i] for i in rows]
    classes = sorted({c.label for c in kept})
    index = {label: i for i, label in enumerate(classes)}
    data = EvalData(embeddings=np.asarray(emb.embeddings[rows], dtype=np.float32),
                    labels=np.array([index[c.label] for c in kept], dtype=np.int64), classes=classes,
                    splits=[c.split for c in kept], extras=[dict(c.extra) for c in kept],
                    groups=clip_groups(kept))
    with progress(f"scoring ({spec.protocol})", enabled=opts.show_progress and is_main_process()) as bar:
        data.report = bar.update
        result = protocol.run(data, _protocol_params(spec, listing_fp), seed)
    ci = stats.mean_ci(result.scores)
    # episode/fold CI, and class-/group-level jackknife intervals from the per-episode outcome
    intervals = stats.record_intervals(np.asarray(result.scores, dtype=np.float64), result.unit,
                                       result.outcome, data.labels, classes,
                                       [getattr(c, "group", None) for c in kept])
    params = _public(result.params or spec.params)
    record = {
        "schema": SCHEMA, "asc_bench_version": asc_bench.__version__, "timestamp": utc_now(),
        "task": {"name": spec.name, "spec_hash": spec.spec_hash, "group": spec.group, "dataset": spec.dataset,
                 "protocol": spec.protocol, "description": spec.description, "source": spec.source,
                 "audio": spec.audio.as_dict(), "dataset_options": dict(spec.dataset_options)},
        "encoder": {"name": ident.name, "label": ident.label, "weights": ident.weights,
                    "random_init": ident.random, "options": dict(ident.options), "plugin": ident.plugin,
                    "config": facts["config"],
                    "checkpoint_sha256": ident.weights[7:] if ident.checkpoint else None,
                    "weights_source": json_safe(ident.source),
                    "params": facts["params"], "macs_per_s": facts["macs_per_s"]},
        "dataset": {"name": spec.dataset, "fingerprint": listing_fp, "files_fingerprint": files_fp,
                    "n_clips": len(clips), "n_classes": len(classes)},
        "seed": seed,
        "cell": params,
        "protocol": {"name": spec.protocol, "params": params, "unit": result.unit, "metric": result.metric,
                     **({"details": json_safe(result.details)} if result.details else {})},
        "episode_hash": result.episode_hash,
        "scores": [float(s) for s in np.asarray(result.scores, dtype=np.float64)],
        "summary": ci.to_summary(),
        "intervals": json_safe(intervals),
        "folds": result.fold_sizes,
        "predictions": json_safe(result.predictions),
        "skipped_files": emb.skipped,
        "embedding": {"cache_key": emb.cache_key, "cache_hit": emb.cache_hit, "forward_passes": emb.forward_passes,
                      "clips": emb.clips_embedded, "seconds": round(emb.seconds, 4),
                      "clips_per_s": emb.clips_per_s},
        "wall_time_s": round(time.perf_counter() - started + (0.0 if emb.cache_hit else emb.seconds), 4),
        "packages": package_versions(),
        "provenance": provenance(manager, ident, spec, opts),
        "notes": list(emb.notes) + list(result.notes),
    }
    record = seal(record)       # JSON-safe, with its integrity hash (what the file holds)
    if opts.write and is_main_process():
        record["_path"] = str(write_record(record, plan.results_dir or results_dir_or_default(opts.results_dir)))
    return record


def _public(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if not k.startswith("_")}


# ------------------------------------------------------------------------------------------- provenance
def git_commit() -> dict[str, Any] | None:
    """The commit of the asc-bench checkout this code runs from (None for an installed wheel)."""
    root = Path(asc_bench.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_facts() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        return {"torch_threads": None, "gpu": None,
                "torch_note": "torch not imported: every embedding came from the cache"}
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available() else [])
    return {"torch_threads": torch.get_num_threads(), "gpu": gpus}


def provenance(manager: PluginManager, ident: ModelIdentity, spec: TaskSpec, opts: RunSettings) -> dict[str, Any]:
    def plugin_of(kind: str, name: str) -> str:
        entry = manager.registries[kind].get(name)
        return plugin_version(manager, entry.plugin) if entry is not None else "unknown"

    return {
        "command": opts.command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "asc_bench_version": asc_bench.__version__,
        "git": git_commit(),
        "host": platform.node(), "platform": platform.platform(), "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(), "device": opts.device, **_torch_facts(),
        "plugins": {"encoder": ident.plugin, "dataset": plugin_of("datasets", spec.dataset),
                    "protocol": plugin_of("protocols", spec.protocol)},
        "task_file": spec.path,
    }
