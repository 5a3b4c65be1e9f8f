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
    assert math.isnan(same.p_value) and stats.NO_VARIANCE in same.method
    exact_const = stats.paired_t([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert math.isnan(exact_const.p_value) and "no variance: cannot test" in exact_const.method
    single = stats.paired_t([0.4], [0.6])
    assert math.isnan(single.p_value) and single.n == 1
    with pytest.raises(AscBenchError):
        stats.paired_t([0.1, 0.2], [0.1])


def _w_plus(x, y, axis):
    """W+ with zero method 'wilcox' (zeros get no rank), for scipy.stats.permutation_test."""
    d = np.round(x - y, 12)
    r = sps.rankdata(np.where(d == 0, np.nan, np.abs(d)), axis=axis, nan_policy="omit")
    return np.nansum(np.where(d > 0, r, 0.0), axis=axis)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [4, 7, 12])
def test_wilcoxon_exact_equals_sign_flip_permutation_test_with_ties_and_zeros(seed, n):
    # accuracies on 4 queries: differences in steps of 1/4, so ties and zeros are the rule
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 5, n) / 4, rng.integers(0, 5, n) / 4
    ours = stats.wilcoxon(a, b)
    ref = sps.permutation_test((a, b), _w_plus, permutation_type="samples", vectorized=True,
                               n_resamples=np.inf, alternative="two-sided")
    assert ours.method.startswith("wilcoxon-exact")
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize("k, p", [(5, 0.0625), (4, 0.125), (6, 0.03125)])
def test_wilcoxon_equal_differences_give_the_exact_minimum(k, p):
    # the issue: 5 equal differences gave 0.038 (normal approximation); exact minimum 2 / 2^5
    assert stats.wilcoxon([0.7] * k, [0.6] * k).p_value == p
    assert stats.wilcoxon([0.6] * k, [0.7] * k).p_value == p


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [6, 30])
def test_wilcoxon_exact_without_ties_matches_scipy_exact(seed, n):
    a, b = _pair(seed, n)
    ours = stats.wilcoxon(a, b)
    ref = sps.wilcoxon(a, b, zero_method="wilcox", method="exact")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-9)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-14)


def test_wilcoxon_exact_null_distribution_by_enumeration():
    ranks = np.array([1, 2.5, 2.5, 4, 5.5, 5.5, 7])
    probs = stats.signed_rank_null(ranks)
    signs = (np.arange(2 ** ranks.size)[:, None] >> np.arange(ranks.size)) & 1
    w2 = np.rint(2 * signs @ ranks).astype(int)
    np.testing.assert_allclose(probs, np.bincount(w2, minlength=probs.size) / 2 ** ranks.size,
                               atol=1e-15)


def test_wilcoxon_beyond_the_exact_limit_is_the_tie_corrected_normal_approximation():
    rng = np.random.default_rng(3)
    n = stats.WILCOXON_EXACT_MAX_N + 40
    a, b = rng.integers(8, 20, n) / 20, rng.integers(6, 18, n) / 20
    ours = stats.wilcoxon(a, b)
    d = np.round(a - b, 12)
    nz = d[d != 0]
    assert nz.size > stats.WILCOXON_EXACT_MAX_N and np.unique(np.abs(nz)).size < nz.size
    ref = sps.wilcoxon(nz, zero_method="wilcox", correction=False, method="asymptotic")
    assert ours.method.startswith("wilcoxon-asymptotic") and ours.n == nz.size
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)


def test_wilcoxon_float_noise_does_not_break_ties():
    # 0.6-0.4 and 0.8-0.6 differ in the last bit; after rounding they are one tie (ranks 2.5)
    a = np.array([0.6, 0.8, 0.3, 0.9])
    b = np.array([0.4, 0.6, 0.2, 0.5])
    assert (a - b)[0] != (a - b)[1]
    r = stats.wilcoxon(a, b)
    assert r.statistic == 0.0 and r.p_value == 0.125


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


# ------------------------------------------------------------------------ corrected t, TOST
def test_corrected_t_equals_hand_computation():
    # Nadeau-Bengio: t = mean(d) / sqrt((1/J + n_test/n_train) s^2), df = J - 1
    a = np.array([0.81, 0.77, 0.85, 0.80])
    b = np.array([0.80, 0.74, 0.83, 0.76])
    ratio = stats.fold_size_ratio([300, 300, 300, 300], [100, 100, 100, 100])
    assert ratio == pytest.approx(1 / 3)
    d = a - b
    t_hand = d.mean() / math.sqrt((1 / 4 + 1 / 3) * d.var(ddof=1))
    ours = stats.corrected_t(a, b, ratio=ratio)
    assert ours.statistic == pytest.approx(t_hand, rel=1e-12)
    assert ours.p_value == pytest.approx(2 * sps.t.sf(abs(t_hand), 3), rel=1e-12)
    # larger than the plain paired t p-value, which ignores the overlap of training sets
    assert ours.p_value > stats.paired_t(a, b).p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)


def test_fold_size_ratio_uses_mean_sizes_and_rejects_bad_input():
    assert stats.fold_size_ratio([90, 80, 70], [10, 20, 30]) == pytest.approx(20 / 80)
    with pytest.raises(AscBenchError):
        stats.fold_size_ratio([90, 0], [10, 20])
    with pytest.raises(AscBenchError):
        stats.fold_size_ratio([90], [10, 20])


