"""`--encoder hf:MODEL`: tiny random-weight transformers models, built and saved by the tests (no network)."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_json

transformers = pytest.importorskip("transformers")

from asc_bench.api import CheckpointError, UsageError  # noqa: E402
from asc_bench.embedding.hf import hf_entry, load_hf_encoder  # noqa: E402
from asc_bench.plugins import get_manager  # noqa: E402
from asc_bench.runner import build_encoder  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
CONV = dict(conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2)
STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True)


def _configs() -> dict:
    T = transformers
    return {
        # wav2vec2 as in wav2vec2-large-lv60 (layer norm, attention mask) and as in wav2vec2-base (group norm, none)
        "wav2vec2": (T.Wav2Vec2Config(**SMALL, **CONV, **STABLE), T.Wav2Vec2FeatureExtractor(return_attention_mask=True)),
        "wav2vec2-base-style": (T.Wav2Vec2Config(**SMALL, **CONV), T.Wav2Vec2FeatureExtractor(return_attention_mask=False)),
        "hubert": (T.HubertConfig(**SMALL, **CONV), T.Wav2Vec2FeatureExtractor(return_attention_mask=False)),
        "wavlm": (T.WavLMConfig(**SMALL, **CONV, **STABLE, num_buckets=32, max_bucket_distance=100),
                  T.Wav2Vec2FeatureExtractor(return_attention_mask=True)),
        "data2vec-audio": (T.Data2VecAudioConfig(**SMALL, **{**CONV, "num_conv_pos_embeddings": 2}, conv_pos_kernel_size=4),
                           T.Wav2Vec2FeatureExtractor(return_attention_mask=True)),
        # AST limited to 64 frames (0.64 s) and Whisper to a 1-s window, so the windowing is exercised.
        "ast": (T.ASTConfig(**SMALL, max_length=64, num_mel_bins=32),
                T.ASTFeatureExtractor(max_length=64, num_mel_bins=32)),
        "whisper": (T.WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                    decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                                    max_source_positions=50, max_target_positions=16, vocab_size=64, pad_token_id=0,
                                    bos_token_id=1, eos_token_id=2, decoder_start_token_id=1),
                    T.WhisperFeatureExtractor(feature_size=80, chunk_length=1)),
        # CLAP (unfused, as laion/clap-htsat-unfused): the audio tower inside the joint text-audio model
        "clap": (T.ClapConfig(audio_config=T.ClapAudioConfig(
                     hidden_size=32, depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16,
                     window_size=4, spec_size=32, num_mel_bins=16, projection_dim=16, enable_fusion=False,
                     patch_size=4, patch_stride=(4, 4)).to_dict(),
                     text_config=T.ClapTextConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=32, vocab_size=100, projection_dim=16).to_dict(),
                     projection_dim=16),
                 T.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=1, truncation="rand_trunc")),
    }


ARCHS = sorted(_configs())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """arch -> folder written by save_pretrained (random weights from a fixed seed)."""
    root = tmp_path_factory.mktemp("hf-models")
    folders = {}
    for arch, (config, fe) in _configs().items():
        torch.manual_seed(0)
        model = transformers.AutoModel.from_config(config)
        model.save_pretrained(root / arch)
        fe.save_pretrained(root / arch)
        folders[arch] = root / arch
    return folders


def _clips(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [torch.from_numpy((rng.standard_normal(n) * 0.1).astype(np.float32)) for n in lengths]


def _batch(clips):
    lengths = torch.tensor([len(c) for c in clips])
    wave = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        wave[i, :len(c)] = c
    return wave, lengths


def _embed(enc, clips):
    with torch.inference_mode():
        return enc(*_batch(clips))


@pytest.mark.parametrize("arch", ARCHS)
def test_padded_batch_equals_each_clip_alone(tiny, arch):
    enc = load_hf_encoder(str(tiny[arch]), {"pooling": "cls"} if arch == "clap" else {})
    clips = _clips([8000, 5000, 20000, 3000])       # 20000 samples are longer than AST's and Whisper's window
    batched = _embed(enc, clips)
    alone = torch.cat([_embed(enc, [c]) for c in clips])
    assert batched.shape == (4, enc.embed_dim) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)
    # different clips give different embeddings (the test is not passing on constant outputs)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)


def test_embedding_is_the_models_own_forward_pooled_by_hand(tiny):
    folder = tiny["wav2vec2"]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(folder)
    clips = _clips([6000, 3500], seed=3)
    by_hand = {"last": [], "1": [], "mean": []}
    with torch.inference_mode():
        for c in clips:
            inputs = fe(c.numpy(), sampling_rate=16000, return_tensors="pt")
            out = model(**inputs, output_hidden_states=True)
            frames = int(model._get_feat_extract_output_lengths(torch.tensor(len(c))))
            assert frames == out.last_hidden_state.shape[1]
            by_hand["last"].append(out.last_hidden_state[0].mean(0))
            by_hand["1"].append(out.hidden_states[1][0].mean(0))
            by_hand["mean"].append(torch.stack(out.hidden_states[1:])[:, 0].mean(0).mean(0))
    for layer, expected in by_hand.items():
        enc = load_hf_encoder(str(folder), {"layer": layer})
        torch.testing.assert_close(_embed(enc, clips), torch.stack(expected), rtol=1e-4, atol=1e-5)


def test_cls_pooling_is_the_models_pooler_output_and_is_refused_without_one(tiny):
    folder = tiny["ast"]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(folder)
    clip = _clips([6000], seed=4)[0]                 # shorter than AST's 64 frames: one window
    with torch.inference_mode():
        expected = model(**fe(clip.numpy(), sampling_rate=16000, return_tensors="pt")).pooler_output
    enc = load_hf_encoder(str(folder), {"pooling": "cls"})
    torch.testing.assert_close(_embed(enc, [clip]), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError, match="no pooled"):
        load_hf_encoder(str(tiny["wav2vec2"]), {"pooling": "cls"})


def test_long_clip_is_windowed_at_the_models_limit(tiny):
    enc = load_hf_encoder(str(tiny["whisper"]), {})
    assert enc.window == enc.fe.n_samples == 16000 and enc.config()["window_samples"] == 16000
    a, b = _clips([16000, 8000], seed=5)
    whole = _embed(enc, [torch.cat([a, b])])
    # Whisper: one output frame per two 10-ms feature frames; the windows are weighted by valid frames.
    wa, wb = ((-(-len(x) // enc.fe.hop_length) - 1) // 2 + 1 for x in (a, b))
    expected = (_embed(enc, [a]) * wa + _embed(enc, [b]) * wb) / (wa + wb)
    torch.testing.assert_close(whole, expected, rtol=1e-4, atol=1e-5)


def test_data2vec_padding_leak_is_detected_and_batching_falls_back(tiny):
    enc = load_hf_encoder(str(tiny["data2vec-audio"]), {})
    assert enc.padding_leaks and "padding changes" in enc.config()["batching"]
    assert load_hf_encoder(str(tiny["wav2vec2"]), {}).config()["batching"] == "padded with attention mask"


@pytest.mark.slow
def test_options_and_weights_change_the_cache_key_and_the_params_are_counted(tiny, tmp_path):
    folder = tmp_path / "w2v"
    shutil.copytree(tiny["wav2vec2"], folder)
    manager = get_manager()
    last = build_encoder(manager, f"hf:{folder}")
    mean = build_encoder(manager, f"hf:{folder}", options={"layer": "mean"})
    assert last.identity() != mean.identity()
    assert last.params == sum(p.numel() for p in transformers.AutoModel.from_pretrained(folder).parameters())
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
    combined = hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    assert last.weights == f"sha256:{combined}" and last.weights_source["files"] == files
    config = json.loads((folder / "config.json").read_text())
    config["layerdrop"] = 0.05                       # any edit of a file gives another identity
    (folder / "config.json").write_text(json.dumps(config))
    assert build_encoder(manager, f"hf:{folder}").identity() != last.identity()


@pytest.mark.parametrize("arch, encoder", [("whisper", "WhisperEncoder"), ("clap", "ClapAudioModel")])
def test_only_the_audio_encoder_is_kept(tiny, arch, encoder):
    enc = load_hf_encoder(str(tiny[arch]), {"pooling": "cls"} if arch == "clap" else {})
    assert type(enc.backbone).__name__ == encoder
    assert sum(p.numel() for p in enc.parameters()) < sum(
        p.numel() for p in transformers.AutoModel.from_pretrained(tiny[arch]).parameters())


def test_clap_mean_pooling_is_refused_with_the_fix(tiny):
    with pytest.raises(UsageError, match="use pooling=cls"):     # its hidden states are 2-d feature maps
        load_hf_encoder(str(tiny["clap"]), {})


def test_bad_options_are_usage_errors(tiny):
    folder = str(tiny["wav2vec2"])
    for options, message in [({"layers": "1"}, "unknown encoder option"), ({"layer": "first"}, "layer=first"),
                             ({"layer": "7"}, "out of range"), ({"pooling": "max"}, "pooling=max"),
                             ({"window_s": "0"}, "window_s=0")]:
        with pytest.raises(UsageError, match=message):
            load_hf_encoder(folder, options)
    with pytest.raises(UsageError, match="exceeds the model's input limit"):
        load_hf_encoder(str(tiny["whisper"]), {"window_s": "5"})
    with pytest.raises(UsageError, match="no such folder"):
        load_hf_encoder("./not-there", {})
    with pytest.raises(UsageError, match="--random-init"):
        build_encoder(get_manager(), f"hf:{folder}", random_init=True)


def test_remote_code_is_refused_unless_asked_for(tiny, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny["wav2vec2"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="trust_remote_code=true"):
        load_hf_encoder(str(folder), {})


def test_missing_encoder_weights_are_an_error_not_random_weights(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny["hubert"], folder)
    state = load_file(folder / "model.safetensors")
    dropped = next(k for k in state if "encoder.layers.1" in k)
    del state[dropped]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="would be random"):
        load_hf_encoder(str(folder), {})


def test_without_transformers_the_message_names_the_extra(monkeypatch, tiny):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UsageError, match=r"asc-bench\[hf\]"):
        hf_entry(f"hf:{tiny['wav2vec2']}").build(
            __import__("asc_bench.api", fromlist=["EncoderRequest"]).EncoderRequest(None, False, {}))


def _fake_hub_cache(root: Path, repo: str, folder: Path, commit: str) -> Path:
    """The layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/files."""
    storage = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, storage / "snapshots" / commit)
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    return storage


def test_hub_id_resolves_offline_from_the_local_cache_to_its_commit(tiny, tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = hashlib.sha1(b"tiny").hexdigest()
    _fake_hub_cache(tmp_path / "hub", "acme/tiny-hubert", tiny["hubert"], commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for spec in ("acme/tiny-hubert", f"acme/tiny-hubert@{commit}"):
        enc = load_hf_encoder(spec, {})
        assert enc.weights_id == f"hf:acme/tiny-hubert@{commit}" and enc.config()["revision"] == commit
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        load_hf_encoder("acme/not-downloaded", {})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["wav2vec2", "wavlm", "ast", "whisper"])
def test_cli_runs_the_demo_task_offline_and_records_the_content_hash(tiny, arch, demo_root, tmp_path):
    rec = run_json("--encoder", f"hf:{tiny[arch]}", "--task", "demo-5way1shot", "--param", "episodes=20",
                   "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"), "--results-dir",
                   str(tmp_path / "r"), env={"HF_HUB_OFFLINE": "1"})
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tiny[arch].iterdir())}
    assert rec["encoder"]["weights_source"]["files"] == files and rec["encoder"]["weights_source"]["source"] == "hf-folder"
    assert rec["encoder"]["weights"].startswith("sha256:") and rec["encoder"]["config"]["layer"] == "last"
    assert rec["encoder"]["params"] > 0 and rec["summary"]["n"] == 20


def test_hub_id_not_cached_and_hub_unreachable_is_a_usage_error(tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants

    with socket.socket() as s:                       # a local port with nothing listening: the "hub" is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(UsageError, match="cannot download it from the hub"):
        load_hf_encoder("acme/tiny-absent", {})
    assert not any((tmp_path / "hub").rglob("*.safetensors"))
