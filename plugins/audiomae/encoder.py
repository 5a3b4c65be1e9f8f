"""The `audiomae` encoder (also the engine of `uamix-mae`): waveform -> Kaldi fbank -> 1024-frame
windows -> ViT -> mean of patch tokens -> fc_norm.

Checkpoint layouts: `pretrained.pth` (the whole masked autoencoder; decoder, `mask_token` and the MAE's
`norm` are ignored and `fc_norm`, absent, stays an identity LayerNorm exactly as the official fine-tuning
script starts) and `finetuned.pth` (the ViT with `fc_norm` and `head`). Clips longer than the model's
input are split into evenly spaced full windows whose embeddings are averaged (`window_policy=average`),
or cut to the first window as upstream does (`window_policy=cut`).
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.checkpoints import find_state_dict, load_into, read_checkpoint, sha256_file
from asc_bench.embedding.frontends import AUDIOMAE, AUDIOMAE_MEAN, AUDIOMAE_STD, audiomae_input, kaldi_fbank
from asc_bench_plugins.audiomae.config import summary as config_summary
from asc_bench_plugins.audiomae.vit import AudioViT, ViTConfig, flops_per_input
from asc_bench_plugins.encoder_common import (AUTOCAST_DTYPES, Option, autocast, build_seeded, choice,
                                              parse_options, positive_float, positive_int)

SIZE_OPTIONS = ("dim", "depth")
OPTIONS: dict[str, Option] = {
    "num_heads": Option(positive_int, 12, "attention heads (not stored in checkpoints; ViT-B has 12)"),
    "window_policy": Option(choice("average", "cut"), "average",
                            "clips longer than the input: average over windows, or cut (upstream)"),
    "autocast": Option(choice(*AUTOCAST_DTYPES), "none", "network precision: none (float32), bf16, fp16"),
    "fbank_mean": Option(float, AUDIOMAE_MEAN, "filterbank normalisation mean (AudioSet)"),
    "fbank_std": Option(positive_float, AUDIOMAE_STD, "filterbank normalisation std (AudioSet)"),
    "seed": Option(int, 0, "seed of --random-init weights"),
    "dim": Option(positive_int, 768, "random init only: width"),
    "depth": Option(positive_int, 12, "random init only: number of blocks"),
}
# Entries of the masked-autoencoder file that feature extraction does not use.
MAE_ONLY = ("decoder_", "mask_token", "norm.")
LAYOUT = ("an AudioMAE checkpoint: {'model': state dict} with cls_token, pos_embed, patch_embed.proj.*, "
          "blocks.N.* (pretrained.pth may add the decoder; finetuned.pth adds fc_norm.* and head.*)")


class AudioMAEEncoder(nn.Module):
    sample_rate = 16000
    min_samples = 400       # one Kaldi frame; shorter clips raise ClipTooShortError (a BadAudioError)

    def __init__(self, vit: AudioViT, options: Mapping[str, Any], source: Mapping[str, Any],
                 name: str = "audiomae"):
        super().__init__()
        self.vit = vit.eval()
        self.options = dict(options)
        self.source = dict(source)
        self.name = name
        self.embed_dim = vit.cfg.embed_dim

    def config(self) -> dict[str, Any]:
        opts = self.options
        return {
            "encoder": self.name, "architecture": asdict(self.vit.cfg), **self.source,
            "pooling": "mean of patch tokens -> fc_norm", "window_policy": opts["window_policy"],
            "window_frames": self.vit.cfg.input_frames, "autocast": opts["autocast"],
            "fbank": {"scale": AUDIOMAE.scale, "window": AUDIOMAE.window, "clip_mean_removed": True,
                      "mean": opts["fbank_mean"], "std": opts["fbank_std"], "pad_value": 0.0,
                      "mel_bins": 128, "frame_ms": 25, "hop_ms": 10},
        }

    def macs_per_second(self) -> float:
        """Multiply-adds per second of audio for a clip filling one input window."""
        return flops_per_input(self.vit.cfg) / 2 / (self.vit.cfg.input_frames / 100.0)

    def windows(self, fbank: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs (W, 1, N, 128) and the clip index of each window (W,)."""
        n = self.vit.cfg.input_frames
        if fbank.shape[1] < n:
            fbank = F.pad(fbank, (0, 0, 0, n - fbank.shape[1]))
        pieces, owner = [], []
        for i, count in enumerate(frames.tolist()):
            if count <= n or self.options["window_policy"] == "cut":
                starts = [0]
            else:
                # Evenly spaced full windows covering the clip: no padded window gets an equal vote.
                k = math.ceil(count / n)
                starts = [round(j * (count - n) / (k - 1)) for j in range(k)]
            pieces += [fbank[i, s:s + n] for s in starts]
            owner += [i] * len(starts)
        x = audiomae_input(torch.stack(pieces), n, self.options["fbank_mean"], self.options["fbank_std"])
        return x, torch.tensor(owner, device=fbank.device)

    @torch.inference_mode()
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        device = self.vit.pos_embed.device
        wave = wave.to(device=device, dtype=torch.float32)
        fbank, frames = kaldi_fbank(wave, lengths.to(device=device, dtype=torch.long), AUDIOMAE)
        x, owner = self.windows(fbank, frames)
        with autocast(self.options["autocast"], device):
            pooled = self.vit.pool(self.vit.forward_tokens(x)).float()
        if owner.numel() == wave.shape[0]:
            return pooled
        total = torch.zeros(wave.shape[0], pooled.shape[1], device=device).index_add_(0, owner, pooled)
        return total / torch.bincount(owner, minlength=wave.shape[0]).unsqueeze(1).to(total.dtype)


