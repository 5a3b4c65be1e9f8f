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
- **Fit.** scikit-learn's LogisticRegression(lbfgs, multinomial) objective and optimiser path
  on one BLAS thread (plugins/protocols/logreg.py), the Cs of an inner split side by side.
  Training sets below FLOAT64_MAX entries (e.g. 2,700 x 768) are fitted in float64, each C
  on its own products, which reproduces GridSearchCV's choice even on the exact ties of
  validation accuracy it breaks by rounding; larger ones, where the products are the cost, in
  float32 with the Cs sharing their products. On large training sets every (fold, inner split)
  and every refit is a task on a pool of one thread per CPU (`fit_probes`; no result depends
  on it). `benchmarks/probes.py` checks the chosen C and the test predictions against
  GridSearchCV over sklearn pipelines.

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
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, EvalData, ListingInfo, ProtocolResult, UsageError, check_params
from asc_bench.evaluation.episodes import make_rng
from asc_bench_plugins.protocols import logreg
from asc_bench_plugins.protocols.folds import group_codes, make_folds, stratified_group_folds
from asc_bench_plugins.protocols.params import LINEAR_PROBE as PARAMS, LINEAR_PROBE_CS as DEFAULT_CS

PARALLEL_MIN = 1 << 17          # training entries from which the fits run on one thread per CPU
FLOAT64_MAX = 1 << 21           # training entries below which fits run in float64, unshared


@dataclass
class ProbeModel:
    """Standardiser fitted on the training clips + logistic regression in that space."""

    scaler: logreg.Standardiser
    logreg: logreg.LogReg
    dtype: type = np.float32    # the standardised features and the products of the fit

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logreg.predict(self.scaler.transform(x, self.dtype))


@dataclass
class ProbeFit:
    model: ProbeModel           # the scaler saw the training clips only
    C: float                    # chosen inverse regularisation
    inner_splits: int | None    # None when no inner CV was possible (or a single C)
    n_unconverged: int          # fits that hit max_iter (inner CV and refit)
    inner_scores: list[float] | None = None   # mean validation accuracy per sorted C
    grouped: bool = False       # inner CV kept groups apart


def _workers(entries: int) -> int:
    return len(os.sched_getaffinity(0)) if entries >= PARALLEL_MIN else 1


