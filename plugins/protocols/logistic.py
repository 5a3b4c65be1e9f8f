"""fewshot-logistic: ContrastASC-style K-shot logistic-regression probe over all classes.

One draw = K clips of every class as training data, every other clip as test data
(`query: rest`; the draws are sampled by asc_bench.evaluation.episodes as `n_way: all`, `n_query: rest`,
`episodes: draws`, so they depend only on labels, params, seed, `_spec_hash` and `_fingerprint`).
Embeddings are L2-normalised per clip; a multinomial logistic regression (scikit-learn, lbfgs,
inverse regularisation C, no intercept scaling, max_iter 1000) is fitted on the K*C training clips
and scored on the rest. The score of a draw is its test accuracy; `scores` has one entry per draw.

Predictions (for McNemar): only the FIRST draw's per-clip correctness is kept. Concatenating the
draws would repeat clips, and McNemar assumes independent clips; the first draw is as random as
any other and is the same for every encoder (same episode hash).

Params: k_shot, draws (default 10), C (default 1.0), query ("rest" only), class_pool,
exclude_small_classes (default false), max_iter (default 1000).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from asc_bench.api import EvalData, ListingInfo, ProtocolResult, UsageError
from asc_bench.evaluation.episodes import EpisodeParams, sample_episodes

_KNOWN = {"k_shot", "draws", "C", "query", "class_pool", "exclude_small_classes", "max_iter"}


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float64; an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _positive_float(value: Any, key: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = -1.0
    if not v > 0:
        raise UsageError(f"fewshot-logistic param {key} must be a positive number, got {value!r}")
    return v


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `fewshot-logistic` protocol (see the module docstring)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    unknown = sorted(k for k in params if not k.startswith("_") and k not in _KNOWN)
    if unknown:
        raise UsageError(f"fewshot-logistic does not know params {unknown}; known: "
                         f"{sorted(_KNOWN)}")
    if params.get("query", "rest") != "rest":
        raise UsageError("fewshot-logistic only supports query: rest")
    c_value = _positive_float(params.get("C", 1.0), "C")
    max_iter = int(params.get("max_iter", 1000))
    ep_params = EpisodeParams.from_params({
        "n_way": "all", "k_shot": params.get("k_shot"), "n_query": "rest",
        "episodes": params.get("draws", 10), "class_pool": params.get("class_pool"),
        "exclude_small_classes": params.get("exclude_small_classes", False)})
    ep = sample_episodes(data.labels, data.splits, ep_params, seed, classes=data.classes,
                         spec_hash=str(params.get("_spec_hash", "")),
                         fingerprint=str(params.get("_fingerprint", "")))
    x = l2_normalise(data.embeddings)
    y = np.asarray(data.labels, dtype=np.int64)
    scores = np.empty(ep.n_episodes, dtype=np.float64)
    predictions = None
    notes = [n for n in ep.notes if n.startswith("excluded")]
    n_unconverged = 0
    for d in range(ep.n_episodes):
        train = ep.support_idx[d].reshape(-1)
        test = ep.query_idx[d][ep.query_mask[d]]
        clf = LogisticRegression(C=c_value, solver="lbfgs", max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x[train], y[train])
        n_unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        correct = clf.predict(x[test]) == y[test]
        scores[d] = correct.mean()
        data.report(d + 1, ep.n_episodes)
        if d == 0:
            order = np.argsort(test, kind="stable")
            predictions = {"index": test[order].astype(np.int64),
                           "correct": correct[order].astype(bool)}
    if n_unconverged:
        notes.append(f"lbfgs did not converge within {max_iter} iterations in {n_unconverged} "
                     f"of {ep.n_episodes} draws")
    notes.append("predictions: per-clip correctness of the first draw only")
    effective = {"k_shot": ep_params.k_shot, "draws": ep_params.episodes, "C": c_value,
                 "query": "rest", "class_pool": ep_params.canonical()["class_pool"],
                 "exclude_small_classes": ep_params.exclude_small_classes, "max_iter": max_iter}
    return ProtocolResult(scores=scores, episode_hash=ep.hash, unit="episode", metric="accuracy",
                          params=effective, predictions=predictions, notes=notes)


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): `run` itself on zero
    embeddings of the listing with one draw (one tiny fit), so invalid params and classes with
    fewer than k_shot + 1 clips fail in seconds."""
    EpisodeParams.from_params({"n_way": "all", "k_shot": 1, "n_query": "rest",
                               "episodes": params.get("draws", 10)})     # the real draw count
    run(info.as_eval_data(), {**params, "draws": 1}, seed)
