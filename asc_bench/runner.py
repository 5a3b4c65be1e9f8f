"""One benchmark run: task -> clips -> cached embeddings -> protocol -> statistics -> result record."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import asc_bench
from asc_bench import distributed as dist
from asc_bench.api import CheckpointError, Clip, EncoderRequest, EvalData, UsageError, check_params
from asc_bench.data.listing import fingerprints, list_clips
from asc_bench.embedding.cache import EmbeddingCache, default_cache_dir
from asc_bench.embedding.checkpoints import sha256_file
from asc_bench.embedding.extract import DEFAULT_SHARD_SIZE, EmbedResult, embed_dataset, embedding_key
from asc_bench.embedding.hear import PREFIX as HEAR_PREFIX, hear_entry
from asc_bench.evaluation import stats
from asc_bench.evaluation.records import DEFAULT_RESULTS_DIR, SCHEMA, json_safe, package_versions, utc_now, write_record
from asc_bench.plugins import PluginManager, get_manager
from asc_bench.progress import progress
from asc_bench.tasks import TaskSpec, resolve_task

BAD_AUDIO_POLICIES = ("fail", "skip")


@dataclass
class BuiltEncoder:
    module: torch.nn.Module
    name: str
    config: dict[str, Any]
    checkpoint_sha256: str | None
    params: int
    macs_per_s: float | None

    def identity(self) -> dict[str, Any]:
        """What makes two embeddings of the same audio equal: it keys the cache."""
        return {"name": self.name, "config": self.config, "checkpoint_sha256": self.checkpoint_sha256}


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine (torch "
                         f"{torch.__version__}); use --device cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError(f"--device must be cpu, cuda or cuda:N, got '{device}'")


def build_encoder(manager: PluginManager, name: str, *, checkpoint: str | Path | None = None,
                  random_init: bool = False, options: Mapping[str, str] | None = None,
                  device: str = "cpu") -> BuiltEncoder:
    entry = hear_entry(name) if name.startswith(HEAR_PREFIX) else manager.get("encoders", name)
    check_device(device)
    if checkpoint is not None and random_init:
        raise UsageError("--checkpoint and --random-init exclude each other: pick one")
    if entry.requires_weights and checkpoint is None and not random_init:
        raise CheckpointError(f"encoder '{name}' needs weights: pass --checkpoint PATH with the downloaded "
                              f"checkpoint, or --random-init to ask for random weights explicitly")
    ckpt = Path(checkpoint).expanduser() if checkpoint is not None else None
    if ckpt is not None and not ckpt.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist")
    module = entry.build(EncoderRequest(checkpoint=ckpt, random_init=random_init,
                                        options=dict(options or {}), device=device))
    config = dict(module.config()) if hasattr(module, "config") else {}
    macs = getattr(module, "macs_per_second", None)
    return BuiltEncoder(
        module=module, name=name, config=config,
        checkpoint_sha256=sha256_file(ckpt) if ckpt is not None else None,
        params=sum(p.numel() for p in module.parameters()),
        macs_per_s=float(macs()) if callable(macs) and macs() is not None else None)


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
    device: str = "cpu"
    batch_size: int = 16
    on_bad_audio: str = "fail"
    shard_size: int = DEFAULT_SHARD_SIZE
    show_progress: bool = False
    write: bool = True


def run_task(encoder: str, task: str | Path, *, plugins: Sequence[str] = (), **settings: Any) -> dict[str, Any]:
    """Run `task` with `encoder`; return the result record (also written unless write=False).

    Keyword settings are the fields of `RunSettings` (data_root, cache_dir, results_dir, seed,
    overrides, checkpoint, random_init, encoder_options, device, batch_size, on_bad_audio, ...).
    """
    opts = RunSettings(**settings)
    if opts.on_bad_audio not in BAD_AUDIO_POLICIES:
        raise UsageError(f"--on-bad-audio must be one of {', '.join(BAD_AUDIO_POLICIES)}")
    manager = get_manager(plugins)
    spec = resolve_task(str(task), manager.task_dirs).with_params(dict(opts.overrides))
    return _run(manager, encoder, spec, opts)


@dataclass
class Embedded:
    spec: TaskSpec
    clips: list[Clip]
    listing_fp: str
    files_fp: str
    encoder: BuiltEncoder
    result: EmbedResult


def _embed(manager: PluginManager, encoder_name: str, spec: TaskSpec, opts: RunSettings) -> Embedded:
    cache_dir = Path(opts.cache_dir) if opts.cache_dir is not None else default_cache_dir()
    clips = list_clips(manager, spec.dataset, spec.dataset_options, opts.data_root, cache_dir)
    listing_fp, files_fp = fingerprints(clips)
    enc = build_encoder(manager, encoder_name, checkpoint=opts.checkpoint, random_init=opts.random_init,
                        options=opts.encoder_options, device=opts.device)
    key = embedding_key(enc.identity(), spec.audio, int(enc.module.sample_rate), files_fp)
    emb = embed_dataset(enc.module, clips, key=key, cache=EmbeddingCache(cache_dir), policy=spec.audio,
                        batch_size=opts.batch_size, device=opts.device, on_bad_audio=opts.on_bad_audio,
                        shard_size=opts.shard_size, show_progress=opts.show_progress)
    return Embedded(spec, clips, listing_fp, files_fp, enc, emb)


def extract(encoder: str, task: str | Path, *, plugins: Sequence[str] = (), **settings: Any) -> Embedded:
    """Only embed the task's dataset into the cache (no protocol, no record); torchrun-aware."""
    opts = RunSettings(**settings)
    manager = get_manager(plugins)
    return _embed(manager, encoder, resolve_task(str(task), manager.task_dirs), opts)


