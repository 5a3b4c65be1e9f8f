"""AudioMAE's encoder: the timm ViT as the official fine-tuning script builds it for audio.

Official state-dict names (`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.N.*`, `fc_norm.*`,
`head.*`). Input (B, 1, frames, 128); 16x16 patches flattened time-major (token 1 + 8 t + f). The
position table is a buffer-like parameter that must come from the checkpoint (upstream's sin-cos layout
is not the obvious one). Trainable as an ordinary module; the encoder wrapper adds inference_mode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The configuration and its closed-form sizes live in a torch-free module (`asc-bench list encoders`).
from asc_bench_plugins.audiomae.config import LN_EPS, ViTConfig, flops_per_input, param_count  # noqa: F401


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(1, cfg.embed_dim, cfg.patch, stride=cfg.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)      # scale 1/sqrt(head dim), as timm
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_hidden)
        self.fc2 = nn.Linear(cfg.mlp_hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        # Without autograd GELU can overwrite the activations instead of allocating another copy.
        return self.fc2(F.gelu(hidden) if torch.is_grad_enabled() else torch.ops.aten.gelu_(hidden))


class Block(nn.Module):
    """Pre-LN block, no layer scale (drop-path is training-only and omitted)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=LN_EPS)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=LN_EPS)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """`inplace` (inference only) adds the residuals into `x` itself, saving two allocations."""
        if inplace:
            x.add_(self.attn(self.norm1(x)))
            return x.add_(self.mlp(self.norm2(x)))
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AudioViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Fixed table (not trained upstream); random here until a checkpoint fills it.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.depth)])
        self.fc_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes else None
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, frames, 128) -> last block output (B, 1 + patches, D), CLS first, no final norm."""
        x = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)                  # a fresh tensor: safe to update in place
        inplace = not torch.is_grad_enabled()
        for block in self.blocks:
            x = block(x, inplace)
        return x

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Upstream's global pooling: mean of the patch tokens (CLS excluded), then fc_norm."""
        return self.fc_norm(tokens[:, 1:].mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(self.forward_tokens(x))
        return pooled if self.head is None else self.head(pooled)
