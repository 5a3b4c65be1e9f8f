"""The checks `benchmarks/gpu.sh` runs, one sub-command each; every check prints PASS/FAIL lines with
its figures and exits 1 when a declared tolerance fails (0 otherwise).

    python benchmarks/gpu_checks.py env
    python benchmarks/gpu_checks.py fbank      [--device cuda]
    python benchmarks/gpu_checks.py autocast   [--device cuda] [--tiny]
    python benchmarks/gpu_checks.py throughput [--device cuda] [--tiny] [--batch 32] [--seconds 10]
    python benchmarks/gpu_checks.py same-cache DIR_A DIR_B KEY [--tol 1e-4]

Inputs are generated (noise plus tones, fixed seeds) and the encoders have random weights at full size
(`--random-init`, BEATs iter3 and AudioMAE ViT-B; `--tiny`: 2-layer models, for a dry run on a CPU), so
nothing needs downloading. Declared tolerances and why:
- fbank, CUDA vs CPU: max |difference| <= 5e-3 on the log-mel values (tests/test_frontends.py; both run
  in float64, the rest is FFT and log implementation rounding at the energy floor).
- autocast vs float32, per clip embedding: cosine similarity >= 0.99 for bf16 (8-bit mantissa; the tier
  tests/test_beats.py uses) and >= 0.999 for fp16 (11-bit mantissa, ~8x finer), and every value finite.
- same-cache (torchrun 2 ranks vs 1 process): max |a - b| <= tol x max |a| (default 1e-4: the ranks run
  the same shards and batches, but cuBLAS may choose other kernels in another process).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch

FBANK_ATOL = 5e-3
COSINE_MIN = {"bf16": 0.99, "fp16": 0.999}
TINY = {"beats": {"layers": "2", "dim": "64", "ffn_dim": "128", "heads": "4"},
        "audiomae": {"depth": "2", "dim": "64", "num_heads": "4"}}


def verdict(ok: bool, what: str, figures: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'}  {what}: {figures}", flush=True)
    return ok


def waves(batch: int, seconds: float, sample_rate: int = 16000, seed: int = 0,
          ragged: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise plus a tone per clip; with `ragged`, clip i is shorter than the batch (tests padding)."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    t = torch.arange(n) / sample_rate
    freq = 200.0 + 1800.0 * torch.rand(batch, 1, generator=g)
    wave = 0.05 * torch.randn(batch, n, generator=g) + 0.3 * torch.sin(2 * math.pi * freq * t)
    lengths = torch.full((batch,), n, dtype=torch.long)
    if ragged:
        lengths = torch.tensor([n - (i * n) // (2 * batch) for i in range(batch)], dtype=torch.long)
        wave = wave * (torch.arange(n) < lengths.unsqueeze(1))
    return wave.float(), lengths


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(name: str, autocast: str, device: str, tiny: bool) -> torch.nn.Module:
    """A registered encoder with random weights (seed 0: the same weights for every autocast setting)."""
    from asc_bench.api import EncoderRequest
    from asc_bench.plugins import get_manager

    options = {"autocast": autocast, **(TINY[name] if tiny else {})}
    return get_manager().get("encoders", name).build(EncoderRequest(None, True, options, device)).eval()


def flops_per_clip(name: str, encoder: torch.nn.Module, samples: int) -> float:
    """Analytic FLOPs of one clip (2 x multiply-adds, from the model modules' closed forms)."""
    from asc_bench.embedding.frontends import num_frames
    from asc_bench_plugins.audiomae.config import flops_per_input
    from asc_bench_plugins.beats.config import flops_per_clip as beats_flops

    frames = int(num_frames(torch.tensor(samples)))
    if name == "beats":
        return beats_flops(encoder.model.cfg, frames)["total"]
    windows = max(1, math.ceil(frames / encoder.vit.cfg.input_frames))
    return windows * flops_per_input(encoder.vit.cfg)


# ------------------------------------------------------------------------------------------ checks
def check_env(_: argparse.Namespace) -> bool:
    print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA build {torch.version.cuda}, "
          f"{os.cpu_count()} CPUs")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")
    print(f"cuda_devices={n} bf16_supported={int(n > 0 and torch.cuda.is_bf16_supported())}")
    return True


def check_fbank(args: argparse.Namespace) -> bool:
    from asc_bench.embedding.frontends import AUDIOMAE, BEATS, kaldi_fbank

    wave, lengths = waves(8, 10.0, ragged=True)
    ok = True
    for label, settings in (("BEATs", BEATS), ("AudioMAE", AUDIOMAE)):
        cpu, frames_cpu = kaldi_fbank(wave, lengths, settings)
        kaldi_fbank(wave.to(args.device), lengths.to(args.device), settings)     # warm-up
        sync(args.device)
        t0 = time.perf_counter()
        dev, frames_dev = kaldi_fbank(wave.to(args.device), lengths.to(args.device), settings)
        sync(args.device)
        seconds = time.perf_counter() - t0
        diff = float((dev.cpu() - cpu).abs().max())
        same_frames = bool(torch.equal(frames_dev.cpu(), frames_cpu))
        ok &= verdict(diff <= FBANK_ATOL and same_frames and bool(torch.isfinite(dev).all()),
                      f"fbank {label} {args.device} vs cpu",
                      f"max|diff|={diff:.2e} (tol {FBANK_ATOL:g}), frames equal={same_frames}, "
                      f"8 ragged clips <= 10 s in {seconds * 1e3:.1f} ms")
    return ok


