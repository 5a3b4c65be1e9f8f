"""The `beats` encoder: waveform batch -> Kaldi fbank -> BEATs -> pooled clip embedding.

Default padding policy `per-clip`: each clip's filterbank comes from its own samples and the token mask
is time-aligned, so a clip's embedding equals the official model run on that clip alone, whatever else
is in the batch. `padding=official` instead reproduces upstream's batched `extract_features` (fbank of
the zero-padded batch and its misaligned token mask), where embeddings depend on the batch.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.checkpoints import load_into, read_checkpoint, sha256_file
from asc_bench.embedding.frontends import BEATS, BEATS_MEAN, BEATS_STD, ClipTooShortError, beats_normalise, kaldi_fbank
from asc_bench_plugins.beats.config import summary as config_summary
from asc_bench_plugins.beats.model import BEATs, BEATsConfig, flops_per_clip
from asc_bench_plugins.encoder_common import (AUTOCAST_DTYPES, Option, autocast, build_seeded, choice,
                                              parse_options, positive_float, positive_int)

POOLINGS = ("mean", "max", "meanmax", "meanstd")
SIZE_OPTIONS = {"layers": "encoder_layers", "dim": "encoder_embed_dim", "ffn_dim": "encoder_ffn_embed_dim",
                "heads": "encoder_attention_heads"}
OPTIONS: dict[str, Option] = {
    "layer": Option(int, -1, "which hidden state to pool: 0 = input of the first layer, k = output of "
                             "layer k, negative counts from the last (-1)"),
    "pooling": Option(choice(*POOLINGS), "mean", "over unmasked tokens: mean, max, meanmax or meanstd "
                                                 "(the last two concatenate, 2 x dim)"),
    "output": Option(choice("embedding", "probs"), "embedding",
                     "probs = fine-tuned predictor's 527 AudioSet probabilities"),
    "padding": Option(choice("per-clip", "official"), "per-clip",
                      "per-clip = each clip as if alone; official = upstream's batched masking"),
    "autocast": Option(choice(*AUTOCAST_DTYPES), "none", "network precision: none (float32), bf16, fp16"),
    "fbank_mean": Option(float, BEATS_MEAN, "filterbank normalisation mean"),
    "fbank_std": Option(positive_float, BEATS_STD, "filterbank normalisation std"),
    "seed": Option(int, 0, "seed of --random-init weights"),
    "layers": Option(positive_int, 12, "random init only: number of layers"),
    "dim": Option(positive_int, 768, "random init only: width"),
    "ffn_dim": Option(positive_int, 3072, "random init only: FFN width"),
    "heads": Option(positive_int, 12, "random init only: attention heads"),
}
LAYOUT = ("the official BEATs file: a dict with 'cfg' (config dict) and 'model' (state dict with "
          "patch_embedding.weight, encoder.layers.N.self_attn.*, ...)")


class BEATsEncoder(nn.Module):
    sample_rate = 16000
    # One 16-frame time patch; shorter clips raise ClipTooShortError (a BadAudioError).
    min_samples = 400 + 15 * 160

    def __init__(self, model: BEATs, options: Mapping[str, Any], source: Mapping[str, Any]):
        super().__init__()
        self.model = model.eval()
        self.options = dict(options)
        self.source = dict(source)
        cfg = model.cfg
        layers = cfg.encoder_layers
        layer = self.options["layer"]
        if not -(layers + 1) <= layer <= layers:
            raise UsageError(f"--encoder-option layer={layer} is out of range for this {layers}-layer BEATs "
                             f"(use 0..{layers} or -{layers + 1}..-1)")
        self.layer = layer % (layers + 1)
        if self.options["output"] == "probs":
            if model.predictor is None:
                raise UsageError("--encoder-option output=probs needs a fine-tuned BEATs checkpoint "
                                 "(this one has no predictor)")
            if self.layer != layers:
                raise UsageError("output=probs uses the last layer; do not combine it with layer=")
            self.embed_dim = cfg.predictor_class
        else:
            width = 2 if self.options["pooling"] in ("meanmax", "meanstd") else 1
            self.embed_dim = width * cfg.encoder_embed_dim

    def config(self) -> dict[str, Any]:
        opts = self.options
        return {
            "encoder": "beats", "architecture": asdict(self.model.cfg), **self.source,
            "layer": self.layer, "pooling": opts["pooling"] if opts["output"] == "embedding" else "predictor",
            "output": opts["output"], "padding": opts["padding"], "autocast": opts["autocast"],
            "fbank": {"scale": BEATS.scale, "window": BEATS.window, "mean": opts["fbank_mean"],
                      "std": opts["fbank_std"], "mel_bins": 128, "frame_ms": 25, "hop_ms": 10},
        }

    def macs_per_second(self) -> float:
        """Multiply-adds per second of audio, for a 10 s clip (attention makes it length dependent)."""
        return flops_per_clip(self.model.cfg, 998)["total"] / 2 / 10.0

    def _inputs(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised fbank (B, T, 128) and token mask (B, P) (None when nothing is padded)."""
        cfg = self.model.cfg
        patch = cfg.input_patch_size
        need = 400 + (patch - 1) * 160          # samples of one time patch (16 frames): min_samples
        short = (lengths < need).nonzero().flatten().tolist()
        if short:
            raise ClipTooShortError(f"clip {short[0]} of the batch", f"it has {int(lengths[short[0]])} samples; "
                                    f"BEATs needs at least {patch} frames ({need} samples, {need / 16000:.3f} s)")
        if self.options["padding"] == "official":
            fbank, _ = kaldi_fbank(wave, None, BEATS)
            sample_mask = torch.arange(wave.shape[1], device=wave.device) >= lengths.unsqueeze(1)
            num_tokens = (fbank.shape[1] // patch) * cfg.mel_patches
            mask = self.model.official_token_mask(sample_mask, fbank.shape[1], num_tokens)
            if bool(mask.all(dim=1).any()):
                raise ClipTooShortError("a clip of the batch", "upstream's batched padding mask covers all "
                                        "its tokens; use padding=per-clip or batch clips of similar length")
        else:
            fbank, frames = kaldi_fbank(wave, lengths, BEATS)
            valid = torch.div(frames, patch, rounding_mode="floor") * cfg.mel_patches
            num_tokens = (fbank.shape[1] // patch) * cfg.mel_patches
            mask = torch.arange(num_tokens, device=wave.device) >= valid.unsqueeze(1)
        fbank = beats_normalise(fbank, self.options["fbank_mean"], self.options["fbank_std"])
        return fbank, (mask if bool(mask.any()) else None)

    @torch.inference_mode()
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        wave = wave.to(device=device, dtype=torch.float32)
        lengths = lengths.to(device=device, dtype=torch.long)
        fbank, mask = self._inputs(wave, lengths)
        with autocast(self.options["autocast"], device):
            x, _ = self.model.forward_tokens(fbank, mask, upto=self.layer)
            if self.options["output"] == "probs":
                return self.model.predict(x, mask).float()
        return pool(x.float(), mask, self.options["pooling"])


def pool(x: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """Pool tokens (B, P, D) over unmasked positions."""
    keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else ~mask
    w = keep.unsqueeze(-1).to(x.dtype)
    count = w.sum(dim=1)
    mean = (x * w).sum(dim=1) / count
    if how == "mean":
        return mean
    peak = x.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(dim=1)
    if how == "max":
        return peak
    if how == "meanmax":
        return torch.cat([mean, peak], dim=-1)
    var = (((x - mean.unsqueeze(1)) ** 2) * w).sum(dim=1) / count
    return torch.cat([mean, var.sqrt()], dim=-1)


def _random_config(opts: Mapping[str, Any]) -> BEATsConfig:
    sizes = {SIZE_OPTIONS[k]: opts[k] for k in SIZE_OPTIONS}
    try:
        cfg = BEATsConfig(**sizes)
        cfg.check()
    except ValueError as exc:
        raise UsageError(f"bad BEATs size options: {exc}") from None
    return cfg


def load_beats(path: str | Path) -> BEATs:
    """Build BEATs from an official checkpoint file (pre-trained or fine-tuned layout)."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, Mapping) or "cfg" not in ckpt or "model" not in ckpt:
        found = list(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a BEATs checkpoint: expected {LAYOUT}; found {found}")
    try:
        cfg = BEATsConfig.from_cfg(ckpt["cfg"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unusable BEATs cfg ({exc})") from None
    model = BEATs(cfg)
    load_into(model, ckpt["model"], source=path, layout=LAYOUT)
    return model


def build_beats(request: EncoderRequest) -> BEATsEncoder:
    opts = parse_options("beats", request.options, OPTIONS)
    size_given = sorted(set(request.options) & set(SIZE_OPTIONS))
    if request.checkpoint is None:
        if not request.random_init:
            raise CheckpointError("encoder 'beats' needs weights: pass --checkpoint BEATs_iter3.pt (or another "
                                  "official BEATs file) or --random-init")
        cfg = _random_config(opts)
        model = build_seeded(lambda: BEATs(cfg), opts["seed"])
        source: dict[str, Any] = {"weights": "random", "seed": opts["seed"]}
    else:
        if size_given:
            raise UsageError(f"--encoder-option {', '.join(size_given)} only applies with --random-init; "
                             f"a checkpoint's cfg fixes the size")
        model = load_beats(request.checkpoint)
        source = {"weights": Path(request.checkpoint).name,
                  "checkpoint_sha256": sha256_file(request.checkpoint)}
    return BEATsEncoder(model, opts, source).to(torch.device(request.device))


def summary() -> dict[str, Any]:
    """BEATs iter3 facts for `asc-bench list encoders`, in closed form (no torch; see `config.summary`)."""
    return config_summary()
