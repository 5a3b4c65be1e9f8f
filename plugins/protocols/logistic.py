"""fewshot-logistic: ContrastASC-style K-shot logistic-regression probe over all classes.

One draw = K clips of every class as training data, every other clip as test data
(`query: rest`; the draws are sampled by asc_bench.evaluation.episodes as `n_way: all`, `n_query: rest`,
`episodes: draws`, so they depend only on labels, params, seed, `_spec_hash` and `_fingerprint`).
Embeddings are L2-normalised per clip; a multinomial logistic regression (the objective of
scikit-learn's LogisticRegression(lbfgs), intercept unpenalised; solved by
plugins/protocols/logreg.py in float64) is fitted on the K*C training clips and scored on the rest.
The score of a draw is its test accuracy; `scores` has one entry per draw.

C selection (`C: auto`, the default). Per draw, C is chosen from `Cs` by cross-validation on that
draw's SUPPORT clips only (the queries are never seen before the final prediction, so permuting
their labels cannot change a chosen C): min(K, `inner_folds`) stratified folds, each holding out
about one support clip per class (leave-one-shot-out when K <= inner_folds); grouped
(folds.stratified_group_folds) where the dataset defines groups, so a held-out clip never shares a
recording with the clips it is validated against. The C with the highest mean validation
accuracy wins; ties go to the lower mean validation cross-entropy (validation folds hold few
clips, so accuracy ties are common and would otherwise always favour the smallest C), then to the
smallest C. Every fit starts from zeros, as scikit-learn's (see plugins/protocols/logreg.py).
With K = 1 no such split exists (holding out a class's only clip leaves the class untrained, and
leave-one-out over clips of other classes says nothing about C), so every draw uses the middle of
the sorted grid (C = 10 for the default grid) and a note says so. The same happens when groups
leave fewer than two folds. A number (`C: 1.0`) fixes C for every draw. The result's `details`
hold `chosen_C` (one per draw) and the selection scheme.

Per-draw outcome: every draw's support rows and per-test-clip correctness go to the runner as
an EpisodeOutcome (class- and group-level intervals). No `predictions`: a clip is tested in many
draws, so McNemar's independent-clips assumption fails, and a single draw would throw away the
other draws' evidence (compare uses the paired t over draws instead).

Params: see PARAMS (and docs/protocols.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import EpisodeOutcome, EvalData, ListingInfo, ProtocolResult, UsageError, check_params
from asc_bench.evaluation.episodes import EpisodeParams, Episodes, make_rng, sample_episodes
from asc_bench_plugins.protocols import logreg
from asc_bench_plugins.protocols.folds import group_codes
from asc_bench_plugins.protocols.params import LOGISTIC as PARAMS, LOGISTIC_CS as DEFAULT_CS



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
    check_params("fewshot-logistic", params, PARAMS)
    if params.get("query", "rest") != "rest":
        raise UsageError("fewshot-logistic only supports query: rest")


@dataclass
class DrawFit:
    """One draw: the C used, its inner-CV accuracy per grid C (None: not cross-validated), the
    per-query correctness (query order as given) and whether every fit converged."""

    C: float
    cv_accuracy: list[float] | None
    correct: np.ndarray
    converged: bool


def _choose_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, grid: Sequence[float],
              n_cls: int, inner_folds: int, random_state: int, max_iter: int
              ) -> tuple[float, list[float] | None, bool]:
    """C chosen on the support rows alone; returns (C, mean validation accuracy per C, converged)."""
    from asc_bench_plugins.protocols.linear_probe import inner_splits

    splits = inner_splits(y, groups, inner_folds, random_state) if len(grid) > 1 else []
    if not splits:
        return float(grid[len(grid) // 2]), None, True
    acc = np.zeros((len(splits), len(grid)))
    xent = np.zeros_like(acc)
    ok = True
    for j, (a, b) in enumerate(splits):
        for i, m in enumerate(logreg.fit_path(x[a], y[a], grid, n_cls, max_iter=max_iter,
                                              dtype=np.float64)):
            z = m.decision(x[b])
            acc[j, i] = np.mean(np.argmax(z, axis=1) == y[b])
            z = z - z.max(axis=1, keepdims=True)
            xent[j, i] = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(b.size), y[b]])
            ok &= m.converged
    a_mean, x_mean = acc.mean(axis=0), xent.mean(axis=0)
    best = min(range(len(grid)), key=lambda i: (-a_mean[i], x_mean[i], grid[i]))
    return float(grid[best]), [float(v) for v in a_mean], ok


def fit_draw(x: np.ndarray, y: np.ndarray, support: np.ndarray, query: np.ndarray, *,
             C: float | str = "auto", Cs: Sequence[float] = DEFAULT_CS, n_classes: int,
             groups: np.ndarray | None = None, inner_folds: int = 5, random_state: int = 0,
             max_iter: int = 1000) -> DrawFit:
    """Fit one draw on `support` rows (C chosen on them alone when C is "auto"), score `query`.

    `x` must already be L2-normalised. The query rows are used only by the final prediction.
    """
    xs, ys = x[support], y[support]
    grid = sorted(float(c) for c in Cs)
    with logreg.one_blas_thread():
        if C == "auto":
            c_used, cv_acc, ok = _choose_c(
                xs, ys, None if groups is None else groups[support], grid, n_classes,
                inner_folds, random_state, max_iter)
        else:
            c_used, cv_acc, ok = float(C), None, True
        model = logreg.fit_path(xs, ys, [c_used], n_classes, max_iter=max_iter,
                                dtype=np.float64)[0]
    correct = model.predict(x[query]) == y[query]
    return DrawFit(c_used, cv_acc, correct, ok and model.converged)


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `fewshot-logistic` protocol (see the module docstring)."""
    _check_params(params)
    c_param = params.get("C", "auto")
    c_value: float | str = "auto" if c_param == "auto" else _positive_float(c_param, "C")
    try:
        grid = sorted(float(c) for c in params.get("Cs", DEFAULT_CS))
    except (TypeError, ValueError):
        grid = []
    if not grid or grid[0] <= 0:
        raise UsageError(f"fewshot-logistic param Cs must be a list of positive numbers, got "
                         f"{params.get('Cs')!r}")
    inner_folds = params.get("inner_folds", 5)
    if isinstance(inner_folds, bool) or not isinstance(inner_folds, int) or inner_folds < 2:
        raise UsageError(f"fewshot-logistic param inner_folds must be an integer >= 2, got "
                         f"{inner_folds!r}")
    max_iter = int(params.get("max_iter", 1000))
    ep_params, ep = sample_draws(data, params, seed)
    x = l2_normalise(data.embeddings)
    y = np.asarray(data.labels, dtype=np.int64)
    groups = group_codes(getattr(data, "groups", None), y.size)
    cv_seeds = make_rng(seed, str(params.get("_spec_hash", "")), str(params.get("_fingerprint", "")),
                        "fewshot-logistic:C").integers(0, 2**31 - 1, size=ep.n_episodes)
    scores = np.empty(ep.n_episodes, dtype=np.float64)
    chosen = np.empty(ep.n_episodes, dtype=np.float64)
    query_correct = np.zeros(ep.query_mask.shape, dtype=bool)
    notes = [n for n in ep.notes if n.startswith(("excluded", "group-disjoint"))]
    n_unconverged = n_no_cv = 0
    for d in range(ep.n_episodes):
        train = ep.support_idx[d].reshape(-1)
        test = ep.query_idx[d][ep.query_mask[d]]
        fit = fit_draw(x, y, train, test, C=c_value, Cs=grid, n_classes=len(data.classes),
                       groups=groups, inner_folds=inner_folds, random_state=int(cv_seeds[d]),
                       max_iter=max_iter)
        n_unconverged += not fit.converged
        n_no_cv += c_value == "auto" and fit.cv_accuracy is None
        chosen[d] = fit.C
        scores[d] = fit.correct.mean()
        query_correct[d, ep.query_mask[d]] = fit.correct
        data.report(d + 1, ep.n_episodes)
    if n_unconverged:
        notes.append(f"lbfgs did not converge within {max_iter} iterations in {n_unconverged} "
                     f"of {ep.n_episodes} draws")
    k = ep_params.k_shot
    if c_value != "auto":
        scheme = "fixed"
    elif min(k, inner_folds) < 2:
        scheme = f"auto: K = 1 allows no split of the support; middle of Cs (C = {chosen[0]:g})"
        notes.append(f"C auto with K = 1: no support clip can be held out, so every draw uses "
                     f"the middle of Cs, C = {chosen[0]:g}")
    else:
        if n_no_cv:
            notes.append(f"C auto: in {n_no_cv} of {ep.n_episodes} draws the groups left fewer "
                         f"than 2 folds; those draws used the middle of Cs")
        scheme = (f"auto: {min(k, inner_folds)}-fold {'grouped ' if groups is not None else ''}"
                  f"stratified CV on the support of each draw")
    if c_value == "auto":
        values, counts = np.unique(chosen, return_counts=True)
        notes.append("chosen C per draw: " + ", ".join(f"{v:g} x{c}" for v, c in zip(values, counts)))
    effective = {"k_shot": ep_params.k_shot, "draws": ep_params.episodes, "C": c_value,
                 "query": "rest", "class_pool": ep_params.canonical()["class_pool"],
                 "exclude_small_classes": ep_params.exclude_small_classes, "max_iter": max_iter,
                 "group_disjoint": ep.group_disjoint}
    if c_value == "auto":
        effective.update({"Cs": grid, "inner_folds": inner_folds})
    details = {"chosen_C": chosen.tolist(), "C_selection": scheme}
    return ProtocolResult(scores=scores, episode_hash=ep.hash, unit="episode", metric="accuracy",
                          params=effective, predictions=None, notes=notes, details=details,
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
