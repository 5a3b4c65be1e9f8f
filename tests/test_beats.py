"""BEATs against the official outputs in shared/fixtures/beats (reduced models, official file layout)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asc_bench.api import CheckpointError, EncoderRequest, UsageError
from asc_bench.embedding.frontends import BEATS, ClipTooShortError, beats_normalise, kaldi_fbank
from asc_bench_plugins.beats.encoder import build_beats, load_beats, summary
from asc_bench_plugins.beats.model import BEATs, BEATsConfig, flops_per_clip, relative_position_bucket
from asc_bench_plugins.beats.pos_conv import PosConv
from tests.fixtures_path import fixtures_dir

FEATURE_TOL = 1e-4      # README: given fbank_norm
END_TO_END_TOL = 1e-3   # README: from waveforms
# kaldi_fbank README: abs 5e-3 on the raw log-mel of a float64 fbank, divided by BEATs' 2 * 6.55582 (measured 1.6e-4).
FBANK_NORM_TOL = 5e-3 / (2 * 6.55582)


@pytest.fixture(scope="module")
def folder():
    return fixtures_dir() / "beats"


@pytest.fixture(scope="module")
def io(folder):
    return np.load(folder / "beats_pretrained_io.npz")


@pytest.fixture(scope="module")
def ft_io(folder):
    return np.load(folder / "beats_finetuned_io.npz")


@pytest.fixture(scope="module")
def model(folder):
    return load_beats(folder / "beats_pretrained.pt").eval()


def _encoder(folder, name="beats_pretrained.pt", **options):
    return build_beats(EncoderRequest(checkpoint=folder / name, random_init=False, options=options))


def _masked_mean(x, mask):
    return np.stack([x[i][~mask[i]].mean(0) for i in range(len(x))])


@pytest.mark.parametrize("autograd", [False, True], ids=["inference-fft-posconv", "autograd-direct-conv"])
def test_features_from_fbank_norm(model, io, autograd):
    fbank = torch.from_numpy(io["fbank_norm"])
    sample_mask = torch.from_numpy(io["padding_mask"])
    with torch.set_grad_enabled(autograd):
        np.testing.assert_allclose(model.patch_tokens(fbank).detach().numpy(), io["patch_tokens_ln"],
                                   rtol=0, atol=FEATURE_TOL)
        token_mask = model.official_token_mask(sample_mask, fbank.shape[1], 144)
        np.testing.assert_array_equal(token_mask.numpy(), io["out_padding_mask"])
        assert token_mask[0].nonzero().flatten().tolist() == list(range(100, 144))   # the quirk, as is
        last, states = model.forward_tokens(fbank, token_mask, keep_states=True)
        assert len(states) == 3
        for k, state in enumerate(states):
            np.testing.assert_allclose(state.detach().numpy(), io["layer_states"][k], rtol=0, atol=FEATURE_TOL,
                                       err_msg=f"layer state {k}")
        features, mask = model.extract_features(fbank, sample_mask)
        np.testing.assert_allclose(features.detach().numpy(), io["features"], rtol=0, atol=FEATURE_TOL)
        np.testing.assert_array_equal(mask.numpy(), io["out_padding_mask"])
        no_mask, none = model.extract_features(fbank, None)
        assert none is None
        np.testing.assert_allclose(no_mask.detach().numpy(), io["features_no_mask"], rtol=0, atol=FEATURE_TOL)


def test_official_batched_path_end_to_end_from_waveforms(folder, model, io):
    wave, lengths = torch.from_numpy(io["waveforms"]), torch.from_numpy(io["lengths"])
    with torch.inference_mode():
        fbank, _ = kaldi_fbank(wave, None, BEATS)
        np.testing.assert_allclose(beats_normalise(fbank).numpy(), io["fbank_norm"], rtol=0, atol=FBANK_NORM_TOL)
        features, mask = model.extract_features(beats_normalise(fbank), torch.from_numpy(io["padding_mask"]))
    np.testing.assert_allclose(features.numpy(), io["features"], rtol=0, atol=END_TO_END_TOL)
    emb = _encoder(folder, padding="official")(wave, lengths)
    expected = _masked_mean(io["features"], io["out_padding_mask"])
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=END_TO_END_TOL)


def test_per_clip_embedding_equals_each_clip_alone(folder, io):
    """Default padding: the batch gives each clip the embedding the official model gives it alone."""
    wave, lengths = torch.from_numpy(io["waveforms"]), torch.from_numpy(io["lengths"])
    encoder = _encoder(folder)
    emb = encoder(wave, lengths)
    expected = np.stack([io["single_0"][0].mean(0), io["single_1"][0].mean(0)])
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=END_TO_END_TOL)
    alone = encoder(wave[:1, :32000], lengths[:1])
    np.testing.assert_allclose(emb[:1].numpy(), alone.numpy(), rtol=0, atol=1e-5)   # same clip alone or batched: float32 op order only
    # The official batched path does depend on the batch (its misaligned mask): the option is not a no-op.
    official = _encoder(folder, padding="official")(wave, lengths)
    assert float((official[0] - emb[0]).abs().max()) > 1e-2
    assert encoder.config()["padding"] == "per-clip" and encoder.embed_dim == 192


def test_layer_and_pooling_options(folder, io):
    wave, lengths = torch.from_numpy(io["waveforms"]), torch.from_numpy(io["lengths"])
    mask = io["out_padding_mask"]
    for layer, k in (("0", 0), ("1", 1), ("-1", 2), ("-3", 0)):
        enc = _encoder(folder, padding="official", layer=layer)
        assert enc.config()["layer"] == k
        np.testing.assert_allclose(enc(wave, lengths).numpy(), _masked_mean(io["layer_states"][k], mask),
                                   rtol=0, atol=END_TO_END_TOL)
    feats = io["features"]
    peak = np.stack([feats[i][~mask[i]].max(0) for i in range(2)])
    std = np.stack([feats[i][~mask[i]].std(0) for i in range(2)])
    mean = _masked_mean(feats, mask)
    for pooling, expected in (("max", peak), ("meanmax", np.concatenate([mean, peak], 1)),
                              ("meanstd", np.concatenate([mean, std], 1))):
        enc = _encoder(folder, padding="official", pooling=pooling)
        out = enc(wave, lengths)
        assert out.shape == (2, enc.embed_dim) == expected.shape
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=END_TO_END_TOL)
    with pytest.raises(UsageError, match="out of range"):
        _encoder(folder, layer="3")


def test_finetuned_probs(folder, ft_io):
    ckpt_model = load_beats(folder / "beats_finetuned.pt").eval()
    wave, lengths = torch.from_numpy(ft_io["waveforms"]), torch.from_numpy(ft_io["lengths"])
    with torch.inference_mode():
        fbank = beats_normalise(kaldi_fbank(wave, None, BEATS)[0])
        features, mask = ckpt_model.extract_features(fbank, torch.from_numpy(ft_io["padding_mask"]))
        np.testing.assert_array_equal(mask.numpy(), ft_io["out_padding_mask"])
        np.testing.assert_allclose(ckpt_model.predict(features, mask).numpy(), ft_io["probs"], atol=1e-5)   # README: probs given fbank_norm (observed 6e-8 across threads)
        no_mask, _ = ckpt_model.extract_features(fbank, None)
        np.testing.assert_allclose(ckpt_model.predict(no_mask, None).numpy(), ft_io["probs_no_mask"], atol=1e-5)   # as above, no mask
    probs = _encoder(folder, "beats_finetuned.pt", output="probs", padding="official")
    assert probs.embed_dim == 527
    np.testing.assert_allclose(probs(wave, lengths).numpy(), ft_io["probs"], rtol=0, atol=1e-5)   # README: probs are sigmoid outputs, observed 6e-8
    # Embeddings of a fine-tuned file ignore the predictor.
    assert _encoder(folder, "beats_finetuned.pt")(wave, lengths).shape == (2, 128)
    with pytest.raises(UsageError, match="fine-tuned"):
        _encoder(folder, output="probs")


def test_relative_position_buckets_follow_the_spec():
    bucket = relative_position_bucket(900, 900, 320, 800).numpy()
    offset = np.arange(900)[None, :] - np.arange(900)[:, None]
    d = np.abs(offset)
    with np.errstate(divide="ignore"):
        large = np.minimum(80 + np.floor(np.log(d / 80) / np.log(10) * 80), 159)
    expected = np.where(d < 80, d, large) + 160 * (offset > 0)
    np.testing.assert_array_equal(bucket, expected)


@pytest.mark.parametrize("length", [1, 5, 64, 129, 130, 496])
def test_fft_positional_conv_equals_grouped_conv(length):
    torch.manual_seed(length)
    conv = PosConv(96, 128, 16)
    with torch.no_grad():
        conv.weight_g.uniform_(0.5, 2.0)
        conv.bias.normal_()
    x = torch.randn(3, length, 96)
    with torch.no_grad():
        direct = conv.direct(x)
        fast = conv.fft(x)
    np.testing.assert_allclose(fast.numpy(), direct.numpy(), rtol=0, atol=1e-5)   # FFT pos-conv vs direct conv, both float32


def test_random_init_sizes_and_errors():
    enc = build_beats(EncoderRequest(None, True, {"layers": "1", "dim": "64", "heads": "1", "ffn_dim": "128"}))
    cfg = enc.config()["architecture"]
    assert (cfg["encoder_layers"], cfg["encoder_embed_dim"], cfg["encoder_attention_heads"]) == (1, 64, 1)
    out = enc(torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000]))
    assert out.shape == (2, 64) and torch.isfinite(out).all()
    again = build_beats(EncoderRequest(None, True, {"layers": "1", "dim": "64", "heads": "1", "ffn_dim": "128"}))
    # Random weights depend only on the seed option.
    assert torch.equal(enc.model.encoder.layers[0].fc1.weight, again.model.encoder.layers[0].fc1.weight)
    with pytest.raises(CheckpointError, match="--random-init"):
        build_beats(EncoderRequest(None, False, {}))
    with pytest.raises(UsageError, match="Valid options: layer"):
        build_beats(EncoderRequest(None, True, {"layres": "2"}))
    with pytest.raises(UsageError, match="layers='two'"):
        build_beats(EncoderRequest(None, True, {"layers": "two"}))
    assert enc.min_samples == 2800
    assert enc(torch.zeros(1, 2800), torch.tensor([2800])).shape == (1, 64)     # exactly one time patch
    with pytest.raises(ClipTooShortError, match="2799 samples.*16 frames"):
        enc(torch.zeros(2, 2800), torch.tensor([2800, 2799]))


def test_size_options_refused_with_a_checkpoint(folder):
    with pytest.raises(UsageError, match="only applies with --random-init"):
        _encoder(folder, layers="2")


def test_autocast_bf16_close_to_float32(folder, io):
    wave, lengths = torch.from_numpy(io["waveforms"]), torch.from_numpy(io["lengths"])
    full = _encoder(folder)(wave, lengths)
    half = _encoder(folder, autocast="bf16")
    low = half(wave, lengths)
    assert low.dtype == torch.float32 and half.config()["autocast"] == "bf16"
    cos = torch.nn.functional.cosine_similarity(full, low, dim=1)
    assert float(cos.min()) > 0.99


def test_full_size_counts_match_the_spec():
    assert summary()["params"] == 90_311_792
    with torch.device("meta"):
        tuned = BEATs(BEATsConfig(finetuned_model=True))
    assert sum(p.numel() for p in tuned.parameters()) == 90_717_055
    assert len(tuned.state_dict()) == 252          # 250 + predictor weight and bias
    flops = flops_per_clip(BEATsConfig(), 998)
    # Spec section 7: patch+proj 0.5, conv pos-emb 4.7, layers 93.4 GFLOP per 10 s clip.
    assert math.isclose(flops["patch"] / 1e9, 0.5, abs_tol=0.05)
    assert math.isclose(flops["pos_conv"] / 1e9, 4.7, abs_tol=0.05)
    assert math.isclose(flops["layers"] / 1e9, 93.4, abs_tol=0.05)


def test_plugin_registers_beats():
    from asc_bench_plugins import beats

    seen = {}
    beats.register_encoders(register=lambda name, build, **meta: seen.setdefault(name, (build, meta)))
    build, meta = seen["beats"]
    assert build.resolve() is build_beats and meta["requires_weights"] is True and callable(meta["summary"])


def test_analytic_flops_agree_with_the_shape_counter():
    """flops_per_clip (used by the benchmark) against asc_bench.embedding.macs, an independent counter, on meta."""
    from asc_bench.embedding.macs import count_macs_report

    class Tokens(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, fbank):
            return self.model.forward_tokens(fbank)[0]

    cfg = BEATsConfig()
    with torch.device("meta"):
        model = BEATs(cfg)
    report = count_macs_report(Tokens(model), torch.empty(1, 998, 128, device="meta"))
    flops = flops_per_clip(cfg, 998)
    # The counter sees the positional conv only as the FFT path's small complex matmul ("matmul"), and
    # the gate as implemented: one (2H, D) projection of x instead of upstream's 64 -> 8 per head.
    counted = 2 * sum(v for k, v in report.by_kind.items() if k != "matmul")
    tokens, d, layers = 62 * 8, cfg.encoder_embed_dim, cfg.encoder_layers
    gate_here, gate_upstream = 2 * tokens * d * 2 * cfg.encoder_attention_heads, 2 * tokens * d * 8
    assert counted == flops["patch"] + flops["layers"] + layers * (gate_here - gate_upstream)


def test_state_dict_round_trips_with_official_names(model, folder):
    """q/k/v are fused inside the model, but state dicts keep upstream's names and values."""
    official = torch.load(folder / "beats_pretrained.pt", weights_only=True)["model"]
    state = model.state_dict()
    assert set(state) == set(official)
    for key, value in official.items():
        assert torch.equal(state[key], value), key
