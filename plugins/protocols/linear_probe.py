"""linear-probe: standardised logistic regression on frozen embeddings over the official folds.

For every fold (see plugins/protocols/folds.py): a scikit-learn Pipeline(StandardScaler,
LogisticRegression(lbfgs)) is tuned over C in `Cs` by GridSearchCV with an inner
StratifiedKFold(`inner_folds`, shuffled, seeded) on the fold's TRAINING clips only, then refitted
on all training clips. The scaler is a pipeline step, so inside the inner CV it is fitted on each
inner training part, and for the test clips on the outer training part: test clips never
influence the mean/variance, the chosen C or the weights. Ties in inner-CV accuracy pick the
smallest C (Cs are sorted ascending; GridSearchCV keeps the first best). The inner CV uses
min(inner_folds, smallest training class count) folds; with a single-clip class (no stratified
split possible) the middle C of the sorted grid is used and the fold's note says so.

Score per fold = test accuracy. Predictions: every test clip's correctness, concatenated over the
folds (with `folds: official` each clip is tested exactly once, so the clips are independent for
McNemar), sorted by clip row. The inner-CV seed is drawn from
asc_bench.evaluation.episodes.make_rng(seed, _spec_hash, _fingerprint, "linear-probe:<fold>").

Params: folds ("official" or {train, test}), Cs (default [0.01, 0.1, 1, 10, 100]), inner_folds
(default 3), max_iter (default 1000).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, EvalData, ListingInfo, ProtocolResult, UsageError
from asc_bench.evaluation.episodes import make_rng
from asc_bench_plugins.protocols.folds import make_folds

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)
_KNOWN = {"folds", "Cs", "inner_folds", "max_iter"}


@dataclass
class ProbeFit:
    model: Any                  # fitted Pipeline(scale, lr): the scaler saw the training clips only
    C: float                    # chosen inverse regularisation
    inner_splits: int | None    # None when a class had a single training clip (no inner CV)
    n_unconverged: int          # lbfgs fits that hit max_iter (inner CV and refit)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, *, Cs: Sequence[float] = DEFAULT_CS,
              inner_folds: int = 3, random_state: int = 0, max_iter: int = 1000) -> ProbeFit:
    """Choose C by inner stratified CV on the training clips, then refit on all of them.

    The inner CV uses min(inner_folds, smallest class count) folds; when some class has a single
    training clip no stratified split exists and the middle C of the sorted grid is used.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y_train)
    counts = counts[counts > 0]
    if counts.size < 2:
        raise AscBenchError("a linear-probe training fold holds fewer than 2 classes")
    pipe = Pipeline([("scale", StandardScaler()),
                     ("lr", LogisticRegression(solver="lbfgs", max_iter=max_iter))])
    grid = sorted(float(c) for c in Cs)
    splits = min(inner_folds, int(counts.min())) if counts.min() >= 2 else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if splits is None or len(grid) == 1:
            c_best = grid[len(grid) // 2]
            model = pipe.set_params(lr__C=c_best).fit(x_train, y_train)
        else:
            cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=random_state)
            search = GridSearchCV(pipe, {"lr__C": grid}, cv=cv, scoring="accuracy", refit=True,
                                  n_jobs=1)
            search.fit(x_train, y_train)
            model, c_best = search.best_estimator_, float(search.best_params_["lr__C"])
    n_bad = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return ProbeFit(model, c_best, splits if len(grid) > 1 else None, n_bad)


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `linear-probe` protocol (see the module docstring)."""
    unknown = sorted(k for k in params if not k.startswith("_") and k not in _KNOWN)
    if unknown:
        raise UsageError(f"linear-probe does not know params {unknown}; known: {sorted(_KNOWN)}")
    folds = make_folds(data.splits, params.get("folds", "official"))
    cs = [float(c) for c in params.get("Cs", DEFAULT_CS)]
    if not cs or min(cs) <= 0:
        raise UsageError(f"linear-probe Cs must be positive numbers, got {cs}")
    inner = int(params.get("inner_folds", 3))
    if inner < 2:
        raise UsageError(f"linear-probe inner_folds must be >= 2, got {inner}")
    max_iter = int(params.get("max_iter", 1000))
    x = np.asarray(data.embeddings, dtype=np.float64)
    y = np.asarray(data.labels, dtype=np.int64)
    scores, idx_all, ok_all, notes = [], [], [], []
    for name, tr, te in zip(folds.names, folds.train, folds.test):
        rs = int(make_rng(seed, str(params.get("_spec_hash", "")),
                          str(params.get("_fingerprint", "")), f"linear-probe:{name}"
                          ).integers(0, 2**31 - 1))
        fit = fit_probe(x[tr], y[tr], Cs=cs, inner_folds=inner, random_state=rs,
                        max_iter=max_iter)
        correct = fit.model.predict(x[te]) == y[te]
        scores.append(float(correct.mean()))
        idx_all.append(te)
        ok_all.append(correct)
        data.report(len(scores), len(folds.names))
        inner_note = (f"{fit.inner_splits}-fold inner CV" if fit.inner_splits
                      else "no inner CV")
        notes.append(f"fold {name}: C={fit.C:g} ({inner_note})"
                     + (f", {fit.n_unconverged} lbfgs fits did not converge"
                        if fit.n_unconverged else ""))
    idx = np.concatenate(idx_all)
    ok = np.concatenate(ok_all)
    order = np.argsort(idx, kind="stable")
    effective = {"folds": params.get("folds", "official"), "Cs": sorted(cs),
                 "inner_folds": inner, "max_iter": max_iter}
    return ProtocolResult(scores=np.asarray(scores), episode_hash=folds.hash, unit="fold",
                          metric="accuracy", params=effective,
                          predictions={"index": idx[order], "correct": ok[order]}, notes=notes,
                          fold_sizes=folds.sizes)


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): unknown params, and the folds
    build from the listing's splits exactly as `run` builds them (values of Cs/inner_folds are
    checked by `run`)."""
    unknown = sorted(k for k in params if not k.startswith("_") and k not in _KNOWN)
    if unknown:
        raise UsageError(f"linear-probe does not know params {unknown}; known: {sorted(_KNOWN)}")
    make_folds(info.splits, params.get("folds", "official"))
