"""AudioMAE against the official outputs in shared/fixtures/audiomae (reduced models, official layouts)."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.frontends import AUDIOMAE, kaldi_fbank
from asc_bench_plugins.audiomae.encoder import build_audiomae, summary
from asc_bench_plugins.audiomae.vit import AudioViT, ViTConfig, flops_per_input
from tests.fixtures_path import fixtures_dir

TOL = 1e-5              # README: pooled/tokens/logits given model_input
INPUT_TOL = 1e-3        # README: model_input recomputed from the waveform
FBANK_TOL = 5e-3        # kaldi_fbank README: raw log-mel of a float64/differently-ordered fbank (measured 3.2e-3)
END_TO_END_TOL = 1e-3   # pooled output from the waveform: the model_input tier carried through a near-isometric ViT


@pytest.fixture(scope="module")
def folder():
    return fixtures_dir() / "audiomae"


@pytest.fixture(scope="module")
def io(folder):
    return np.load(folder / "audiomae_io.npz")


def _encoder(folder, name, **options):
    return build_audiomae(EncoderRequest(checkpoint=folder / name, random_init=False, options=options))


def _batch(io):
    w0, w1 = torch.from_numpy(io["wav_0"]), torch.from_numpy(io["wav_1"])
    wave = torch.zeros(2, len(w1))
    wave[0, :len(w0)], wave[1] = w0, w1
    return wave, torch.tensor([len(w0), len(w1)])


def test_pretrained_layout_tokens_and_pooled(folder, io):
    enc = _encoder(folder, "audiomae_pretrained_layout.pth", num_heads="3")
    cfg = enc.config()
    assert cfg["architecture"]["embed_dim"] == 144 and cfg["architecture"]["depth"] == 2
    assert cfg["fc_norm"].startswith("identity")
    with torch.inference_mode():
        tokens = enc.vit.forward_tokens(torch.from_numpy(io["model_input"]))
        np.testing.assert_allclose(tokens.numpy(), io["pt_tokens"], rtol=0, atol=TOL)
        np.testing.assert_allclose(enc.vit.pool(tokens).numpy(), io["pt_pooled"], rtol=0, atol=TOL)
    # The position table is the file's, never regenerated.
    stored = torch.load(folder / "audiomae_pretrained_layout.pth", weights_only=True)["model"]["pos_embed"]
    assert torch.equal(enc.vit.pos_embed, stored)
    assert torch.equal(enc.vit.fc_norm.weight, torch.ones(144)) and torch.equal(enc.vit.fc_norm.bias, torch.zeros(144))


def test_finetuned_layout_pooled_and_logits(folder, io):
    enc = _encoder(folder, "audiomae_finetuned_layout.pth", num_heads="2")
    assert enc.config()["fc_norm"] == "checkpoint" and enc.embed_dim == 128
    with torch.inference_mode():
        pooled = enc.vit.pool(enc.vit.forward_tokens(torch.from_numpy(io["model_input"])))
        np.testing.assert_allclose(pooled.numpy(), io["ft_pooled"], rtol=0, atol=TOL)
        np.testing.assert_allclose(enc.vit.head(pooled).numpy(), io["ft_logits"], rtol=0, atol=TOL)
        np.testing.assert_allclose(enc.vit(torch.from_numpy(io["model_input"])).numpy(), io["ft_logits"],
                                   rtol=0, atol=TOL)


def test_end_to_end_cut_policy_matches_official(folder, io):
    enc = _encoder(folder, "audiomae_pretrained_layout.pth", num_heads="3", window_policy="cut")
    wave, lengths = _batch(io)
    fbank, frames = kaldi_fbank(wave, lengths, AUDIOMAE)
    assert frames.tolist() == [398, 1048]
    np.testing.assert_allclose(fbank[0, :398].numpy(), io["fbank_0"], rtol=0, atol=FBANK_TOL)
    np.testing.assert_allclose(fbank[1].numpy(), io["fbank_1"], rtol=0, atol=FBANK_TOL)
    x, owner = enc.windows(fbank, frames)
    assert owner.tolist() == [0, 1]
    np.testing.assert_allclose(x.numpy(), io["model_input"], rtol=0, atol=INPUT_TOL)
    np.testing.assert_allclose(enc(wave, lengths).numpy(), io["pt_pooled"], rtol=0, atol=END_TO_END_TOL)


def test_average_policy_averages_evenly_spaced_full_windows(folder, io):
    enc = _encoder(folder, "audiomae_pretrained_layout.pth", num_heads="3")
    assert enc.config()["window_policy"] == "average"
    wave, lengths = _batch(io)
    emb = enc(wave, lengths)
    # Clip 1 has 1048 frames: windows [0, 1024) and [24, 1048), both full, averaged with equal weight.
    fb = torch.from_numpy(io["fbank_1"])
    windows = torch.stack([fb[:1024], fb[24:1048]])
    x = ((windows + 4.2677393) / (2 * 4.5689974)).unsqueeze(1)
    with torch.inference_mode():
        expected = enc.vit.pool(enc.vit.forward_tokens(x)).mean(0)
    np.testing.assert_allclose(emb[1].numpy(), expected.numpy(), rtol=0, atol=END_TO_END_TOL)
    # Short clips are unaffected by the policy, and independent of the batch they are in.
    np.testing.assert_allclose(emb[0].numpy(), io["pt_pooled"][0], rtol=0, atol=END_TO_END_TOL)
    alone = enc(wave[:1, : len(io["wav_0"])], lengths[:1])
    np.testing.assert_allclose(alone[0].numpy(), emb[0].numpy(), rtol=0, atol=1e-5)   # same clip alone or batched: float32 op order only


def test_file_with_training_args_loads(folder, io, tmp_path):
    """Official save_model adds an argparse.Namespace; the loader reads only `model`."""
    state = torch.load(folder / "audiomae_finetuned_layout.pth", weights_only=True)["model"]
    path = tmp_path / "finetuned_with_args.pth"
    torch.save({"model": state, "epoch": 3, "args": argparse.Namespace(lr=1e-3, model="vit_base")}, path)
    enc = build_audiomae(EncoderRequest(path, False, {"num_heads": "2"}))
    with torch.inference_mode():
        pooled = enc.vit.pool(enc.vit.forward_tokens(torch.from_numpy(io["model_input"])))
    np.testing.assert_allclose(pooled.numpy(), io["ft_pooled"], rtol=0, atol=TOL)


def test_options_and_errors(folder):
    with pytest.raises(UsageError, match="num_heads"):
        _encoder(folder, "audiomae_pretrained_layout.pth", num_heads="7")      # 144 is not a multiple of 7
    with pytest.raises(UsageError, match="Valid options: num_heads"):
        _encoder(folder, "audiomae_pretrained_layout.pth", window="cut")
    with pytest.raises(UsageError, match="window_policy='crop'"):
        _encoder(folder, "audiomae_pretrained_layout.pth", window_policy="crop")
    with pytest.raises(UsageError, match="only applies with --random-init"):
        _encoder(folder, "audiomae_pretrained_layout.pth", depth="2")
    with pytest.raises(CheckpointError, match="--random-init"):
        build_audiomae(EncoderRequest(None, False, {}))
    beats = fixtures_dir() / "beats" / "beats_pretrained.pt"
    with pytest.raises(CheckpointError, match="pos_embed"):
        build_audiomae(EncoderRequest(beats, False, {}))


def test_random_init_small_forward():
    enc = build_audiomae(EncoderRequest(None, True, {"dim": "64", "depth": "1", "num_heads": "2"}))
    assert enc.embed_dim == 64 and enc.config()["weights"] == "random"
    out = enc(torch.randn(2, 4000) * 0.1, torch.tensor([4000, 1000]))
    assert out.shape == (2, 64) and torch.isfinite(out).all()


def test_full_size_counts_match_the_spec():
    assert summary()["params"] == 85_648_128
    with torch.device("meta"):
        tuned = AudioViT(ViTConfig(num_classes=527))
    # Spec: 85,659,407 trainable (the fixed position table excluded).
    assert sum(p.numel() for p in tuned.parameters() if p.requires_grad) == 85_659_407
    assert abs(flops_per_input(ViTConfig()) / 1e9 - 97.0) < 0.1      # spec section 7


def test_plugin_registers_audiomae():
    from asc_bench_plugins import audiomae

    seen = {}
    audiomae.register_encoders(register=lambda name, build, **meta: seen.setdefault(name, (build, meta)))
    build, meta = seen["audiomae"]
    assert build.resolve() is build_audiomae and meta["requires_weights"] is True and callable(meta["summary"])


def test_analytic_flops_agree_with_the_shape_counter():
    from asc_bench.embedding.macs import count_macs

    with torch.device("meta"):
        vit = AudioViT(ViTConfig())
    assert 2 * count_macs(vit, torch.empty(1, 1, 1024, 128, device="meta")) == flops_per_input(ViTConfig())
