"""Any Hugging Face audio model as an encoder, no plugin needed: `--encoder hf:MODEL`.

MODEL is a hub id (`facebook/wav2vec2-base`, optionally `@revision`: a branch, tag or commit) or a
local folder written by `save_pretrained`. The model is loaded with `AutoModel` and its audio is
prepared by its own `AutoFeatureExtractor`; there is no per-architecture code. Tested on tiny
random-weight wav2vec2, HuBERT, WavLM, data2vec-audio, AST, Whisper (its encoder) and CLAP (its
audio tower, `pooling=cls`) models (tests/test_hf.py).

Guarantees:
- Offline first. A hub id is looked up in the local Hugging Face cache before any network access;
  with `HF_HUB_OFFLINE=1` nothing is downloaded. The weights are identified by the resolved commit
  hash (hub) or by the sha256 of the folder's files (local folder): `weights_id`, which together with
  `config()` (the options, architecture and transformers version) keys the embedding cache.
- Weights are never silently random: loading fails when any weight of the encoder is missing from
  the files. Code from the hub (`trust_remote_code`) is refused unless `trust_remote_code=true` is
  passed as an encoder option.
- A clip's embedding does not depend on its batch mates: clips are batched with padding and the
  attention mask only when the model's feature extractor declares that it returns an attention mask
  (`return_attention_mask`); otherwise only clips of equal length share a forward pass.
- Pooling `mean` averages the chosen layer over the frames that carry audio: the valid length of each
  clip is mapped through the model's own `_get_feat_extract_output_lengths` (or an integer stride
  between the feature and output frames), so padding added by the batch or by the feature extractor
  (Whisper's 30-s window) is left out. Models whose outputs are not frame-aligned (AST's patches)
  average all output tokens; their feature extractor pads every clip to a fixed size, so this does
  not depend on the batch either. Pooling `cls` takes the model's own `pooler_output` (AST: the mean
  of its CLS and distillation tokens); models without one refuse it.
- Long clips respect the model's input limit (Whisper `n_samples`, 30 s; AST `max_length` frames of
  10 ms): they are cut into consecutive, non-overlapping windows of that length (the last one
  shorter), each window is embedded, and the window vectors are averaged, weighted by their valid
  frames (`mean`) or samples (`cls`). The policy is part of `config()`.
"""
from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from asc_bench.api import CheckpointError, EncoderEntry, EncoderRequest, UsageError
from asc_bench.embedding.weights import WeightsIdentity, folder_identity

PREFIX = "hf:"
OPTIONS = {"layer": "last, mean (over the transformer layers) or an index into hidden_states (0 = input)",
           "pooling": "mean (valid frames) or cls (the model's pooler_output)",
           "window_s": "window length in seconds for long clips (default: the model's own limit, if any)",
           "trust_remote_code": "true to allow code shipped with the model (refused by default)"}
INSTALL_HINT = "pip install 'asc-bench[hf]'  (installs transformers)"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Files of other frameworks that a PyTorch model never needs.
_IGNORE = ["*.h5", "*.msgpack", "*.onnx", "*.ot", "*.tflite", "*.pb", "flax_model*", "tf_model*", "*.mlmodel"]
WINDOW_COMBINE = "consecutive non-overlapping windows; mean of window vectors weighted by valid frames (mean) or samples (cls)"


def transformers_module() -> Any:
    try:
        import transformers
    except ImportError:
        raise UsageError(f"hf: encoders need the transformers package, which is not installed: {INSTALL_HINT}") from None
    return transformers


