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
    ``scipy.stats.ttest_rel``. Zero variance (every d_i equal, zero or not): t and p are NaN and
    the method says "no variance: cannot test" (``NO_VARIANCE``): a constant difference is a
    fact about these episodes/folds, not evidence at any level, and t = inf, p = 0 would read as
    "certain". n = 1: t and p NaN.

Corrected resampled t-test (``corrected_t``; Nadeau & Bengio 2003, "Inference for the
generalization error", Machine Learning 52:239-281)
    For J folds (train/test splits of the same clips), d_j = a_j - b_j. Training sets overlap, so
    the fold scores are correlated and the plain paired t understates the variance of mean(d).
    The correction: t = mean(d) / sqrt((1/J + n_test/n_train) * s_d^2), df = J - 1, two-sided p
    from Student t. n_test/n_train is derived from the folds: mean test size / mean training
    size over the J folds (``fold_size_ratio``; records keep ``folds.n_train`` and ``folds.n_test``); K official folds
    of equal size give 1/(K-1) (Bouckaert & Frank's use for k-fold CV). Zero variance: "no
    variance: cannot test", as for paired t.

Wilcoxon signed-rank (``wilcoxon``)
    d_i rounded to 12 decimals (so that float noise from subtracting accuracies such as 0.6 - 0.4
    and 0.8 - 0.6 does not break ties). Zero method "wilcox": zero differences are dropped
    before ranking (n' = number of non-zero d). |d| gets mid-ranks (tied values share their mean
    rank); W+ = sum of the ranks of the positive d. Exact whenever n' <= WILCOXON_EXACT_MAX_N =
    200, with or without ties: under H0 every sign is + or - with probability 1/2 independently
    (the sign-flip distribution), W+ = sum_i r_i B_i with B_i ~ Bernoulli(1/2), and its exact
    distribution is built by convolution over the doubled (integer) mid-ranks; two-sided
    p = min(1, 2 * min(P[W+ <= w], P[W+ >= w])). That is the p-value of
    ``scipy.stats.permutation_test((a, b), W+, permutation_type="samples")`` with every sign
    flip enumerated. Five equal non-zero differences give 2/32 = 0.0625, four give 0.125.
    n' > 200: normal approximation (scipy's "asymptotic" method with its tie correction of the
    variance, no continuity correction). Statistic reported = min(W+, W-). Every d_i == 0 ->
    p = 1, n' = 0.

TOST equivalence (``tost_paired``)
    Two one-sided t-tests of H0: mean(d) <= -m and H0: mean(d) >= +m for a margin m > 0;
    p = max(p_low, p_high), "equivalent within ±m" when p <= alpha. The standard error is the
    paired-t one (episodes; equals ``statsmodels.stats.weightstats.ttost_paired``) or the
    Nadeau-Bengio corrected one when ``test_train_ratio`` is given (folds). Zero variance:
    "no variance: cannot test".

Delete-one-unit jackknife (``unit_jackknife``): the class-level and group-level intervals
    The episode CI treats the episode draw as the only random thing: it conditions on the pool
    of classes and clips the dataset holds. The population of interest has other classes and
    other recordings, so the mean score also varies with which classes (groups) are in the
    pool. For a unit u (a class, or a group = recording/source), theta_(-u) is the mean score
    with u deleted: the mean over the episodes that involve u neither as support nor as query
    (mode "episodes"); when every episode involves u (``n_way: all``, as in fewshot-logistic)
    the episodes are kept and only u's queries are dropped from each episode's accuracy (mode
    "queries"; it still conditions on u being in the training set). With U units,
    SE = sqrt((U-1)/U * sum_u (theta_(-u) - mean_u theta_(-u))^2), and the interval is
    theta ± t(0.975, U-1) * SE. A jackknife rather than a class bootstrap: deleting a class leaves
    every remaining episode valid, while a bootstrap sample repeats classes and an N-way episode
    cannot hold a class twice. The jackknife variance of such U-statistic-like means is known to
    be conservative. For two encoders on the same episodes, theta_(-u) of the difference is the
    difference of their theta_(-u), so records keep the per-unit values and ``compare`` forms
    the interval of the difference from them.

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
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import special

from asc_bench.api import AscBenchError

#: The CI formula written into result records (``summary.formula``) and leaderboard footnotes.
CI_FORMULA = "mean ± t(0.975, n-1)·s/√n, s = sample standard deviation (ddof=1), 95% CI"

WILCOXON_EXACT_MAX_N = 200     # exact sign-flip distribution up to this many non-zero d
#: Method text of a test on differences with zero variance (never p = 0).
NO_VARIANCE = "no variance: cannot test"
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


def _t_test(d: np.ndarray, name: str, var_factor: float) -> TestResult:
    """t = mean(d) / sqrt(var_factor * s_d^2), df = n - 1; NaN with NO_VARIANCE when s_d = 0."""
    n = int(d.size)
    md = float(d.mean())
    if n == 1:
        return TestResult(float("nan"), float("nan"), 1, f"{name} (n = 1: undefined)", md)
    s = float(d.std(ddof=1))
    if s == 0.0:
        return TestResult(float("nan"), float("nan"), n, f"{name} ({NO_VARIANCE})", md)
    t = md / math.sqrt(var_factor * s * s)
    p = float(2.0 * special.stdtr(n - 1, -abs(t)))
    return TestResult(float(t), min(1.0, p), n, name, md)


def paired_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sided paired t-test on d = a - b; zero variance -> NaN, "no variance: cannot test"."""
    d = _paired(a, b)
    return _t_test(d, "paired-t", 1.0 / d.size)


def fold_size_ratio(n_train: Sequence[int], n_test: Sequence[int]) -> float:
    """n_test / n_train for the Nadeau-Bengio correction: mean test size / mean training size."""
    tr = np.asarray(n_train, dtype=np.float64)
    te = np.asarray(n_test, dtype=np.float64)
    if tr.size == 0 or tr.shape != te.shape or np.any(tr <= 0) or np.any(te <= 0):
        raise AscBenchError(f"fold sizes must be positive and one (train, test) pair per fold, "
                            f"got n_train={list(tr)}, n_test={list(te)}")
    return float(te.mean() / tr.mean())


def corrected_t(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                ratio: float) -> TestResult:
    """Nadeau-Bengio corrected resampled t-test over folds; `ratio` = n_test / n_train.

    t = mean(d) / sqrt((1/J + ratio) * s_d^2), df = J - 1 (module docstring)."""
    if not ratio > 0:
        raise AscBenchError(f"corrected t needs n_test/n_train > 0, got {ratio}")
    d = _paired(a, b)
    return _t_test(d, f"corrected-t (Nadeau-Bengio, n_test/n_train = {ratio:.4g})",
                   1.0 / d.size + ratio)


@dataclass(frozen=True)
class TostResult:
    """TOST equivalence within ±margin: p = max of the two one-sided p-values (NaN: untestable)."""

    p_value: float
    p_low: float            # H0: mean(d) <= -margin
    p_high: float           # H0: mean(d) >= +margin
    margin: float
    n: int
    method: str
    mean_diff: float


def tost_paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, margin: float,
                *, ratio: float | None = None) -> TostResult:
    """Paired TOST of |mean(a - b)| < margin; `ratio` (n_test/n_train) switches to the
    Nadeau-Bengio corrected standard error for folds."""
    if not margin > 0:
        raise AscBenchError(f"equivalence margin must be > 0, got {margin}")
    d = _paired(a, b)
    n = int(d.size)
    md = float(d.mean())
    name = "TOST paired-t" if ratio is None else f"TOST corrected-t (n_test/n_train = {ratio:.4g})"
    nan = float("nan")
    if n == 1:
        return TostResult(nan, nan, nan, margin, n, f"{name} (n = 1: undefined)", md)
    s = float(d.std(ddof=1))
    if s == 0.0:
        return TostResult(nan, nan, nan, margin, n, f"{name} ({NO_VARIANCE})", md)
    se = math.sqrt((1.0 / n + (ratio or 0.0)) * s * s)
    p_low = float(special.stdtr(n - 1, -(md + margin) / se))     # P[T >= (md + m)/se]
    p_high = float(special.stdtr(n - 1, (md - margin) / se))     # P[T <= (md - m)/se]
    return TostResult(max(p_low, p_high), p_low, p_high, margin, n, name, md)


def wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sided Wilcoxon signed-rank test on d = a - b (zeros dropped; exact sign-flip
    distribution up to WILCOXON_EXACT_MAX_N non-zero differences, ties included)."""
    d_raw = _paired(a, b)
    md = float(d_raw.mean())
    d = np.round(d_raw, _TIE_DECIMALS)
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return TestResult(0.0, 1.0, 0, "wilcoxon (all differences zero: p = 1)", md)
    method = wilcoxon_method(d)
    if method == "exact":
        w_plus, w_minus, p = _signed_rank_exact(d)
        return TestResult(min(w_plus, w_minus), p, n, "wilcoxon-exact (sign-flip, zero_method="
                          "wilcox)", md)
    from scipy import stats as sps  # scipy.stats is slow to import; only this path needs it

    res = sps.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided",
                       method="asymptotic")
    return TestResult(float(res.statistic), float(res.pvalue), n,
                      "wilcoxon-asymptotic (normal, tie-corrected, zero_method=wilcox)", md)


