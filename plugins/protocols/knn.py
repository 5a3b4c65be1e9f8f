"""knn: weighted k-nearest-neighbour classification on cosine similarity, same folds as linear-probe.

Embeddings are L2-normalised (float64), so cosine similarity is a dot product. For each test clip
the k training clips with the highest similarity are its neighbours (ties at the k-th similarity
go to the lower training row, so the set never depends on the partition algorithm). Each
neighbour votes for its label with weight
    exp(sim / T)      weighting "exp" (default, T = `temperature`, default 0.07; Wu et al. 2018;
                      computed as exp((sim - 1) / T), the same up to a common factor),
    sim               weighting "similarity" (can be negative),
    1                 weighting "uniform";
the class with the largest summed weight wins (ties: the lowest class index). Nothing is fitted
beyond the per-row normalisation, so there is no train/test leakage to guard against.

Score per fold = test accuracy; predictions = per-clip correctness over all folds, sorted by row.
Params: see PARAMS (and docs/protocols.md).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from asc_bench.api import EvalData, ListingInfo, ProtocolResult, UsageError, check_params
from asc_bench_plugins.protocols.folds import make_folds
from asc_bench_plugins.protocols.logistic import l2_normalise
from asc_bench_plugins.protocols.params import KNN as PARAMS

_CHUNK_ELEMENTS = 1 << 23


def _top_k(sim: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest values per row; ties at the k-th value go to the lower column.

    Linear time per row (np.partition for the k-th value, then masks), so a TAU22-sized train
    set does not need a full sort; the chosen set never depends on the partition algorithm.
    """
    kth = np.partition(sim, sim.shape[1] - k, axis=1)[:, sim.shape[1] - k][:, None]
    above = sim > kth
    tied = sim == kth
    need = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
    return np.nonzero(chosen)[1].reshape(sim.shape[0], k)


def knn_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, k: int = 10,
                weighting: str = "exp", temperature: float = 0.07,
                n_classes: int | None = None) -> np.ndarray:
    """Predicted class per test row (inputs are L2-normalised here)."""
    tr, te = l2_normalise(x_train), l2_normalise(x_test)
    y_train = np.asarray(y_train, dtype=np.int64)
    n_cls = int(n_classes if n_classes is not None else y_train.max() + 1)
    k = min(k, tr.shape[0])
    out = np.empty(te.shape[0], dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, tr.shape[0]))
    for a in range(0, te.shape[0], step):
        sim = te[a:a + step] @ tr.T                                        # [b, n_train]
        nn = _top_k(sim, k)
        s = np.take_along_axis(sim, nn, 1)
        if weighting == "exp":
            w = np.exp((s - 1.0) / temperature)     # shifted by the max possible sim: no overflow
        elif weighting == "similarity":
            w = s
        elif weighting == "uniform":
            w = np.ones_like(s)
        else:
            raise UsageError(f"knn weighting must be exp, similarity or uniform, got {weighting!r}")
        votes = np.zeros((s.shape[0], n_cls), dtype=np.float64)
        np.add.at(votes, (np.arange(s.shape[0])[:, None], y_train[nn]), w)
        out[a:a + step] = np.argmax(votes, axis=1)
    return out


def _settings(params: Mapping[str, Any]) -> tuple[int, str, float]:
    check_params("knn", params, PARAMS)
    k = params.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"knn k must be a positive integer, got {k!r}")
    weighting = str(params.get("weighting", "exp"))
    if weighting not in ("exp", "similarity", "uniform"):
        raise UsageError(f"knn weighting must be exp, similarity or uniform, got {weighting!r}")
    try:
        temperature = float(params.get("temperature", 0.07))
    except (TypeError, ValueError):
        raise UsageError(f"knn temperature must be a number, got {params.get('temperature')!r}") from None
    if temperature <= 0:
        raise UsageError(f"knn temperature must be > 0, got {temperature}")
    return k, weighting, temperature


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): valid params, and the folds
    build from the listing's splits exactly as `run` builds them."""
    _settings(params)
    make_folds(info.splits, params.get("folds", "official"))


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `knn` protocol (see the module docstring); `seed` is unused (nothing is random)."""
    k, weighting, temperature = _settings(params)
    folds = make_folds(data.splits, params.get("folds", "official"))
    y = np.asarray(data.labels, dtype=np.int64)
    scores, idx_all, ok_all = [], [], []
    for tr, te in zip(folds.train, folds.test):
        pred = knn_predict(data.embeddings[tr], y[tr], data.embeddings[te], k=k,
                           weighting=weighting, temperature=temperature,
                           n_classes=len(data.classes))
        correct = pred == y[te]
        scores.append(float(correct.mean()))
        idx_all.append(te)
        ok_all.append(correct)
        data.report(len(scores), len(folds.names))
    idx = np.concatenate(idx_all)
    ok = np.concatenate(ok_all)
    order = np.argsort(idx, kind="stable")
    effective = {"k": k, "weighting": weighting, "temperature": temperature,
                 "folds": params.get("folds", "official")}
    return ProtocolResult(scores=np.asarray(scores), episode_hash=folds.hash, unit="fold",
                          metric="accuracy", params=effective,
                          predictions={"index": idx[order], "correct": ok[order]},
                          fold_sizes=folds.sizes,
                          notes=[f"{len(folds.names)} fold(s): {', '.join(folds.names)}"])
