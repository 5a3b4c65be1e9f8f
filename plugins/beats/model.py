"""The BEATs network (iter3 family) with the official state-dict names, written from the spec.

Input is the normalised Kaldi filterbank (B, T, 128); see `asc_bench.embedding.frontends`. Two deliberate
departures from the official code that do not change the maths: attention runs through
`scaled_dot_product_attention` with the gated relative bias as an additive mask (q, k and v in one
matmul), and in inference the grouped positional convolution is evaluated with FFTs (`pos_conv.py`).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# The configuration and its closed-form sizes live in a torch-free module (`asc-bench list encoders`).
from asc_bench_plugins.beats.config import BEATsConfig, flops_per_clip, param_count  # noqa: F401
from asc_bench_plugins.beats.pos_conv import PosConv

def relative_position_bucket(query_len: int, key_len: int, num_buckets: int, max_distance: int,
                             device: torch.device | None = None) -> torch.Tensor:
    """T5-style bidirectional buckets (query_len, key_len) of the offset key - query."""
    offset = torch.arange(key_len, device=device)[None, :] - torch.arange(query_len, device=device)[:, None]
    half = num_buckets // 2
    exact = half // 2
    bucket = (offset > 0).long() * half
    dist = offset.abs()
    # log of 0 never reaches the result (those offsets are "small"); clamp to keep it finite.
    scaled = torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)
    large = torch.clamp(exact + scaled.long(), max=half - 1)
    return bucket + torch.where(dist < exact, dist, large)


class MaskBuffer:
    """Memory for the (B, H, P, P) attention mask, handed from layer to layer within one forward."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def get(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        t = self.tensor
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self.tensor = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t


