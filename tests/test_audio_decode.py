"""Decoding reads integer PCM as integers and scales it itself: the samples must equal libsndfile's own
float conversion exactly, in every container and channel layout, so the embeddings do not change."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr

from asc_bench.data.audio import decode


def reference_decode(path, sample_rate: int) -> np.ndarray:
    """What decoding was before the integer path: libsndfile's float32 read, channel mean, soxr HQ."""
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return soxr.resample(mono, sr, sample_rate, quality="HQ") if sr != sample_rate else mono


@pytest.mark.parametrize("container,subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
                                               ("WAV", "PCM_U8"), ("WAV", "FLOAT"), ("FLAC", "PCM_16"),
                                               ("FLAC", "PCM_24"), ("AIFF", "PCM_16")])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [16000, 44100])
def test_decoding_equals_libsndfiles_float_read(tmp_path, container, subtype, channels, rate):
    rng = np.random.default_rng(channels)
    x = np.clip(0.4 * rng.standard_normal((rate // 2, channels)), -1, 1)
    x[:3], x[3:6] = 1.0, -1.0                                      # full scale both ways
    path = tmp_path / f"clip.{container.lower()}"
    sf.write(path, x, rate, format=container, subtype=subtype)
    got = decode(str(path), 16000)
    want = reference_decode(str(path), 16000)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_a_float_wav_with_nan_is_still_refused(tmp_path):
    from asc_bench.api import BadAudioError

    x = np.zeros(1600, np.float32)
    x[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(BadAudioError, match="NaN"):
        decode(str(path), 16000)
