"""CP-Mobile (CP-JKU), both official variants, with the official state-dict names.

- ``variant="dcase23"``: ``cp_mobile_clean`` of the DCASE23 submission; each block ends with a GRN
  (two scalar parameters, ``after_block_norm.gamma/beta``). Default strides b2=(2,2), b4=(2,1).
- ``variant="dcase24"``: the DCASE24 baseline ("simplified CP-Mobile"): no GRN. Default strides
  b2=(1,1), b3=(1,2), b4=(2,1).
Both take a log-mel image (B, 1, F=256, T), frequency first. Facts: specs/contrastasc.md section 1.

Normalisation (ContrastASC students): ``norm="batch"`` is the official network. ``norm="layer"`` puts a
LayerNorm where the spec leaves it open, chosen by ``norm_placement``:
- ``"head"`` (default; the project's source document says the student's *output block* loses its
  BatchNorm for a LayerNorm): the head's BatchNorm2d(n_classes) becomes a LayerNorm over the n_classes
  channels at every (frequency, time) position, before pooling. Same 2·n_classes parameters, so the
  parameter counts of the spec's table do not change; the embedding (mean of the last stage) does not
  pass through it, the logits do.
- ``"projection"``: the network stays official; the projection head (CRD embedding head) gets a
  LayerNorm (needs a projection head).
- ``"both"``: both of the above.
All other BatchNorms stay (the spec gives no hint they were replaced).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

# The configuration and its closed-form sizes live in a torch-free module (`asc-bench list encoders`).
from asc_bench_plugins.contrastasc.arch import (DEFAULT_STRIDES, NORM_PLACEMENTS, NORMS, VARIANTS,  # noqa: F401
                                                CPMobileConfig, make_divisible, normalise_strides)
from asc_bench_plugins.contrastasc.heads import ProjectionConfig, ProjectionHead  # noqa: F401


def _conv_norm(c_in: int, c_out: int, kernel: int, stride: tuple[int, int] | int, groups: int = 1,
               act: bool = True) -> nn.Sequential:
    """conv (index 0) + BatchNorm (index 1) [+ ReLU]: the `x.0.weight` / `x.1.*` key layout."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class GRN(nn.Module):
    """DCASE23 global response normalisation with scalar gamma/beta (identity at init)."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(2, 3), keepdim=True)
        nx = gx / (gx.mean(dim=1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, F, T), per (F, T) position; `weight`/`bias` of size C."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class Block(nn.Module):
    """Inverted bottleneck: 1x1 expand, 3x3 depthwise (stride), 1x1 project; residual if widths match."""

    def __init__(self, c_in: int, c_out: int, expansion: float, stride: tuple[int, int], grn: bool):
        super().__init__()
        e = make_divisible(c_in * expansion, 8)
        self.block = nn.Sequential(_conv_norm(c_in, e, 1, 1), _conv_norm(e, e, 3, stride, groups=e),
                                   _conv_norm(e, c_out, 1, 1, act=False))
        self.use_shortcut = c_in == c_out
        # count_include_pad=True (PyTorch default) as in the official code; it matters for odd sizes.
        self.shortcut = (nn.AvgPool2d(3, stride=stride, padding=1) if tuple(stride) != (1, 1)
                         else nn.Identity()) if self.use_shortcut else None
        self.after_block_norm = GRN() if grn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        if self.after_block_norm is not None:
            y = self.after_block_norm(y)
        return F.relu(y)


class CPMobile(nn.Module):
    """CP-Mobile classifier; `forward(x[B,1,F,T]) -> logits[B, n_classes]` as the official module."""

    def __init__(self, config: CPMobileConfig):
        super().__init__()
        self.config = config
        c = config.channels()
        self.in_c = nn.Sequential(_conv_norm(config.in_channels, c[0] // 4, 3, 2),
                                  _conv_norm(c[0] // 4, c[0], 3, 2))
        strides = config.stride_map()
        stages, index, c_in = [], 0, c[0]
        for k, depth in enumerate(config.blocks):
            blocks = []
            for _ in range(depth):
                index += 1
                name = f"b{index}"
                blocks.append((name, Block(c_in, c[k + 1], config.expansion, strides.get(name, (1, 1)),
                                           grn=config.variant == "dcase23")))
                c_in = c[k + 1]
            stages.append((f"s{k + 1}", nn.Sequential(OrderedDict(blocks))))
        self.stages = nn.Sequential(OrderedDict(stages))
        self.embed_dim = c[-1]
        head_norm = (ChannelLayerNorm(config.n_classes) if config.head_norm == "layer"
                     else nn.BatchNorm2d(config.n_classes))
        self.feed_forward = nn.Sequential(nn.Conv2d(c[-1], config.n_classes, 1, bias=False), head_norm,
                                          nn.AdaptiveAvgPool2d((1, 1)))
        p = config.projection
        self.projection = (ProjectionHead(c[-1], p.out_dim, p.hidden_dim, config.projection_norm)
                           if p is not None else None)
        self.apply(_init_weights)

    def forward_stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stem and per-stage outputs, keyed `in_c`, `s1`, `s2`, `s3` (for layer-by-layer checks)."""
        out = {"in_c": self.in_c(x)}
        h = out["in_c"]
        for name, stage in self.stages.named_children():
            h = stage(h)
            out[name] = h
        return out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.in_c(x))

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """The embedding: global mean of the last stage over frequency and time, (B, C_last)."""
        return features.mean(dim=(2, 3))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.feed_forward(features).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if any(p.is_meta for p in m.parameters(recurse=False)):
        return      # shape-only instance (counting); meta init imports torch._refs, ~2 s
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, ChannelLayerNorm)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module, *, include_projection: bool = False) -> int:
    """Trainable parameters of the classifier (the published counts exclude any projection head)."""
    skip = set() if include_projection or getattr(model, "projection", None) is None else {
        id(p) for p in model.projection.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def count_parameters_of(config: CPMobileConfig) -> int:
    """Parameter count of a config, from a meta-device instance (no memory, no init cost)."""
    with torch.device("meta"):
        return count_parameters(CPMobile(config))