def wilcoxon_method(d_nonzero: np.ndarray) -> str:
    """'exact' for <= WILCOXON_EXACT_MAX_N non-zero differences (ties or not), else 'asymptotic'."""
    return "exact" if np.asarray(d_nonzero).size <= WILCOXON_EXACT_MAX_N else "asymptotic"


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of x with ties given their mean rank (as scipy.stats.rankdata 'average')."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0                  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def signed_rank_null(ranks: np.ndarray) -> np.ndarray:
    """Exact null distribution of 2*W+ under random signs: probs[k] = P[2 W+ = k].

    Doubled mid-ranks are integers, so the distribution is a convolution of n two-point laws."""
    r2 = np.rint(2.0 * np.asarray(ranks, dtype=np.float64)).astype(np.int64)
    probs = np.zeros(int(r2.sum()) + 1, dtype=np.float64)
    probs[0] = 1.0
    top = 0
    for r in r2:
        shifted = probs[: top + 1].copy()
        probs[: top + 1] *= 0.5
        probs[r: r + top + 1] += 0.5 * shifted
        top += int(r)
    return probs


def _signed_rank_exact(d: np.ndarray) -> tuple[float, float, float]:
    """(W+, W-, two-sided exact p) for non-zero differences d."""
    ranks = _midranks(np.abs(d))
    w2 = int(np.rint(2.0 * ranks[d > 0].sum()))
    probs = signed_rank_null(ranks)
    p_le = float(probs[: w2 + 1].sum())
    p_ge = float(probs[w2:].sum())
    w_plus = w2 / 2.0
    return w_plus, float(ranks.sum()) - w_plus, min(1.0, 2.0 * min(p_le, p_ge))


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


