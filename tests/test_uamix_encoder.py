"""uaMix-MAE loader against shared/fixtures/uamix (a synthetic, assumed training-checkpoint layout)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from asc_bench.api import CheckpointError, EncoderRequest
from asc_bench_plugins.uamix_mae.encoder import build_uamix, summary
from tests.fixtures_path import fixtures_dir

TOL = 1e-5      # README


@pytest.fixture(scope="module")
def folder():
    return fixtures_dir() / "uamix"


@pytest.fixture(scope="module")
def io(folder):
    return np.load(folder / "uamix_io.npz")


@pytest.fixture(scope="module")
def saved(folder):
    return torch.load(folder / "uamix_synthetic.ckpt", weights_only=True)["state_dict"]


def _pooled_and_tokens(path, io):
    enc = build_uamix(EncoderRequest(path, False, {"num_heads": "2"}))
    with torch.inference_mode():
        tokens = enc.vit.forward_tokens(torch.from_numpy(io["model_input"]))
        return enc, enc.vit.pool(tokens).numpy(), tokens.numpy()


def test_fixture_checkpoint(folder, io):
    enc, pooled, tokens = _pooled_and_tokens(folder / "uamix_synthetic.ckpt", io)
    np.testing.assert_allclose(tokens, io["tokens"], rtol=0, atol=TOL)
    np.testing.assert_allclose(pooled, io["pooled"], rtol=0, atol=TOL)
    cfg = enc.config()
    assert cfg["encoder"] == "uamix-mae" and cfg["fc_norm"] == "checkpoint"
    assert cfg["architecture"]["embed_dim"] == 128 and cfg["architecture"]["depth"] == 1
    assert enc.embed_dim == 128 and enc.sample_rate == 16000


@pytest.mark.parametrize("prefix,nest", [("module.backbone.", "state_dict"), ("module.", "model"),
                                         ("encoder.", None), ("", "state_dict")])
def test_other_prefixes_and_nesting(tmp_path, saved, io, prefix, nest):
    renamed = {}
    for key, value in saved.items():
        if key.startswith("backbone."):
            renamed[prefix + key[len("backbone."):]] = value
        else:           # projector / predictor / queue stay beside the encoder
            renamed[key] = value
    path = tmp_path / "variant.ckpt"
    torch.save({nest: renamed, "epoch": 7} if nest else renamed, path)
    _, pooled, _ = _pooled_and_tokens(path, io)
    np.testing.assert_allclose(pooled, io["pooled"], rtol=0, atol=TOL)


def test_missing_encoder_is_reported(tmp_path, saved):
    path = tmp_path / "projector_only.ckpt"
    torch.save({"state_dict": {k: v for k, v in saved.items() if not k.startswith("backbone.")}}, path)
    with pytest.raises(CheckpointError, match="no AudioMAE ViT.*projector"):
        build_uamix(EncoderRequest(path, False, {"num_heads": "2"}))


def test_missing_block_tensor_is_listed(tmp_path, saved):
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": {k: v for k, v in saved.items() if k != "backbone.blocks.0.attn.qkv.weight"}}, path)
    with pytest.raises(CheckpointError, match="blocks.0.attn.qkv.weight"):
        build_uamix(EncoderRequest(path, False, {"num_heads": "2"}))


def test_random_init_and_summary():
    enc = build_uamix(EncoderRequest(None, True, {"dim": "32", "depth": "1", "num_heads": "2"}))
    assert enc.config()["encoder"] == "uamix-mae"
    assert enc(torch.randn(1, 3000), torch.tensor([3000])).shape == (1, 32)
    assert summary()["params"] == 85_648_128