@dataclass(frozen=True)
class HfOptions:
    layer: int | str = "last"
    pooling: str = "mean"
    window_s: float | None = None
    trust_remote_code: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> "HfOptions":
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UsageError(f"hf: unknown encoder option(s) {', '.join(unknown)}; known: "
                             + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
        layer: int | str = options.get("layer", "last")
        if layer not in ("last", "mean"):
            try:
                layer = int(layer)
            except ValueError:
                raise UsageError(f"hf: --encoder-option layer={layer}: use last, mean or an integer index") from None
        pooling = options.get("pooling", "mean")
        if pooling not in ("mean", "cls"):
            raise UsageError(f"hf: --encoder-option pooling={pooling}: use mean or cls")
        window_s = None
        if "window_s" in options:
            try:
                window_s = float(options["window_s"])
            except ValueError:
                window_s = -1.0
            if not window_s > 0:
                raise UsageError(f"hf: --encoder-option window_s={options['window_s']}: give a positive number of seconds")
        trust = options.get("trust_remote_code", "false").lower()
        if trust not in ("true", "false", "1", "0", "yes", "no"):
            raise UsageError(f"hf: --encoder-option trust_remote_code={trust}: use true or false")
        return cls(layer=layer, pooling=pooling, window_s=window_s, trust_remote_code=trust in ("true", "1", "yes"))


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_model(spec: str, trust_remote_code: bool = False) -> tuple[Path, WeightsIdentity, str | None]:
    """(local folder, weights identity, commit hash or None) for a hub id or a folder; offline first."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UsageError(f"hf:{spec}: {folder} has no config.json; save the model with save_pretrained(folder)")
        return folder.resolve(), folder_identity(folder), None
    repo, _, revision = spec.partition("@")
    if spec.startswith((".", "/", "~")) or not _REPO_ID.match(repo):
        raise UsageError(f"hf:{spec}: no such folder, and not a hub id (owner/name[@revision])")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError(f"hf: encoders need huggingface_hub: {INSTALL_HINT}") from None
    ignore = _IGNORE + ([] if trust_remote_code else ["*.py"])
    try:
        path = snapshot_download(repo, revision=revision or None, local_files_only=True)
    except Exception as cached_exc:   # not in the local cache (huggingface_hub raises several kinds)
        if _offline():
            raise UsageError(f"hf:{spec}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set "
                             f"({type(cached_exc).__name__}). Download it once with `hf download {repo}"
                             f"{' --revision ' + revision if revision else ''}` or unset HF_HUB_OFFLINE") from None
        try:
            path = snapshot_download(repo, revision=revision or None, ignore_patterns=ignore)
        except Exception as exc:
            raise UsageError(f"hf:{spec}: cannot download it from the hub ({type(exc).__name__}: {exc}); check "
                             f"the name and revision, or pass a local save_pretrained folder") from None
    commit = Path(path).name
    return Path(path), WeightsIdentity(source="hf-hub", id=f"hf:{repo}@{commit}"), commit


def _refuse_remote_code(folder: Path, spec: str) -> None:
    """Checked from the JSON files before transformers is asked to load anything."""
    for name in ("config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file() and "auto_map" in json.loads(path.read_text()):
            raise UsageError(f"hf:{spec}: {name} asks for code shipped with the model (auto_map), which is not "
                             f"run by default. If you trust it, pass --encoder-option trust_remote_code=true")


def _default_window(fe: Any) -> int | None:
    """The model's own input limit in samples, read from its feature extractor; None when it has none."""
    for attr in ("n_samples", "nb_max_samples"):         # Whisper (chunk_length * rate), CLAP
        if isinstance(getattr(fe, attr, None), int):
            return int(getattr(fe, attr))
    if isinstance(getattr(fe, "max_length", None), int) and hasattr(fe, "num_mel_bins"):
        return int(fe.max_length) * int(fe.sampling_rate) // 100   # Kaldi fbank frames of 10 ms (AST)
    return None


class HfEncoder(torch.nn.Module):
    """A loaded transformers audio model behind the asc-bench encoder contract (see the module doc)."""

    def __init__(self, spec: str, model: Any, backbone: torch.nn.Module, fe: Any, opts: HfOptions,
                 weights: WeightsIdentity, revision: str | None, version: str):
        super().__init__()
        self.spec, self.opts, self.weights, self.revision = spec, opts, weights, revision
        self.weights_id = weights.id
        self.backbone = backbone
        self.fe = fe
        self.sample_rate = int(fe.sampling_rate)
        self.architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
        self.model_type = str(getattr(model.config, "model_type", ""))
        self.transformers_version = version
        self.input_name = str(getattr(backbone, "main_input_name", "input_values"))
        call = inspect.signature(fe.__call__).parameters
        self._ask_mask = "return_attention_mask" in call
        pad = call.get("padding")
        self._pad_longest = pad is not None and pad.default in (False, None)
        self.padded_batches = bool(getattr(fe, "return_attention_mask", False))
        self._pass_mask = self.padded_batches and "attention_mask" in inspect.signature(backbone.forward).parameters
        limit = _default_window(fe)
        window = limit if opts.window_s is None else int(round(opts.window_s * self.sample_rate))
        if limit is not None and window > limit:
            raise UsageError(f"hf:{spec}: window_s={opts.window_s} exceeds the model's input limit of "
                             f"{limit / self.sample_rate:g} s (its feature extractor would cut the rest)")
        self.window = window
        self._lengths_fn = getattr(backbone, "_get_feat_extract_output_lengths", None)
        self.eval()
        try:
            with torch.inference_mode():
                probe = self._outputs(self._features([np.zeros(min(self.sample_rate, window or self.sample_rate),
                                                               np.float32)]))
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"hf:{spec}: a forward pass of {type(backbone).__name__} on 1 s of silence failed "
                             f"({type(exc).__name__}: {exc}); hf: drives audio models whose forward takes the "
                             f"feature extractor's output alone (e.g. not a text model)") from None
        hidden = probe.hidden_states
        self.n_hidden = len(hidden) if hidden is not None else 0
        if isinstance(opts.layer, int) and not -self.n_hidden <= opts.layer < self.n_hidden:
            raise UsageError(f"hf:{spec}: layer={opts.layer} is out of range: this model has {self.n_hidden} "
                             f"hidden states (0 = input embeddings, {self.n_hidden - 1} = last layer)")
        if opts.layer == "mean" and self.n_hidden < 2:
            raise UsageError(f"hf:{spec}: layer=mean needs the model's hidden states, which it does not return")
        if opts.pooling == "cls":
            if getattr(probe, "pooler_output", None) is None:
                raise UsageError(f"hf:{spec}: pooling=cls: {self.architecture} has no pooled (CLS) output; "
                                 f"use pooling=mean")
            if opts.layer != "last":
                raise UsageError(f"hf:{spec}: pooling=cls is the model's pooler on its last layer; "
                                 f"use layer=last with it, or pooling=mean")
        self.embed_dim = int(self._pool(probe, None)[0].shape[-1])
        self.min_samples = self._shortest_input()
        self.padding_leaks = self.padded_batches and self._padding_changes_outputs()
        if self.padding_leaks:
            self.padded_batches = self._pass_mask = False

    def _padding_changes_outputs(self) -> bool:
        """Whether a clip padded beside a longer one embeds differently from the clip alone.

        Some models mix padded frames into valid ones despite the mask (data2vec-audio's stacked
        positional convolutions); for them the batching falls back to equal-length groups.
        """
        n = min(self.sample_rate, self.window or self.sample_rate)
        rng = np.random.default_rng(0)
        short, long = (rng.standard_normal(k).astype(np.float32) * 0.1 for k in (n // 2, n))
        with torch.inference_mode():
            alone = self._pool(self._outputs(self._features([short])), None)[0]
            batched = self._pool(self._outputs(self._features([short, long])), None)[0][:1]
        return not torch.allclose(alone, batched, rtol=1e-4, atol=1e-5)

    # ------------------------------------------------------------------------------------------ identity
    def config(self) -> dict[str, Any]:
        return {"model": self.spec, "weights_id": self.weights_id, "revision": self.revision,
                "architecture": self.architecture, "model_type": self.model_type,
                "backbone": type(self.backbone).__name__, "layer": self.opts.layer, "pooling": self.opts.pooling,
                "sample_rate": self.sample_rate, "window_samples": self.window,
                "window_policy": WINDOW_COMBINE if self.window else "none (the model takes any length)",
                "batching": "padded with attention mask" if self.padded_batches else
                ("equal-length groups (padding changes this model's outputs)" if self.padding_leaks
                 else "equal-length groups (the feature extractor returns no attention mask)"),
                "trust_remote_code": self.opts.trust_remote_code, "transformers": self.transformers_version}

    def weights_identity(self) -> WeightsIdentity:
        return self.weights

    # ------------------------------------------------------------------------------------------ forward
    def _features(self, segments: list[np.ndarray]) -> Any:
        kwargs: dict[str, Any] = {"sampling_rate": self.sample_rate, "return_tensors": "pt"}
        if self._ask_mask:
            kwargs["return_attention_mask"] = True
        if self._pad_longest:
            kwargs["padding"] = "longest"
        return self.fe(segments, **kwargs)

    def _outputs(self, batch: Any) -> Any:
        device = next(self.backbone.parameters()).device
        if self.input_name not in batch:
            raise UsageError(f"hf:{self.spec}: the feature extractor gives {sorted(batch)} but the model reads "
                             f"'{self.input_name}'; it is not an audio model asc-bench can drive")
        inputs = {self.input_name: batch[self.input_name].to(device)}
        if self._pass_mask and "attention_mask" in batch:
            inputs["attention_mask"] = batch["attention_mask"].to(device)
        out = self.backbone(**inputs, output_hidden_states=True, return_dict=True)
        out.mask = batch.get("attention_mask")
        return out

    def _valid_frames(self, mask: torch.Tensor | None, frames: int, rows: int, device: torch.device) -> torch.Tensor:
        """[B, frames] bool: output frames that carry audio (all, when the outputs are not frame-aligned)."""
        if mask is None:
            return torch.ones(rows, frames, dtype=torch.bool, device=device)
        given = mask.sum(-1).to(torch.int64)
        if self._lengths_fn is not None:
            n = torch.as_tensor(self._lengths_fn(given)).to(torch.int64)
        elif mask.shape[1] % frames == 0:
            stride = mask.shape[1] // frames
            n = (given + stride - 1) // stride
        else:
            return torch.ones(rows, frames, dtype=torch.bool, device=device)
        n = n.clamp(1, frames).to(device)
        return torch.arange(frames, device=device)[None, :] < n[:, None]

    def _pool(self, out: Any, samples: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(vectors [B, D], weights [B]) for one forward pass."""
        if self.opts.pooling == "cls":
            vec = out.pooler_output
            weight = samples.to(vec) if samples is not None else torch.ones(vec.shape[0], device=vec.device)
            return vec.float(), weight.float()
        layer = self.opts.layer
        if layer == "last":
            h = out.last_hidden_state
        elif layer == "mean":
            h = torch.stack(tuple(out.hidden_states[1:])).mean(0)
        else:
            h = out.hidden_states[int(layer)]
        if h.dim() != 3:
            raise UsageError(f"hf:{self.spec}: {type(self.backbone).__name__} gives hidden states of shape "
                             f"{tuple(h.shape)}, not [batch, frames, features]; use pooling=cls (its pooler_output)")
        valid = self._valid_frames(out.mask, h.shape[1], h.shape[0], h.device)
        weight = valid.sum(1).float()
        return (h.float() * valid[..., None]).sum(1) / weight[:, None], weight

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        segments: list[tuple[int, np.ndarray]] = []
        audio = wave.detach().float().cpu().numpy()
        for row, n in enumerate(lengths.tolist()):
            x = audio[row, :int(n)]
            step = self.window or max(len(x), 1)
            segments += [(row, x[s:s + step]) for s in range(0, max(len(x), 1), step)]
        if self.padded_batches:
            groups = [list(range(len(segments)))]
        else:
            by_len: dict[int, list[int]] = {}
            for j, (_, x) in enumerate(segments):
                by_len.setdefault(len(x), []).append(j)
            groups = list(by_len.values())
        total = torch.zeros(wave.shape[0], self.embed_dim, dtype=torch.float64)
        weights = torch.zeros(wave.shape[0], dtype=torch.float64)
        chunk = max(int(wave.shape[0]), 1)
        for group in groups:
            for b in range(0, len(group), chunk):
                part = group[b:b + chunk]
                segs = [segments[j][1] for j in part]
                vec, w = self._pool(self._outputs(self._features(segs)),
                                    torch.tensor([len(s) for s in segs], dtype=torch.float32))
                rows = torch.tensor([segments[j][0] for j in part])
                total.index_add_(0, rows, (vec.double() * w.double()[:, None]).cpu())
                weights.index_add_(0, rows, w.double().cpu())
        return (total / weights[:, None]).to(torch.float32).to(wave.device)

    def _shortest_input(self) -> int:
        """The fewest samples that give at least one output frame (raw-waveform models), else 1."""
        if self._lengths_fn is None or self.input_name != "input_values":
            return 1
        lo, hi = 1, self.sample_rate
        if int(self._lengths_fn(torch.tensor(hi))) < 1:
            return 1
        while lo < hi:
            mid = (lo + hi) // 2
            if int(self._lengths_fn(torch.tensor(mid))) >= 1:
                hi = mid
            else:
                lo = mid + 1
        return lo


def _encoder_of(model: Any, inputs: set[str]) -> torch.nn.Module:
    """The audio encoder inside a model: the model itself, its audio tower, or the encoder of an encoder-decoder.

    When the model does not read what the feature extractor produces (a joint text-audio model such
    as CLAP), the sub-model that does (CLAP's `audio_model`) is the encoder.
    """
    backbone = model
    if hasattr(model, "get_encoder"):
        try:
            backbone = model.get_encoder(modality="audio")
        except TypeError:                    # transformers < 5 has get_encoder() without modality
            backbone = model
        if backbone is model and getattr(model.config, "is_encoder_decoder", False):
            backbone = model.get_encoder()
    if getattr(backbone, "main_input_name", None) not in inputs:
        for child in model.children():
            if hasattr(child, "config") and getattr(child, "main_input_name", None) in inputs:
                return child
    return backbone


def _missing_encoder_weights(model: Any, backbone: torch.nn.Module, missing: list[str]) -> list[str]:
    if backbone is model:
        return list(missing)
    prefix = next((name + "." for name, mod in model.named_modules() if mod is backbone), "")
    return [k for k in missing if k.startswith(prefix)]


def load_hf_encoder(spec: str, options: Mapping[str, str]) -> HfEncoder:
    """Resolve, check and load `spec` (see the module doc); raises UsageError/CheckpointError with the fix."""
    opts = HfOptions.parse(options)
    tf = transformers_module()
    folder, weights, revision = resolve_model(spec, opts.trust_remote_code)
    if not opts.trust_remote_code:
        _refuse_remote_code(folder, spec)
    common = {"local_files_only": True, "trust_remote_code": opts.trust_remote_code}
    try:
        fe = tf.AutoFeatureExtractor.from_pretrained(folder, **common)
    except Exception as exc:
        raise UsageError(f"hf:{spec}: no audio feature extractor in {folder} ({type(exc).__name__}: {exc}); "
                         f"save it beside the model with feature_extractor.save_pretrained(folder)") from None
    try:
        model, info = tf.AutoModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True, **common)
    except Exception as exc:
        raise UsageError(f"hf:{spec}: AutoModel cannot load {folder} ({type(exc).__name__}: {exc})") from None
    sample = fe([np.zeros(int(fe.sampling_rate), np.float32)], sampling_rate=int(fe.sampling_rate))
    backbone = _encoder_of(model, set(sample.keys()))
    missing = _missing_encoder_weights(model, backbone, list(info.get("missing_keys", [])))
    if missing:
        raise CheckpointError(f"hf:{spec}: {len(missing)} encoder weights are not in the files (they would be "
                              f"random): {', '.join(sorted(missing)[:5])}{' ...' if len(missing) > 5 else ''}")
    return HfEncoder(spec, model, backbone, fe, opts, weights, revision, tf.__version__)


def hf_entry(name: str) -> EncoderEntry:
    spec = name[len(PREFIX):]
    if not spec:
        raise UsageError("--encoder hf:MODEL needs a hub id (owner/name[@revision]) or a save_pretrained folder")

    def build(request: EncoderRequest) -> HfEncoder:
        if request.random_init or request.checkpoint is not None:
            raise UsageError(f"{name}: a Hugging Face model brings its own weights; drop --checkpoint/"
                             f"--random-init (save other weights with save_pretrained and pass that folder)")
        return load_hf_encoder(spec, request.options)

    def weights_id(request: EncoderRequest) -> WeightsIdentity:
        """The snapshot's commit or the folder's content hash, resolved without loading the model."""
        return resolve_model(spec, HfOptions.parse(request.options).trust_remote_code)[1]

    return EncoderEntry(name=name, build=build, description=f"Hugging Face model {spec}",
                        requires_weights=False, plugin="hf", weights_id=weights_id)


__all__ = ["PREFIX", "HfEncoder", "HfOptions", "hf_entry", "load_hf_encoder", "resolve_model"]
