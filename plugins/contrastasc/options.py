"""`--encoder-option key=value` parsing for the CP-Mobile encoders (values arrive as strings)."""
from __future__ import annotations

from typing import Any, Mapping

from asc_bench_plugins.contrastasc.cpmobile import NORM_PLACEMENTS, NORMS, VARIANTS
from asc_bench_plugins.contrastasc.frontend import FRONTENDS
from asc_bench_plugins.encoder_common import Option, choice, parse_options as parse_spec, positive_float, positive_int

OUTPUTS = ("embedding", "projection", "logits")
# Options that change the architecture; a student checkpoint's JSON fixes them.
ARCH_OPTIONS = ("variant", "base_channels", "multiplier", "expansion", "blocks", "strides", "n_classes",
                "norm", "norm_placement", "projection_dim", "projection_hidden")


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected an integer >= 0")
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


OPTIONS: dict[str, Option] = {
    "variant": Option(choice(*VARIANTS), None, "dcase23 (GRN) or dcase24 (no GRN); detected from an "
                                            "official checkpoint when not given"),
    "base_channels": Option(positive_int, None, "stem width before rounding to a multiple of 8"),
    "multiplier": Option(positive_float, None, "channel multiplier per stage"),
    "expansion": Option(positive_float, None, "expansion rate of the inverted bottlenecks"),
    "blocks": Option(_blocks, None, "blocks per stage, e.g. 3,2,1"),
    "strides": Option(parse_strides, None, "per-block strides, e.g. b2:2x2,b4:2x1 (default: the variant's)"),
    "n_classes": Option(positive_int, None, "classes of the head (detected from an official checkpoint)"),
    "norm": Option(choice(*NORMS), None, "batch (official) or layer (ContrastASC student)"),
    "norm_placement": Option(choice(*NORM_PLACEMENTS), None, "where norm=layer puts the LayerNorm: head "
                                                           "(output block, default), projection, both"),
    "projection_dim": Option(_non_negative_int, None, "output size of a projection head (0 = none)"),
    "projection_hidden": Option(_non_negative_int, None, "hidden size of the projection head (0 = linear)"),
    "frontend": Option(choice(*FRONTENDS), None, "log-mel frontend (default: the variant's own)"),
    "output": Option(choice(*OUTPUTS), None, "embedding (mean of the last stage, default), projection "
                                           "(projection head, if the checkpoint has one) or logits"),
    "seed": Option(int, None, "seed of the random weights with --random-init (default 0)"),
}


def parse_options(options: Mapping[str, str]) -> dict[str, Any]:
    """Typed values of the options given (only those: a checkpoint fixes the rest); unknown names and
    bad values raise UsageError."""
    parsed = parse_spec("CP-Mobile", options, OPTIONS)
    return {key: value for key, value in parsed.items() if key in options}
