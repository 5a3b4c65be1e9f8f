"""fewshot-logistic: ContrastASC-style K-shot logistic-regression probe over all classes.

One draw = K clips of every class as training data, every other clip as test data
(`query: rest`; the draws are sampled by asc_bench.evaluation.episodes as `n_way: all`, `n_query: rest`,
`episodes: draws`, so they depend only on labels, params, seed, `_spec_hash` and `_fingerprint`).
Embeddings are L2-normalised per clip; a multinomial logistic regression (scikit-learn, lbfgs,
inverse regularisation C, no intercept scaling, max_iter 1000) is fitted on the K*C training clips
and scored on the rest. The score of a draw is its test accuracy; `scores` has one entry per draw.

Per-draw outcome: every draw's support rows and per-test-clip correctness go to the runner as
an EpisodeOutcome (class- and group-level intervals). No `predictions`: a clip is tested in many
draws, so McNemar's independent-clips assumption fails, and a single draw would throw away the
other draws' evidence (compare uses the paired t over draws instead).

Params: k_shot, draws (default 10), C (default 1.0), query ("rest" only), class_pool,
exclude_small_classes (default false), max_iter (default 1000), group_disjoint (default: on when the
dataset defines groups: a draw's test clips exclude every clip from a group, i.e. recording/source,
of its training clips; `false` opts out; the result's params state the policy).
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from asc_bench.api import EpisodeOutcome, EvalData, ListingInfo, ProtocolResult, UsageError
from asc_bench.evaluation.episodes import EpisodeParams, Episodes, sample_episodes

_KNOWN = {"k_shot", "draws", "C", "query", "class_pool", "exclude_small_classes", "max_iter",
          "group_disjoint"}


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


def sample_draws(data: EvalData, params: Mapping[str, Any], seed: int
                 ) -> tuple[EpisodeParams, Episodes]:
    """The draws: `n_way: all`, `n_query: rest` episodes (group-disjoint where groups exist)."""
    ep_params = EpisodeParams.from_params({
        "n_way": "all", "k_shot": params.get("k_shot"), "n_query": "rest",
        "episodes": params.get("draws", 10), "class_pool": params.get("class_pool"),
        "exclude_small_classes": params.get("exclude_small_classes", False),
        "group_disjoint": params.get("group_disjoint")})
    ep = sample_episodes(data.labels, data.splits, ep_params, seed, classes=data.classes,
                         spec_hash=str(params.get("_spec_hash", "")),
                         fingerprint=str(params.get("_fingerprint", "")), groups=data.groups)
    return ep_params, ep


def episodes(data: EvalData, params: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """The draws `run` scores, without embeddings: training ("support") and test ("query") rows."""
    _check_params(params)
    from asc_bench_plugins.protocols.prototype import episode_units

    return episode_units(sample_draws(data, params, seed)[1])


def _check_params(params: Mapping[str, Any]) -> None:
    unknown = sorted(k for k in params if not k.startswith("_") and k not in _KNOWN)
    if unknown:
        raise UsageError(f"fewshot-logistic does not know params {unknown}; known: "
                         f"{sorted(_KNOWN)}")
    if params.get("query", "rest") != "rest":
        raise UsageError("fewshot-logistic only supports query: rest")


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `fewshot-logistic` protocol (see the module docstring)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    _check_params(params)
    c_value = _positive_float(params.get("C", 1.0), "C")
    max_iter = int(params.get("max_iter", 1000))
    ep_params, ep = sample_draws(data, params, seed)
    x = l2_normalise(data.embeddings)
    y = np.asarray(data.labels, dtype=np.int64)
    scores = np.empty(ep.n_episodes, dtype=np.float64)
    query_correct = np.zeros(ep.query_mask.shape, dtype=bool)
    notes = [n for n in ep.notes if n.startswith(("excluded", "group-disjoint"))]
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
        query_correct[d, ep.query_mask[d]] = correct
        data.report(d + 1, ep.n_episodes)
    if n_unconverged:
        notes.append(f"lbfgs did not converge within {max_iter} iterations in {n_unconverged} "
                     f"of {ep.n_episodes} draws")
    effective = {"k_shot": ep_params.k_shot, "draws": ep_params.episodes, "C": c_value,
                 "query": "rest", "class_pool": ep_params.canonical()["class_pool"],
                 "exclude_small_classes": ep_params.exclude_small_classes, "max_iter": max_iter,
                 "group_disjoint": ep.group_disjoint}
    return ProtocolResult(scores=scores, episode_hash=ep.hash, unit="episode", metric="accuracy",
                          params=effective, predictions=None, notes=notes,
                          outcome=EpisodeOutcome(
                              support=ep.support_idx.reshape(ep.n_episodes, -1),
                              query=np.where(ep.query_mask, ep.query_idx, -1),
                              correct=query_correct))


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): `run` itself on zero
    embeddings of the listing with one draw (one tiny fit), so invalid params and classes with
    fewer than k_shot + 1 clips fail in seconds."""
    EpisodeParams.from_params({"n_way": "all", "k_shot": 1, "n_query": "rest",
                               "episodes": params.get("draws", 10)})     # the real draw count
    run(info.as_eval_data(), {**params, "draws": 1}, seed)
