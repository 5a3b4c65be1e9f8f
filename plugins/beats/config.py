"""BEATs' configuration (the fields of the official `cfg` that shape inference) and its sizes in closed
form, without torch.

`asc-bench list encoders` reads the parameter count and MACs from here instead of building a model;
`tests/test_startup.py` checks the count against really built `BEATs` modules, `tests/test_beats.py` the
FLOPs against the shape-based MAC counter.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

_TRAINING_ONLY = {"dropout", "attention_dropout", "activation_dropout", "encoder_layerdrop", "dropout_input",
                  "layer_wise_gradient_decay_ratio", "predictor_dropout"}


@dataclass(frozen=True)
class BEATsConfig:
    """The fields of the official `cfg` dict that shape inference (defaults: BEATs iter3)."""

    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    conv_bias: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    deep_norm: bool = True
    input_patch_size: int = 16
    embed_dim: int = 512
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "BEATsConfig":
        """Build from a checkpoint's `cfg`; training-only and unknown fields are ignored as upstream does."""
        known = {f.name for f in fields(cls)}
        cfg = {k: v for k, v in cfg.items() if k in known}
        config = cls(**cfg)
        config.check()
        return config

    def check(self) -> None:
        if self.layer_norm_first:
            raise ValueError("BEATs cfg has layer_norm_first=True; only the released post-LN layout "
                             "(layer_norm_first=False, all iter3 checkpoints) is implemented")
        if self.activation_fn != "gelu":
            raise ValueError(f"BEATs cfg activation_fn={self.activation_fn!r}; only 'gelu' is implemented")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            raise ValueError("encoder_embed_dim must be a multiple of encoder_attention_heads")
        if self.encoder_embed_dim % self.conv_pos_groups:
            raise ValueError("encoder_embed_dim must be a multiple of conv_pos_groups")

    @property
    def head_dim(self) -> int:
        return self.encoder_embed_dim // self.encoder_attention_heads

    @property
    def deep_norm_alpha(self) -> float:
        return (2.0 * self.encoder_layers) ** 0.25 if self.deep_norm else 1.0

    @property
    def mel_patches(self) -> int:
        return 128 // self.input_patch_size


def param_count(cfg: BEATsConfig) -> int:
    """Parameters of `BEATs(cfg)`, as `sum(p.numel() for p in model.parameters())` counts them (the
    relative position table shared by every layer is one parameter, counted once)."""
    d, ffn, heads, e = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim, cfg.encoder_attention_heads, cfg.embed_dim
    patch = e * cfg.input_patch_size ** 2 + (e if cfg.conv_bias else 0)       # patch_embedding
    front = patch + 2 * e                                                     # + layer_norm
    if e != d:
        front += e * d + d                                                    # post_extract_proj
    pos_conv = d * (d // cfg.conv_pos_groups) * cfg.conv_pos + cfg.conv_pos + d   # weight_v, weight_g, bias
    table = cfg.num_buckets * heads if cfg.relative_position_embedding else 0
    layer = (3 * d * d + 3 * d + d * d + d                                    # qkv, out_proj
             + ((cfg.head_dim * 8 + 8) + heads if cfg.gru_rel_pos else 0)     # grep_linear, grep_a
             + 2 * d                                                          # self_attn_layer_norm
             + d * ffn + ffn + ffn * d + d                                    # fc1, fc2
             + 2 * d)                                                         # final_layer_norm
    predictor = d * cfg.predictor_class + cfg.predictor_class if cfg.finetuned_model else 0
    return front + pos_conv + table + cfg.encoder_layers * layer + 2 * d + predictor   # + encoder.layer_norm


def flops_per_clip(cfg: BEATsConfig, num_frames: int, predictor: bool = False) -> dict[str, float]:
    """Analytic FLOPs (2 x multiply-adds of convolutions and matmuls) of one clip, by part.

    Counts the computation as upstream defines it, whatever algorithm evaluates it here: the positional
    convolution as the direct grouped convolution, the gate as grep_linear (64 -> 8) on every head's
    query (folded here into a (2H, D) projection of x, a 0.1% difference).
    """
    patch = cfg.input_patch_size
    tokens = (num_frames // patch) * cfg.mel_patches
    d, ffn = cfg.encoder_embed_dim, cfg.encoder_ffn_embed_dim
    patch_flops = 2 * tokens * cfg.embed_dim * patch * patch
    if cfg.embed_dim != d:
        patch_flops += 2 * tokens * cfg.embed_dim * d
    conv = 2 * tokens * d * (d // cfg.conv_pos_groups) * cfg.conv_pos
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ffn) + 2 * 2 * tokens * tokens * d
    if cfg.gru_rel_pos:
        per_layer += 2 * tokens * d * 8
    out = {"patch": float(patch_flops), "pos_conv": float(conv), "layers": float(per_layer * cfg.encoder_layers)}
    if predictor and cfg.finetuned_model:
        out["predictor"] = float(2 * tokens * d * cfg.predictor_class)
    out["total"] = sum(out.values())
    return out


def summary(cfg: BEATsConfig | None = None) -> dict[str, Any]:
    """What `asc-bench list encoders` shows for BEATs (default: iter3), MACs per second of a 10 s clip."""
    cfg = cfg or BEATsConfig()
    return {"params": param_count(cfg),
            "macs_per_s": flops_per_clip(cfg, 998)["total"] / 2 / 10.0,
            "embed_dim": cfg.encoder_embed_dim, "sample_rate": 16000,
            "input": "Kaldi fbank, 128 mel, x2^15, povey window, any length"}
