"""Time the vectorised few-shot path against a straightforward per-episode torch loop.

    python benchmarks/episodes.py [--episodes 10000] [--repeat 15] [--loop-repeat 3] [--chunks 10]

Data: 2,000 clips of random float32 embeddings (D = 768), 50 classes x 40 clips, each class made
of 10 sources of 4 clips (like ESC-50's takes of one Freesound clip: `Clip.group`). Task: 5-way
1-shot episodes, 15 queries per class, group-disjoint (no query from a support clip's source).
Vectorised = asc_bench.evaluation.episodes.sample_episodes (with the groups) +
asc_bench_plugins.protocols.prototype.prototype_accuracy (one Gram matrix, then the numba
gather-and-decide kernel where numba is installed, else numpy index arithmetic: the same answers;
the line `scoring kernel:` says which ran, ASC_BENCH_NUMBA=0 times the numpy path).
Loop = for every episode: draw the classes and clips with numpy (Generator.choice; queries from
the other sources), build the prototypes, one torch.cdist, argmin. The loop is also timed on the vectorised episodes (scoring
only), which checks that both give the same accuracies. Times are best-of (other processes on a
small machine make single timings noisy): vectorised runs are interleaved with the loops, which
run in --chunks chunks timed --loop-repeat times each (a loop's time = sum of its chunks' bests). Target: vectorised sampling +
scoring of 10,000 episodes <= 0.1 s and >= 30x faster than the scoring-only loop. The last line
is `total_s=... speedup_vs_scoring_loop=...` (vectorised sample + score, best of; the ratio of the
scoring-only loop to it, both measured in this run).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from asc_bench.evaluation.episodes import sample_episodes
from asc_bench_plugins.protocols.prototype import numba_kernel, prototype_accuracy, use_numba

N_CLASSES, PER_CLASS, DIM, PER_SOURCE = 50, 40, 768, 4
N_WAY, K_SHOT, N_QUERY = 5, 1, 15


def best_of(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def loop_score(x: torch.Tensor, support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Per-episode torch loop on given episodes: prototypes, one cdist, argmin."""
    acc = np.empty(support.shape[0])
    target = torch.arange(N_WAY).repeat_interleave(N_QUERY)
    for e in range(support.shape[0]):
        protos = x[torch.from_numpy(support[e])].mean(1)               # [N, D]
        q = x[torch.from_numpy(query[e])]                               # [N*Q, D]
        pred = torch.cdist(q, protos).argmin(1)
        acc[e] = (pred == target).double().mean().item()
    return acc


