"""Safe checkpoint reading: never unpickles code, and explains a mismatch in terms of keys.

Every plugin loads weights through `read_checkpoint` so that the allow-list of pickled objects lives in
one place. `torch.load(weights_only=True)` refuses any global that is not allow-listed; we allow only
objects that official checkpoints are known to carry and that hold no code.
"""
from __future__ import annotations

import argparse
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from asc_bench.api import CheckpointError
from asc_bench.embedding.weights import sha256_file  # noqa: F401  (re-exported: plugins hash checkpoints with it)

# argparse.Namespace: AudioMAE's save_model stores the training args. Plain data, no code.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)


def read_checkpoint(path: str | Path) -> Any:
    """Load a `.pt/.pth/.ckpt` (weights-only pickle) or `.safetensors` file onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (pass --checkpoint with the path of the "
                              f"downloaded file, or --random-init to ask for random weights)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise CheckpointError(
            f"refused to load {path}: it contains pickled objects that are not plain tensors or data "
            f"({first}). asc-bench never runs code from a checkpoint; re-save the state dict with "
            f"torch.save(model.state_dict()) or safetensors.") from None
    except Exception as exc:  # a malformed file makes the unpickler fail in arbitrary ways (IndexError...)
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {type(exc).__name__}: {exc}") from None


def find_state_dict(obj: Any, candidates: Iterable[str] = ("model", "state_dict")) -> dict[str, torch.Tensor]:
    """Return the tensor mapping inside a checkpoint: the object itself or one of its nested entries."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in candidates:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                return find_state_dict(inner, candidates)
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"no state dict found in checkpoint (top-level entries: {keys}); expected a "
                          f"mapping of tensors, possibly under one of {list(candidates)}")


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Drop the first matching prefix from every key that has one (e.g. `module.`, `model.`)."""
    out: dict[str, torch.Tensor] = OrderedDict()
    prefixes = tuple(prefixes)
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p):]
                break
        out[key] = value
    return out


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str | Path,
              ignore: Iterable[str] = (), allow_missing: Iterable[str] = (), layout: str = "") -> None:
    """Strictly load `state` into `model`; keys starting with any `ignore` prefix are dropped first.

    On a mismatch the error lists the first few missing, unexpected and wrongly shaped keys and the
    expected layout, instead of PyTorch's wall of text.
    """
    ignore = tuple(ignore)
    allow_missing = tuple(allow_missing)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not (allow_missing and k.startswith(allow_missing))]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:5])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (first: {'; '.join(shapes[:3])})")
        hint = f" Expected layout: {layout}." if layout else ""
        raise CheckpointError(f"{source} does not fit the model: {'; '.join(parts)}.{hint} Is this the "
                              f"right file for this encoder, and do the encoder options match its size?")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
