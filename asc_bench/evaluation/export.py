"""`asc-bench episodes`: a task's episodes, draws or folds as JSON lines, without embedding anything.

Anyone can re-score our exact episodes with their own code: each line is one evaluation unit in
scoring order, `{"index": i, "support": [clip, ...], "query": [clip, ...]}` for few-shot protocols
(fewshot-logistic: support = a draw's training clips, query = its test clips) and
`{"index": i, "train": [...], "test": [...], "test_splits": "fold3"}` for fold protocols, where a
clip is `{"path": ..., "label": ..., "group": ...}` with the path relative to the data root (the
clips' common folder for datasets without one) and "/" as separator.

The units are the ones `asc-bench run` scores for the same task, params and seed: the same listing
fingerprint and spec hash seed the same sampler, through the protocol's own `episodes` hook
(`ProtocolEntry.episodes`). They assume every listed clip decodes: with `--on-bad-audio skip` a run
that skips clips samples from fewer clips and its episodes differ (its record lists the skipped
files).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import Clip, EvalData, UsageError, clip_groups
from asc_bench.atomic import atomic_write_bytes
from asc_bench.data.listing import dataset_root, fingerprints, list_clips
from asc_bench.plugins import get_manager
from asc_bench.tasks import resolve_task


def eval_data(clips: Sequence[Clip], embeddings: np.ndarray | None = None) -> EvalData:
    """The protocol input for `clips` (row order kept): labels index the sorted label strings,
    `groups` is None when no clip has a group. Without embeddings, a (clips, 0) array."""
    classes = sorted({c.label for c in clips})
    index = {label: i for i, label in enumerate(classes)}
    if embeddings is None:
        embeddings = np.zeros((len(clips), 0), dtype=np.float32)
    return EvalData(embeddings=embeddings,
                    labels=np.array([index[c.label] for c in clips], dtype=np.int64), classes=classes,
                    splits=[c.split for c in clips], extras=[dict(c.extra) for c in clips],
                    groups=clip_groups(clips))


@dataclass
class ExportSummary:
    path: Path
    units: int
    kind: str                     # "episodes" (support/query) or "folds" (train/test)
    grouped_clips: int            # clips with a group
    leaks: int                    # units where a query/test clip shares a group with support/train
    group_disjoint: bool | None   # the policy the protocol states (None: not a sampling protocol)


def export_episodes(task: str | Path, out: str | Path, *, plugins: Sequence[str] = (),
                    data_root: str | Path | None = None, cache_dir: str | Path | None = None,
                    seed: int | None = None, overrides: Mapping[str, Any] | None = None
                    ) -> ExportSummary:
    """Write the task's evaluation units to `out` (JSON lines, atomically); see the module docstring."""
    from asc_bench.embedding.cache import default_cache_dir

    manager = get_manager(plugins)
    spec = resolve_task(str(task), manager.task_dirs).with_params(dict(overrides or {}))
    protocol = manager.get("protocols", spec.protocol)
    if getattr(protocol, "episodes", None) is None:
        raise UsageError(f"protocol '{spec.protocol}' cannot export episodes (its plugin registers no "
                         f"`episodes` hook; see CONTRIBUTING.md, register_protocols)")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    clips = list_clips(manager, spec.dataset, spec.dataset_options, data_root, cache)
    listing_fp, _ = fingerprints(clips)
    data = eval_data(clips)
    params = {**spec.params, "_spec_hash": spec.spec_hash, "_fingerprint": listing_fp}
    units = protocol.episodes(data, params, spec.seed if seed is None else seed)

    root = dataset_root(spec.dataset, data_root)
    base = str(root) if root is not None else (
        os.path.commonpath([c.path for c in clips]) if len(clips) > 1 else os.path.dirname(clips[0].path))
    entries = [json.dumps({"path": _relative(c.path, base), "label": c.label, "group": c.group})
               for c in clips]
    has_group = np.array([c.group is not None for c in clips])
    lines, leaks, kind = [], 0, "episodes"
    for i, unit in enumerate(units):
        keys = ("support", "query") if "support" in unit else ("train", "test")
        kind = "episodes" if keys[0] == "support" else "folds"
        a, b = (np.asarray(unit[k], dtype=np.int64) for k in keys)
        fields = [f'"index": {i}'] + [f'"{k}": [' + ", ".join(entries[r] for r in unit[k]) + "]"
                                      for k in keys]
        fields += [f'"{k}": {json.dumps(v)}' for k, v in unit.items() if k not in keys]
        lines.append("{" + ", ".join(fields) + "}\n")
        left = {clips[r].group for r in a[has_group[a]]}
        leaks += any(clips[r].group in left for r in b[has_group[b]]) if left else 0
    atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    disjoint = None
    if kind == "episodes":
        stated = spec.params.get("group_disjoint")
        disjoint = data.groups is not None if stated in (None, "auto") else bool(stated)
    return ExportSummary(Path(out), len(lines), kind, int(has_group.sum()), int(leaks), disjoint)


def _relative(path: str, base: str) -> str:
    rel = os.path.relpath(path, base)
    if rel.startswith(os.pardir):       # outside the data root (e.g. a Hugging Face audio store)
        return Path(path).as_posix()
    return Path(rel).as_posix()
