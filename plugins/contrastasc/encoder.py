"""CP-Mobile students as asc-bench encoders: presets, the builder, and the embedding module.

Embedding: the global mean over frequency and time of the last stage (the input of the official head),
(B, C_last), exactly as the fixtures define it; `output=projection` returns the projection head's
L2-normalised output instead (only if the model has one), `output=logits` the classifier's logits.

Clips of different lengths: the batch is split into groups of equal valid length and each group is run
through frontend and network on its valid samples only, so a clip's embedding never depends on its batch
mates or on the padding (the cost is one forward per distinct length; evaluation batches of fixed-length
scene clips have one group).

Sizes are named by parameter count: the DCASE23 classifier count with 10 classes, truncated to three
significant figures and written in whole thousands (5,734 -> 6k, 18,636 -> 19k, 126,952 -> 126k, the
paper's "126K"). MACs are for one second of audio (the model's MACs; the STFT frontend is not counted,
as in the DCASE complexity rules). Both come in closed form from `arch.py`, which imports no torch.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.checkpoints import find_state_dict, load_into, read_checkpoint, sha256_file, strip_prefix
from asc_bench_plugins.contrastasc.checkpoint import is_student_checkpoint, load_student, student_paths
# Presets, names and sizes are torch-free (asc_bench_plugins.contrastasc.arch); re-exported here.
from asc_bench_plugins.contrastasc.arch import (PRESETS, Preset, macs_per_second, preset_name,  # noqa: F401
                                                size_label, summary_of)
from asc_bench_plugins.contrastasc.cpmobile import CPMobile, CPMobileConfig, normalise_strides
from asc_bench_plugins.contrastasc.frontend import SAMPLE_RATE, LogMel
from asc_bench_plugins.contrastasc.heads import ProjectionConfig
from asc_bench_plugins.contrastasc.options import ARCH_OPTIONS, parse_options


class CPMobileEncoder(nn.Module):
    """`forward(wave[B, T], lengths[B]) -> [B, D]` at 32 kHz (see the module docstring)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, model: CPMobile, *, name: str, frontend: str, output: str = "embedding",
                 source: dict[str, Any] | None = None):
        super().__init__()
        if output == "projection" and model.projection is None:
            raise UsageError("output=projection needs a projection head, and this model has none "
                             "(official checkpoints never have one); use output=embedding")
        self.model = model
        self.frontend = LogMel(frontend)
        self.name, self.output = name, output
        self.source = dict(source or {})
        self.embed_dim = {"embedding": model.embed_dim, "logits": model.config.n_classes,
                          "projection": model.config.projection.out_dim if model.config.projection else 0}[output]

    def config(self) -> dict[str, Any]:
        return {"encoder": self.name, **self.model.config.to_dict(), "frontend": self.frontend.kind,
                "output": self.output, "sample_rate": self.sample_rate,
                "length_policy": "per-clip (grouped by valid length)", **self.source}

    def macs_per_second(self) -> int:
        return macs_per_second(self.model.config, self.frontend.kind)

    def _embed_group(self, wave: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(self.frontend(wave).unsqueeze(1))
        if self.output == "logits":
            return self.model.logits(features)
        pooled = self.model.pooled(features)
        return self.model.projection(pooled) if self.output == "projection" else pooled

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected wave[B, T], got shape {tuple(wave.shape)}")
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.numel() != wave.shape[0] or bool((lengths < 1).any()) or bool((lengths > wave.shape[1]).any()):
            raise ValueError(f"lengths must hold one value in 1..{wave.shape[1]} per clip, got {lengths.tolist()}")
        wave = wave.to(dtype=self.frontend.window.dtype)
        out: torch.Tensor | None = None
        for length in torch.unique(lengths).tolist():
            rows = torch.nonzero(lengths == length).squeeze(1).to(wave.device)
            emb = self._embed_group(wave.index_select(0, rows)[:, :length])
            if out is None:
                out = emb.new_empty(wave.shape[0], emb.shape[1])
            out[rows] = emb
        assert out is not None
        return out


def _config_from_options(base: CPMobileConfig, opts: dict[str, Any]) -> CPMobileConfig:
    changes: dict[str, Any] = {k: opts[k] for k in ("variant", "base_channels", "multiplier", "expansion",
                                                   "blocks", "n_classes", "norm", "norm_placement") if k in opts}
    if "strides" in opts:
        changes["strides"] = normalise_strides(opts["strides"])
    if opts.get("projection_dim"):
        changes["projection"] = ProjectionConfig(out_dim=opts["projection_dim"],
                                                 hidden_dim=opts.get("projection_hidden", 0))
    try:
        return base.with_(**changes)
    except ValueError as exc:
        raise UsageError(f"invalid CP-Mobile options: {exc}") from None


def _infer_from_state(state: dict[str, torch.Tensor], opts: dict[str, Any]) -> dict[str, Any]:
    """Fill what an official state dict settles by itself: variant, n_classes, blocks."""
    found = dict(opts)
    has_grn = any(k.endswith("after_block_norm.gamma") for k in state)
    detected = "dcase23" if has_grn else "dcase24"
    if "variant" in found and found["variant"] != detected:
        raise UsageError(f"the checkpoint is a {detected} CP-Mobile ({'with' if has_grn else 'without'} GRN "
                         f"keys) but variant={found['variant']} was given; drop the option or fix it")
    found["variant"] = detected
    head = state.get("feed_forward.0.weight")
    if head is not None:
        found.setdefault("n_classes", int(head.shape[0]))
    per_stage = [0, 0, 0]
    for key in state:
        parts = key.split(".")
        if len(parts) > 3 and parts[0] == "stages" and parts[1][1:].isdigit() and parts[3] == "block" \
                and parts[4:6] == ["0", "0"] and 1 <= int(parts[1][1:]) <= 3:
            per_stage[int(parts[1][1:]) - 1] += 1
    if min(per_stage) > 0:
        found.setdefault("blocks", tuple(per_stage))
    return found


def _suggest(state: dict[str, torch.Tensor], opts: dict[str, Any]) -> str:
    """Name the presets whose shapes fit `state` (a friendlier error than a list of shapes)."""
    fits = []
    for preset in PRESETS:
        cfg = _config_from_options(preset.config(), {k: v for k, v in opts.items()
                                                     if k not in ("base_channels", "multiplier", "expansion")})
        with torch.device("meta"):
            own = CPMobile(cfg).state_dict()
        if set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own):
            fits.append(f"{preset_name(preset)} (base_channels={preset.base_channels}, "
                        f"multiplier={preset.multiplier}, expansion={preset.expansion})")
    return f" Its shapes fit: {'; '.join(fits)}." if fits else ""


