"""asc_bench.evaluation.stats against scipy/statsmodels on random inputs, plus the documented degenerate cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from asc_bench.api import AscBenchError
from asc_bench.evaluation import stats

SEEDS = range(8)


def _pair(seed: int, n: int, shift: float = 0.02):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.3, 0.9, n)
    b = np.clip(a + rng.normal(shift, 0.05, n), 0, 1)
    return a, b


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 3, 10, 200])
def test_mean_ci_matches_scipy_t_interval(seed, n):
    x = np.random.default_rng(seed).normal(0.6, 0.1, n)
    ci = stats.mean_ci(x)
    lo, hi = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert ci.n == n and ci.mean == pytest.approx(x.mean(), abs=1e-15)
    assert ci.low == pytest.approx(lo, abs=1e-12) and ci.high == pytest.approx(hi, abs=1e-12)
    assert ci.half_width == pytest.approx((hi - lo) / 2, abs=1e-12)
    summary = ci.to_summary()
    assert set(summary) == {"mean", "ci_low", "ci_high", "half_width", "n", "formula"}
    assert "t(0.975, n-1)" in summary["formula"] and "ddof=1" in summary["formula"]


def test_mean_ci_other_confidence():
    x = np.random.default_rng(1).normal(size=30)
    lo, hi = sps.t.interval(0.9, 29, loc=x.mean(), scale=sps.sem(x))
    ci = stats.mean_ci(x, confidence=0.9)
    assert (ci.low, ci.high) == pytest.approx((lo, hi), abs=1e-12)
    assert "0.95" in ci.formula and "90%" in ci.formula


def test_mean_ci_degenerate():
    one = stats.mean_ci([0.7])
    assert one.mean == 0.7 and one.n == 1
    assert math.isnan(one.half_width) and math.isnan(one.low) and math.isnan(one.high)
    const = stats.mean_ci([0.5] * 7)
    assert const.half_width == 0.0 and const.low == const.high == 0.5
    with pytest.raises(AscBenchError):
        stats.mean_ci([])
    with pytest.raises(AscBenchError):
        stats.mean_ci([0.1, float("nan")])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [2, 5, 40, 500])
def test_paired_t_matches_ttest_rel(seed, n):
    a, b = _pair(seed, n)
    ours = stats.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert ours.n == n and ours.mean_diff == pytest.approx(np.mean(a - b), abs=1e-15)


def test_paired_t_degenerate():
    same = stats.paired_t([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.p_value == 1.0 and same.statistic == 0.0
    exact_const = stats.paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert exact_const.p_value == 0.0 and exact_const.statistic == math.inf
    single = stats.paired_t([0.4], [0.6])
    assert math.isnan(single.p_value) and single.n == 1
    assert stats.paired_t([0.4], [0.4]).p_value == 1.0
    with pytest.raises(AscBenchError):
        stats.paired_t([0.1, 0.2], [0.1])


def _scipy_wilcoxon(a, b):
    d = np.round(np.asarray(a) - np.asarray(b), 12)
    d = d[d != 0]
    method = stats.wilcoxon_method(d)
    return sps.wilcoxon(d, zero_method="wilcox", correction=False, method=method), method


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [6, 30, 120])
def test_wilcoxon_matches_scipy(seed, n):
    a, b = _pair(seed, n)
    ours = stats.wilcoxon(a, b)
    ref, method = _scipy_wilcoxon(a, b)
    assert ours.method == f"wilcoxon-{method}"
    assert method == ("exact" if n <= 50 else "asymptotic")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_wilcoxon_ties_and_zeros_use_asymptotic_with_tie_correction():
    # accuracies on 20 queries: differences are multiples of 1/20 with many ties and zeros
    rng = np.random.default_rng(3)
    a = rng.integers(8, 20, 40) / 20
    b = rng.integers(6, 18, 40) / 20
    ours = stats.wilcoxon(a, b)
    d = np.round(a - b, 12)
    nz = d[d != 0]
    assert nz.size < 40 and np.unique(np.abs(nz)).size < nz.size
    ref = sps.wilcoxon(nz, zero_method="wilcox", correction=False, method="asymptotic")
    assert ours.method == "wilcoxon-asymptotic" and ours.n == nz.size
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_wilcoxon_float_noise_does_not_break_ties():
    # 0.6-0.4 and 0.8-0.6 differ in the last bit; after rounding they are the same tie
    a = np.array([0.6, 0.8, 0.3, 0.9])
    b = np.array([0.4, 0.6, 0.2, 0.5])
    assert (a - b)[0] != (a - b)[1]
    assert stats.wilcoxon(a, b).method == "wilcoxon-asymptotic"


def test_wilcoxon_all_zero_is_p_one():
    r = stats.wilcoxon([0.2, 0.4, 0.9], [0.2, 0.4, 0.9])
    assert r.p_value == 1.0 and r.n == 0 and r.statistic == 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_mcnemar_matches_binomtest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    ca = rng.random(n) < 0.7
    cb = np.where(rng.random(n) < 0.2, ~ca, ca)
    ours = stats.mcnemar_exact(ca, cb)
    n01 = int(np.sum(ca & ~cb))
    n10 = int(np.sum(~ca & cb))
    assert (ours.n01, ours.n10, ours.n_discordant) == (n01, n10, n01 + n10)
    ref = sps.binomtest(n01, n01 + n10, 0.5).pvalue
    assert ours.p_value == pytest.approx(ref, abs=1e-12)


def test_mcnemar_degenerate():
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0
    balanced = stats.mcnemar_exact([True, False, True, False], [False, True, False, True])
    assert balanced.p_value == pytest.approx(sps.binomtest(2, 4, 0.5).pvalue, abs=1e-12)
    with pytest.raises(AscBenchError):
        stats.mcnemar_exact([True], [True, False])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", [1, 2, 5, 17])
def test_holm_matches_statsmodels(seed, m):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.2, m) ** 2
    if m > 3:
        p[1] = p[2]                       # a tie
    ours = stats.holm(p)
    reject, ref, _, _ = multipletests(p, alpha=0.05, method="holm")
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(ours <= 0.05, reject)


def test_holm_leaves_nan_out_of_the_family():
    p = np.array([0.01, np.nan, 0.04, 0.03])
    ours = stats.holm(p)
    _, ref, _, _ = multipletests(p[[0, 2, 3]], method="holm")
    assert math.isnan(ours[1])
    np.testing.assert_allclose(ours[[0, 2, 3]], ref, atol=1e-12, rtol=0)
    assert np.isnan(stats.holm([np.nan])).all()


def test_bootstrap_is_seeded_and_close_to_scipy():
    a, b = _pair(5, 60, shift=0.03)
    r1 = stats.paired_bootstrap_ci(a, b, n_boot=4000, seed=7)
    r2 = stats.paired_bootstrap_ci(a, b, n_boot=4000, seed=7)
    r3 = stats.paired_bootstrap_ci(a, b, n_boot=4000, seed=8)
    assert (r1.low, r1.high) == (r2.low, r2.high) and (r1.low, r1.high) != (r3.low, r3.high)
    assert r1.low < r1.mean_diff < r1.high
    assert r1.mean_diff == pytest.approx(np.mean(a - b), abs=1e-15)
    ref = sps.bootstrap((a - b,), np.mean, n_resamples=20000, method="percentile",
                        random_state=np.random.default_rng(0)).confidence_interval
    width = ref.high - ref.low
    assert r1.low == pytest.approx(ref.low, abs=0.1 * width)
    assert r1.high == pytest.approx(ref.high, abs=0.1 * width)


def test_bootstrap_blocks_do_not_change_the_result(monkeypatch):
    a, b = _pair(2, 50)
    full = stats.paired_bootstrap_ci(a, b, n_boot=999, seed=3)
    # a block size that does not divide n_boot: the generator stream is consumed identically
    monkeypatch.setattr(stats, "_BOOTSTRAP_BLOCK", 50 * 7)
    blocked = stats.paired_bootstrap_ci(a, b, n_boot=999, seed=3)
    assert (full.low, full.high) == (blocked.low, blocked.high)


def test_bootstrap_zero_differences():
    r = stats.paired_bootstrap_ci([0.3, 0.4, 0.5], [0.3, 0.4, 0.5], n_boot=100)
    assert r.low == r.high == r.mean_diff == 0.0