# ------------------------------------------------------------------------- class/group jackknife
#: What each record interval treats as random and what it holds fixed (records, compare, leaderboard).
INTERVALS = {
    "episode": {"method": "Student-t CI over the per-episode scores (" + CI_FORMULA + ")",
                "covers": "the draw of episodes",
                "conditions_on": "the pool of classes and clips in this dataset"},
    "fold": {"method": "Student-t CI over the per-fold scores (" + CI_FORMULA + "; folds share "
                       "training clips, so it is too narrow)",
             "covers": "the fold scores as if independent",
             "conditions_on": "the dataset's clips and its fold assignment"},
    "class": {"method": "delete-one-class jackknife, mean ± t(0.975, U-1)·SE_jack",
              "covers": "the draw of episodes and of the classes (with their clips) in the pool",
              "conditions_on": "the classes coming from the same population as this pool"},
    "group": {"method": "delete-one-group jackknife, mean ± t(0.975, U-1)·SE_jack",
              "covers": "the draw of episodes and of the groups (recordings/sources) in the pool",
              "conditions_on": "the classes in this pool"},
}


@dataclass(frozen=True)
class UnitLoo:
    """Leave-one-unit-out means: theta_(-u) for each unit that the episodes involve."""

    units: np.ndarray          # int unit ids (rows of the unit table)
    theta_loo: np.ndarray      # float64, aligned with units
    mode: str                  # "episodes" or "queries" (module docstring)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy 2's hash-based unique is much slower on large int arrays)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if x.size else x


