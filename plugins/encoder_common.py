"""Small helpers the transformer encoder plugins share: option parsing, autocast, meta-device sizes.

Not a plugin itself (it registers nothing).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Mapping

import torch

from asc_bench.api import UsageError

AUTOCAST_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Option:
    """One `--encoder-option` the encoder understands: parser of the string value, default, help."""

    parse: Callable[[str], Any]
    default: Any
    help: str


def choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"expected one of {', '.join(values)}")
        return text
    return parse


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("expected a positive number")
    return value


def parse_options(encoder: str, given: Mapping[str, str], spec: Mapping[str, Option]) -> dict[str, Any]:
    """Parse string options against `spec`; unknown names or bad values raise a UsageError that lists
    the valid options."""
    unknown = sorted(set(given) - set(spec))
    if unknown:
        valid = "; ".join(f"{name} ({opt.help}" + (f", default {opt.default})" if opt.default is not None else ")")
                          for name, opt in spec.items())
        raise UsageError(f"unknown --encoder-option {', '.join(unknown)} for encoder '{encoder}'. "
                         f"Valid options: {valid}.")
    out = {name: opt.default for name, opt in spec.items()}
    for name, text in given.items():
        try:
            out[name] = spec[name].parse(str(text).strip())
        except ValueError as exc:
            raise UsageError(f"bad --encoder-option {name}={text!r} for encoder '{encoder}': {exc} "
                             f"({spec[name].help}).") from None
    return out


def autocast(kind: str, device: torch.device) -> ContextManager[Any]:
    """Autocast for the network part (the filterbank always runs in float32)."""
    dtype = AUTOCAST_DTYPES[kind]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_seeded(factory: Callable[[], torch.nn.Module], seed: int) -> torch.nn.Module:
    """Random weights that depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def count_params_meta(factory: Callable[[], torch.nn.Module]) -> int:
    """Parameter count of a model built on the meta device: no memory, no initialisation cost."""
    with torch.device("meta"):
        model = factory()
    return sum(p.numel() for p in model.parameters())
