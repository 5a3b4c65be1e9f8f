"""Use a HEAR-2021 style module (`load_model`, `get_scene_embeddings`) as an encoder, no plugin needed.

`asc-bench run --encoder hear:my_module [--checkpoint FILE]`: the module must be importable. As in
HEAR's own runner, `--checkpoint FILE` is passed to `load_model(FILE)` (else `load_model()` is
called). HEAR modules expect equal-length audio per call, so clips are embedded in groups of equal
length, and a clip's embedding never depends on its batch mates.

Modules of any framework work: the audio is handed over as the framework the module expects
(a torch tensor, a TensorFlow tensor or a numpy array) and `get_scene_embeddings` may return any of
the three. The framework is detected from the model object `load_model` returns (its class comes from
torch, or from tensorflow/keras), else from the frameworks the module imports (torch before
tensorflow), else numpy; `--encoder-option framework=torch|tensorflow|numpy` overrides it. The module's
distribution name and version (from the installed package's metadata, else its `__version__`) go
into `config()`, hence the cache key and the record.
"""
from __future__ import annotations

import importlib
import types
from importlib import metadata
from typing import Any

import numpy as np
import torch

from asc_bench.api import EncoderEntry, EncoderRequest, UsageError

PREFIX = "hear:"
FRAMEWORKS = ("torch", "tensorflow", "numpy")
_TF_ROOTS = ("tensorflow", "keras", "tf_keras")


def detect_framework(module: Any, model: Any) -> str:
    """"torch", "tensorflow" or "numpy": what the module's `get_scene_embeddings` takes (see the module doc)."""
    for cls in type(model).__mro__:
        root = (cls.__module__ or "").split(".")[0]
        if root == "torch":
            return "torch"
        if root in _TF_ROOTS:
            return "tensorflow"
    imported = {v.__name__.split(".")[0] for v in vars(module).values() if isinstance(v, types.ModuleType)}
    if "torch" in imported:
        return "torch"
    if imported & set(_TF_ROOTS):
        return "tensorflow"
    return "numpy"


def distribution_of(module_name: str, module: Any) -> tuple[str, str]:
    """(distribution name, version) of the installed package providing `module_name`; ("", __version__) if none."""
    top = module_name.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "", str(getattr(module, "__version__", ""))


def to_torch(out: Any) -> torch.Tensor:
    """A float32 torch tensor from a torch, TensorFlow (anything with `.numpy()`) or numpy result."""
    if isinstance(out, torch.Tensor):
        return out.detach().float()
    if callable(getattr(out, "numpy", None)):
        out = out.numpy()
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


class HearEncoder(torch.nn.Module):
    def __init__(self, module_name: str, module: Any, model: Any, framework: str | None = None):
        super().__init__()
        self.module_name = module_name
        self._api = module
        self.model = model if isinstance(model, torch.nn.Module) else None
        self._model = model
        self.sample_rate = int(model.sample_rate)
        self.embed_dim = int(model.scene_embedding_size)
        self.framework = framework or detect_framework(module, model)
        self.distribution, self.version = distribution_of(module_name, module)

    def config(self) -> dict[str, Any]:
        return {"hear_module": self.module_name, "version": self.version, "distribution": self.distribution,
                "framework": self.framework}

    def num_parameters(self) -> int | None:
        """Parameters of the module's model: torch parameters or TensorFlow variables (None if unknown)."""
        if self.model is not None:
            return sum(p.numel() for p in self.model.parameters())
        variables = getattr(self._model, "variables", None)
        if self.framework == "tensorflow" and variables is not None:
            return int(sum(int(np.prod(v.shape)) for v in variables))
        return None

    def _audio(self, wave: torch.Tensor) -> Any:
        if self.framework == "torch":
            return wave
        audio = wave.detach().cpu().numpy()
        if self.framework == "tensorflow":
            import tensorflow as tf

            return tf.convert_to_tensor(audio)
        return audio

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out = torch.empty(wave.shape[0], self.embed_dim, dtype=torch.float32, device=wave.device)
        for n in torch.unique(lengths).tolist():
            rows = (lengths == n).nonzero().flatten()
            emb = to_torch(self._api.get_scene_embeddings(self._audio(wave[rows, :n]), self._model))
            if tuple(emb.shape) != (len(rows), self.embed_dim):
                raise UsageError(f"HEAR module '{self.module_name}': get_scene_embeddings returned shape "
                                 f"{tuple(emb.shape)} for {len(rows)} clips; expected ({len(rows)}, "
                                 f"{self.embed_dim}) (scene_embedding_size)")
            out[rows] = emb.to(out.device)
        return out


def hear_entry(name: str) -> EncoderEntry:
    module_name = name[len(PREFIX):]

    def build(request: EncoderRequest) -> HearEncoder:
        unknown = sorted(set(request.options) - {"framework"})
        if unknown:
            raise UsageError(f"{name}: unknown encoder option(s) {', '.join(unknown)}; HEAR modules take only "
                             f"framework={'|'.join(FRAMEWORKS)}")
        framework = request.options.get("framework")
        if framework is not None and framework not in FRAMEWORKS:
            raise UsageError(f"{name}: --encoder-option framework={framework}: use one of {', '.join(FRAMEWORKS)}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError(f"HEAR module '{module_name}' cannot be imported ({exc}); install it or add "
                             f"its folder to PYTHONPATH") from None
        for fn in ("load_model", "get_scene_embeddings"):
            if not callable(getattr(module, fn, None)):
                raise UsageError(f"'{module_name}' is not a HEAR module: it has no {fn}()")
        path = str(request.checkpoint) if request.checkpoint is not None else ""
        model = module.load_model(path) if path else module.load_model()
        return HearEncoder(module_name, module, model, framework)

    # HEAR modules own their weights policy; a checkpoint is passed through when given.
    return EncoderEntry(name=name, build=build, description=f"HEAR module {module_name}",
                        requires_weights=False, plugin="hear")
