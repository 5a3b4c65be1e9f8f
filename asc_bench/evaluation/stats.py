"""Confidence intervals and paired tests for per-episode (or per-fold) scores.

Every formula used in records, ``asc-bench compare`` and the leaderboard is here.

Mean and CI (``mean_ci``)
    x_1..x_n the scores, m = mean(x), s = sqrt(sum((x_i - m)^2) / (n - 1))  (ddof = 1),
    half-width h = t_{(1+c)/2, n-1} * s / sqrt(n), CI = [m - h, m + h], c = 0.95 by default.
    t_{q, df} is the Student-t quantile (``scipy.special.stdtrit``). n = 1: s is undefined, so
    h, low and high are NaN (never an exception); n = 0 is an error. All scores equal: h = 0.

Paired t-test (``paired_t``)
    d_i = a_i - b_i, t = mean(d) / (s_d / sqrt(n)), df = n - 1, two-sided p = 2 * T_df(-|t|)
    with T_df the Student-t CDF (``scipy.special.stdtr``). Same numbers as
    ``scipy.stats.ttest_rel``. Degenerate cases: every d_i == 0 -> t = 0, p = 1 (the two sets of
    scores are identical, there is no evidence of a difference; scipy returns NaN here);
    all d_i equal but non-zero -> t = +-inf, p = 0; n = 1 with d != 0 -> t and p NaN.

Wilcoxon signed-rank (``wilcoxon``)
    d_i rounded to 12 decimals (so that float noise from subtracting accuracies such as 0.6 - 0.4
    and 0.8 - 0.6 does not break ties), zero differences dropped (Wilcoxon's "wilcox" rule), then
    ``scipy.stats.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided",
    method=M)`` with M chosen here, not by scipy's version-dependent "auto": M = "exact" when
    n' <= 50 non-zero differences and no ties among |d|, else M = "asymptotic" (normal
    approximation with scipy's tie correction of the variance, no continuity correction).
    Statistic = min(W+, W-) for the two-sided test. Every d_i == 0 (after rounding) -> p = 1,
    statistic = 0, n' = 0, method "degenerate".

Paired bootstrap (``paired_bootstrap_ci``)
    B resamples of the n pairs with replacement (indices from ``numpy.random.Generator(PCG64(seed))``,
    drawn in fixed blocks of resamples so memory stays bounded and results do not depend on the
    machine), statistic = mean of the resampled d; percentile CI = the (1-c)/2 and (1+c)/2
    quantiles (numpy's default linear interpolation) of the B means.

Exact McNemar (``mcnemar_exact``)
    On per-clip correctness of A and B over the same clips: n01 = #(A right, B wrong),
    n10 = #(A wrong, B right), n = n01 + n10. Under H0 min(n01, n10) ~ Binomial(n, 1/2);
    p = min(1, 2 * P[X <= min(n01, n10)]) (``scipy.special.bdtr``); equals
    ``scipy.stats.binomtest(n01, n, 0.5).pvalue``. n = 0 (no discordant clip) -> p = 1.

Holm-Bonferroni (``holm``)
    p_(1) <= ... <= p_(m) sorted, adjusted p_(j) = min(1, max_{i <= j} (m - i + 1) * p_(i)),
    returned in the input order; hypothesis j is rejected at level alpha iff adjusted p_j <= alpha.
    NaN p-values (untestable comparisons) are left NaN and are not counted in m.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import special

from asc_bench.api import AscBenchError

#: The CI formula written into result records (``summary.formula``) and leaderboard footnotes.
CI_FORMULA = "mean ± t(0.975, n-1)·s/√n, s = sample standard deviation (ddof=1), 95% CI"

_WILCOXON_EXACT_MAX_N = 50
_TIE_DECIMALS = 12
_BOOTSTRAP_BLOCK = 1 << 22   # index entries drawn per block (32 MiB of int64)


def _as_1d(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise AscBenchError(f"{name} must be a 1-D list of scores, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AscBenchError(f"{name} contains NaN or infinite scores; the run that produced them "
                            f"is broken, re-run it")
    return arr


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    a_arr, b_arr = _as_1d(a, "a"), _as_1d(b, "b")
    if a_arr.shape != b_arr.shape:
        raise AscBenchError(f"paired scores must have the same length, got {a_arr.size} and "
                            f"{b_arr.size}: the two runs did not use the same episodes/folds")
    if a_arr.size == 0:
        raise AscBenchError("paired test on zero scores")
    return a_arr - b_arr


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom."""
    return float(special.stdtrit(df, q))


# ------------------------------------------------------------------------------------------ mean CI
@dataclass(frozen=True)
class MeanCI:
    """Mean of n scores with its Student-t confidence interval (NaN bounds when n == 1)."""

    mean: float
    low: float
    high: float
    half_width: float
    n: int
    confidence: float = 0.95
    formula: str = CI_FORMULA

    def to_summary(self) -> dict:
        """The record's ``summary`` block (NaN stays NaN: the JSON writer must allow it or map it)."""
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high,
                "half_width": self.half_width, "n": self.n, "formula": self.formula}