def _load_official(path: Any, base: CPMobileConfig, opts: dict[str, Any]) -> CPMobile:
    state = strip_prefix(find_state_dict(read_checkpoint(path)), ("model.", "module."))
    # Lightning checkpoints may carry other modules' tensors (e.g. a teacher): keep the network's only.
    state = {k: v for k, v in state.items() if k.split(".")[0] in ("in_c", "stages", "feed_forward", "projection")}
    if not state:
        raise CheckpointError(f"{path} holds no CP-Mobile tensors (expected keys in_c.*, stages.*, "
                              f"feed_forward.*, optionally prefixed with model.)")
    opts = _infer_from_state(state, opts)
    config = _config_from_options(base, opts)
    model = CPMobile(config)
    try:
        load_into(model, state, source=path, layout="official CP-Mobile keys in_c.{0,1}.{0,1}.*, "
                  "stages.s{k}.b{j}.block.{0,1,2}.{0,1}.*, feed_forward.{0,1}.*")
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{_suggest(state, opts)}") from None
    return model


def build_encoder(request: EncoderRequest, *, name: str, base: CPMobileConfig) -> CPMobileEncoder:
    opts = parse_options(request.options)
    output = opts.get("output", "embedding")
    if "seed" in opts and not request.random_init:
        raise UsageError("option seed only applies with --random-init")
    if request.random_init:
        config = _config_from_options(base, opts)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.get("seed", 0))
            model = CPMobile(config)
        source: dict[str, Any] = {"weights": "random", "seed": opts.get("seed", 0)}
    elif request.checkpoint is None:
        raise CheckpointError(f"{name} needs --checkpoint (an official CP-JKU state dict / Lightning .ckpt, "
                              f"or a student .safetensors with its .json) or --random-init")
    elif is_student_checkpoint(request.checkpoint):
        model, doc = load_student(request.checkpoint)
        _check_student_options(model.config, opts, request.checkpoint)
        opts.setdefault("frontend", doc.get("frontend", model.config.variant))
        weights, _ = student_paths(request.checkpoint)
        source = {"weights": "student", "checkpoint_sha256": sha256_file(weights)}
    else:
        model = _load_official(request.checkpoint, base, opts)
        source = {"weights": "official", "checkpoint_sha256": sha256_file(request.checkpoint)}
    encoder = CPMobileEncoder(model, name=name, frontend=opts.get("frontend", model.config.variant),
                              output=output, source=source)
    return encoder.eval().to(request.device)


def _check_student_options(config: CPMobileConfig, opts: dict[str, Any], path: Any) -> None:
    """A student's JSON fixes its architecture; an explicit option that contradicts it is an error."""
    expected = _config_from_options(config, {k: v for k, v in opts.items() if k in ARCH_OPTIONS})
    if expected != config:
        given = {k: opts[k] for k in ARCH_OPTIONS if k in opts}
        raise UsageError(f"options {given} contradict the student config saved with {path} "
                         f"({config.to_dict()}); leave the architecture options out")
