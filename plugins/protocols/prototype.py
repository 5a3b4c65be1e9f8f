"""fewshot-prototype: nearest-centroid (prototype) classification over N-way K-shot episodes.

Each way's prototype is the mean of its K support embeddings; a query is assigned to the way with
the smallest squared Euclidean distance (ties go to the lowest way position). The score of an
episode is the fraction of its (real, unmasked) queries classified correctly.

Scoring is vectorised over episodes. Distances are translation invariant, so embeddings are first
centred on their mean (computed in float64): that removes the large common component many encoders
have and with it most of the float32 cancellation in the expansion below. With the Gram matrix
G = X X^T (float32, one BLAS call) and prototype p = mean_k x_{s_k}:
    ||q - p||^2 = ||q||^2 - 2 q.p + ||p||^2,   q.p = (1/K) sum_k G[q, s_k],
    ||p||^2 = (1/K^2) sum_{k,k'} G[s_k, s_k'].
||q||^2 is the same for every way, so the decision uses K^2 ||p||^2 - 2K sum_k G[q, s_k] (scaled by
K^2 > 0). Only the Gram entries carry float32 rounding: the K-sums and the score are formed in
float64 (exact for K = 1), and exact ties (e.g. duplicate support clips) go to the lowest way.
Episodes are processed in chunks so the gathered block stays below about 32 MB, split across
threads (numpy releases the GIL in take and ufuncs; each episode's answer is independent of the
split). The K-sums are formed term by term in index order (`_sum_in_order`), not by numpy's
pairwise reductions, so that the order of the float64 additions is defined. When the Gram
matrix would cost more than gathering the episodes' rows (many clips, few episodes; see
`choose_method`) or not fit (> GRAM_MAX_CLIPS clips), each chunk instead builds its prototypes
and query rows explicitly (same decision rule, batched matmul, float64).

Optional accelerator: where numba is installed (`pip install 'asc-bench[fast]'`), the Gram path
runs `_gram_kernel`, a compiled loop that fuses the gather and the decision per episode (no
gathered arrays; the Gram matrix then dominates). numpy stays the reference: the kernel reads the
same float32 entries G[s, q] of the same Gram matrix and performs the same IEEE float64
operations in the same order (sums term by term, K^2 ||p||^2 - 2K sum_k G[s_k, q], a running
minimum with strict <, so ties keep the lowest way; numba does not reassociate or fuse them
without fastmath), so both give identical predictions, tested on random data, padded queries and
exact ties (tests/test_prototype_kernel.py). It runs on the same episode split across threads
(it releases the GIL), so its answer does not depend on the thread count either. numba is
imported on first use only; by default it is used for at least NUMBA_MIN_GATHERS Gram reads
(smaller jobs take numpy milliseconds, less than loading numba); `accelerate=` or ASC_BENCH_NUMBA
(0/1) choose explicitly (see `use_numba`). Loading numba costs about 0.5 s once per process
(about 1 s the first time, when the kernel is compiled into numba's on-disk cache). The direct
path (above) has no kernel.

Params (task schema): n_way, k_shot, n_query, episodes, class_pool, support_split, query_split,
exclude_small_classes, group_disjoint (default: on when the dataset defines groups, `Clip.group`:
no query shares a recording/source with a support clip of its episode; `false` opts out, and the
result's params state the policy used). The core also passes `_spec_hash` and `_fingerprint` (task spec hash and
dataset fingerprint); they only seed the sampler (see asc_bench.evaluation.episodes) so that the same task and
seed give the same episodes for every encoder.

Output: per-episode scores, and an EpisodeOutcome (support rows, query rows with -1 padding,
per-query correctness) from which the runner computes the class- and group-level intervals.
"""
from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np

from asc_bench.api import (AscBenchError, EpisodeOutcome, EvalData, ListingInfo, ProtocolResult,
                           check_params)
from asc_bench.evaluation.episodes import EpisodeParams, Episodes, sample_episodes
from asc_bench_plugins.protocols.params import PROTOTYPE

GRAM_MAX_CLIPS = 16384                 # 16384^2 float32 = 1 GiB
_CHUNK_ELEMENTS = 1 << 23              # gathered entries per chunk (32 MB of float32)
NUMBA_ENV = "ASC_BENCH_NUMBA"          # 0: never use the numba kernel; 1: whenever installed
NUMBA_MIN_GATHERS = 1 << 20            # auto: fewer Gram reads take numpy < ~15 ms, less than
                                       # importing numba and loading its cached kernel