def _run(manager: PluginManager, encoder_name: str, spec: TaskSpec, opts: RunSettings) -> dict[str, Any]:
    started = time.perf_counter()
    protocol = manager.get("protocols", spec.protocol)
    seed = spec.seed if opts.seed is None else opts.seed
    if protocol.params:      # unknown params fail here, before any embedding
        check_params(spec.protocol, spec.params, protocol.params)
    done = _embed(manager, encoder_name, spec, opts)
    clips, listing_fp, files_fp, enc, emb = done.clips, done.listing_fp, done.files_fp, done.encoder, done.result
    key = emb.cache_key
    rows = np.flatnonzero(emb.valid)
    kept = [clips[i] for i in rows]
    classes = sorted({c.label for c in kept})
    index = {label: i for i, label in enumerate(classes)}
    data = EvalData(embeddings=np.asarray(emb.embeddings[rows], dtype=np.float32),
                    labels=np.array([index[c.label] for c in kept], dtype=np.int64), classes=classes,
                    splits=[c.split for c in kept], extras=[dict(c.extra) for c in kept])
    params = {**spec.params, "_spec_hash": spec.spec_hash, "_fingerprint": listing_fp}
    with progress(f"scoring ({spec.protocol})", enabled=opts.show_progress and dist.is_main()) as bar:
        data.report = bar.update
        result = protocol.run(data, params, seed)
    ci = stats.mean_ci(result.scores)
    record = {
        "schema": SCHEMA, "asc_bench_version": asc_bench.__version__, "timestamp": utc_now(),
        "task": {"name": spec.name, "spec_hash": spec.spec_hash, "group": spec.group, "dataset": spec.dataset,
                 "protocol": spec.protocol, "description": spec.description, "source": spec.source,
                 "audio": spec.audio.as_dict(), "dataset_options": dict(spec.dataset_options)},
        "encoder": {"name": enc.name, "config": enc.config, "checkpoint_sha256": enc.checkpoint_sha256,
                    "params": enc.params, "macs_per_s": enc.macs_per_s},
        "dataset": {"name": spec.dataset, "fingerprint": listing_fp, "files_fingerprint": files_fp,
                    "n_clips": len(clips), "n_classes": len(classes)},
        "seed": seed,
        "protocol": {"name": spec.protocol, "params": _public(result.params or spec.params),
                     "unit": result.unit, "metric": result.metric,
                     **({"details": json_safe(result.details)} if result.details else {})},
        "episode_hash": result.episode_hash,
        "scores": [float(s) for s in np.asarray(result.scores, dtype=np.float64)],
        "summary": ci.to_summary(),
        "predictions": json_safe(result.predictions),
        "skipped_files": emb.skipped,
        "embedding": {"cache_key": key, "cache_hit": emb.cache_hit, "forward_passes": emb.forward_passes,
                      "clips": emb.clips_embedded, "seconds": round(emb.seconds, 4),
                      "clips_per_s": emb.clips_per_s},
        "wall_time_s": round(time.perf_counter() - started, 4),
        "packages": package_versions(),
        "notes": emb.notes + list(result.notes),
    }
    if opts.write and dist.is_main():
        results_dir = Path(opts.results_dir) if opts.results_dir is not None else DEFAULT_RESULTS_DIR
        record["_path"] = str(write_record(record, results_dir))
    return record


def _public(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if not k.startswith("_")}
