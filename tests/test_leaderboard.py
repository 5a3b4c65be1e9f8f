"""Leaderboard markdown/plots and `compare` on synthetic records in the result schema."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from asc_bench.api import AscBenchError
from asc_bench.evaluation import stats
from asc_bench.evaluation.compare import compare_family, compare_records, format_comparison
from asc_bench.evaluation.leaderboard import DAGGER, EQUIV, UNPAIRED, render_leaderboard, write_plots
from asc_bench.evaluation.records import SCHEMA, seal

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_record(task, encoder, scores, *, group="table2", seed=0, episode_hash="E1",
                params=None, timestamp="2026-01-01T00:00:00.000000Z", n_params=1_000_000,
                macs=None, predictions=None, spec_hash="S1", fingerprint="F1", unit="episode"):
    scores = [float(s) for s in scores]
    return {
        "schema": SCHEMA, "asc_bench_version": "0.1.0", "timestamp": timestamp,
        "task": {"name": task, "spec_hash": spec_hash, "group": group, "dataset": "esc50",
                 "protocol": "fewshot-prototype", "description": "d"},
        "encoder": {"name": encoder, "label": encoder, "weights": f"sha256:{encoder}", "options": {},
                    "config": {}, "checkpoint_sha256": None, "params": n_params, "macs_per_s": macs},
        "dataset": {"name": "esc50", "fingerprint": fingerprint, "n_clips": 100, "n_classes": 5},
        "seed": seed,
        "protocol": {"name": "fewshot-prototype",
                     "params": params or {"n_way": 5, "k_shot": 1, "n_query": 15,
                                          "episodes": len(scores)},
                     "unit": unit, "metric": "accuracy"},
        "episode_hash": episode_hash, "scores": scores,
        "summary": stats.mean_ci(scores).to_summary(), "predictions": predictions,
        "skipped_files": [], "embedding": {}, "wall_time_s": 1.0, "packages": {}, "notes": [],
    }


def _scores(rng, mean, n=60):
    return np.clip(rng.normal(mean, 0.1, n), 0, 1).round(4)


@pytest.fixture
def records():
    rng = np.random.default_rng(0)
    base = _scores(rng, 0.6)
    recs = [make_record("esc50-5w1s", "alpha", base, n_params=86_000_000, macs=2.5e9),
            make_record("esc50-5w1s", "beta", np.clip(base + rng.normal(0.002, 0.02, 60), 0, 1)),
            make_record("esc50-5w1s", "gamma", np.clip(base - 0.1 + rng.normal(0, 0.02, 60), 0, 1)),
            make_record("esc50-5w1s", "delta", np.clip(base + rng.normal(0.0, 0.02, 60), 0, 1),
                        episode_hash="OTHER", seed=1),
            make_record("nsynth-5w1s", "alpha", _scores(rng, 0.7)),
            make_record("nsynth-5w1s", "beta", _scores(rng, 0.5)),
            make_record("tut17-5shot", "alpha", _scores(rng, 0.5, 10), group="contrastasc"),
            make_record("tut17-5shot", "beta", _scores(rng, 0.52, 10), group="contrastasc")]
    # an older record for alpha on esc50 with a much higher mean must be ignored (latest wins)
    recs.append(make_record("esc50-5w1s", "alpha", np.full(60, 0.99),
                            timestamp="2025-01-01T00:00:00.000000Z"))
    for r in recs:
        if r["encoder"]["name"] == "alpha":
            r["encoder"].update(params=86_000_000, macs_per_s=2.5e9)
    return recs


def _row(md, encoder, table_index=0):
    tables = md.split("\n## ")[1:]
    for line in tables[table_index].splitlines():
        if line.startswith(f"| {encoder} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no row for {encoder}")


def test_markdown_is_byte_identical_across_renders_and_order(records):
    first = render_leaderboard(records)
    assert render_leaderboard(records) == first
    for seed in range(3):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        assert render_leaderboard(shuffled) == first
    assert "2026" not in first and "2025" not in first         # no timestamps
    assert first.index("## contrastasc") < first.index("## table2")


def test_cells_bold_and_units(records):
    md = render_leaderboard(records)
    assert "accuracy in %" in md and "1 decimal" in md and stats.CI_FORMULA in md
    rows = {e: _row(md, e, 1) for e in ("alpha", "beta", "gamma", "delta")}
    means = {r["encoder"]["name"]: np.mean(r["scores"]) for r in records
             if r["task"]["name"] == "esc50-5w1s" and r["timestamp"].startswith("2026")}
    best = max(means, key=means.get)
    for enc, row in rows.items():
        cell = row[3]
        assert cell.startswith("**") == (enc == best), (enc, cell)
        ci = stats.mean_ci([s for r in records for s in r["scores"]
                            if r["encoder"]["name"] == enc and r["task"]["name"] == "esc50-5w1s"
                            and r["timestamp"].startswith("2026")])
        assert f"{ci.mean * 100:.1f} ± {ci.half_width * 100:.1f}" in cell
    assert rows["alpha"][1] == "86.0M" and rows["alpha"][2] == "2.50" and rows["beta"][2] == "–"
    assert _row(md, "gamma", 1)[4] == "–"                      # no nsynth record for gamma


def test_dagger_matches_scipy_and_statsmodels(records):
    md = render_leaderboard(records)
    col = {r["encoder"]["name"]: r for r in records
           if r["task"]["name"] == "esc50-5w1s" and r["timestamp"].startswith("2026")}
    best = max(col, key=lambda e: np.mean(col[e]["scores"]))
    others = sorted(e for e in col if e != best and col[e]["episode_hash"] == col[best]["episode_hash"])
    p = [sps.ttest_rel(col[e]["scores"], col[best]["scores"]).pvalue for e in others]
    adj = multipletests(p, method="holm")[1]
    expect = {e: a > 0.05 for e, a in zip(others, adj)}
    assert set(expect.values()) == {True, False}                 # the fixture exercises both
    for e, dag in expect.items():
        assert _row(md, e, 1)[3].endswith(DAGGER) == dag, e
    # delta used other episodes: not tested, other mark, footnoted
    assert _row(md, "delta", 1)[3].endswith(UNPAIRED)
    assert f"{UNPAIRED} Not tested against the best" in md


def test_dagger_uses_the_holm_adjustment():
    # find (deterministically) a column where raw and Holm-adjusted p disagree for some entry
    for seed in range(500):
        rng = np.random.default_rng(seed)
        best = rng.uniform(0.4, 0.8, 30)
        cols = {"best": best + 0.05}
        for i in range(4):
            cols[f"enc{i}"] = best + rng.normal(0.02, 0.05, 30)
        ref_mean = max(np.mean(v) for v in cols.values())
        if np.mean(cols["best"]) != ref_mean:
            continue
        others = [f"enc{i}" for i in range(4)]
        raw = [sps.ttest_rel(cols[e], cols["best"]).pvalue for e in others]
        adj = multipletests(raw, method="holm")[1]
        if any((r > 0.05) != (a > 0.05) for r, a in zip(raw, adj)):
            break
    else:
        pytest.fail("no configuration separates raw from Holm-adjusted p")
    md = render_leaderboard([make_record("t", e, v) for e, v in cols.items()])
    for e, a in zip(others, adj):
        assert _row(md, e)[3].endswith(DAGGER) == (a > 0.05), e
    assert _row(md, "best")[3].startswith("**")


def test_footnotes_name_protocol_episodes_and_seed(records):
    md = render_leaderboard(records)
    assert "protocol fewshot-prototype" in md and "60 episodes" in md and "seed 0, 1" in md
    assert "[1]" in md and "10 episodes" in md


def test_sweep_variants_get_labelled_columns():
    rng = np.random.default_rng(1)
    recs = [make_record("esc50", enc, _scores(rng, 0.5 + 0.05 * k),
                        params={"n_way": 5, "k_shot": k, "n_query": 15, "episodes": 60},
                        episode_hash=f"K{k}")
            for k in (1, 5) for enc in ("a", "b")]
    md = render_leaderboard(recs)
    assert "esc50 (k_shot=1) [1]" in md and "esc50 (k_shot=5) [2]" in md


def test_empty_records():
    assert "No result records." in render_leaderboard([])


# -------------------------------------------------------------------------------------- compare
def _pred(rng, n=80, p=0.7):
    return {"index": list(range(n)), "correct": (rng.random(n) < p).tolist()}


def test_compare_statistics_equal_scipy(records):
    rng = np.random.default_rng(5)
    for r in records:
        if r["task"]["name"] == "esc50-5w1s":
            r["predictions"] = _pred(rng)
    cmp = compare_records(records, "esc50-5w1s", ["alpha", "beta", "gamma"])
    col = {r["encoder"]["name"]: r for r in records
           if r["task"]["name"] == "esc50-5w1s" and r["timestamp"].startswith("2026")}
    a = np.array(col["alpha"]["scores"])
    p_t, p_w = [], []
    for pair, enc in zip(cmp.pairs, ("beta", "gamma")):
        b = np.array(col[enc]["scores"])
        assert (pair.encoder, pair.reference) == (enc, "alpha")
        assert pair.mean_diff == pytest.approx(np.mean(b - a), abs=1e-15)
        lo, hi = sps.t.interval(0.95, len(a) - 1, loc=np.mean(b - a), scale=sps.sem(b - a))
        assert (pair.ci_low, pair.ci_high) == pytest.approx((lo, hi), abs=1e-12)
        ref_t = sps.ttest_rel(b, a).pvalue
        assert pair.p_t == pytest.approx(ref_t, abs=1e-12)
        d = np.round(b - a, 12)
        d = d[d != 0]
        ref_w = sps.wilcoxon(d, zero_method="wilcox", correction=False,
                             method=stats.wilcoxon_method(d)).pvalue
        assert pair.p_wilcoxon == pytest.approx(ref_w, abs=1e-12)
        # episodes: McNemar is never run on predictions of one draw/episode set
        assert pair.mcnemar is None and pair.primary_test == "paired-t"
        assert pair.p_primary == pair.p_t
        bs = stats.paired_bootstrap_ci(b, a)
        assert [(iv.kind, iv.low, iv.high) for iv in pair.intervals][1] == (
            "bootstrap", bs.low, bs.high)
        p_t.append(ref_t)
        p_w.append(ref_w)
    np.testing.assert_allclose([p.p_primary_holm for p in cmp.pairs],
                               multipletests(p_t, method="holm")[1], atol=1e-12)
    assert "significantly worse" in cmp.pairs[1].verdict and cmp.pairs[1].decision == "worse"
    text = cmp.dumps()
    assert json.loads(text)["pairs"][0]["encoder"] == "beta"
    plain = format_comparison(cmp)
    assert "gamma - alpha" in plain and "bootstrap" in plain and "significantly worse" in plain
    assert "exact McNemar" not in plain and any("McNemar is shown only" in n for n in cmp.notes)


def test_compare_all_pairs_and_param_filter(records):
    cmp = compare_records(records, "esc50-5w1s", ["alpha", "beta", "gamma"], all_pairs=True)
    assert [(p.encoder, p.reference) for p in cmp.pairs] == [
        ("beta", "alpha"), ("gamma", "alpha"), ("gamma", "beta")]
    np.testing.assert_allclose([p.p_primary_holm for p in cmp.pairs],
                               multipletests([p.p_t for p in cmp.pairs], method="holm")[1],
                               atol=1e-12)
    with pytest.raises(AscBenchError, match="k_shot"):
        compare_records(records, "esc50-5w1s", ["alpha", "beta"], params={"k_shot": 5})
    assert compare_records(records, "esc50-5w1s", ["alpha", "beta"],
                           params={"k_shot": 1}).pairs[0].n == 60


def test_compare_uses_the_latest_record(records):
    cmp = compare_records(records, "esc50-5w1s", ["alpha", "beta"])
    assert cmp.summaries["alpha"]["mean"] < 0.9                   # not the old 0.99 record


def test_compare_refuses_mismatched_episode_hashes(records):
    with pytest.raises(AscBenchError) as err:
        compare_records(records, "esc50-5w1s", ["alpha", "delta"], seed=0)
    assert "seed 1" in str(err.value) or "no record" in str(err.value)
    records.append(make_record("esc50-5w1s", "delta", np.full(60, 0.5), episode_hash="X",
                               seed=0, spec_hash="S2"))
    with pytest.raises(AscBenchError) as err:
        compare_records(records, "esc50-5w1s", ["alpha", "delta"], seed=0)
    msg = str(err.value)
    assert "episode_hash" in msg and "task spec changed" in msg and "delta" in msg


def test_compare_without_common_seed_explains(records):
    with pytest.raises(AscBenchError, match="no seed in common"):
        compare_records(records, "esc50-5w1s", ["alpha", "delta"])


def test_compare_n1_and_identical_scores():
    recs = [make_record("t", "a", [0.5], unit="fold"), make_record("t", "b", [0.6], unit="fold")]
    cmp = compare_records(recs, "t", ["a", "b"])
    assert math.isnan(cmp.pairs[0].p_t) and "cannot test" in cmp.pairs[0].verdict
    assert "(n=1)" in format_comparison(cmp)
    assert json.loads(cmp.dumps())["pairs"][0]["p_t"] is None
    same = [make_record("t", "a", [0.5, 0.7]), make_record("t", "b", [0.5, 0.7])]
    pair = compare_records(same, "t", ["a", "b"]).pairs[0]
    assert math.isnan(pair.p_primary) and pair.p_wilcoxon == 1.0
    assert pair.decision == "cannot test" and "no variance: cannot test" in pair.verdict


# ----------------------------------------------------------------------------------------- plots
def test_plots_are_png(tmp_path):
    rng = np.random.default_rng(2)
    recs = []
    for enc, params in (("a", 1e5), ("b", 8.6e7)):
        for k in (1, 5, 10):
            recs.append(make_record("esc50", enc, _scores(rng, 0.4 + 0.02 * k),
                                    params={"n_way": 5, "k_shot": k, "n_query": 15, "episodes": 60},
                                    episode_hash=f"K{k}", n_params=int(params)))
        for n in (2, 10):
            recs.append(make_record("esc50", enc, _scores(rng, 0.9 - 0.03 * n),
                                    params={"n_way": n, "k_shot": 1, "n_query": 15, "episodes": 60},
                                    episode_hash=f"N{n}", n_params=int(params)))
    paths = write_plots(recs, tmp_path / "plots")
    names = sorted(p.name for p in paths)
    assert "esc50__k_shot.png" in names and "esc50__n_way.png" in names
    assert "table2__params.png" in names
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------- primary tests, family, verdicts
def _fold_record(task, encoder, scores, *, n_train=(300,) * 4, n_test=(100,) * 4, preds=None):
    r = make_record(task, encoder, scores, unit="fold", episode_hash="FOLDS",
                    params={"folds": "official"}, predictions=preds)
    r["folds"] = {"n_train": list(n_train), "n_test": list(n_test)}
    return r


def test_compare_four_folds_with_identical_differences_cannot_test():
    # the issue: four folds each +1/18 gave t = 3.5e15, p = 5e-47, "significant"
    a = np.array([12, 13, 11, 14]) / 18
    recs = [_fold_record("lp", "a", a), _fold_record("lp", "b", a + 1 / 18)]
    pair = compare_records(recs, "lp", ["a", "b"], margin=0.02).pairs[0]
    assert pair.decision == "cannot test" and "no variance: cannot test" in pair.verdict
    assert math.isnan(pair.p_primary) and math.isnan(pair.p_t) and pair.family_size == 0
    assert "significant" not in pair.verdict and "cannot test" in pair.equivalence
    assert "cannot test" in format_comparison(compare_records(recs, "lp", ["a", "b"]))


def test_compare_folds_use_the_corrected_t_and_mcnemar_on_each_clip_once():
    rng = np.random.default_rng(2)
    a = np.array([0.80, 0.74, 0.83, 0.78])
    b = a + np.array([0.02, 0.035, 0.01, 0.03])
    ca = rng.random(400) < 0.8
    cb = np.where(rng.random(400) < 0.1, ~ca, ca)
    recs = [_fold_record("lp", "a", a, n_train=(280, 310, 300, 310), n_test=(120, 90, 100, 90),
                         preds={"index": list(range(400)), "correct": ca.tolist()}),
            _fold_record("lp", "b", b, n_train=(280, 310, 300, 310), n_test=(120, 90, 100, 90),
                         preds={"index": list(range(400)), "correct": cb.tolist()})]
    pair = compare_records(recs, "lp", ["a", "b"]).pairs[0]
    d = b - a
    ratio = 100 / 300                                     # mean test size / mean train size
    t = d.mean() / math.sqrt((1 / 4 + ratio) * d.var(ddof=1))
    assert pair.primary_test.startswith("corrected-t") and "0.3333" in pair.primary_test
    assert pair.p_primary == pytest.approx(2 * sps.t.sf(abs(t), 3), rel=1e-12)
    assert pair.p_t == pytest.approx(sps.ttest_rel(b, a).pvalue, rel=1e-12)
    assert pair.p_t < pair.p_primary
    n01, n10 = int(np.sum(cb & ~ca)), int(np.sum(~cb & ca))
    assert pair.mcnemar.p_value == pytest.approx(sps.binomtest(n01, n01 + n10).pvalue, abs=1e-12)
    assert [iv.kind for iv in pair.intervals] == ["fold"]        # no bootstrap over 4 folds
    # a fold record without fold sizes cannot get the corrected test
    for r in recs:
        del r["folds"]
    old = compare_records(recs, "lp", ["a", "b"])
    assert old.pairs[0].decision == "cannot test" and "fold sizes" in old.pairs[0].verdict


def test_compare_holm_runs_over_every_task_and_pair(records):
    cmps = compare_family(records, ["esc50-5w1s", "nsynth-5w1s", "tut17-5shot"],
                          ["alpha", "beta"], all_pairs=True)
    pairs = [p for c in cmps for p in c.pairs]
    assert len(pairs) == 3
    raw = []
    for c in cmps:
        col = {r["encoder"]["name"]: r for r in records if r["task"]["name"] == c.task
               and r["timestamp"].startswith("2026")}
        raw.append(sps.ttest_rel(col["beta"]["scores"], col["alpha"]["scores"]).pvalue)
    np.testing.assert_allclose([p.p_primary for p in pairs], raw, rtol=1e-10)
    np.testing.assert_allclose([p.p_primary_holm for p in pairs],
                               multipletests(raw, method="holm")[1], rtol=1e-10)
    assert all(p.family_size == 3 for p in pairs)
    # one task alone is a smaller family: its Holm p is its raw p
    alone = compare_records(records, "tut17-5shot", ["alpha", "beta"]).pairs[0]
    assert alone.p_primary_holm == alone.p_primary == pytest.approx(raw[2])


def test_compare_margin_is_tost_equal_to_statsmodels(records):
    from statsmodels.stats.weightstats import ttost_paired

    cmp = compare_records(records, "esc50-5w1s", ["alpha", "beta", "gamma"], margin=0.02)
    col = {r["encoder"]["name"]: np.array(r["scores"]) for r in records
           if r["task"]["name"] == "esc50-5w1s" and r["timestamp"].startswith("2026")}
    raw = [ttost_paired(col[e], col["alpha"], -0.02, 0.02)[0] for e in ("beta", "gamma")]
    np.testing.assert_allclose([p.p_tost for p in cmp.pairs], raw, rtol=1e-10)
    np.testing.assert_allclose([p.p_tost_holm for p in cmp.pairs],
                               multipletests(raw, method="holm")[1], rtol=1e-10)
    beta, gamma = cmp.pairs
    assert beta.equivalent is True and "equivalent within ±2 points" in beta.equivalence
    assert gamma.equivalent is False and "not shown equivalent" in gamma.equivalence


def test_compare_class_interval_is_the_jackknife_of_the_per_class_differences():
    rng = np.random.default_rng(7)
    recs = []
    for enc, shift in (("a", 0.0), ("b", 0.05)):
        r = make_record("t", enc, rng.uniform(0.4, 0.8, 30))
        loo = {f"c{i}": 0.6 + shift + 0.02 * np.sin(i * (1 + shift)) for i in range(10)}
        r["intervals"] = {"class": {**stats.INTERVALS["class"], "loo": loo, "half_width": 0.1}}
        recs.append(r)
    pair = compare_records(recs, "t", ["a", "b"]).pairs[0]
    iv = {i.kind: i for i in pair.intervals}["class"]
    la, lb = recs[0]["intervals"]["class"]["loo"], recs[1]["intervals"]["class"]["loo"]
    diffs = np.array([lb[k] - la[k] for k in sorted(la)])
    se = math.sqrt(9 / 10 * np.sum((diffs - diffs.mean()) ** 2))
    h = sps.t.ppf(0.975, 9) * se
    assert (iv.low, iv.high) == pytest.approx((pair.mean_diff - h, pair.mean_diff + h), abs=1e-12)
    assert "jackknife" in iv.method and "classes" in iv.covers


def test_leaderboard_marker_text_interval_choice_and_equivalence(records):
    md = render_leaderboard(records, margin=0.02)
    assert "not separable from the best at alpha = 0.05" in md and "does not mean tied" in md
    assert f"{EQUIV}: equivalent to the best within ±2 points" in md
    from statsmodels.stats.weightstats import ttost_paired

    col = {r["encoder"]["name"]: np.array(r["scores"]) for r in records
           if r["task"]["name"] == "esc50-5w1s" and r["timestamp"].startswith("2026")
           and r["episode_hash"] == "E1"}
    best = max(col, key=lambda e: col[e].mean())
    others = sorted(e for e in col if e != best)
    adj = multipletests([ttost_paired(col[e], col[best], -0.02, 0.02)[0] for e in others],
                        method="holm")[1]
    assert {bool(a <= 0.05) for a in adj} == {True, False}        # the fixture exercises both
    for e, a in zip(others, adj):
        assert (EQUIV in _row(md, e, 1)[3]) == (a <= 0.05), e
    # records without class intervals fall back to the episode CI, and the footnote says so
    assert "± = Student-t 95% CI over episodes" in md
    rec = next(r for r in records if r["encoder"]["name"] == "beta"
               and r["task"]["name"] == "nsynth-5w1s")
    rec["intervals"] = {"class": {"half_width": 0.123}}
    md2 = render_leaderboard(records)
    assert "± 12.3" in _row(md2, "beta", 1)[4] and "delete-one-class jackknife" in md2
    assert "± 12.3" not in _row(render_leaderboard(records, interval="episode"), "beta", 1)[4]
    with pytest.raises(AscBenchError):
        render_leaderboard(records, interval="bogus")


def test_leaderboard_folds_use_the_corrected_t():
    a = np.array([0.80, 0.74, 0.83, 0.78])
    b = a - np.array([0.02, 0.035, 0.01, 0.03])
    md = render_leaderboard([_fold_record("lp", "a", a), _fold_record("lp", "b", b)])
    raw_t = sps.ttest_rel(b, a).pvalue
    corr = stats.corrected_t(b, a, ratio=1 / 3).p_value
    assert raw_t < 0.05 < corr                     # plain t would separate them, corrected not
    assert _row(md, "b")[3].endswith(DAGGER)
    const = render_leaderboard([_fold_record("lp", "a", a), _fold_record("lp", "b", a - 0.01)])
    assert _row(const, "b")[3].endswith(UNPAIRED) and "no variance: cannot test" in const


def test_compare_verdict_warns_when_the_class_interval_includes_zero():
    rng = np.random.default_rng(8)
    base = rng.uniform(0.4, 0.8, 200)
    recs = [make_record("t", "a", base), make_record("t", "b", base + 0.03 + rng.normal(0, 0.01, 200))]
    # per-class values: b wins on some classes and loses on others -> wide class interval
    for r, sign in zip(recs, (0.0, 1.0)):
        loo = {f"c{i}": 0.6 + sign * (0.03 + 0.2 * (-1) ** i) for i in range(8)}
        r["intervals"] = {"class": {**stats.INTERVALS["class"], "loo": loo, "half_width": 0.1}}
    pair = compare_records(recs, "t", ["a", "b"]).pairs[0]
    iv = {i.kind: i for i in pair.intervals}["class"]
    assert pair.decision == "better" and iv.low < 0 < iv.high
    assert "class-level interval includes 0" in pair.verdict
