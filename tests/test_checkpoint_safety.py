"""Checkpoints never run code, and a checkpoint that does not fit says which keys are wrong."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from asc_bench.api import CheckpointError, EncoderRequest
from asc_bench_plugins.audiomae.encoder import build_audiomae
from asc_bench_plugins.beats.encoder import build_beats
from asc_bench_plugins.uamix_mae.encoder import build_uamix
from tests.fixtures_path import fixtures_dir

BUILDERS = {"beats": build_beats, "audiomae": build_audiomae, "uamix-mae": build_uamix}


class Payload:
    """Unpickling this calls open(marker, 'w'): proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save({"cfg": {"encoder_layers": 1}, "model": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    return path, marker


def test_payload_is_live(tmp_path):
    """Positive control: an unsafe loader does run the payload, so the refusal below means something."""
    path, marker = _malicious(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("encoder", sorted(BUILDERS))
def test_code_in_a_checkpoint_is_refused(tmp_path, encoder):
    path, marker = _malicious(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        BUILDERS[encoder](EncoderRequest(path, False, {}))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "model.pt"
    text.write_text("this is not a checkpoint")
    for build in BUILDERS.values():
        with pytest.raises(CheckpointError):
            build(EncoderRequest(text, False, {}))
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps([1, 2, 3]))         # a pickle, but not torch's format
    with pytest.raises(CheckpointError):
        build_beats(EncoderRequest(raw, False, {}))
    bare = tmp_path / "bare_state.pt"
    torch.save({"patch_embedding.weight": torch.zeros(1)}, bare)
    with pytest.raises(CheckpointError, match="not a BEATs checkpoint.*'cfg'"):
        build_beats(EncoderRequest(bare, False, {}))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_beats(EncoderRequest(tmp_path / "missing.pt", False, {}))


def test_beats_missing_and_misshapen_keys_are_listed(tmp_path):
    ckpt = torch.load(fixtures_dir() / "beats" / "beats_pretrained.pt", weights_only=True)
    model = dict(ckpt["model"])
    del model["encoder.layers.1.fc2.bias"]
    model["post_extract_proj.weight"] = torch.zeros(10, 512)
    model["encoder.surprise"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"cfg": ckpt["cfg"], "model": model}, path)
    with pytest.raises(CheckpointError) as info:
        build_beats(EncoderRequest(path, False, {}))
    message = str(info.value)
    for part in ("encoder.layers.1.fc2.bias", "post_extract_proj.weight", "(10, 512)", "encoder.surprise"):
        assert part in message


def test_beats_file_given_to_audiomae_and_back():
    fx = fixtures_dir()
    with pytest.raises(CheckpointError, match="pos_embed"):
        build_uamix(EncoderRequest(fx / "beats" / "beats_pretrained.pt", False, {}))
    with pytest.raises(CheckpointError, match="'cfg'"):
        build_beats(EncoderRequest(fx / "audiomae" / "audiomae_finetuned_layout.pth", False, {}))