def unit_loo(query_idx: np.ndarray, correct: np.ndarray, unit_of_clip: np.ndarray,
             support_idx: np.ndarray | None = None) -> UnitLoo:
    """theta_(-u) for the delete-one-unit jackknife (module docstring), vectorised.

    `query_idx` [E, Q] clip rows (-1 = padding), `correct` [E, Q] bool, `unit_of_clip` [clips]
    int unit id (class index or group id), `support_idx` [E, ...] clip rows. The episode score
    is the accuracy over its real queries, as every few-shot protocol reports it."""
    q = np.asarray(query_idx, dtype=np.int64)
    mask = q >= 0
    ok = np.asarray(correct, dtype=bool) & mask
    units = np.asarray(unit_of_clip, dtype=np.int64)
    n_e = mask.sum(axis=1)
    if q.ndim != 2 or ok.shape != q.shape or np.any(n_e == 0):
        raise AscBenchError("per-episode outcome arrays must be [episodes, queries] with at "
                            "least one query per episode")
    e_all = q.shape[0]
    n_units = int(units.max()) + 1
    acc = ok.sum(axis=1) / n_e
    total = float(acc.sum())
    e_rows = np.broadcast_to(np.arange(e_all)[:, None], q.shape)[mask]
    q_units = units[q[mask]]
    involved = [e_rows * n_units + q_units]
    if support_idx is not None:
        sup = np.asarray(support_idx, dtype=np.int64).reshape(e_all, -1)
        involved.append(np.repeat(np.arange(e_all), sup.shape[1]) * n_units
                        + units[sup.reshape(-1)])
    codes = _sorted_unique(np.concatenate(involved))
    u_of, e_of = codes % n_units, codes // n_units
    count = np.bincount(u_of, minlength=n_units)
    present = np.flatnonzero(count > 0)
    if np.all(count[present] < e_all):                       # mode "episodes"
        s_u = np.bincount(u_of, weights=acc[e_of], minlength=n_units)
        theta = (total - s_u[present]) / (e_all - count[present])
        return UnitLoo(present, theta, "episodes")
    # mode "queries": keep every episode, drop the unit's queries from its accuracy
    raw = e_rows * n_units + q_units
    order = np.argsort(raw, kind="stable")
    srt = raw[order]
    first = np.r_[True, srt[1:] != srt[:-1]]
    qcodes = srt[first]
    inv = np.empty(raw.size, dtype=np.int64)
    inv[order] = np.cumsum(first) - 1
    n_eu = np.bincount(inv)
    c_eu = np.bincount(inv, weights=ok[mask].astype(np.float64))
    pu, pe = qcodes % n_units, qcodes // n_units
    left = n_e[pe] - n_eu
    keep = left > 0
    acc_minus = np.where(keep, (ok.sum(axis=1)[pe] - c_eu) / np.maximum(left, 1), 0.0)
    delta = np.bincount(pu, weights=acc_minus - acc[pe], minlength=n_units)
    dropped = np.bincount(pu, weights=(~keep).astype(np.float64), minlength=n_units)
    queried = _sorted_unique(pu)
    # episodes that lose all queries leave the mean: remove their (zeroed) term and count
    theta = (total + delta[queried]) / (e_all - dropped[queried])
    return UnitLoo(queried, theta, "queries")