def check_autocast(args: argparse.Namespace) -> bool:
    wave, lengths = waves(8, 10.0, ragged=True, seed=1)
    wave, lengths = wave.to(args.device), lengths.to(args.device)
    ok = True
    for name in ("beats", "audiomae"):
        # Built outside inference mode (parameters created inside it cannot be used outside later); the
        # forward passes run inside it, as embedding extraction runs them.
        encoders = {kind: build(name, kind, args.device, args.tiny) for kind in ("none", *COSINE_MIN)}
        with torch.inference_mode():
            reference = encoders["none"](wave, lengths).float()
            for kind, threshold in COSINE_MIN.items():
                low = encoders[kind](wave, lengths)
                finite = bool(torch.isfinite(low).all())
                cos = torch.nn.functional.cosine_similarity(reference, low.float(), dim=1)
                rel = float((low.float() - reference).norm(dim=1).max() / reference.norm(dim=1).min())
                ok &= verdict(finite and low.dtype == torch.float32 and float(cos.min()) >= threshold,
                              f"autocast {name} {kind} vs fp32 on {args.device}",
                              f"min cosine={float(cos.min()):.6f} (tol >= {threshold}), max rel L2={rel:.2e}, "
                              f"finite={finite}, dtype={str(low.dtype).replace('torch.', '')}")
        del encoders
    return ok


def check_throughput(args: argparse.Namespace) -> bool:
    """Clips/s of full-size BEATs and AudioMAE (waveform in, embedding out, fbank included) at one batch
    size: best and median of --repeat timed batches after one warm-up."""
    wave, lengths = waves(args.batch, args.seconds, seed=2)
    wave, lengths = wave.to(args.device), lengths.to(args.device)
    kinds = ["none", "bf16"] if args.device.startswith("cuda") or args.tiny else ["none"]
    tf32 = torch.backends.cuda.matmul.allow_tf32 if args.device.startswith("cuda") else False
    print(f"{args.batch} clips x {args.seconds:g} s per batch on {args.device}; fp32 matmuls in TF32: {tf32} "
          f"(torch's default); TFLOP/s from the analytic FLOP counts")
    print(f"{'encoder':<10}{'autocast':>9}{'batch':>6}{'s/batch best':>14}{'median':>9}{'clips/s':>9}"
          f"{'TFLOP/s':>9}{'peak GiB':>9}")
    figures = []
    for name in ("beats", "audiomae"):
        for kind in kinds:
            enc = build(name, kind, args.device, args.tiny)
            flops = flops_per_clip(name, enc, wave.shape[1]) * args.batch
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            times = []
            with torch.inference_mode():
                for i in range(args.repeat + 1):
                    sync(args.device)
                    t0 = time.perf_counter()
                    enc(wave, lengths)
                    sync(args.device)
                    if i:                                   # the first batch is the warm-up
                        times.append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
            best = min(times)
            print(f"{name:<10}{kind:>9}{args.batch:>6}{best:>14.4f}{statistics.median(times):>9.4f}"
                  f"{args.batch / best:>9.1f}{flops / best / 1e12:>9.2f}{peak:>9.2f}", flush=True)
            figures.append(f"{name}_{kind}_clips_per_s={args.batch / best:.1f}")
            del enc
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    print(" ".join(figures))
    return True


def check_same_cache(args: argparse.Namespace) -> bool:
    from asc_bench.embedding.cache import EmbeddingCache

    a = EmbeddingCache(args.dir_a).load(args.key)
    b = EmbeddingCache(args.dir_b).load(args.key)
    if a is None or b is None:
        return verdict(False, "torchrun 2 ranks vs 1 process", f"cache entry {args.key} missing "
                       f"(1 process: {a is not None}, 2 ranks: {b is not None})")
    x, y = np.asarray(a.embeddings, dtype=np.float64), np.asarray(b.embeddings, dtype=np.float64)
    if x.shape != y.shape:
        return verdict(False, "torchrun 2 ranks vs 1 process", f"shapes {x.shape} vs {y.shape}")
    rel = float(np.abs(x - y).max() / (np.abs(x).max() or 1.0))
    return verdict(rel <= args.tol, f"torchrun 2 ranks ({args.backend}) vs 1 process, cached embeddings",
                   f"{x.shape[0]} clips x {x.shape[1]}, max|diff|/max|a|={rel:.2e} (tol {args.tol:g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    checks: dict[str, Callable[[argparse.Namespace], bool]] = {
        "env": check_env, "fbank": check_fbank, "autocast": check_autocast, "throughput": check_throughput,
        "same-cache": check_same_cache}
    for name in checks:
        p = sub.add_parser(name)
        if name in ("fbank", "autocast", "throughput"):
            p.add_argument("--device", default="cuda")
        if name in ("autocast", "throughput"):
            p.add_argument("--tiny", action="store_true", help="2-layer models (dry run on a CPU)")
        if name == "throughput":
            p.add_argument("--batch", type=int, default=32)
            p.add_argument("--seconds", type=float, default=10.0)
            p.add_argument("--repeat", type=int, default=5)
        if name == "same-cache":
            p.add_argument("dir_a")
            p.add_argument("dir_b")
            p.add_argument("key")
            p.add_argument("--tol", type=float, default=1e-4)
            p.add_argument("--backend", default="nccl", help="only labels the output")
    args = parser.parse_args()
    sys.exit(0 if checks[args.check](args) else 1)


if __name__ == "__main__":
    main()