def loop_sample_and_score(x: torch.Tensor, labels: np.ndarray, groups: np.ndarray, episodes: int,
                          seed: int) -> np.ndarray:
    """The straightforward baseline: sample each (group-disjoint) episode with numpy, score it."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in range(N_CLASSES)]
    support = np.empty((1, N_WAY, K_SHOT), np.int64)
    query = np.empty((1, N_WAY * N_QUERY), np.int64)
    acc = np.empty(episodes)
    for e in range(episodes):
        classes = rng.choice(N_CLASSES, N_WAY, replace=False)
        for n, c in enumerate(classes):
            support[0, n] = rng.choice(by_class[c], K_SHOT, replace=False)
        taken = groups[support[0].ravel()]
        for n, c in enumerate(classes):
            free = by_class[c][~np.isin(groups[by_class[c]], taken)]
            query[0, n * N_QUERY:(n + 1) * N_QUERY] = rng.choice(free, N_QUERY, replace=False)
        acc[e] = loop_score(x, support, query)[0]
    return acc


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--loop-repeat", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads for the loops (default: torch's); 1 is the fairer baseline on a "
                         "busy machine, where small multi-threaded ops wait on each other")
    args = ap.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((N_CLASSES * PER_CLASS, DIM)).astype(np.float32)
    labels = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    group_ids = np.arange(labels.size) // PER_SOURCE                  # 10 sources per class
    groups = [f"src{g}" for g in group_ids]
    params = {"n_way": N_WAY, "k_shot": K_SHOT, "n_query": N_QUERY, "episodes": args.episodes}
    x_t = torch.from_numpy(x_np)
    sample = lambda: sample_episodes(labels, None, params, 0, spec_hash="bench", fingerprint="rand",
                                     groups=groups)
    plain = lambda: sample_episodes(labels, None, params, 0, spec_hash="bench", fingerprint="rand")
    vectorised = lambda: prototype_accuracy(x_np, sample())

    t_plain, m_plain, _ = best_of(plain, args.repeat)
    t_sample, m_sample, ep = best_of(sample, args.repeat)
    leaks = sum(bool(set(group_ids[ep.support_idx[i].ravel()]) & set(group_ids[ep.query_idx[i]]))
                for i in range(ep.n_episodes))
    t_score, m_score, acc = best_of(lambda: prototype_accuracy(x_np, ep), args.repeat)
    # The loops run in chunks, each timed several times, interleaved with vectorised runs, so
    # both see the same background load; a loop's time is the sum of its chunks' best times.
    bounds = np.linspace(0, args.episodes, args.chunks + 1).astype(int)
    vec_times = []
    loop_score_best = np.full(args.chunks, np.inf)
    loop_full_best = np.full(args.chunks, np.inf)
    acc_loop = np.empty(args.episodes)
    for _ in range(args.loop_repeat):
        for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            vec_times.append(timed(vectorised)[0])
            t, acc_loop[lo:hi] = timed(lambda: loop_score(x_t, ep.support_idx[lo:hi],
                                                           ep.query_idx[lo:hi]))
            loop_score_best[c] = min(loop_score_best[c], t)
            t, _ = timed(lambda: loop_sample_and_score(x_t, labels, group_ids, hi - lo, seed=c))
            loop_full_best[c] = min(loop_full_best[c], t)
    t_both, m_both = min(vec_times), float(np.median(vec_times))
    t_loop_score, t_loop = float(loop_score_best.sum()), float(loop_full_best.sum())
    agree = float(np.mean(acc == acc_loop))

    e = args.episodes
    print(f"{e} episodes, {N_WAY}-way {K_SHOT}-shot, {N_QUERY} queries/class, "
          f"{N_CLASSES * PER_CLASS} clips x D={DIM}; {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    kernel = ("numba" if use_numba(None, e * N_WAY * K_SHOT * N_WAY * N_QUERY) else "numpy"
              + (" (numba not installed)" if numba_kernel() is None else ""))
    print(f"scoring kernel: {kernel}")
    print(f"{'step':<48}{'best s':>9}{'median s':>10}{'us/episode':>12}")
    rows = [("vectorised: sample, not group-disjoint", t_plain, m_plain),
            ("vectorised: sample episodes (group-disjoint)", t_sample, m_sample),
            ("vectorised: score (Gram + gather)", t_score, m_score),
            ("vectorised: sample + score", t_both, m_both),
            ("torch loop: score only (same episodes)", t_loop_score, None),
            ("torch loop: sample + score", t_loop, None)]
    for name, best, med in rows:
        med_text = f"{med:>10.4f}" if med is not None else f"{'':>10}"
        print(f"{name:<48}{best:>9.4f}{med_text}{best / e * 1e6:>12.2f}")
    print(f"speed-up (loop sample+score / vectorised sample+score): {t_loop / t_both:.1f}x")
    print(f"speed-up (loop score only / vectorised sample+score):   {t_loop_score / t_both:.1f}x")
    print(f"episodes with identical accuracy, vectorised vs loop: {agree * 100:.2f}%; "
          f"mean accuracy {acc.mean():.4f} vs {acc_loop.mean():.4f}")
    print(f"episodes with a query sharing a source with the support: {leaks}")
    print(f"target: sample+score <= 0.1 s: {'met' if t_both <= 0.1 else 'NOT met'}; "
          f">= 30x the scoring-only loop: {'met' if t_loop_score / t_both >= 30 else 'NOT met'}")
    print(f"total_s={t_both:.4f} speedup_vs_scoring_loop={t_loop_score / t_both:.1f} "
          f"sample_s={t_sample:.4f} score_s={t_score:.4f} loop_score_s={t_loop_score:.4f} "
          f"speedup_vs_full_loop={t_loop / t_both:.1f} agree={agree:.4f} leaks={leaks}")


if __name__ == "__main__":
    main()