class MultiheadAttention(nn.Module):
    """Self-attention with the gated relative position bias.

    q, k and v live in one (3D, D) projection `qkv`, fused once when a state dict is loaded; state dicts
    still read and write upstream's `q_proj`, `k_proj`, `v_proj` entries (hooks below).
    """

    _QKV = ("q_proj", "k_proj", "v_proj")

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None):
        super().__init__()
        dim, self.num_heads, self.head_dim = cfg.encoder_embed_dim, cfg.encoder_attention_heads, cfg.head_dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = cfg.gru_rel_pos
        if cfg.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
        # One table shared by every layer (stored under each layer's key, as upstream saves it).
        self.relative_attention_bias = relative_attention_bias
        self.register_state_dict_post_hook(MultiheadAttention._split_qkv)
        self.register_load_state_dict_pre_hook(MultiheadAttention._merge_qkv)

    @staticmethod
    def _split_qkv(module: nn.Module, state: dict, prefix: str, _meta: Any) -> None:
        for part in ("weight", "bias"):
            fused = state.pop(f"{prefix}qkv.{part}")
            for name, piece in zip(MultiheadAttention._QKV, fused.chunk(3)):
                state[f"{prefix}{name}.{part}"] = piece

    @staticmethod
    def _merge_qkv(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
        for part in ("weight", "bias"):
            keys = [f"{prefix}{name}.{part}" for name in MultiheadAttention._QKV]
            if all(k in state for k in keys):
                state[f"{prefix}qkv.{part}"] = torch.cat([state.pop(k) for k in keys])

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per head and query: a * (b * c - 1) + 2, (B, H, P, 1).

        Upstream applies grep_linear (64 -> 8) to the unscaled query of each head (projection incl.
        bias) and sums groups of 4 outputs; all of that is linear in x, so it is folded into one
        (2H, D) matrix and a single small matmul on x.
        """
        batch, length, dim = x.shape
        heads, hd = self.num_heads, self.head_dim
        g_w = self.grep_linear.weight.view(2, 4, hd).sum(1)                         # (2, hd)
        g_b = self.grep_linear.bias.view(2, 4).sum(1)                               # (2,)
        w_q = self.qkv.weight[:dim].view(heads, hd, dim)
        b_q = self.qkv.bias[:dim].view(heads, hd)
        autocasting = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        exact = torch.autocast(x.device.type, enabled=False) if autocasting else contextlib.nullcontext()
        with exact:                                                 # a tiny product; keep it float32
            weight = torch.einsum("jk,hkd->hjd", g_w, w_q).reshape(2 * heads, dim)
        bias = (b_q @ g_w.t() + g_b).reshape(2 * heads)
        ab = torch.sigmoid(F.linear(x, weight, bias)).view(batch, length, heads, 2)
        gate = ab[..., 0] * (ab[..., 1] * self.grep_a.view(heads) - 1.0) + 2.0     # (B, P, H)
        return gate.transpose(1, 2).unsqueeze(-1)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None,
                key_mask: torch.Tensor | None, scratch: "MaskBuffer | None" = None) -> torch.Tensor:
        """x (B, P, D); position_bias (H, P, P) or None; key_mask (B, 1, 1, P) additive (0 / -inf) or None.

        `scratch` (inference only) lends the (B, H, P, P) mask memory, reused by every layer.
        """
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                  # (B, H, P, hd) each
        if q.device.type == "cpu" and q.dtype != torch.float32:
            # Under autocast on CPU, reduced-precision attention with a dense additive mask measured
            # slower than float32 (and the mask costs an extra cast per layer): keep it in float32.
            q, k, v = q.float(), k.float(), v.float()
        mask = key_mask
        if position_bias is not None and self.gru_rel_pos:
            gate = self.gate(x).to(q.dtype)
            bias = position_bias.to(q.dtype)
            out = None if scratch is None else scratch.get((batch, self.num_heads, length, length), q)
            # One pass over the (B, H, P, P) mask: gate * bias (+ key mask), written into reused memory.
            if key_mask is None:
                mask = torch.mul(gate, bias, out=out) if out is not None else gate * bias
            else:
                key_mask = key_mask.to(q.dtype)
                mask = (torch.addcmul(key_mask, gate, bias, out=out) if out is not None
                        else torch.addcmul(key_mask, gate, bias))
        elif position_bias is not None:
            mask = position_bias if key_mask is None else position_bias + key_mask
        if mask is not None:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Post-LN transformer layer with the deep-norm residual factor."""

    def __init__(self, cfg: BEATsConfig, relative_attention_bias: nn.Embedding | None):
        super().__init__()
        dim = cfg.encoder_embed_dim
        self.alpha = cfg.deep_norm_alpha
        self.self_attn = MultiheadAttention(cfg, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None,
                key_mask: torch.Tensor | None, scratch: "MaskBuffer | None" = None) -> torch.Tensor:
        # torch.add(y, x, alpha=a) = a * x + y in one pass (deep-norm residual).
        x = self.self_attn_layer_norm(torch.add(self.self_attn(x, position_bias, key_mask, scratch), x,
                                                alpha=self.alpha))
        hidden = self.fc1(x)
        # Without autograd GELU can overwrite the FFN activations instead of allocating another copy.
        hidden = F.gelu(hidden) if torch.is_grad_enabled() else torch.ops.aten.gelu_(hidden)
        return self.final_layer_norm(torch.add(self.fc2(hidden), x, alpha=self.alpha))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.encoder_embed_dim
        self.pos_conv = nn.ModuleList([PosConv(dim, cfg.conv_pos, cfg.conv_pos_groups)])
        table = (nn.Embedding(cfg.num_buckets, cfg.encoder_attention_heads)
                 if cfg.relative_position_embedding else None)
        self.layers = nn.ModuleList([EncoderLayer(cfg, table) for _ in range(cfg.encoder_layers)])
        self.layer_norm = nn.LayerNorm(dim)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor | None:
        """(H, P, P) bias looked up once and reused by every layer."""
        table = self.layers[0].self_attn.relative_attention_bias if self.layers else None
        if table is None:
            return None
        bucket = relative_position_bucket(length, length, self.cfg.num_buckets, self.cfg.max_distance, device)
        return table(bucket).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None, upto: int | None = None,
                keep_states: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the layers; `upto` = number of layers to run (None = all).

        Returns the last computed state and, with keep_states, [input of layer 0, output of each layer].
        """
        key_mask = None
        if token_mask is not None:
            x = x.masked_fill(token_mask.unsqueeze(-1), 0.0)
            key_mask = torch.zeros(token_mask.shape, dtype=x.dtype, device=x.device)
            key_mask = key_mask.masked_fill(token_mask, float("-inf"))[:, None, None, :]
        x = x + self.pos_conv[0](x)
        x = self.layer_norm(x)
        states = [x] if keep_states else []
        bias = self.position_bias(x.shape[1], x.device)
        # Without autograd the per-layer attention mask can overwrite one buffer instead of allocating.
        scratch = None if torch.is_grad_enabled() else MaskBuffer()
        for layer in self.layers[: self.cfg.encoder_layers if upto is None else upto]:
            x = layer(x, bias, key_mask, scratch)
            if keep_states:
                states.append(x)
        return x, states


def frames_to_mask(mask: torch.Tensor, groups: int) -> torch.Tensor:
    """Upstream's mask down-sampling: drop the last len % groups entries, then a group is padding only if
    all its entries are. Applied to time-major tokens as if they were time steps (the quirk we keep)."""
    extra = mask.shape[1] % groups
    if extra:
        mask = mask[:, :-extra]
    return mask.view(mask.shape[0], groups, -1).all(-1)


class BEATs(nn.Module):
    def __init__(self, cfg: BEATsConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        patch = cfg.input_patch_size
        self.patch_embedding = nn.Conv2d(1, cfg.embed_dim, patch, stride=patch, bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.post_extract_proj = (nn.Linear(cfg.embed_dim, cfg.encoder_embed_dim)
                                  if cfg.embed_dim != cfg.encoder_embed_dim else None)
        self.encoder = TransformerEncoder(cfg)
        self.predictor = (nn.Linear(cfg.encoder_embed_dim, cfg.predictor_class) if cfg.finetuned_model
                          else None)

    def patch_tokens(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, 128) -> LayerNorm'ed patch tokens (B, P, embed_dim), time-major (8 * t + f)."""
        x = self.patch_embedding(fbank.unsqueeze(1))
        return self.layer_norm(x.flatten(2).transpose(1, 2))

    def official_token_mask(self, sample_mask: torch.Tensor, num_frames: int, num_tokens: int) -> torch.Tensor:
        """Upstream's token mask from a sample-level mask: samples -> frames -> "tokens" (not time-aligned)."""
        return frames_to_mask(frames_to_mask(sample_mask, num_frames), num_tokens)

    def forward_tokens(self, fbank: torch.Tensor, token_mask: torch.Tensor | None = None,
                       upto: int | None = None, keep_states: bool = False
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised fbank (B, T, 128) and an optional token mask (B, P), True = padding."""
        x = self.patch_tokens(fbank)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x, token_mask, upto, keep_states)

    def extract_features(self, fbank: torch.Tensor, padding_mask: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Upstream's `extract_features` after preprocessing: sample-level mask in, (features, token mask) out."""
        token_mask = None
        if padding_mask is not None:
            num_tokens = (fbank.shape[1] // self.cfg.input_patch_size) * self.cfg.mel_patches
            token_mask = self.official_token_mask(padding_mask, fbank.shape[1], num_tokens)
        x, _ = self.forward_tokens(fbank, token_mask)
        return x, token_mask

    def predict(self, features: torch.Tensor, token_mask: torch.Tensor | None) -> torch.Tensor:
        """Fine-tuned head: per-token logits averaged over unmasked tokens, then sigmoid."""
        if self.predictor is None:
            raise ValueError("this BEATs checkpoint has no predictor (not a fine-tuned model)")
        logits = self.predictor(features)
        if token_mask is None:
            return torch.sigmoid(logits.mean(dim=1))
        keep = (~token_mask).unsqueeze(-1).to(logits.dtype)
        return torch.sigmoid((logits * keep).sum(dim=1) / keep.sum(dim=1))