def _centred(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise AscBenchError(f"embeddings must be (clips, dim), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise AscBenchError("embeddings contain NaN/Inf; the encoder output is broken")
    mean = x.mean(axis=0, dtype=np.float64)
    return np.subtract(x, mean.astype(np.float32), dtype=np.float32)


def _chunk_size(per_episode: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, per_episode))


def _decide(pp: np.ndarray, qs: np.ndarray, k: int) -> np.ndarray:
    """pp [N, e] = sum_kk' G[s,s']; qs [N, e, Q] = sum_k G[s_k, q] -> predicted way [e, Q].

    Score K^2 ||p||^2 - 2K sum_k G[s_k, q] in float64, where forming it from float32 Gram
    entries is exact, so the decision adds no rounding of its own. A running minimum over the
    ways on contiguous [e, Q] blocks (strict <, so ties keep the lowest way) is several times
    faster than argmin over a short axis, with the same answer.
    """
    pp = pp.astype(np.float64)
    best = pp[0][:, None] - (2.0 * k) * qs[0].astype(np.float64)
    arg = np.zeros(best.shape, dtype=np.int64)
    for way in range(1, qs.shape[0]):
        score = pp[way][:, None] - (2.0 * k) * qs[way].astype(np.float64)
        arg = np.where(score < best, way, arg)
        best = np.minimum(best, score)
    return arg


def _gram_rows(g: np.ndarray, n_clips: int, ep: Episodes, a: int, b: int,
               pred: np.ndarray) -> None:
    """Predictions for episodes a..b-1 into pred[a:b] (chunked; numpy releases the GIL)."""
    _, n, k = ep.support_idx.shape
    nq = ep.query_idx.shape[1]
    step = _chunk_size(nq * n * k + n * k * k)
    for lo in range(a, b, step):
        hi = min(b, lo + step)
        e = hi - lo
        sk = ep.support_idx[lo:hi]                                      # [e, N, K]
        q = np.maximum(ep.query_idx[lo:hi], 0)                          # padding -> row 0, masked
        # G is symmetric: reading G[s, q] keeps each support's queries inside one row of G,
        # about twice as fast as G[q, s] (fewer TLB and cache misses). Layout [N*K, e, Q] makes
        # every way's block contiguous for the decision.
        rows = np.ascontiguousarray(sk.reshape(e, n * k).T) * n_clips  # [N*K, e]
        qs = np.take(g, rows[:, :, None] + q[None, :, :])               # [N*K, e, Q]
        if k > 1:                                                       # [N, e, Q], in float64
            qs = _sum_in_order(np.moveaxis(qs.reshape(n, k, e, nq), 1, 0))
        pp = np.take(g, (sk * n_clips)[:, :, :, None] + sk[:, :, None, :])  # [e, N, K, K]
        pp = _sum_in_order(np.moveaxis(pp.reshape(e, n, k * k), -1, 0))     # [e, N]
        pp = np.ascontiguousarray(pp.T)                                     # [N, e]
        pred[lo:hi] = _decide(pp, qs, k)


def _sum_in_order(a: np.ndarray) -> np.ndarray:
    """float64 sum over axis 0, term by term in index order (the numba kernel's order: numpy's
    own reductions may sum pairwise, which can round differently for more than 7 terms)."""
    acc = a[0].astype(np.float64)
    for i in range(1, a.shape[0]):
        acc += a[i]
    return acc


def _gram_kernel(g: np.ndarray, n_clips: int, support: np.ndarray, query: np.ndarray, k: int,
                 pred: np.ndarray, a: int, b: int) -> None:
    """Episodes a..b-1 into pred[a:b]: `_gram_rows` + `_decide` fused, one episode at a time.

    Compiled by `numba_kernel`. The same float32 Gram entries G[s, q] (support row, query column),
    the same float64 operations in the same order (sums term by term, K^2 pp - 2K qs, strict <
    over the ways in order), so it gives exactly the numpy path's answer, without the gathered
    intermediate arrays.
    """
    n_way = support.shape[1]
    nq = query.shape[1]
    two_k = 2.0 * k
    cols = np.empty(nq, np.int64)
    acc = np.empty(nq, np.float64)
    best = np.empty(nq, np.float64)
    for e in range(a, b):
        for i in range(nq):
            cols[i] = max(query[e, i], 0)                   # padding -> row 0, masked later
        for way in range(n_way):
            s0 = support[e, way, 0]
            pp = np.float64(g[s0 * n_clips + s0])
            for j in range(1, k * k):
                pp += np.float64(g[support[e, way, j // k] * n_clips + support[e, way, j % k]])
            row = s0 * n_clips
            for i in range(nq):
                acc[i] = np.float64(g[row + cols[i]])
            for kk in range(1, k):
                row = support[e, way, kk] * n_clips
                for i in range(nq):
                    acc[i] += np.float64(g[row + cols[i]])
            if way == 0:
                for i in range(nq):
                    best[i] = pp - two_k * acc[i]
                    pred[e, i] = 0
            else:
                for i in range(nq):
                    score = pp - two_k * acc[i]
                    if score < best[i]:
                        best[i] = score
                        pred[e, i] = way


@functools.lru_cache(maxsize=1)
def numba_kernel() -> Callable[..., None] | None:
    """`_gram_kernel` compiled with numba (on-disk cache, releases the GIL), or None where numba
    is not installed. numba is imported here, on first use, never at import time."""
    try:
        import numba
    except ImportError:
        return None
    except Exception as exc:      # a broken install, or a module shadowing one numba imports
        warnings.warn(f"numba failed to import ({exc!r}); scoring uses the numpy path (same "
                      f"answers, slower)", RuntimeWarning, stacklevel=2)
        return None
    return numba.njit(cache=True, nogil=True)(_gram_kernel)


def use_numba(accelerate: bool | None, gathers: int) -> bool:
    """Whether the Gram path runs the numba kernel: `accelerate` if given, else ASC_BENCH_NUMBA
    (0: never, 1: whenever installed), else when numba is installed and there are at least
    NUMBA_MIN_GATHERS Gram reads. The answer is the same either way; only the time differs."""
    if accelerate is not None:
        return bool(accelerate)
    env = os.environ.get(NUMBA_ENV, "").strip()
    if env == "0":
        return False
    if env != "1" and gathers < NUMBA_MIN_GATHERS:
        return False
    return numba_kernel() is not None


def _predict_gram(x: np.ndarray, ep: Episodes, threads: int,
                  accelerate: bool | None = None) -> np.ndarray:
    n_clips = x.shape[0]
    g = np.dot(x, x.T).reshape(-1)                   # float32; symmetric
    e_all, n, k = ep.support_idx.shape
    nq = ep.query_idx.shape[1]
    pred = np.empty((e_all, nq), dtype=np.int64)
    if use_numba(accelerate, e_all * n * (k * nq + k * k)):
        kernel = numba_kernel()
        if kernel is None:
            raise AscBenchError("accelerate=True needs numba: pip install 'asc-bench[fast]'")
        sup = np.ascontiguousarray(ep.support_idx, dtype=np.int64)
        qry = np.ascontiguousarray(ep.query_idx, dtype=np.int64)
        work = lambda a, b: kernel(g, n_clips, sup, qry, k, pred, a, b)
    else:
        work = lambda a, b: _gram_rows(g, n_clips, ep, a, b, pred)
    parts = max(1, min(threads, e_all // 256))       # each episode's answer is independent of
    bounds = np.linspace(0, e_all, parts + 1).astype(int)   # the split: results never change
    if parts == 1:
        work(0, e_all)
        return pred
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(lambda i: work(int(bounds[i]), int(bounds[i + 1])), range(parts)))
    return pred


def _predict_direct(x: np.ndarray, ep: Episodes) -> np.ndarray:
    e_all, n, k = ep.support_idx.shape
    nq = ep.query_idx.shape[1]
    d = x.shape[1]
    pred = np.empty((e_all, nq), dtype=np.int64)
    step = _chunk_size((nq + n * k) * d)
    for a in range(0, e_all, step):
        b = min(e_all, a + step)
        proto_sum = x[ep.support_idx[a:b]].sum(axis=2, dtype=np.float64)        # [e, N, D]
        qx = x[np.maximum(ep.query_idx[a:b], 0)].astype(np.float64)             # [e, Q, D]
        # same rule as the Gram path: K^2||p||^2 - 2K q.(K p)
        pp = np.einsum("end,end->ne", proto_sum, proto_sum)
        qs = np.einsum("eqd,end->neq", qx, proto_sum)
        pred[a:b] = _decide(pp, qs, k)
    return pred


def choose_method(n_clips: int, ep: Episodes) -> str:
    """'gram' when the n^2 D Gram matrix is cheaper than gathering every episode's rows.

    Measured on 2 cores: the Gram path costs about 3e-11 s per n^2 D, the direct path about
    6e-9 s per gathered row element (E (N*Q + N*K) D), hence the factor 200.
    """
    e, n, k = ep.support_idx.shape
    rows = e * (ep.query_idx.shape[1] + n * k)
    return "gram" if n_clips <= GRAM_MAX_CLIPS and n_clips ** 2 <= 200 * rows else "direct"


def prototype_predictions(embeddings: np.ndarray, ep: Episodes, *, method: str = "auto",
                          threads: int | None = None,
                          accelerate: bool | None = None) -> np.ndarray:
    """Predicted way position for every query column, [E, N*Q] (padded columns are meaningless).

    `threads` (default: the CPU count, at most 8) splits the episodes of the Gram path across
    threads; the answer does not depend on it. `accelerate` chooses the Gram path's kernel: True
    the numba one (an error where numba is missing), False the numpy reference, None (default)
    see `use_numba`; both give the same answer.
    """
    x = _centred(embeddings)
    if method == "auto":
        method = choose_method(x.shape[0], ep)
    if method == "gram":
        return _predict_gram(x, ep, threads or min(8, os.cpu_count() or 1), accelerate)
    if method == "direct":
        return _predict_direct(x, ep)
    raise AscBenchError(f"unknown prototype scoring method {method!r}")


def prototype_correct(embeddings: np.ndarray, ep: Episodes, *, method: str = "auto",
                      threads: int | None = None, accelerate: bool | None = None) -> np.ndarray:
    """Per-query correctness [E, N*Q] bool (False at padded columns)."""
    pred = prototype_predictions(embeddings, ep, method=method, threads=threads,
                                 accelerate=accelerate)
    return (pred == ep.query_way[None, :]) & ep.query_mask


def prototype_accuracy(embeddings: np.ndarray, ep: Episodes, *, method: str = "auto",
                       threads: int | None = None, accelerate: bool | None = None) -> np.ndarray:
    """Per-episode accuracy [E] float64 over the episode's real queries."""
    correct = prototype_correct(embeddings, ep, method=method, threads=threads,
                                accelerate=accelerate)
    return correct.sum(axis=1) / ep.query_mask.sum(axis=1)


def _sample(data: EvalData, params: Mapping[str, Any], seed: int) -> tuple[EpisodeParams, Episodes]:
    check_params("fewshot-prototype", params, PROTOTYPE)
    p = EpisodeParams.from_params(params)
    ep = sample_episodes(data.labels, data.splits, p, seed, classes=data.classes,
                         spec_hash=str(params.get("_spec_hash", "")),
                         fingerprint=str(params.get("_fingerprint", "")), groups=data.groups)
    return replace(p, group_disjoint=ep.group_disjoint), ep


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `fewshot-prototype` protocol (see the module docstring)."""
    p, ep = _sample(data, params, seed)
    correct = prototype_correct(data.embeddings, ep)   # vectorised: milliseconds, one report suffices
    scores = correct.sum(axis=1) / ep.query_mask.sum(axis=1)
    data.report(ep.n_episodes, ep.n_episodes)
    outcome = EpisodeOutcome(support=ep.support_idx.reshape(ep.n_episodes, -1),
                             query=np.where(ep.query_mask, ep.query_idx, -1), correct=correct)
    return ProtocolResult(scores=scores, episode_hash=ep.hash, unit="episode", metric="accuracy",
                          params=p.canonical(), predictions=None, notes=list(ep.notes),
                          outcome=outcome)


def episodes(data: EvalData, params: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """The episodes `run` scores, without embeddings: support and real queries as clip rows."""
    _, ep = _sample(data, params, seed)
    return episode_units(ep)


def episode_units(ep: Episodes) -> list[dict[str, Any]]:
    """[{"support": rows (way-major), "query": real query rows (way-major)}] per episode."""
    sup = ep.support_idx.reshape(ep.n_episodes, -1).tolist()
    return [{"support": s, "query": ep.query_idx[i][ep.query_mask[i]].tolist()}
            for i, s in enumerate(sup)]


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): `run` itself, on zero
    embeddings of the listing and one episode. The same validation and sampler decide, so unknown
    params, n_way against the classes and class counts against K + Q fail in seconds; the
    feasibility of the draws does not depend on their number."""
    EpisodeParams.from_params(params)          # the real episode count is validated too
    run(info.as_eval_data(), {**params, "episodes": 1}, seed)
