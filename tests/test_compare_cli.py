"""Two encoders on identical episodes: compare and leaderboard through the CLI, checked against scipy."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sps

from conftest import cli, run_json

ENCODERS = (("logmel-stats",), ("contrastasc-cpm-6k", "--random-init"))


@pytest.fixture(scope="module")
def results(demo_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    common = ["--task", "demo-5way1shot", "--param", "episodes=300", "--data-root", str(demo_root),
              "--cache-dir", str(base / "cache"), "--results-dir", str(base / "results")]
    records = {args[0]: run_json("--encoder", *args, *common) for args in ENCODERS}
    records["other-seed"] = run_json("--encoder", "contrastasc-cpm-6k", "--random-init", *common, "--seed", "3")
    return base / "results", records


def test_two_encoders_share_episodes_and_compare_matches_scipy(results):
    results_dir, recs = results
    a, b = recs["logmel-stats"], recs["contrastasc-cpm-6k"]
    assert a["episode_hash"] == b["episode_hash"]
    out = json.loads(cli("compare", "--task", "demo-5way1shot", "logmel-stats", "contrastasc-cpm-6k",
                         "--seed", "0", "--results-dir", str(results_dir), "--json").stdout)
    pair = out["pairs"][0]
    sa, sb = np.array(a["scores"]), np.array(b["scores"])
    assert pair["mean_diff"] == pytest.approx((sb - sa).mean(), abs=1e-12)
    assert pair["p_t"] == pytest.approx(sps.ttest_rel(sb, sa).pvalue, rel=1e-9, abs=1e-300)
    d = np.round(sb - sa, 12)
    assert pair["p_wilcoxon"] == pytest.approx(sps.wilcoxon(d[d != 0], method="approx").pvalue, rel=1e-9, abs=1e-300)
    low, high = sps.t.interval(0.95, len(d) - 1, loc=(sb - sa).mean(), scale=sps.sem(sb - sa))
    assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    human = cli("compare", "--task", "demo-5way1shot", "logmel-stats", "contrastasc-cpm-6k", "--seed", "0",
                "--results-dir", str(results_dir)).stdout
    assert "significantly" in human and "primary test: paired-t" in human
    assert "class CI: delete-one-class jackknife" in human and "bootstrap CI: paired bootstrap" in human


def test_records_carry_named_episode_and_class_intervals(results):
    _, recs = results
    rec = recs["logmel-stats"]
    iv = rec["intervals"]
    assert set(iv) == {"episode", "class"}                   # the demo clips have no groups
    assert iv["episode"]["half_width"] == pytest.approx(rec["summary"]["half_width"], abs=1e-15)
    cls = iv["class"]
    assert "jackknife" in cls["method"] and "classes" in cls["covers"] and cls["conditions_on"]
    assert cls["mode"] == "episodes" and cls["n_units"] == rec["dataset"]["n_classes"]
    assert len(cls["loo"]) == cls["n_units"] and cls["half_width"] > iv["episode"]["half_width"]
    loo = np.array(list(cls["loo"].values()))
    u = loo.size
    se = np.sqrt((u - 1) / u * np.sum((loo - loo.mean()) ** 2))
    assert cls["half_width"] == pytest.approx(sps.t.ppf(0.975, u - 1) * se, rel=1e-12)


def test_records_from_another_seed_are_refused_for_pairing(results, tmp_path):
    results_dir, recs = results
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for rec in (recs["logmel-stats"], recs["other-seed"]):
        (mixed / f"{rec['encoder']['name']}-{rec['seed']}.json").write_text(json.dumps(rec))
    proc = cli("compare", "--task", "demo-5way1shot", "logmel-stats", "contrastasc-cpm-6k",
               "--results-dir", str(mixed), check=False)
    assert proc.returncode != 0 and "seed" in proc.stderr.lower()


def test_leaderboard_is_byte_identical_with_bold_best_and_plots(results, tmp_path):
    results_dir, _ = results
    first, second = tmp_path / "a.md", tmp_path / "b.md"
    cli("leaderboard", "--results-dir", str(results_dir), "--out", str(first), "--plots", str(tmp_path / "plots"))
    cli("leaderboard", "--results-dir", str(results_dir), "--out", str(second))
    assert first.read_bytes() == second.read_bytes()
    text = first.read_text()
    assert "**" in text and "±" in text and "CI" in text
    pngs = list((tmp_path / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_sweep_writes_one_record_per_cell(demo_root, tmp_path):
    recs = json.loads(cli("run", "--encoder", "logmel-stats", "--task", "demo-5way1shot", "--n-way", "3,5",
                          "--k-shot", "1,2", "--param", "episodes=40", "--data-root", str(demo_root),
                          "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--json").stdout)
    cells = sorted((r["protocol"]["params"]["n_way"], r["protocol"]["params"]["k_shot"]) for r in recs)
    assert cells == [(3, 1), (3, 2), (5, 1), (5, 2)]
    assert len(list((tmp_path / "r").glob("*.json"))) == 4
    assert sum(r["embedding"]["cache_hit"] for r in recs) == 3


def test_compare_cli_on_four_constant_fold_differences_says_it_cannot_test(tmp_path):
    from test_leaderboard import make_record

    from asc_bench.evaluation.records import seal

    a = np.array([12, 13, 11, 14]) / 18
    for enc, scores in (("a", a), ("b", a + 1 / 18)):
        rec = make_record("lp", enc, scores, unit="fold", episode_hash="F", params={"folds": "official"})
        rec["folds"] = {"n_train": [54] * 4, "n_test": [18] * 4}
        (tmp_path / f"{enc}.json").write_text(json.dumps(seal(rec)))
    human = cli("compare", "--task", "lp", "a", "b", "--results-dir", str(tmp_path), "--margin", "1").stdout
    assert "no variance: cannot test" in human and "significant" not in human
    out = json.loads(cli("compare", "--task", "lp", "a", "b", "--results-dir", str(tmp_path), "--json").stdout)
    pair = out["pairs"][0]
    assert pair["p_primary"] is None and pair["decision"] == "cannot test"
    assert pair["primary_test"].startswith("corrected-t")