@dataclass(frozen=True)
class JackknifeCI:
    """theta ± t(0.975, U-1)·SE_jack from U leave-one-unit-out values."""

    estimate: float
    low: float
    high: float
    half_width: float
    se: float
    n_units: int
    confidence: float = 0.95


def jackknife_ci(estimate: float, theta_loo: Sequence[float] | np.ndarray,
                 confidence: float = 0.95) -> JackknifeCI:
    """Delete-one jackknife interval around `estimate`; fewer than 2 units -> NaN bounds."""
    th = np.asarray(theta_loo, dtype=np.float64)
    u = int(th.size)
    if u < 2:
        nan = float("nan")
        return JackknifeCI(float(estimate), nan, nan, nan, nan, u, confidence)
    se = math.sqrt((u - 1) / u * float(np.sum((th - th.mean()) ** 2)))
    h = t_quantile((1.0 + confidence) / 2.0, u - 1) * se
    return JackknifeCI(float(estimate), estimate - h, estimate + h, h, se, u, confidence)


def jackknife_diff(loo_a: Mapping[str, float], loo_b: Mapping[str, float], estimate: float,
                   confidence: float = 0.95) -> JackknifeCI | None:
    """Jackknife interval of mean(a) - mean(b) from two records' per-unit values (same
    episodes, hence the same units); None when the units differ."""
    if set(loo_a) != set(loo_b):
        return None
    keys = sorted(loo_a)
    return jackknife_ci(estimate, [loo_a[k] - loo_b[k] for k in keys], confidence)


def record_intervals(scores: np.ndarray, unit: str, outcome: Any, labels: np.ndarray,
                     class_names: Sequence[str], groups: Sequence[str | None] | None
                     ) -> dict[str, dict[str, Any]]:
    """The ``intervals`` block of a result record: the episode (or fold) CI, and with a
    per-episode outcome (api.EpisodeOutcome) the class-level and, where clips have groups, the
    group-level jackknife. Each entry names its method, what it covers and what it conditions
    on, and keeps the per-unit values (``loo``) that compare needs for differences."""
    ci = mean_ci(scores)
    base = "fold" if unit == "fold" else "episode"
    out: dict[str, dict[str, Any]] = {base: {**INTERVALS[base], "low": ci.low, "high": ci.high,
                                             "half_width": ci.half_width, "n_units": ci.n}}
    if outcome is None:
        return out
    tables: list[tuple[str, np.ndarray, list[str]]] = [
        ("class", np.asarray(labels, dtype=np.int64), [str(c) for c in class_names])]
    if groups is not None and any(g not in (None, "") for g in groups):
        # a clip without a group is its own group (it shares a recording with no other clip)
        names = [str(g) if g not in (None, "") else f"\0clip:{i}" for i, g in enumerate(groups)]
        table = sorted(set(names))
        pos = {n: i for i, n in enumerate(table)}
        tables.append(("group", np.array([pos[n] for n in names], dtype=np.int64),
                       [n if not n.startswith("\0") else n[1:] for n in table]))
    est = float(np.mean(scores))
    for kind, unit_of_clip, names in tables:
        loo = unit_loo(outcome.query, outcome.correct, unit_of_clip, outcome.support)
        jk = jackknife_ci(est, loo.theta_loo)
        out[kind] = {**INTERVALS[kind], "mode": loo.mode, "low": jk.low, "high": jk.high,
                     "half_width": jk.half_width, "n_units": jk.n_units,
                     "loo": {names[u]: float(v) for u, v in zip(loo.units, loo.theta_loo)}}
        if loo.mode == "queries":
            out[kind]["conditions_on"] += (f"; every episode involves every {kind}, so only its "
                                           f"queries are deleted (the {kind} stays in training)")
    return out


def to_dict(result: Any) -> dict:
    """A plain dict of a result dataclass (for JSON)."""
    return asdict(result)
