"""The batched Kaldi fbank against torchaudio's output stored in shared/fixtures/kaldi_fbank."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from asc_bench.api import BadAudioError
from asc_bench.embedding.frontends import (AUDIOMAE, BEATS, ClipTooShortError, audiomae_input, beats_normalise,
                                           kaldi_fbank)
from tests.fixtures_path import fixtures_dir

# kaldi_fbank README tier for a float64 or differently-ordered implementation (ours is batched and float64):
# abs 5e-3 on raw log-mel values. Measured here: 2.0e-3 (BEATs scale), 5.9e-4 (AudioMAE), the same on every CPU.
TOL = 5e-3
# The model input is the log-mel divided by 2 * 4.5689974; the AudioMAE README's tier for it is abs 1e-3.
MODEL_INPUT_TOL = 1e-3
# One code path, one batch or another: the float64 arithmetic is the same, only the float32 rounding remains.
BATCH_TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    folder = fixtures_dir() / "kaldi_fbank"
    data = np.load(folder / "kaldi_fbank.npz")
    meta = json.loads((folder / "meta.json").read_text())
    return data, meta


def _clips(data, indices):
    waves = [torch.from_numpy(data[f"wav_{i}"]) for i in indices]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lengths.max()))
    for row, w in enumerate(waves):
        batch[row, :len(w)] = w
    return batch, lengths


@pytest.mark.parametrize("model", ["beats", "audiomae"])
def test_each_clip_alone_matches_torchaudio(ref, model):
    data, meta = ref
    settings = BEATS if model == "beats" else AUDIOMAE
    for item in meta["items"]:
        i = item["index"]
        wave = torch.from_numpy(data[f"wav_{i}"])[None]
        fbank, frames = kaldi_fbank(wave, None, settings)
        expected = data[f"{model}_fbank_{i}"]
        assert int(frames[0]) == item["num_frames"] == expected.shape[0]
        np.testing.assert_allclose(fbank[0].numpy(), expected, rtol=0, atol=TOL, err_msg=f"clip {i}")


@pytest.mark.parametrize("model", ["beats", "audiomae"])
def test_batch_of_different_lengths_equals_each_clip_alone(ref, model):
    data, meta = ref
    settings = BEATS if model == "beats" else AUDIOMAE
    order = [5, 2, 0, 4, 3, 1]          # longest first, so every other clip is padded
    batch, lengths = _clips(data, order)
    # Non-zero garbage in the padding must not matter: only valid samples may be read.
    for row, n in enumerate(lengths.tolist()):
        batch[row, n:] = 0.5
    fbank, frames = kaldi_fbank(batch, lengths, settings)
    for row, i in enumerate(order):
        n = int(frames[row])
        alone, _ = kaldi_fbank(torch.from_numpy(data[f"wav_{i}"])[None], None, settings)
        np.testing.assert_allclose(fbank[row, :n].numpy(), alone[0].numpy(), rtol=0, atol=BATCH_TOL)
        np.testing.assert_allclose(fbank[row, :n].numpy(), data[f"{model}_fbank_{i}"], rtol=0, atol=TOL)
        assert torch.all(fbank[row, n:] == 0.0), "rows past a clip's frames must be 0 (AudioMAE pad value)"


def test_audiomae_model_input_padding_and_normalisation(ref):
    data, _ = ref
    batch, lengths = _clips(data, [4, 5])
    fbank, _ = kaldi_fbank(batch, lengths, AUDIOMAE)
    x = audiomae_input(fbank)
    assert x.shape == (2, 1, 1024, 128)
    for row, i in enumerate([4, 5]):
        np.testing.assert_allclose(x[row, 0].numpy(), data[f"audiomae_input_{i}"], rtol=0, atol=MODEL_INPUT_TOL)
    # A 10 s clip has 998 frames: the 26 padding rows read (0 + 4.2677393) / (2 * 4.5689974).
    np.testing.assert_allclose(x[1, 0, 998:].numpy(), 4.2677393 / (2 * 4.5689974), rtol=1e-6)
    cut = audiomae_input(torch.ones(1, 1100, 128), 1024)
    assert cut.shape == (1, 1, 1024, 128)


def test_beats_normalisation_constants():
    x = torch.tensor([15.41663, 15.41663 + 2 * 6.55582])
    np.testing.assert_allclose(beats_normalise(x).numpy(), [0.0, 1.0], atol=1e-6)


def test_floor_and_empty_filter():
    # Digital silence: every bin at log(float32 eps); filter 3 holds no FFT bin, so it is always floored.
    silence = torch.zeros(1, 4000)
    fbank, _ = kaldi_fbank(silence, None, BEATS)
    np.testing.assert_allclose(fbank.numpy(), np.log(np.float32(np.finfo(np.float32).eps)), atol=1e-5)
    noise, _ = kaldi_fbank(torch.randn(1, 4000, generator=torch.Generator().manual_seed(0)), None, BEATS)
    np.testing.assert_allclose(noise[0, :, 3].numpy(), -15.942385, atol=1e-5)
    assert float(noise[0, :, 10].min()) > 0.0


def test_clip_shorter_than_a_frame_is_refused():
    wave = torch.zeros(2, 1000)
    with pytest.raises(ClipTooShortError, match="399 samples.*400") as info:
        kaldi_fbank(wave, torch.tensor([1000, 399]), AUDIOMAE)
    assert isinstance(info.value, ValueError) and isinstance(info.value, BadAudioError)
    assert "clip 1" in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(ref):
    data, _ = ref
    batch, lengths = _clips(data, [0, 1, 3])
    cpu, _ = kaldi_fbank(batch, lengths, BEATS)
    gpu, _ = kaldi_fbank(batch.cuda(), lengths.cuda(), BEATS)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=0, atol=5e-3)
