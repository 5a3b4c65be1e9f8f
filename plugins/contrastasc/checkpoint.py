"""Student checkpoints written by asc-bench: `<name>.safetensors` + `<name>.json` beside it.

The safetensors file holds the CP-Mobile state dict with the official key names (plus `projection.*`
when the student has a projection head); the JSON file holds everything needed to rebuild the module:

    {"format": "asc-bench/cpmobile-student", "version": 1,
     "config": {variant, base_channels, multiplier, expansion, blocks, strides, n_classes, norm,
                norm_placement, projection: {out_dim, hidden_dim, norm} | null, in_channels},
     "frontend": "dcase23" | "dcase24", "params": <int>, "extra": {...free-form, e.g. training info}}

Tensors are never pickled, so a student checkpoint cannot carry code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from asc_bench.api import CheckpointError
from asc_bench.embedding.checkpoints import load_into, read_checkpoint
from asc_bench_plugins.contrastasc.cpmobile import CPMobile, CPMobileConfig, count_parameters

FORMAT = "asc-bench/cpmobile-student"
VERSION = 1


def student_paths(path: str | Path) -> tuple[Path, Path]:
    """(`<name>.safetensors`, `<name>.json`) for a path given with either suffix or none."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def is_student_checkpoint(path: str | Path) -> bool:
    weights, meta = student_paths(path)
    return Path(path).suffix in (".safetensors", ".json", "") and weights.is_file() and meta.is_file()


def save_student(path: str | Path, model: CPMobile, config: CPMobileConfig | Mapping[str, Any] | None = None,
                 *, frontend: str | None = None, extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write the student's weights and config; returns the two paths written.

    `config` defaults to `model.config`; when given it must describe the same architecture (the saved
    file must be loadable, so a mismatch is an error here rather than at load time).
    """
    from safetensors.torch import save_file

    cfg = model.config if config is None else (
        config if isinstance(config, CPMobileConfig) else CPMobileConfig.from_dict(config))
    if cfg != model.config:
        raise ValueError(f"config {cfg.to_dict()} does not describe the model ({model.config.to_dict()})")
    weights, meta = student_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; a state dict copy has neither.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(weights), metadata={"format": FORMAT, "version": str(VERSION)})
    doc = {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
           "frontend": frontend or cfg.variant, "params": count_parameters(model),
           "extra": dict(extra or {})}
    meta.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return weights, meta


def read_student_meta(path: str | Path) -> dict[str, Any]:
    _, meta = student_paths(path)
    if not meta.is_file():
        raise CheckpointError(f"student config {meta} is missing: a student checkpoint is a .safetensors "
                              f"file with a .json config of the same name beside it")
    try:
        doc = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{meta} is not valid JSON: {exc}") from None
    if doc.get("format") != FORMAT or int(doc.get("version", -1)) > VERSION:
        raise CheckpointError(f"{meta} is not an asc-bench CP-Mobile student config (format "
                              f"{doc.get('format')!r}, version {doc.get('version')!r}; expected {FORMAT!r} "
                              f"version <= {VERSION})")
    return doc


def load_student(path: str | Path) -> tuple[CPMobile, dict[str, Any]]:
    """Rebuild a student saved by `save_student`; returns (model in eval mode, the JSON document)."""
    weights, meta = student_paths(path)
    doc = read_student_meta(path)
    try:
        config = CPMobileConfig.from_dict(doc["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{meta} holds an invalid config: {exc}") from None
    model = CPMobile(config)
    state = read_checkpoint(weights)
    load_into(model, state, source=weights, layout="CP-Mobile keys (in_c.*, stages.s*.b*.*, feed_forward.*"
              ", projection.*) as written by save_student")
    return model.eval(), doc

