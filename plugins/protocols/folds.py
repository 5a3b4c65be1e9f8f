"""Train/test folds from the clips' `split` field, shared by linear-probe and knn.

`folds: official`: every distinct split value is one test fold (in natural order: fold2 before
fold10), trained on all other clips. `folds: {train: [...], test: [...]}`: one fold. The fold
layout is hashed (asc_bench.evaluation.episodes.episode_hash over a [F, clips] int8 matrix: 1 train,
2 test, 0 unused) so that two runs pair only when they used the same folds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, UsageError
from asc_bench.evaluation.episodes import episode_hash


@dataclass
class Folds:
    names: list[str]                  # test split name(s) per fold, for notes
    train: list[np.ndarray]           # clip rows per fold
    test: list[np.ndarray]
    layout: np.ndarray                # [F, clips] int8

    @property
    def hash(self) -> str:
        return episode_hash(self.layout)

    @property
    def sizes(self) -> dict[str, list[int]]:
        """Clips per fold, {"n_train": [...], "n_test": [...]} (ProtocolResult.fold_sizes: the
        corrected t-test derives its n_test/n_train ratio from them)."""
        return {"n_train": [int(t.size) for t in self.train],
                "n_test": [int(t.size) for t in self.test]}


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _split_names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise UsageError(f"folds.{key} must be a non-empty list of split names, got {value!r}")
    return [str(v) for v in value]


def make_folds(splits: Sequence[str | None], folds: Any = "official") -> Folds:
    """Build the folds; raises UsageError/AscBenchError naming the problem."""
    split_arr = np.array(["" if s is None else str(s) for s in splits], dtype=object)
    present = sorted(set(split_arr.tolist()) - {""}, key=_natural)
    if folds == "official":
        missing = int(np.count_nonzero(split_arr == ""))
        if missing:
            raise AscBenchError(f"folds: official needs a split/fold name on every clip, but "
                                f"{missing} clip(s) have none. Use folds: {{train: [...], test: "
                                f"[...]}} or a dataset adapter that sets the split.")
        if len(present) < 2:
            raise AscBenchError(f"folds: official needs at least 2 distinct splits, found "
                                f"{present}")
        plan = [([s for s in present if s != t], [t]) for t in present]
    elif isinstance(folds, dict) and set(folds) == {"train", "test"}:
        train_s, test_s = _split_names(folds["train"], "train"), _split_names(folds["test"], "test")
        overlap = sorted(set(train_s) & set(test_s))
        if overlap:
            raise UsageError(f"folds: splits {overlap} are both train and test")
        unknown = sorted(set(train_s + test_s) - set(present))
        if unknown:
            raise UsageError(f"folds name split(s) {unknown} that no clip has; present: {present}")
        plan = [(train_s, test_s)]
    else:
        raise UsageError(f"folds must be 'official' or {{train: [...], test: [...]}}, got "
                         f"{folds!r}")
    layout = np.zeros((len(plan), split_arr.size), dtype=np.int8)
    names, train, test = [], [], []
    for f, (tr, te) in enumerate(plan):
        tr_rows = np.flatnonzero(np.isin(split_arr, tr))
        te_rows = np.flatnonzero(np.isin(split_arr, te))
        layout[f, tr_rows] = 1
        layout[f, te_rows] = 2
        names.append("+".join(te))
        train.append(tr_rows)
        test.append(te_rows)
    return Folds(names, train, test, layout)


def fold_units(data: Any, params: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """[{"train": rows, "test": rows, "test_splits": name}] per fold (the protocols' `episodes`
    hook: the folds linear-probe and knn score, from `params["folds"]`; no embeddings)."""
    f = make_folds(data.splits, params.get("folds", "official"))
    return [{"train": tr.tolist(), "test": te.tolist(), "test_splits": name}
            for name, tr, te in zip(f.names, f.train, f.test)]


def group_codes(groups: Sequence[str | None] | None, n: int) -> np.ndarray | None:
    """Integer group code per clip, or None when the dataset defines no groups.

    A clip without a group (None or "") is its own group: it can only be grouped with itself.
    """
    if groups is None:
        return None
    values = ["" if g is None else str(g) for g in groups]
    if len(values) != n:
        raise AscBenchError(f"EvalData.groups has {len(values)} entries for {n} clips")
    if not any(values):
        return None
    _, codes = np.unique(np.array(values, dtype=object), return_inverse=True)
    codes = codes.astype(np.int64)
    loners = np.flatnonzero(np.array([v == "" for v in values]))
    codes[loners] = codes.max() + 1 + np.arange(loners.size)
    return codes


def stratified_group_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
                           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds that never split a group, with each class spread over the folds as evenly as the
    groups allow (what sklearn's StratifiedGroupKFold does, in linear time: that one costs
    seconds per call with thousands of groups, and the probes call it for every fold and draw).

    Groups are visited in a seeded random order, stably sorted by size (largest first); each goes
    to the fold that is furthest behind for the group's classes: the smallest
    sum_c n_group[c] * n_fold[c] / n_total[c], ties to the fold with fewer clips, then the lower
    index. So the first n_splits groups open n_splits distinct folds, and a dataset whose groups
    are nested in classes (a recording has one label) gets per-class counts within one group's
    size of each other. Returns (train rows, validation rows) per fold, rows sorted.
    """
    y = np.asarray(y, dtype=np.int64)
    codes = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    n_groups, n_cls = int(codes.max()) + 1, int(y.max()) + 1
    order = np.random.default_rng(seed).permutation(n_groups)
    sizes = np.bincount(codes, minlength=n_groups)
    order = order[np.argsort(-sizes[order], kind="stable")]
    total = np.bincount(y, minlength=n_cls).astype(np.float64)
    inv_total = 1.0 / np.where(total > 0, total, 1.0)
    # (group, class) pairs with their counts, grouped by group
    pair = codes * n_cls + y
    keys, counts = np.unique(pair, return_counts=True)
    pg, pc = keys // n_cls, keys % n_cls
    start = np.searchsorted(pg, np.arange(n_groups + 1))
    fold_cls = np.zeros((n_splits, n_cls))
    fold_n = np.zeros(n_splits)
    fold_of = np.empty(n_groups, dtype=np.int64)
    for g in order:
        c, k = pc[start[g]:start[g + 1]], counts[start[g]:start[g + 1]]
        score = (fold_cls[:, c] * inv_total[c]) @ k
        best = np.flatnonzero(score == score.min())
        f = int(best[np.argmin(fold_n[best])])
        fold_of[g] = f
        fold_cls[f, c] += k
        fold_n[f] += k.sum()
    row_fold = fold_of[codes]
    return [(np.flatnonzero(row_fold != f), np.flatnonzero(row_fold == f)) for f in range(n_splits)]
