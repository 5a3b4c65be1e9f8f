"""How often do the episode CI and the class-level interval cover the population accuracy?

    python benchmarks/interval_coverage.py [--trials 200] [--classes 20] [--per-class 30] [--episodes 500]
                                  [--dim 16] [--seed 0] [--protocol fewshot-prototype]

Population (known): an unlimited supply of classes. A class c has a mean mu_c ~ N(0, I_D) and a
spread s_c = exp(N(log 0.9, 0.35^2)) (classes differ in how tight, hence how easy, they are); its
clips are mu_c + s_c * N(0, I_D). The target is the population accuracy of the task: the
expected accuracy of a 5-way 1-shot prototype episode (5 queries per way) whose classes are
drawn from the population and whose clips are drawn from those classes. It is estimated once by
Monte Carlo over --mc-episodes fresh episodes, each with new classes (its standard error is
printed; it is small next to the intervals).

Trials: each trial draws a pool of --classes classes with --per-class clips each (what a
dataset is), runs the real `fewshot-prototype` protocol (asc_bench_plugins.protocols.prototype)
with --episodes episodes and turns its output into the record's intervals exactly as the runner
does (asc_bench.evaluation.stats.record_intervals): the Student-t CI over episodes and the
delete-one-class jackknife. Coverage = the fraction of trials whose interval contains the
population accuracy (nominal 95%). The episode CI conditions on the pool: as episodes grow it
shrinks around the pool's own accuracy, so its coverage falls far below 95%; the class-level
interval also covers the draw of classes and should stay near (or, the jackknife being
conservative, above) 95%.

`--protocol fewshot-logistic` runs the all-way K-shot logistic probe instead (K = --k-shot,
--episodes draws per pool): every draw holds every class, so the jackknife is in its "queries"
mode. Its target is the expected accuracy of one draw on a fresh pool of --classes classes,
estimated by running the protocol with one draw on --mc-pools fresh pools (slower: one
logistic fit per pool and per draw; try --trials 100 --episodes 10).

The last line is key=value pairs (coverage in %, mean half-widths in points) for scripts.
Runs in well under a minute on 2 cores with the defaults.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from asc_bench.api import EvalData
from asc_bench.evaluation import stats
from asc_bench_plugins.protocols import logistic, prototype

N_WAY, K_SHOT, N_QUERY = 5, 1, 5


def draw_classes(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """n classes from the population: means [n, D] and spreads [n]."""
    return rng.normal(size=(n, dim)), np.exp(rng.normal(np.log(0.9), 0.35, n))


def population_accuracy(rng: np.random.Generator, episodes: int, dim: int,
                        block: int = 5_000) -> tuple[float, float]:
    """Monte Carlo estimate (and its SE) of the expected episode accuracy, fresh classes each."""
    accs = []
    for start in range(0, episodes, block):
        e = min(block, episodes - start)
        mu, s = draw_classes(rng, e * N_WAY, dim)
        mu, s = mu.reshape(e, N_WAY, dim), s.reshape(e, N_WAY, 1, 1)
        clips = mu[:, :, None, :] + s * rng.normal(size=(e, N_WAY, K_SHOT + N_QUERY, dim))
        protos = clips[:, :, :K_SHOT].mean(axis=2)                        # [e, N, D]
        queries = clips[:, :, K_SHOT:].reshape(e, N_WAY * N_QUERY, dim)    # way-major
        # ||q - p||^2 up to the per-query constant ||q||^2
        dist = (protos ** 2).sum(-1)[:, None, :] - 2.0 * np.einsum("eqd,end->eqn", queries, protos)
        truth = np.repeat(np.arange(N_WAY), N_QUERY)
        accs.append((dist.argmin(-1) == truth).mean(axis=1))
    acc = np.concatenate(accs)
    return float(acc.mean()), float(acc.std(ddof=1) / np.sqrt(acc.size))


def run_pool(rng: np.random.Generator, n_classes: int, per_class: int, episodes: int,
             dim: int, seed: int, protocol: str, k_shot: int):
    """Draw one pool from the population and run the protocol on it: (result, data)."""
    mu, s = draw_classes(rng, n_classes, dim)
    labels = np.repeat(np.arange(n_classes), per_class)
    x = (mu[labels] + s[labels, None] * rng.normal(size=(labels.size, dim))).astype(np.float32)
    classes = [f"class{i:03d}" for i in range(n_classes)]
    data = EvalData(embeddings=x, labels=labels.astype(np.int64), classes=classes,
                    splits=[None] * labels.size, extras=[{} for _ in labels])
    common = {"_spec_hash": "coverage", "_fingerprint": str(seed)}
    if protocol == "fewshot-logistic":
        result = logistic.run(data, {"k_shot": k_shot, "draws": episodes, **common}, seed)
    else:
        result = prototype.run(data, {"n_way": N_WAY, "k_shot": K_SHOT, "n_query": N_QUERY,
                                      "episodes": episodes, **common}, seed)
    return result, data


def one_trial(rng: np.random.Generator, n_classes: int, per_class: int, episodes: int,
              dim: int, seed: int, protocol: str = "fewshot-prototype",
              k_shot: int = 5) -> dict[str, dict]:
    result, data = run_pool(rng, n_classes, per_class, episodes, dim, seed, protocol, k_shot)
    return stats.record_intervals(np.asarray(result.scores), result.unit, result.outcome,
                                  data.labels, data.classes, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=500)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--mc-episodes", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--protocol", choices=["fewshot-prototype", "fewshot-logistic"],
                    default="fewshot-prototype")
    ap.add_argument("--k-shot", type=int, default=5, help="shots per class (fewshot-logistic)")
    ap.add_argument("--mc-pools", type=int, default=2000, help="fresh pools (fewshot-logistic)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    if args.protocol == "fewshot-logistic":
        accs = [float(run_pool(rng, args.classes, args.per_class, 1, args.dim, 10**6 + i,
                               args.protocol, args.k_shot)[0].scores[0])
                for i in range(args.mc_pools)]
        target, target_se = float(np.mean(accs)), float(np.std(accs, ddof=1) / np.sqrt(len(accs)))
        task = f"all-way ({args.classes}) {args.k_shot}-shot logistic, other clips as queries"
        mc = f"{args.mc_pools} fresh pools"
    else:
        target, target_se = population_accuracy(rng, args.mc_episodes, args.dim)
        task = f"5-way {K_SHOT}-shot prototype, {N_QUERY} queries/way"
        mc = f"{args.mc_episodes} episodes"
    hits = {"episode": 0, "class": 0}
    widths: dict[str, list[float]] = {"episode": [], "class": []}
    means = []
    for t in range(args.trials):
        iv = one_trial(rng, args.classes, args.per_class, args.episodes, args.dim, t,
                       args.protocol, args.k_shot)
        ep = iv["episode"]
        means.append((ep["low"] + ep["high"]) / 2)
        for kind in hits:
            hits[kind] += int(iv[kind]["low"] <= target <= iv[kind]["high"])
            widths[kind].append(iv[kind]["half_width"])
    secs = time.perf_counter() - t0
    print(f"population accuracy ({task}, D = {args.dim}): {target * 100:.2f}% (Monte Carlo SE "
          f"{target_se * 100:.3f} points, {mc})")
    print(f"{args.trials} pools of {args.classes} classes x {args.per_class} clips, "
          f"{args.episodes} episodes/draws each; spread of the pools' mean accuracy: s.d. "
          f"{np.std(means, ddof=1) * 100:.2f} points")
    print(f"{'interval (nominal 95%)':<44}{'coverage %':>11}{'mean ± (points)':>17}")
    names = {"episode": "episode CI (Student-t over episodes)",
             "class": "class-level (delete-one-class jackknife)"}
    cover = {k: 100.0 * hits[k] / args.trials for k in hits}
    for kind in hits:
        print(f"{names[kind]:<44}{cover[kind]:>11.1f}{np.mean(widths[kind]) * 100:>17.2f}")
    ok = cover["class"] >= 90.0 and cover["episode"] < 60.0
    print(f"check: class-level coverage >= 90% where the episode CI's is far below: "
          f"{'met' if ok else 'NOT met'} ({secs:.1f} s)")
    print(f"protocol={args.protocol} population_acc={target:.5f} trials={args.trials} classes={args.classes} "
          f"episodes={args.episodes} coverage_episode={cover['episode']:.1f} "
          f"coverage_class={cover['class']:.1f} halfwidth_episode="
          f"{np.mean(widths['episode']) * 100:.3f} halfwidth_class="
          f"{np.mean(widths['class']) * 100:.3f} met={int(ok)} seconds={secs:.1f}")


if __name__ == "__main__":
    main()
