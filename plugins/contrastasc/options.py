"""`--encoder-option key=value` parsing for the CP-Mobile encoders (values arrive as strings)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from asc_bench.api import UsageError
from asc_bench_plugins.contrastasc.cpmobile import NORM_PLACEMENTS, NORMS, VARIANTS
from asc_bench_plugins.contrastasc.frontend import FRONTENDS

OUTPUTS = ("embedding", "projection", "logits")
# Options that change the architecture; a student checkpoint's JSON fixes them.
ARCH_OPTIONS = ("variant", "base_channels", "multiplier", "expansion", "blocks", "strides", "n_classes",
                "norm", "norm_placement", "projection_dim", "projection_hidden")


@dataclass(frozen=True)
class OptionSpec:
    parse: Callable[[str], Any]
    help: str


def _choice(valid: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in valid:
            raise ValueError(f"expected one of {list(valid)}")
        return value
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def _blocks(text: str) -> tuple[int, ...]:
    value = tuple(int(p) for p in text.replace(" ", "").split(",") if p)
    if len(value) != 3 or min(value) < 1:
        raise ValueError("expected three positive stage depths such as 3,2,1")
    return value


def parse_strides(text: str) -> dict[str, tuple[int, int]]:
    """`b2:2x2,b4:2x1` -> {"b2": (2, 2), "b4": (2, 1)} (frequency x time); `none` -> {}."""
    text = text.replace(" ", "")
    if text.lower() in ("", "none"):
        return {}
    out: dict[str, tuple[int, int]] = {}
    for part in text.split(","):
        name, _, size = part.partition(":")
        f, _, t = size.lower().partition("x")
        if not name or not f or not t:
            raise ValueError("expected entries like b2:2x2 separated by commas")
        out[name] = (int(f), int(t))
    return out


OPTIONS: dict[str, OptionSpec] = {
    "variant": OptionSpec(_choice(VARIANTS), "dcase23 (GRN) or dcase24 (no GRN); detected from an "
                                            "official checkpoint when not given"),
    "base_channels": OptionSpec(_positive_int, "stem width before rounding to a multiple of 8"),
    "multiplier": OptionSpec(_positive_float, "channel multiplier per stage"),
    "expansion": OptionSpec(_positive_float, "expansion rate of the inverted bottlenecks"),
    "blocks": OptionSpec(_blocks, "blocks per stage, e.g. 3,2,1"),
    "strides": OptionSpec(parse_strides, "per-block strides, e.g. b2:2x2,b4:2x1 (default: the variant's)"),
    "n_classes": OptionSpec(_positive_int, "classes of the head (detected from an official checkpoint)"),
    "norm": OptionSpec(_choice(NORMS), "batch (official) or layer (ContrastASC student)"),
    "norm_placement": OptionSpec(_choice(NORM_PLACEMENTS), "where norm=layer puts the LayerNorm: head "
                                                           "(output block, default), projection, both"),
    "projection_dim": OptionSpec(_non_negative_int, "output size of a projection head (0 = none)"),
    "projection_hidden": OptionSpec(_non_negative_int, "hidden size of the projection head (0 = linear)"),
    "frontend": OptionSpec(_choice(FRONTENDS), "log-mel frontend (default: the variant's own)"),
    "output": OptionSpec(_choice(OUTPUTS), "embedding (mean of the last stage, default), projection "
                                           "(projection head, if the checkpoint has one) or logits"),
    "seed": OptionSpec(int, "seed of the random weights with --random-init (default 0)"),
}


def parse_options(options: Mapping[str, str]) -> dict[str, Any]:
    """Typed values of the options given; unknown names and bad values raise UsageError."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"unknown encoder option(s) {unknown} for CP-Mobile encoders; valid options: "
                         f"{', '.join(sorted(OPTIONS))}")
    parsed: dict[str, Any] = {}
    for key, raw in options.items():
        try:
            parsed[key] = OPTIONS[key].parse(str(raw))
        except ValueError as exc:
            raise UsageError(f"bad value {raw!r} for encoder option {key}: {exc} ({OPTIONS[key].help})") from None
    return parsed
