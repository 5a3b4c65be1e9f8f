"""The `uamix-mae` encoder: an AudioMAE ViT tuned with NNCLR + T-CutMix, so the AudioMAE architecture,
input and pooling with a more tolerant loader.

No official uaMix-MAE checkpoint or naming exists (the repository has no code). We accept what a
typical training run would save: the ViT state dict possibly nested under `state_dict`/`model` and
prefixed `backbone.`, `module.backbone.`, `module.` or `encoder.`, next to training-only entries
(projector, predictor, NNCLR queue, momentum copies) that are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from asc_bench.api import CheckpointError, EncoderRequest
from asc_bench.embedding.checkpoints import find_state_dict
from asc_bench_plugins.audiomae.encoder import AudioMAEEncoder, build_vit_encoder

# Longest first: `module.backbone.` must win over `module.`.
PREFIXES = ("module.backbone.", "backbone.", "module.encoder.", "module.", "encoder.", "")
# Training-only entries that may sit next to unprefixed ViT keys (a head is unused for embeddings).
TRAINING_ONLY = ("projector.", "predictor.", "queue", "head.", "momentum_")


def uamix_state(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    """The ViT entries of a uaMix-MAE training checkpoint, prefix removed; everything else is dropped."""
    state = find_state_dict(obj, ("state_dict", "model"))
    for prefix in PREFIXES:
        if prefix + "pos_embed" in state and prefix + "cls_token" in state:
            # Only the encoder's own entries: projector/predictor/queue live outside the prefix (or,
            # without a prefix, are dropped by their names below).
            picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            return {k: v for k, v in picked.items() if not k.startswith(TRAINING_ONLY)}
    raise CheckpointError(f"{path} holds no AudioMAE ViT under any of the prefixes "
                          f"{', '.join(repr(p) for p in PREFIXES[:-1])} or none: no pos_embed/cls_token "
                          f"among its {len(state)} entries (first: {', '.join(list(state)[:6])})")



def build_uamix(request: EncoderRequest) -> AudioMAEEncoder:
    return build_vit_encoder(request, "uamix-mae", uamix_state)


from asc_bench_plugins.uamix_mae import summary  # noqa: E402,F401  (closed form, torch-free; registered there)