def inner_splits(y: np.ndarray, groups: np.ndarray | None, n_folds: int, random_state: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV splits of the training rows: grouped and stratified where `groups` is given.

    Returns [] when no split is possible (a single-clip class, or fewer than 2 groups).
    """
    counts = np.bincount(y)
    counts = counts[counts > 0]
    k = min(int(n_folds), int(counts.min()))
    if groups is not None:
        k = min(k, int(np.unique(groups).size))
    if k < 2:
        return []
    if groups is None:
        from sklearn.model_selection import StratifiedKFold   # 1.4 s to import: only here

        dummy = np.zeros((y.size, 1))
        cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
        return list(cv.split(dummy, y))
    return [(a, b) for a, b in stratified_group_folds(y, groups, k, random_state)
            if a.size and b.size]


@dataclass
class ProbeProblem:
    """One training set to fit a probe on (a fold's training clips)."""

    x: np.ndarray                       # [n, D] training embeddings
    y: np.ndarray                       # [n] class ids
    groups: np.ndarray | None = None    # [n] group codes: the inner CV keeps groups apart
    random_state: int = 0               # seeds the inner splits


def fit_probes(problems: Sequence[ProbeProblem], *, Cs: Sequence[float] = DEFAULT_CS,
               inner_folds: int = 3, max_iter: int = 1000, threads: int | None = None,
               dtype: type | None = None,
               on_progress: Callable[[int, int], None] | None = None) -> list[ProbeFit]:
    """`fit_probe` for several training sets at once (linear-probe's folds), sharing one pool.

    Every (problem, inner split) fit and every refit is a separate task on `threads` threads
    (default: the CPUs from PARALLEL_MIN training entries, else 1), so folds overlap instead of
    waiting for each other's slowest split. Each task's result depends only on its inputs, so
    the fits never depend on the thread count or scheduling. BLAS runs on one thread
    (threadpoolctl) whatever the caller's setting. `on_progress(i, n)` is called in the
    caller's thread once problem i's C is chosen (its refit may still be running).
    """
    grid = sorted(float(c) for c in Cs)
    probs = []
    for p in problems:
        y = np.asarray(p.y, dtype=np.int64)
        if np.unique(y).size < 2:
            raise AscBenchError("a linear-probe training fold holds fewer than 2 classes")
        splits = inner_splits(y, p.groups, inner_folds, p.random_state) if len(grid) > 1 else []
        probs.append((p.x, y, int(y.max()) + 1, splits))
    largest = max((p[0].size for p in probs), default=0)
    if threads is None:
        threads = _workers(largest)
    exact = largest < FLOAT64_MAX if dtype is None else dtype == np.float64
    dtype = np.float64 if exact else np.float32

    def inner(i: int, j: int) -> list[tuple[float, bool]]:
        x, y, n_cls, splits = probs[i]
        a, b = splits[j]
        sc = logreg.Standardiser.fit(x[a])
        xb = sc.transform(x[b], dtype)
        return [(float(np.mean(m.predict(xb) == y[b])), m.converged)
                for m in logreg.fit_path(sc.transform(x[a], dtype), y[a], grid, n_cls,
                                         max_iter=max_iter, dtype=dtype, share_products=not exact)]

    def refit(i: int, c: float) -> ProbeModel:
        x, y, n_cls, _ = probs[i]
        full = logreg.Standardiser.fit(x)
        return ProbeModel(full, logreg.fit_path(full.transform(x, dtype), y, [c], n_cls,
                                                max_iter=max_iter, dtype=dtype)[0], dtype)

    out = []
    with logreg.one_blas_thread(), ThreadPoolExecutor(max(1, threads)) as pool:
        pending = [[pool.submit(inner, i, j) for j in range(len(pr[3]))]
                   for i, pr in enumerate(probs)]
        chosen = []
        for i, futures in enumerate(pending):
            if not futures:
                c_best, scores, n_bad = grid[len(grid) // 2], None, 0
            else:
                done = [f.result() for f in futures]
                acc = np.array([[r[0] for r in d] for d in done])       # [split, C]
                n_bad = sum(not r[1] for d in done for r in d)
                scores = acc.mean(axis=0)
                c_best = grid[int(np.flatnonzero(scores == scores.max())[0])]
            chosen.append((c_best, scores, n_bad, pool.submit(refit, i, c_best)))
            if on_progress is not None:
                on_progress(i + 1, len(probs))
        for (_, _, _, splits), p, (c_best, scores, n_bad, model) in zip(probs, problems, chosen):
            m = model.result()
            out.append(ProbeFit(m, c_best, len(splits) or None, n_bad + (not m.logreg.converged),
                                None if scores is None else [float(s) for s in scores],
                                grouped=p.groups is not None and bool(splits)))
    return out


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, *, groups: np.ndarray | None = None,
              Cs: Sequence[float] = DEFAULT_CS, inner_folds: int = 3, random_state: int = 0,
              max_iter: int = 1000, threads: int | None = None) -> ProbeFit:
    """Choose C by inner (grouped) stratified CV on the training clips, then refit on all of them.

    Selection: mean inner validation accuracy per C, ties to the smallest C (GridSearchCV's
    first-best rule); each inner training part is standardised on its own rows. See
    `fit_probes` for threads.
    """
    return fit_probes([ProbeProblem(x_train, y_train, groups, random_state)], Cs=Cs,
                      inner_folds=inner_folds, max_iter=max_iter, threads=threads)[0]


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
    fits = fit_probes([ProbeProblem(x[tr], y[tr], None if groups is None else groups[tr],
                                    fold_seed(seed, params, name))
                       for name, tr in zip(folds.names, folds.train)],
                      Cs=cs, inner_folds=inner, max_iter=max_iter, on_progress=data.report)
    for name, te, fit in zip(folds.names, folds.test, fits):      # in fold order
        correct = fit.model.predict(x[te]) == y[te]
        scores.append(float(correct.mean()))
        idx_all.append(te)
        ok_all.append(correct)
        chosen.append(fit.C)
        scheme = (f"{fit.inner_splits}-fold {'grouped ' if fit.grouped else ''}inner CV"
                  if fit.inner_splits
                  else "no inner CV (a class with one clip or group): middle C")
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