def test_constant_fold_differences_cannot_be_tested():
    # the issue: four folds each +1/18 gave t = 3.5e15, p = 5e-47
    a = np.array([10, 11, 12, 13]) / 18
    b = a - 1 / 18
    for r in (stats.corrected_t(a, b, ratio=1 / 3), stats.paired_t(a, b)):
        assert math.isnan(r.p_value) and math.isnan(r.statistic)
        assert "no variance: cannot test" in r.method
    assert math.isnan(stats.tost_paired(a, b, 0.1).p_value)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.005, 0.02, 0.05])
def test_tost_matches_statsmodels_ttost_paired(seed, margin):
    from statsmodels.stats.weightstats import ttost_paired

    a, b = _pair(seed, 40, shift=0.01)
    ours = stats.tost_paired(a, b, margin)
    p, low, high = ttost_paired(a, b, -margin, margin)
    assert ours.p_value == pytest.approx(p, rel=1e-10, abs=1e-300)
    assert (ours.p_low, ours.p_high) == pytest.approx((low[1], high[1]), rel=1e-10, abs=1e-300)


def test_tost_with_fold_correction_is_wider():
    a = np.array([0.80, 0.78, 0.83, 0.79, 0.81])
    b = a - np.array([0.002, -0.004, 0.003, 0.001, -0.001])
    plain, corr = stats.tost_paired(a, b, 0.01), stats.tost_paired(a, b, 0.01, ratio=0.25)
    assert plain.p_value < corr.p_value < 1
    with pytest.raises(AscBenchError):
        stats.tost_paired(a, b, 0.0)


# ---------------------------------------------------------------------- delete-one-unit jackknife
def _episodes(seed, n_clips=60, n_classes=8, e=30, n_way=3, q=4, k=1):
    rng = np.random.default_rng(seed)
    labels = np.arange(n_clips) % n_classes
    support, query = [], []
    for _ in range(e):
        ways = rng.choice(n_classes, n_way, replace=False)
        s_rows, q_rows = [], []
        for c in ways:
            rows = rng.permutation(np.flatnonzero(labels == c))
            s_rows.append(rows[:k])
            q_rows.append(rows[k:k + q])
        support.append(np.concatenate(s_rows))
        query.append(np.concatenate(q_rows))
    query = np.array(query)
    query[:, -1] = np.where(rng.random(e) < 0.3, -1, query[:, -1])    # some padding
    correct = (rng.random(query.shape) < 0.6) & (query >= 0)
    return labels, np.array(support), query, correct


def test_unit_loo_episodes_mode_equals_brute_force():
    labels, support, query, correct = _episodes(0)
    acc = correct.sum(1) / (query >= 0).sum(1)
    loo = stats.unit_loo(query, correct, labels, support)
    assert loo.mode == "episodes"
    for u, th in zip(loo.units, loo.theta_loo):
        involved = np.array([u in labels[np.r_[s, q[q >= 0]]] for s, q in zip(support, query)])
        assert th == pytest.approx(acc[~involved].mean(), abs=1e-12)


def test_unit_loo_queries_mode_equals_brute_force():
    labels, support, query, correct = _episodes(1, n_classes=3, n_way=3)   # every class, always
    loo = stats.unit_loo(query, correct, labels, support)
    assert loo.mode == "queries"
    for u, th in zip(loo.units, loo.theta_loo):
        accs = []
        for q, c in zip(query, correct):
            keep = (q >= 0) & (labels[np.maximum(q, 0)] != u)
            if keep.any():
                accs.append(c[keep].mean())
        assert th == pytest.approx(np.mean(accs), abs=1e-12)


def test_jackknife_ci_of_the_mean_is_the_t_interval():
    # for a plain mean over U units the delete-one jackknife SE equals s / sqrt(U)
    x = np.random.default_rng(4).normal(0.6, 0.1, 12)
    loo = (x.sum() - x) / (x.size - 1)
    jk = stats.jackknife_ci(x.mean(), loo)
    lo, hi = sps.t.interval(0.95, 11, loc=x.mean(), scale=sps.sem(x))
    assert (jk.low, jk.high) == pytest.approx((lo, hi), abs=1e-12)
    assert math.isnan(stats.jackknife_ci(0.5, [0.5]).half_width)


def test_record_intervals_name_methods_and_add_groups_where_clips_have_them():
    labels, support, query, correct = _episodes(2)
    acc = correct.sum(1) / (query >= 0).sum(1)
    outcome = type("O", (), {"support": support, "query": query, "correct": correct})()
    groups = [f"rec{i // 3}" if i % 7 else None for i in range(labels.size)]
    iv = stats.record_intervals(acc, "episode", outcome, labels,
                                [f"c{i}" for i in range(8)], groups)
    assert set(iv) == {"episode", "class", "group"}
    for kind in iv:
        assert {"method", "covers", "conditions_on", "low", "high", "half_width"} <= set(iv[kind])
    assert iv["episode"]["half_width"] == pytest.approx(stats.mean_ci(acc).half_width)
    # a clip without a group is its own group: 20 shared recordings + the ungrouped clips
    n_groups = len({g for g in groups if g}) + sum(g is None for g in groups)
    involved = set(np.r_[support.ravel(), query[query >= 0]].tolist())
    assert iv["group"]["n_units"] == len({groups[i] or f"clip:{i}" for i in involved}) <= n_groups
    assert set(iv["class"]["loo"]) <= {f"c{i}" for i in range(8)}
    assert stats.record_intervals(acc, "episode", outcome, labels, [f"c{i}" for i in range(8)],
                                  [None] * labels.size).keys() == {"episode", "class"}
    folds = stats.record_intervals(np.array([0.7, 0.8, 0.75]), "fold", None, labels, [], None)
    assert set(folds) == {"fold"} and "too narrow" in folds["fold"]["method"]
