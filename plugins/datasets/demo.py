"""`demo`: deterministic synthetic acoustic scenes, generated into the cache on first use.

Twelve classes, each a coloured-noise bed plus a class-specific event pattern (clicks, tone bursts,
chirps, rumble, modulation...). Every clip varies in levels, timing and pitch, so the classes are
separable but not trivially: a weak encoder is above chance, not at 100 %.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from asc_bench.api import Clip, DatasetRequest
from asc_bench_plugins.datasets._layout import check_options

SAMPLE_RATE = 16000
VERSION = "v1"
DEFAULT_CLIPS_PER_CLASS = 16
DEFAULT_SECONDS = 2.0


def _noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ f^exponent (0 white, -1 pink, -2 brown, +1 blue)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (exponent / 2)
    x = np.fft.irfft(spec, n)
    return x / (np.abs(x).max() + 1e-9)


def _events(rng: np.random.Generator, n: int, rate_hz: float, make: Callable[[int], np.ndarray]) -> np.ndarray:
    out = np.zeros(n)
    t = rng.uniform(0, 1 / rate_hz) * SAMPLE_RATE
    while t < n:
        ev = make(int(t))
        end = min(n, int(t) + ev.size)
        out[int(t):end] += ev[:end - int(t)]
        t += SAMPLE_RATE / rate_hz * rng.uniform(0.7, 1.3)
    return out


def _tone(freq: float, seconds: float, decay: float = 8.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return np.sin(2 * np.pi * freq * t) * np.exp(-decay * t)


def _click(length: int = 80) -> np.ndarray:
    return np.hanning(length) * np.sign(np.sin(np.arange(length)))


def _chirp(f0: float, f1: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return np.sin(phase) * np.hanning(t.size)


def _scene(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    j = rng.uniform(0.9, 1.1)          # per-clip pitch/rate jitter
    t = np.arange(n) / SAMPLE_RATE
    if name == "rain":
        return 0.3 * _noise(rng, n, 0.0) + 0.5 * _events(rng, n, 40 * j, lambda _: _click(40) * rng.uniform(0.2, 1))
    if name == "clock":
        return 0.1 * _noise(rng, n, -1.0) + 0.8 * _events(rng, n, 2 * j, lambda _: _click(120))
    if name == "birds":
        return 0.15 * _noise(rng, n, -1.0) + 0.6 * _events(rng, n, 3 * j, lambda _: _chirp(2500 * j, 4000 * j, 0.12))
    if name == "engine":
        return 0.3 * _noise(rng, n, -2.0) + 0.5 * np.sin(2 * np.pi * 55 * j * t) * (1 + 0.5 * np.sin(2 * np.pi * 7 * j * t))
    if name == "siren":
        f = 700 * j + 300 * np.sin(2 * np.pi * 0.8 * t)
        return 0.15 * _noise(rng, n, -1.0) + 0.6 * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE)
    if name == "bells":
        return 0.1 * _noise(rng, n, -1.0) + 0.6 * _events(rng, n, 1.5 * j, lambda _: _tone(880 * j, 0.8, 3) + 0.5 * _tone(1320 * j, 0.8, 4))
    if name == "wind":
        env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * j * t + rng.uniform(0, 6))
        return 0.8 * _noise(rng, n, -2.0) * env
    if name == "hum":
        return 0.2 * _noise(rng, n, 0.0) + 0.4 * sum(np.sin(2 * np.pi * 100 * k * j * t) / k for k in (1, 2, 3))
    if name == "footsteps":
        return 0.1 * _noise(rng, n, -1.0) + 0.7 * _events(rng, n, 2.2 * j, lambda _: _noise(rng, 1600, -2.0) * np.hanning(1600))
    if name == "typing":
        return 0.1 * _noise(rng, n, 0.0) + 0.5 * _events(rng, n, 9 * j, lambda _: _noise(rng, 300, 1.0) * np.hanning(300))
    if name == "crowd":
        babble = sum(np.sin(2 * np.pi * rng.uniform(150, 350) * t + rng.uniform(0, 6)) * (1 + np.sin(2 * np.pi * rng.uniform(2, 6) * t)) for _ in range(6))
        return 0.3 * _noise(rng, n, -1.0) + 0.1 * babble
    if name == "surf":
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * j * t + rng.uniform(0, 6)) ** 2
        return 0.9 * _noise(rng, n, 1.0) * env * 0.5 + 0.3 * _noise(rng, n, -1.0)
    raise KeyError(name)


CLASSES = ("rain", "clock", "birds", "engine", "siren", "bells", "wind", "hum", "footsteps", "typing",
           "crowd", "surf")


def _generate(target: Path, clips_per_class: int, seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    n = int(seconds * SAMPLE_RATE)
    for ci, name in enumerate(CLASSES):
        (tmp / name).mkdir()
        for k in range(clips_per_class):
            rng = np.random.default_rng([20261124, ci, k])
            x = _scene(name, rng, n)
            x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.9)
            sf.write(tmp / name / f"{name}-{k:03d}.wav", x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    try:
        os.rename(tmp, target)
    except OSError:             # generated concurrently by another process: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)


def build_demo(request: DatasetRequest) -> list[Clip]:
    options = check_options(request.options, ("clips_per_class", "seconds"), "demo")
    per_class = int(options.get("clips_per_class", DEFAULT_CLIPS_PER_CLASS))
    seconds = float(options.get("seconds", DEFAULT_SECONDS))
    base = request.root or (Path(request.cache_dir) / "demo")
    target = base / f"{VERSION}-{per_class}x{seconds:g}s"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        _generate(target, per_class, seconds)
    return [Clip(path=str(target / name / f"{name}-{k:03d}.wav"), label=name)
            for name in CLASSES for k in range(per_class)]
