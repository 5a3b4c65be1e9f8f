"""Throughput of the full-size transformer encoders against the machine's plain matmul rate.

    python benchmarks/encoders.py [--batch 4] [--seconds 10] [--repeat 5] [--autocast none]
                                  [--encoders beats,audiomae] [--threads N] [--device cpu]

Random weights at full size (BEATs iter3 12 x 768; AudioMAE ViT-B), a batch of `--batch` clips of
`--seconds` s of noise, waveform in, embeddings out (the Kaldi fbank is included; it is ~1% of the
time). FLOPs are counted analytically from the shapes (2 x multiply-adds of every convolution and
matmul, attention included; `flops_per_clip` / `flops_per_input` in the model modules). BEATs'
positional convolution is counted as the direct grouped convolution the model defines, although it is
evaluated with FFTs (it is 4.7% of the count). The reference is an fp32 2048 x 2048 matmul timed in
the same run, interleaved with the model runs. Times are the best and the median of `--repeat` runs
after one warm-up (other processes on a small machine make single timings noisy); the ratio uses the
best of each. Target: model GFLOP/s >= 85% of the matmul rate.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from typing import Callable

import torch

from asc_bench.api import EncoderRequest
from asc_bench.embedding.frontends import num_frames
from asc_bench_plugins.audiomae.encoder import build_audiomae
from asc_bench_plugins.audiomae.vit import flops_per_input
from asc_bench_plugins.beats.encoder import build_beats
from asc_bench_plugins.beats.model import flops_per_clip

MATMUL_N = 2048


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def matmul_rate(device: str) -> float:
    """GFLOP/s of one fp32 2048 x 2048 matmul (best of 5 after a warm-up)."""
    a, b = torch.randn(MATMUL_N, MATMUL_N, device=device), torch.randn(MATMUL_N, MATMUL_N, device=device)
    timed(lambda: a @ b, device)
    best = min(timed(lambda: a @ b, device) for _ in range(5))
    return 2 * MATMUL_N ** 3 / best / 1e9


def build(name: str, autocast: str, device: str) -> tuple[torch.nn.Module, Callable[[int], float]]:
    """Encoder and a function giving the analytic FLOPs of one clip of n samples."""
    options = {"autocast": autocast}
    if name == "beats":
        enc = build_beats(EncoderRequest(None, True, options, device))
        return enc, lambda n: flops_per_clip(enc.model.cfg, int(num_frames(torch.tensor(n))))["total"]
    enc = build_audiomae(EncoderRequest(None, True, options, device))
    frames = enc.vit.cfg.input_frames

    def audiomae_flops(n: int) -> float:
        windows = max(1, math.ceil(int(num_frames(torch.tensor(n))) / frames))
        return windows * flops_per_input(enc.vit.cfg)
    return enc, audiomae_flops


def measure(name: str, args: argparse.Namespace, wave: torch.Tensor, lengths: torch.Tensor) -> str:
    """One table row: the encoder's best and median time per batch, interleaved with matmul timings."""
    enc, flops_of = build(name, args.autocast, args.device)
    params = sum(p.numel() for p in enc.parameters())
    flops = flops_of(wave.shape[1]) * args.batch
    timed(lambda: enc(wave, lengths), args.device)       # warm-up
    times, rates = [], []
    for _ in range(args.repeat):                         # interleaved, so both see the same load
        rates.append(matmul_rate(args.device))
        times.append(timed(lambda: enc(wave, lengths), args.device))
    rates.append(matmul_rate(args.device))
    best, mm = min(times), max(rates)
    gflops = flops / best / 1e9
    return (f"{name:<10}{params / 1e6:>9.2f}M{flops / args.batch / 1e9:>12.1f}{best:>14.3f}"
            f"{statistics.median(times):>9.3f}{args.batch / best:>9.2f}{gflops:>9.1f}{mm:>16.1f}"
            f"{gflops / mm:>7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--autocast", default="none", choices=["none", "bf16", "fp16"])
    parser.add_argument("--encoders", default="beats,audiomae")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    samples = int(args.seconds * 16000)
    wave = (torch.randn(args.batch, samples, generator=torch.Generator().manual_seed(0)) * 0.1).to(args.device)
    lengths = torch.full((args.batch,), samples, dtype=torch.long, device=args.device)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; batch {args.batch} x {args.seconds:g} s; autocast {args.autocast}; "
          f"FLOPs counted analytically from shapes")
    header = (f"{'encoder':<10}{'params':>10}{'GFLOP/clip':>12}{'s/batch best':>14}{'median':>9}"
              f"{'clips/s':>9}{'GFLOP/s':>9}{'matmul GFLOP/s':>16}{'ratio':>7}")
    rows = [measure(name.strip(), args, wave, lengths) for name in args.encoders.split(",") if name.strip()]
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
