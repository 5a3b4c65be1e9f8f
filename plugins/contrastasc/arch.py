"""CP-Mobile's configuration, its front end's sizes and the presets, with sizes in closed form, without
torch.

`asc-bench list encoders` names the presets by parameter count and shows their MACs; both come from
here (formulas, microseconds) instead of building models (importing torch alone costs seconds).
`tests/test_startup.py` checks `param_count` against really built `CPMobile` modules and `macs` against
the shape-based counter `asc_bench.embedding.macs.count_macs`, for every preset and both variants.
The network (`cpmobile.py`), heads (`heads.py`) and front end (`frontend.py`) import these names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

# ------------------------------------------------------------------------------------------ front end
FRONTENDS = ("dcase23", "dcase24")
SAMPLE_RATE = 32000
N_FFT, WIN, HOP, N_MELS = 4096, 3072, 500, 256


def min_samples(kind: str) -> int:
    """Shortest input the reflect padding accepts (dcase23 loses one sample to pre-emphasis)."""
    return N_FFT // 2 + 1 + (1 if kind == "dcase23" else 0)


def n_frames(kind: str, n_samples: int) -> int:
    """Frames of the log-mel for `n_samples` valid samples (after padding very short clips)."""
    n = max(n_samples, min_samples(kind))
    return 1 + (n - 1) // HOP if kind == "dcase23" else 1 + n // HOP


# ------------------------------------------------------------------------------------------ heads
HEAD_NORMS = ("none", "layer")


@dataclass(frozen=True)
class ProjectionConfig:
    """Shape of a network's projection head; its input size is the network's embedding size and its
    normalisation follows the network's `norm`/`norm_placement`, so neither is repeated here."""

    out_dim: int = 128
    hidden_dim: int = 0

    def __post_init__(self) -> None:
        if self.out_dim <= 0 or self.hidden_dim < 0:
            raise ValueError(f"projection dims must be positive (out_dim={self.out_dim}, "
                             f"hidden_dim={self.hidden_dim})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProjectionConfig":
        return cls(out_dim=int(data["out_dim"]), hidden_dim=int(data.get("hidden_dim", 0)))


# ------------------------------------------------------------------------------------------ network
VARIANTS = ("dcase23", "dcase24")
NORMS = ("batch", "layer")
NORM_PLACEMENTS = ("head", "projection", "both")
DEFAULT_STRIDES: dict[str, dict[str, tuple[int, int]]] = {
    "dcase23": {"b2": (2, 2), "b4": (2, 1)},
    "dcase24": {"b2": (1, 1), "b3": (1, 2), "b4": (2, 1)},
}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet rounding: nearest multiple of `divisor`, never more than 10% below `v`."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class CPMobileConfig:
    """Every setting that shapes a CP-Mobile; `strides=None` means the variant's official strides (and
    strides equal to them are stored as None)."""

    variant: str = "dcase23"
    base_channels: int = 32
    multiplier: float = 2.3
    expansion: float = 3.0
    blocks: tuple[int, ...] = (3, 2, 1)
    strides: tuple[tuple[str, tuple[int, int]], ...] | None = None
    n_classes: int = 10
    norm: str = "batch"
    norm_placement: str = "head"
    projection: ProjectionConfig | None = None
    in_channels: int = 1

    def __post_init__(self) -> None:
        for name, value, valid in (("variant", self.variant, VARIANTS), ("norm", self.norm, NORMS),
                                   ("norm_placement", self.norm_placement, NORM_PLACEMENTS)):
            if value not in valid:
                raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")
        if len(self.blocks) != 3 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be three positive stage depths, got {self.blocks}")
        if self.norm == "layer" and self.norm_placement in ("projection", "both") and self.projection is None:
            raise ValueError("norm_placement=projection puts the LayerNorm in the projection head, but the "
                             "model has none: give it a projection head (projection_dim) or use head")
        if self.strides is not None:
            strides = normalise_strides(dict(self.strides))
            # Spelled-out official strides mean "the variant's strides": one canonical form, so equal
            # architectures compare equal (e.g. a config read back from a student's JSON).
            object.__setattr__(self, "strides", None if dict(strides) == DEFAULT_STRIDES[self.variant] else strides)
        n_total = sum(self.blocks)
        for name, _ in self.stride_map().items():
            if not (name.startswith("b") and name[1:].isdigit() and 1 <= int(name[1:]) <= n_total):
                raise ValueError(f"stride key {name!r} names no block (blocks are b1..b{n_total})")

    def stride_map(self) -> dict[str, tuple[int, int]]:
        if self.strides is None:
            return dict(DEFAULT_STRIDES[self.variant])
        return {k: (int(v[0]), int(v[1])) for k, v in self.strides}

    @property
    def head_norm(self) -> str:
        return "layer" if self.norm == "layer" and self.norm_placement in ("head", "both") else "batch"

    @property
    def projection_norm(self) -> str:
        return "layer" if self.norm == "layer" and self.norm_placement in ("projection", "both") else "none"

    def channels(self) -> list[int]:
        """[C0, C1, C2, C3]: stem output then the output width of each stage."""
        c0 = make_divisible(self.base_channels, 8)
        return [c0] + [make_divisible(c0 * self.multiplier ** k, 8) for k in range(3)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; strides are written out explicitly so the file does not depend on defaults."""
        return {"variant": self.variant, "base_channels": self.base_channels, "multiplier": self.multiplier,
                "expansion": self.expansion, "blocks": list(self.blocks),
                "strides": {k: list(v) for k, v in self.stride_map().items()},
                "n_classes": self.n_classes, "norm": self.norm, "norm_placement": self.norm_placement,
                "projection": None if self.projection is None else self.projection.to_dict(),
                "in_channels": self.in_channels}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CPMobileConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CP-Mobile config fields {unknown}; valid: {sorted(known)}")
        strides = data.get("strides")
        proj = data.get("projection")
        return cls(variant=str(data.get("variant", "dcase23")),
                   base_channels=int(data.get("base_channels", 32)),
                   multiplier=float(data.get("multiplier", 2.3)), expansion=float(data.get("expansion", 3.0)),
                   blocks=tuple(int(b) for b in data.get("blocks", (3, 2, 1))),
                   strides=None if strides is None else normalise_strides(strides),
                   n_classes=int(data.get("n_classes", 10)), norm=str(data.get("norm", "batch")),
                   norm_placement=str(data.get("norm_placement", "head")),
                   projection=None if proj is None else ProjectionConfig.from_dict(proj),
                   in_channels=int(data.get("in_channels", 1)))

    def with_(self, **changes: Any) -> "CPMobileConfig":
        return replace(self, **changes)


def normalise_strides(strides: Mapping[str, Any]) -> tuple[tuple[str, tuple[int, int]], ...]:
    return tuple(sorted((str(k), (int(v[0]), int(v[1]))) for k, v in strides.items()))


def _conv_out(n: int, kernel: int, stride: int) -> int:
    """Output length of a convolution with padding kernel // 2 (every CP-Mobile convolution)."""
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


def _blocks(config: CPMobileConfig) -> list[tuple[int, int, int, tuple[int, int]]]:
    """(c_in, expanded, c_out, stride) of every block b1, b2, ... in order."""
    c = config.channels()
    strides = config.stride_map()
    out, index, c_in = [], 0, c[0]
    for k, depth in enumerate(config.blocks):
        for _ in range(depth):
            index += 1
            out.append((c_in, make_divisible(c_in * config.expansion, 8), c[k + 1], strides.get(f"b{index}", (1, 1))))
            c_in = c[k + 1]
    return out


def param_count(config: CPMobileConfig) -> int:
    """Trainable parameters of `CPMobile(config)` without its projection head (what the published
    counts and `cpmobile.count_parameters` report): bias-free convolutions, two per BatchNorm, two per
    DCASE23 GRN, and the 1x1 head convolution with its (Batch or Layer) norm."""
    c = config.channels()
    q = c[0] // 4
    total = (9 * config.in_channels * q + 2 * q) + (9 * q * c[0] + 2 * c[0])          # stem
    grn = 2 if config.variant == "dcase23" else 0
    for c_in, e, c_out, _ in _blocks(config):
        total += (c_in * e + 2 * e) + (9 * e + 2 * e) + (e * c_out + 2 * c_out) + grn  # expand, depthwise, project
    return total + c[-1] * config.n_classes + 2 * config.n_classes


def macs(config: CPMobileConfig, frames: int) -> int:
    """Multiply-accumulates of the classifier's forward on one (in_channels, N_MELS, frames) log-mel,
    counted as `asc_bench.embedding.macs` counts convolutions (output elements x input channels per
    group x kernel area; norms, pooling and activations are free)."""
    c = config.channels()
    f, t = N_MELS, frames
    q = c[0] // 4
    f, t = _conv_out(f, 3, 2), _conv_out(t, 3, 2)
    total = f * t * q * config.in_channels * 9
    f, t = _conv_out(f, 3, 2), _conv_out(t, 3, 2)
    total += f * t * c[0] * q * 9
    for c_in, e, c_out, (sf, st) in _blocks(config):
        total += f * t * e * c_in                                       # 1x1 expand
        f, t = _conv_out(f, 3, sf), _conv_out(t, 3, st)
        total += f * t * e * 9                                          # 3x3 depthwise
        total += f * t * c_out * e                                      # 1x1 project
    return total + f * t * config.n_classes * c[-1]                     # 1x1 head


def macs_per_second(config: CPMobileConfig, frontend: str | None = None) -> int:
    """Model MACs for one second of 32 kHz audio (classifier forward; the STFT front end is not
    counted, as in the DCASE complexity rules)."""
    return macs(config, n_frames(frontend or config.variant, SAMPLE_RATE))


# ------------------------------------------------------------------------------------------ presets
@dataclass(frozen=True)
class Preset:
    base_channels: int
    multiplier: float
    expansion: float

    def config(self) -> CPMobileConfig:
        return CPMobileConfig(base_channels=self.base_channels, multiplier=self.multiplier,
                              expansion=self.expansion)


# The x1.8 / 2.1 family (DCASE24 training script) at four widths, plus the DCASE23 default.
PRESETS: tuple[Preset, ...] = (Preset(8, 1.8, 2.1), Preset(16, 1.8, 2.1), Preset(24, 1.8, 2.1),
                               Preset(32, 1.8, 2.1), Preset(32, 2.3, 3.0))


def size_label(params: int) -> str:
    """Parameter count -> `6k`-style label (three significant figures, then whole thousands)."""
    digits = len(str(params))
    scale = 10 ** max(digits - 3, 0)
    truncated = params // scale * scale
    return f"{int(truncated / 1000 + 0.5)}k"


def preset_name(preset: Preset) -> str:
    return f"contrastasc-cpm-{size_label(param_count(preset.config()))}"


def summary_of(config: CPMobileConfig) -> dict[str, Any]:
    """Params, MACs per second and shape facts for `asc-bench list encoders` (closed form, so cheap
    enough to compute on every call)."""
    return {"params": param_count(config), "macs_per_s": macs_per_second(config),
            "embed_dim": config.channels()[-1], "variant": config.variant,
            "base_channels": config.base_channels, "multiplier": config.multiplier,
            "expansion": config.expansion, "widths": config.channels()[1:]}


def description(preset: Preset) -> str:
    return (f"CP-Mobile student (base {preset.base_channels}, x{preset.multiplier}, expansion "
            f"{preset.expansion}); loads official CP-JKU checkpoints or asc-bench students")
