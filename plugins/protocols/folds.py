"""Train/test folds from the clips' `split` field, shared by linear-probe and knn.

`folds: official`: every distinct split value is one test fold (in natural order: fold2 before
fold10), trained on all other clips. `folds: {train: [...], test: [...]}`: one fold. The fold
layout is hashed (asc_bench.evaluation.episodes.episode_hash over a [F, clips] int8 matrix: 1 train,
2 test, 0 unused) so that two runs pair only when they used the same folds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

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