def mean_ci(scores: Sequence[float] | np.ndarray, confidence: float = 0.95) -> MeanCI:
    """Mean ± t((1+c)/2, n-1) · s / sqrt(n) with s the ddof=1 standard deviation."""
    x = _as_1d(scores, "scores")
    n = int(x.size)
    if n == 0:
        raise AscBenchError("cannot summarise zero scores: the protocol produced no episode/fold")
    if not 0.0 < confidence < 1.0:
        raise AscBenchError(f"confidence must be in (0, 1), got {confidence}")
    m = float(x.mean())
    formula = CI_FORMULA if confidence == 0.95 else CI_FORMULA.replace(
        "0.975", f"{(1 + confidence) / 2:g}").replace("95%", f"{confidence * 100:g}%")
    if n == 1:
        nan = float("nan")
        return MeanCI(m, nan, nan, nan, 1, confidence, formula)
    s = float(x.std(ddof=1))
    h = t_quantile((1.0 + confidence) / 2.0, n - 1) * s / math.sqrt(n)
    return MeanCI(m, m - h, m + h, h, n, confidence, formula)


# ------------------------------------------------------------------------------------- paired tests
@dataclass(frozen=True)
class TestResult:
    """A paired test: statistic, two-sided p-value, number of pairs used, and how it was computed."""

    statistic: float
    p_value: float
    n: int
    method: str
    mean_diff: float


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sided paired t-test on d = a - b (see the module docstring for degenerate cases)."""
    d = _paired(a, b)
    n = int(d.size)
    md = float(d.mean())
    if np.all(d == 0):
        return TestResult(0.0, 1.0, n, "paired-t (all differences zero: p = 1)", 0.0)
    if n == 1:
        return TestResult(float("nan"), float("nan"), 1, "paired-t (n = 1: undefined)", md)
    s = float(d.std(ddof=1))
    if s == 0.0:
        return TestResult(math.copysign(math.inf, md), 0.0, n,
                          "paired-t (constant non-zero difference: p = 0)", md)
    t = md / (s / math.sqrt(n))
    p = float(2.0 * special.stdtr(n - 1, -abs(t)))
    return TestResult(float(t), min(1.0, p), n, "paired-t", md)


def wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sided Wilcoxon signed-rank test on d = a - b, zeros dropped, explicit exact/asymptotic."""
    from scipy import stats as sps  # scipy.stats is slow to import; only this test needs it

    d_raw = _paired(a, b)
    md = float(d_raw.mean())
    d = np.round(d_raw, _TIE_DECIMALS)
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return TestResult(0.0, 1.0, 0, "wilcoxon (all differences zero: p = 1)", md)
    method = wilcoxon_method(d)
    res = sps.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided",
                       method=method)
    return TestResult(float(res.statistic), float(res.pvalue), n, f"wilcoxon-{method}", md)


def wilcoxon_method(d_nonzero: np.ndarray) -> str:
    """'exact' for <= 50 non-zero differences without ties in |d|, else 'asymptotic'."""
    absd = np.abs(np.asarray(d_nonzero, dtype=np.float64))
    has_ties = np.unique(absd).size != absd.size
    return "exact" if absd.size <= _WILCOXON_EXACT_MAX_N and not has_ties else "asymptotic"


@dataclass(frozen=True)
class BootstrapCI:
    mean_diff: float
    low: float
    high: float
    n_boot: int
    confidence: float
    seed: int


def paired_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                        n_boot: int = 10_000, confidence: float = 0.95,
                        seed: int = 0) -> BootstrapCI:
    """Percentile CI of the mean of d = a - b from n_boot paired resamples (seeded, blockwise)."""
    d = _paired(a, b)
    n = int(d.size)
    if n_boot < 1:
        raise AscBenchError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.empty(n_boot, dtype=np.float64)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for start in range(0, n_boot, block):
        stop = min(n_boot, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    return BootstrapCI(float(d.mean()), float(lo), float(hi), n_boot, confidence, seed)


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar: n01 = A right & B wrong, n10 = A wrong & B right, p two-sided."""

    n01: int
    n10: int
    n_discordant: int
    p_value: float
    n: int


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray,
                  correct_b: Sequence[bool] | np.ndarray) -> McNemarResult:
    """Exact (binomial) McNemar test on per-clip correctness of two classifiers on the same clips."""
    ca = np.asarray(correct_a, dtype=bool)
    cb = np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape or ca.ndim != 1:
        raise AscBenchError(f"McNemar needs two equally long 1-D correctness arrays, got "
                            f"{ca.shape} and {cb.shape}")
    n01 = int(np.count_nonzero(ca & ~cb))
    n10 = int(np.count_nonzero(~ca & cb))
    nd = n01 + n10
    if nd == 0:
        return McNemarResult(n01, n10, 0, 1.0, int(ca.size))
    p = min(1.0, 2.0 * float(special.bdtr(min(n01, n10), nd, 0.5)))
    return McNemarResult(n01, n10, nd, p, int(ca.size))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values in input order; NaN entries stay NaN, m counts the rest."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * np.arange(m, 0, -1, dtype=np.float64)
    adj = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out[order] = adj
    return out


def to_dict(result: TestResult | McNemarResult | BootstrapCI | MeanCI) -> dict:
    """A plain dict of a result dataclass (for JSON)."""
    return asdict(result)
