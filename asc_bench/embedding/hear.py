"""Use a HEAR-2021 style module (`load_model`, `get_scene_embeddings`) as an encoder, no plugin needed.

`asc-bench run --encoder hear:my_module [--checkpoint FILE]`: the module must be importable. HEAR
modules expect equal-length audio per call, so clips are embedded in groups of equal length.
"""
from __future__ import annotations

import importlib
from typing import Any

import torch

from asc_bench.api import EncoderEntry, EncoderRequest, UsageError

PREFIX = "hear:"


class HearEncoder(torch.nn.Module):
    def __init__(self, module_name: str, module: Any, model: Any):
        super().__init__()
        self.module_name = module_name
        self._api = module
        self.model = model if isinstance(model, torch.nn.Module) else None
        self._model = model
        self.sample_rate = int(model.sample_rate)
        self.embed_dim = int(model.scene_embedding_size)

    def config(self) -> dict[str, Any]:
        return {"hear_module": self.module_name, "version": str(getattr(self._api, "__version__", ""))}

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = torch.empty(wave.shape[0], self.embed_dim, dtype=torch.float32, device=wave.device)
        for n in torch.unique(lengths).tolist():
            rows = (lengths == n).nonzero().flatten()
            out[rows] = self._api.get_scene_embeddings(wave[rows, :n], self._model).float()
        return out


def hear_entry(name: str) -> EncoderEntry:
    module_name = name[len(PREFIX):]

    def build(request: EncoderRequest) -> HearEncoder:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"HEAR module '{module_name}' cannot be imported ({exc}); install it or add "
                             f"its folder to PYTHONPATH") from None
        for fn in ("load_model", "get_scene_embeddings"):
            if not callable(getattr(module, fn, None)):
                raise UsageError(f"'{module_name}' is not a HEAR module: it has no {fn}()")
        path = str(request.checkpoint) if request.checkpoint is not None else ""
        return HearEncoder(module_name, module, module.load_model(path) if path else module.load_model())

    # HEAR modules own their weights policy; a checkpoint is passed through when given.
    return EncoderEntry(name=name, build=build, description=f"HEAR module {module_name}",
                        requires_weights=False, plugin="hear")