def vit_from_state(state: Mapping[str, torch.Tensor], num_heads: int, source: str | Path) -> tuple[AudioViT, str]:
    """Build the ViT a state dict describes and load it; returns (model, which fc_norm it uses)."""
    if "pos_embed" not in state or "cls_token" not in state:
        raise CheckpointError(f"{source} does not hold an AudioMAE ViT: no pos_embed/cls_token among its "
                              f"{len(state)} entries (first: {', '.join(list(state)[:6])}). Expected {LAYOUT}.")
    try:
        cfg = ViTConfig.from_state(state, num_heads)
        cfg.check()
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}; set --encoder-option num_heads=...") from None
    vit = AudioViT(cfg)
    has_fc_norm = "fc_norm.weight" in state
    load_into(vit, state, source=source, ignore=MAE_ONLY, allow_missing=("fc_norm.",), layout=LAYOUT)
    if not has_fc_norm:     # the official fine-tuning start: a fresh LayerNorm, weight 1 and bias 0
        nn.init.ones_(vit.fc_norm.weight)
        nn.init.zeros_(vit.fc_norm.bias)
    return vit, ("checkpoint" if has_fc_norm else "identity (not in checkpoint)")


def build_vit_encoder(request: EncoderRequest, name: str,
                      extract_state: Callable[[Any, Path], Mapping[str, torch.Tensor]]) -> AudioMAEEncoder:
    """Shared builder of `audiomae` and `uamix-mae`; `extract_state` finds the ViT entries in the file."""
    opts = parse_options(name, request.options, OPTIONS)
    size_given = sorted(set(request.options) & set(SIZE_OPTIONS))
    if request.checkpoint is None:
        if not request.random_init:
            raise CheckpointError(f"encoder '{name}' needs weights: pass --checkpoint (e.g. AudioMAE's "
                                  f"pretrained.pth or finetuned.pth) or --random-init")
        cfg = ViTConfig(embed_dim=opts["dim"], depth=opts["depth"], num_heads=opts["num_heads"],
                        mlp_hidden=4 * opts["dim"])
        try:
            cfg.check()
        except ValueError as exc:
            raise UsageError(f"bad {name} size options: {exc}") from None
        vit = build_seeded(lambda: AudioViT(cfg), opts["seed"])
        source: dict[str, Any] = {"weights": "random", "seed": opts["seed"], "fc_norm": "identity (fresh)"}
    else:
        if size_given:
            raise UsageError(f"--encoder-option {', '.join(size_given)} only applies with --random-init; "
                             f"the checkpoint fixes the size")
        path = Path(request.checkpoint)
        state = extract_state(read_checkpoint(path), path)
        vit, fc_norm = vit_from_state(state, opts["num_heads"], path)
        source = {"weights": path.name, "checkpoint_sha256": sha256_file(path), "fc_norm": fc_norm}
    return AudioMAEEncoder(vit, opts, source, name).to(torch.device(request.device))


def _audiomae_state(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    return find_state_dict(obj, ("model",))


def build_audiomae(request: EncoderRequest) -> AudioMAEEncoder:
    return build_vit_encoder(request, "audiomae", _audiomae_state)


def summary() -> dict[str, Any]:
    """ViT-B facts for `asc-bench list encoders`, in closed form (no torch; see `config.summary`)."""
    return config_summary()
