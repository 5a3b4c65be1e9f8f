"""AudioMAE's ViT configuration and its sizes in closed form, without torch.

`asc-bench list encoders` reads the parameter count and MACs from here: importing torch and building a
model (even on the meta device) to count them costs seconds, the formulas microseconds.
`tests/test_startup.py` checks the count against really built `AudioViT` modules (and every registered
encoder's listed count against the encoder its builder makes), `tests/test_audiomae.py` the FLOPs
against the shape-based MAC counter, so the formulas cannot drift from the network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

LN_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch: int = 16
    mel_bins: int = 128
    num_patches: int = 512          # (1024 / 16) x (128 / 16)
    num_classes: int = 0            # 0 = no head

    @property
    def input_frames(self) -> int:
        return self.num_patches // (self.mel_bins // self.patch) * self.patch

    def check(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed dim {self.embed_dim} is not a multiple of num_heads={self.num_heads}")
        if self.num_patches % (self.mel_bins // self.patch):
            raise ValueError(f"{self.num_patches} patches do not tile {self.mel_bins} mel bins")

    @classmethod
    def from_state(cls, state: Mapping[str, Any], num_heads: int) -> "ViTConfig":
        """Sizes a checkpoint carries: width and patches from `pos_embed`, depth from `blocks.N`, head."""
        pos = state["pos_embed"]
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        head = state.get("head.weight")
        mlp = state.get("blocks.0.mlp.fc1.weight")
        patch = state.get("patch_embed.proj.weight")
        return cls(embed_dim=int(pos.shape[-1]), depth=depth, num_heads=num_heads,
                   mlp_hidden=int(mlp.shape[0]) if mlp is not None else 4 * int(pos.shape[-1]),
                   patch=int(patch.shape[-1]) if patch is not None else 16,
                   num_patches=int(pos.shape[1]) - 1, num_classes=int(head.shape[0]) if head is not None else 0)


def param_count(cfg: ViTConfig) -> int:
    """Parameters of `AudioViT(cfg)`, as `sum(p.numel() for p in model.parameters())` counts them
    (the fixed position table is a parameter there, so it is counted)."""
    d, h = cfg.embed_dim, cfg.mlp_hidden
    patch = d * cfg.patch * cfg.patch + d                       # Conv2d(1, D, p, stride=p) with bias
    tokens = d + (cfg.num_patches + 1) * d                      # cls_token + pos_embed
    block = (2 * d                                              # norm1
             + 3 * d * d + 3 * d + d * d + d                    # qkv, proj
             + 2 * d                                            # norm2
             + d * h + h + h * d + d)                           # fc1, fc2
    head = d * cfg.num_classes + cfg.num_classes if cfg.num_classes else 0
    return patch + tokens + cfg.depth * block + 2 * d + head    # + fc_norm


def flops_per_input(cfg: ViTConfig) -> float:
    """Analytic FLOPs (2 x multiply-adds of the convolution and matmuls) of one model input."""
    tokens = cfg.num_patches + 1
    d = cfg.embed_dim
    patch = 2 * cfg.num_patches * d * cfg.patch * cfg.patch
    per_block = 2 * tokens * (4 * d * d + 2 * d * cfg.mlp_hidden) + 2 * 2 * tokens * tokens * d
    return float(patch + per_block * cfg.depth)


def summary(cfg: ViTConfig | None = None) -> dict[str, Any]:
    """What `asc-bench list encoders` shows for an AudioMAE-architecture ViT (default: ViT-B)."""
    cfg = cfg or ViTConfig()
    return {"params": param_count(cfg),
            "macs_per_s": flops_per_input(cfg) / 2 / (cfg.input_frames / 100.0),
            "embed_dim": cfg.embed_dim, "sample_rate": 16000,
            "input": "Kaldi fbank, 128 mel, hanning, 1024-frame windows (10.24 s)"}
