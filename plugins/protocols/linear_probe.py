"""linear-probe: standardised logistic regression on frozen embeddings over the official folds.

For every fold (see plugins/protocols/folds.py) C is chosen from `Cs` by an inner cross-validation
on the fold's TRAINING clips only, then the model is refitted on all of them at that C:

- **Inner CV.** Grouped whenever the dataset defines groups (EvalData.groups; e.g. ESC-50
  src_file, TUT17 location), so no recording is split between an inner training part and its
  validation part (a recording's other fragments would otherwise make the large-C, memorising
  fits look best): stratified group folds (folds.stratified_group_folds, seeded). Without
  groups: sklearn's StratifiedKFold(shuffled, seeded). The inner CV uses min(inner_folds,
  smallest training class count) folds, and with groups at most the number of distinct
  training groups. With a
  single-clip class (or a single group) no split exists and the middle C of the sorted grid is
  used; the fold's note says so.
- **Standardisation.** Each inner training part is standardised with its own mean/s.d.
  (StandardScaler's rule) and so is the outer training part for the test clips: test and
  validation clips never influence the mean/variance, the chosen C or the weights.
- **Selection.** Mean inner validation accuracy per C; ties pick the smallest C (Cs are sorted
  ascending), as GridSearchCV's first-best rule does.
- **Fit.** scikit-learn's LogisticRegression(lbfgs, multinomial) objective and optimiser path,
  with float32 products on one BLAS thread (plugins/protocols/logreg.py). On large training
  sets the (inner fold, C) fits run in parallel threads (one BLAS thread each; the result does
  not depend on it). `benchmarks/probes.py` checks the
  chosen C and the test predictions against GridSearchCV over sklearn pipelines.

Score per fold = test accuracy. Predictions: every test clip's correctness, concatenated over the
folds (with `folds: official` each clip is tested exactly once, so the clips are independent for
McNemar), sorted by clip row. The inner-CV seed is drawn from
asc_bench.evaluation.episodes.make_rng(seed, _spec_hash, _fingerprint, "linear-probe:<fold>").
The result's `details` hold the chosen C and the inner-CV scheme per fold.

Params: see PARAMS (and docs/protocols.md).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, EvalData, ListingInfo, ProtocolResult, UsageError, check_params
from asc_bench.evaluation.episodes import make_rng
from asc_bench_plugins.protocols import logreg
from asc_bench_plugins.protocols.folds import group_codes, make_folds, stratified_group_folds
from asc_bench_plugins.protocols.params import LINEAR_PROBE as PARAMS, LINEAR_PROBE_CS as DEFAULT_CS

PARALLEL_MIN = 1 << 21          # training matrix entries from which inner folds run in threads


@dataclass
class ProbeModel:
    """Standardiser fitted on the training clips + logistic regression in that space."""

    scaler: logreg.Standardiser
    logreg: logreg.LogReg

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logreg.predict(self.scaler.transform(x))


@dataclass
class ProbeFit:
    model: ProbeModel           # the scaler saw the training clips only
    C: float                    # chosen inverse regularisation
    inner_splits: int | None    # None when no inner CV was possible (or a single C)
    n_unconverged: int          # fits that hit max_iter (inner CV and refit)
    inner_scores: list[float] | None = None   # mean validation accuracy per sorted C
    grouped: bool = False       # inner CV kept groups apart


def inner_splits(y: np.ndarray, groups: np.ndarray | None, n_folds: int, random_state: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV splits of the training rows: grouped and stratified where `groups` is given.

    Returns [] when no split is possible (a single-clip class, or fewer than 2 groups).
    """
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    counts = counts[counts > 0]
    k = min(int(n_folds), int(counts.min()))
    if groups is not None:
        k = min(k, int(np.unique(groups).size))
    if k < 2:
        return []
    dummy = np.zeros((y.size, 1))
    if groups is None:
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
        return list(cv.split(dummy, y))
    return [(a, b) for a, b in stratified_group_folds(y, groups, k, random_state)
            if a.size and b.size]


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, *, groups: np.ndarray | None = None,
              Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, random_state: int = 0,
              max_iter: int = 1000) -> ProbeFit:
    """Choose C by inner (grouped) stratified CV on the training clips, then refit on all of them.

    Runs on one BLAS thread (threadpoolctl) whatever the caller's setting.
    """
    y = np.asarray(y_train, dtype=np.int64)
    present = np.unique(y)
    if present.size < 2:
        raise AscBenchError("a linear-probe training fold holds fewer than 2 classes")
    n_cls = int(y.max()) + 1
    grid = sorted(float(c) for c in Cs)
    with logreg.one_blas_thread():
        splits = inner_splits(y, groups, inner_folds, random_state) if len(grid) > 1 else []
        full = logreg.Standardiser.fit(x_train)
        n_bad = 0
        if not splits:
            c_best, scores = grid[len(grid) // 2], None
        else:
            parts = [(sc, sc.transform(x_train[a]), sc.transform(x_train[b]))
                     for a, b in splits for sc in [logreg.Standardiser.fit(x_train[a])]]

            def inner(task: tuple[int, int]) -> tuple[float, bool]:
                j, i = task
                (a, b), (_, xa, xb) = splits[j], parts[j]
                m = logreg.fit_path(xa, y[a], [grid[i]], n_cls, max_iter=max_iter)[0]
                return float(np.mean(m.predict(xb) == y[b])), m.converged

            tasks = [(j, i) for j in range(len(splits)) for i in range(len(grid))]
            workers = min(len(tasks), len(os.sched_getaffinity(0)))
            if workers > 1 and x_train.size >= PARALLEL_MIN:
                with ThreadPoolExecutor(workers) as pool:   # independent fits, one BLAS thread
                    done = list(pool.map(inner, tasks))     # each: the result does not change
            else:
                done = [inner(t) for t in tasks]
            acc = np.array([r[0] for r in done]).reshape(len(splits), len(grid))
            n_bad += sum(not r[1] for r in done)
            scores = acc.mean(axis=0)
            best = int(np.flatnonzero(scores == scores.max())[0])
            c_best = grid[best]
        model = logreg.fit_path(full.transform(x_train), y, [c_best], n_cls, max_iter=max_iter)[0]
    n_bad += not model.converged
    return ProbeFit(ProbeModel(full, model), c_best, len(splits) or None, n_bad,
                    None if scores is None else [float(s) for s in scores],
                    grouped=groups is not None and bool(splits))


def fold_seed(seed: int, params: Mapping[str, Any], fold: str) -> int:
    """The inner-CV seed of one fold: same task, dataset, seed and fold -> same inner splits."""
    return int(make_rng(seed, str(params.get("_spec_hash", "")), str(params.get("_fingerprint", "")),
                        f"linear-probe:{fold}").integers(0, 2**31 - 1))


def run(data: EvalData, params: Mapping[str, Any], seed: int) -> ProtocolResult:
    """The `linear-probe` protocol (see the module docstring)."""
    check_params("linear-probe", params, PARAMS)
    folds = make_folds(data.splits, params.get("folds", "official"))
    try:
        cs = [float(c) for c in params.get("Cs", DEFAULT_CS)]
    except (TypeError, ValueError):
        cs = []
    if not cs or min(cs) <= 0:
        raise UsageError(f"linear-probe Cs must be a list of positive numbers, got "
                         f"{params.get('Cs')!r}")
    inner = int(params.get("inner_folds", 3))
    if inner < 2:
        raise UsageError(f"linear-probe inner_folds must be >= 2, got {inner}")
    max_iter = int(params.get("max_iter", 1000))
    x = np.asarray(data.embeddings, dtype=np.float32)
    y = np.asarray(data.labels, dtype=np.int64)
    groups = group_codes(getattr(data, "groups", None), y.size)
    scores, idx_all, ok_all, notes, chosen, schemes = [], [], [], [], [], []
    for name, tr, te in zip(folds.names, folds.train, folds.test):
        fit = fit_probe(x[tr], y[tr], groups=None if groups is None else groups[tr], Cs=cs,
                        inner_folds=inner, random_state=fold_seed(seed, params, name),
                        max_iter=max_iter)
        correct = fit.model.predict(x[te]) == y[te]
        scores.append(float(correct.mean()))
        idx_all.append(te)
        ok_all.append(correct)
        chosen.append(fit.C)
        data.report(len(scores), len(folds.names))
        scheme = (f"{fit.inner_splits}-fold {'grouped ' if fit.grouped else ''}inner CV"
                  if fit.inner_splits else "no inner CV (a class with one clip or group): middle C")
        schemes.append(scheme)
        notes.append(f"fold {name}: C={fit.C:g} ({scheme})"
                     + (f", {fit.n_unconverged} fits hit max_iter" if fit.n_unconverged else ""))
    idx = np.concatenate(idx_all)
    ok = np.concatenate(ok_all)
    order = np.argsort(idx, kind="stable")
    effective = {"folds": params.get("folds", "official"), "Cs": sorted(cs),
                 "inner_folds": inner, "max_iter": max_iter}
    details = {"chosen_C": chosen, "inner_cv": schemes,
               "inner_cv_grouped": groups is not None}
    return ProtocolResult(scores=np.asarray(scores), episode_hash=folds.hash, unit="fold",
                          metric="accuracy", params=effective,
                          predictions={"index": idx[order], "correct": ok[order]}, notes=notes,
                          fold_sizes=folds.sizes, details=details)


def check(info: ListingInfo, params: Mapping[str, Any], seed: int) -> None:
    """Pre-check before any audio is decoded (ProtocolEntry.check): unknown params, and the folds
    build from the listing's splits exactly as `run` builds them (values of Cs/inner_folds are
    checked by `run`)."""
    check_params("linear-probe", params, PARAMS)
    make_folds(info.splits, params.get("folds", "official"))
