"""Benchmark suites: the YAML format, `list suites`, `bench` (checks first, resume, failures, launchers),
`leaderboard --suite` (reported rows, consistency against the published numbers) and `list weights`."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from conftest import REPO, cli
from suite_miniatures import table2_miniatures

TABLE2_COLUMNS = ["ESC-50", "VoxCeleb1", "NSynth", "SCv2", "Kaggle18"]


# ------------------------------------------------------------------------------------------ format
def test_builtin_suites_parse_and_every_published_number_has_a_source():
    from asc_bench.evaluation.suites import discover_suites
    from asc_bench.plugins import get_manager

    suites = discover_suites(get_manager().suite_dirs)
    assert {"uamix-table2", "uamix-nk", "contrastasc-open-set", "contrastasc-closed"} <= set(suites)
    t2 = suites["uamix-table2"]
    assert [c.label for c in t2.columns] == TABLE2_COLUMNS
    assert t2.published_for("uaMix-MAE").values["ESC-50"] == (66.3, 0.9)
    assert t2.published_for("MaskSpec").values.keys() == {"ESC-50", "SCv2"}      # printed as – elsewhere
    for s in suites.values():
        for p in s.published:
            assert p.source and p.unverified, (s.name, p.model)
    nk = suites["uamix-nk"]
    assert len(nk.columns) == 9 and {c.task for c in nk.columns} == {"esc50-5way1shot"}
    gain = suites["contrastasc-open-set"].published_for("ContrastASC", "gain")
    assert gain.over == "KD + CE" and gain.values == {"TUT17": (3.3, None), "ICME24": (2.0, None)}


def test_suite_errors_name_the_file_and_field(tmp_path):
    from asc_bench.api import UsageError
    from asc_bench.evaluation.suites import load_suite_file, parse_model_arg

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "tasks": [{"task": "esc50-5way1shot", "lable": "E"}]}))
    with pytest.raises(UsageError, match=r"bad.yaml: tasks\[0\]: unknown field\(s\) \['lable'\]"):
        load_suite_file(bad)
    bad.write_text(yaml.safe_dump({"name": "x", "tasks": [{"task": "esc50-5way1shot", "label": "E"}],
                                   "published": [{"model": "m", "values": {"F": 1.0}}]}))
    with pytest.raises(UsageError, match=r"'F' is not a column of the suite"):
        load_suite_file(bad)
    m = parse_model_arg("base=logmel-stats:none")
    assert (m.label, m.encoder, m.checkpoint, m.random_init) == ("base", "logmel-stats", None, False)
    assert parse_model_arg("r=beats:random").random_init
    with pytest.raises(UsageError, match="LABEL=ENCODER:CHECKPOINT"):
        parse_model_arg("beats")


@pytest.mark.slow
def test_list_suites_and_a_plugin_contributed_suite(tmp_path):
    plugin = tmp_path / "my_suites_plugin.py"
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text(yaml.safe_dump(
        {"name": "my-suite", "description": "from a plugin", "tasks": [{"task": "demo-5way1shot"}]}))
    plugin.write_text("from asc_bench import hookimpl\n\n@hookimpl\ndef register_suite_dirs(register):\n"
                      f"    register({str(tmp_path / 'suites')!r})\n")
    res = cli("--plugin", "my_suites_plugin", "list", "suites", "--json", env={"PYTHONPATH": str(tmp_path)})
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"my-suite", "uamix-table2", "uamix-nk", "contrastasc-open-set", "contrastasc-closed"} <= names


# ------------------------------------------------------------------------------------------ consistency
def test_welch_check_recovers_the_published_sigma_from_an_ericsson_interval():
    """A 'published' row made from a known sample the papers' way (1.96·σ/√600, population σ) must give
    exactly scipy's Welch test between our scores and that sample."""
    from asc_bench.evaluation.suite_table import papers_half_width, value_check
    from asc_bench.evaluation.suites import Published

    rng = np.random.default_rng(3)
    ours = rng.binomial(75, 0.62, size=2000) / 75
    theirs = rng.binomial(75, 0.60, size=600) / 75 * 100
    pub = Published("AudioMAE", {"ESC-50": (float(theirs.mean()), papers_half_width(theirs))}, n=600,
                    ci_method="ericsson")
    assert math.isclose(papers_half_width(theirs), 1.96 * theirs.std() / math.sqrt(600), rel_tol=1e-4)
    k = value_check(ours, pub, "ESC-50", "AudioMAE", papers_ci=False)
    expected = sps.ttest_ind(ours * 100, theirs, equal_var=False).pvalue
    assert math.isclose(k.p_value, expected, rel_tol=1e-9)
    assert math.isclose(k.difference, ours.mean() * 100 - theirs.mean(), rel_tol=1e-12)
    # the papers' way for ours: z-test from the two 1.96·SE intervals
    z = value_check(ours, pub, "ESC-50", "AudioMAE", papers_ci=True)
    se = math.hypot(papers_half_width(ours * 100), papers_half_width(theirs)) / 1.959963984540054
    assert math.isclose(z.p_value, 2 * sps.norm.sf(abs(z.difference) / se), rel_tol=1e-9)
    assert math.isclose(z.ours_hw, 1.959963984540054 * (ours * 100).std() / math.sqrt(2000), rel_tol=1e-12)
    # a reproduction 8 points off at these n is not consistent; the same distribution is
    far = value_check(ours - 0.08, pub, "ESC-50", "AudioMAE", papers_ci=False)
    assert far.verdict == "differs"
    same = rng.binomial(75, 0.60, size=2000) / 75
    assert value_check(same, pub, "ESC-50", "AudioMAE", papers_ci=False).p_value > 1e-3


def test_gain_check_is_the_paired_difference_on_the_same_episodes():
    from asc_bench.evaluation.suite_table import gain_check
    from asc_bench.evaluation.suites import Published

    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, size=100)
    model = base + 0.033 + rng.normal(0, 0.01, size=100)
    pub = Published("ContrastASC", {"TUT17": (3.3, None)}, kind="gain", over="KD + CE")
    k = gain_check(model, base, True, pub, "TUT17", "ContrastASC")
    d = (model - base) * 100
    assert math.isclose(k.ours, d.mean()) and k.verdict == "consistent"
    assert gain_check(model + 0.05, base, True, pub, "TUT17", "ContrastASC").verdict == "differs"


# ------------------------------------------------------------------------------------------ bench
@pytest.fixture(scope="module")
def table2(tmp_path_factory) -> dict[str, Path]:
    return table2_miniatures(tmp_path_factory.mktemp("table2-data"))


def _roots(roots: dict[str, Path]) -> list[str]:
    return [a for name, root in roots.items() for a in ("--data-root", f"{name}={root}")]


def _bench(roots, results, cache, *extra: str, check: bool = True, **kw):
    return cli("bench", "uamix-table2", "--model", "AudioMAE=logmel-stats:none", "--model", "floor=logmel-stats:random",
               *_roots(roots), "--results-dir", str(results), "--cache-dir", str(cache), *extra, check=check, **kw)


@pytest.mark.slow
def test_bench_table2_on_miniatures_resumes_and_renders_the_paper_table(table2, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    res = _bench(table2, results, cache)
    assert "10 done, 0 skipped (valid record), 0 failed" in res.stdout
    files = sorted((results / "suites" / "uamix-table2").rglob("*.json"))
    assert len(files) == 10
    rec = json.loads(files[0].read_text())
    assert rec["suite"]["name"] == "uamix-table2" and rec["protocol"]["params"]["n_query"] == 15

    # resume: two cells lost (as after a crash), the rest untouched and not redone
    stamps = {f: f.stat().st_mtime_ns for f in files}
    lost = [results / "suites/uamix-table2/floor/NSynth.json", results / "suites/uamix-table2/AudioMAE/SCv2.json"]
    for f in lost:
        f.unlink()
    res = _bench(table2, results, cache)
    assert "2 done, 8 skipped (valid record), 0 failed" in res.stdout
    for f, stamp in stamps.items():
        if f not in lost:
            assert f.stat().st_mtime_ns == stamp, f"{f} was redone"
    # --force reruns everything; the same episodes and scores come out
    before = json.loads(lost[0].read_text())
    res = _bench(table2, results, cache, "--force")
    assert "10 done, 0 skipped" in res.stdout
    after = json.loads(lost[0].read_text())
    assert after["scores"] == before["scores"] and after["episode_hash"] == before["episode_hash"]

    board = cli("leaderboard", "--suite", "uamix-table2", "--results-dir", str(results)).stdout
    assert "| Model | ESC-50 | VoxCeleb1 | NSynth | SCv2 | Kaggle18 | Params |" in board
    assert "| AudioMAE (reported) | 61.1 ± 0.9 | 28.9 ± 0.5 | 70.6 ± 0.9 | 30.4 ± 0.5 | 41.3 ± 0.8 | – |" in board
    assert "| uaMix-MAE, no mixing (ablation) (reported) | 48.7 |" in board
    assert "## Consistency with the published numbers" in board
    rows = [l for l in board.splitlines() if l.startswith("| AudioMAE vs AudioMAE |")]
    assert len(rows) == 5 and all("Welch t" in r for r in rows)
    assert "population standard deviation" in board and "n = 600" in board
    papers = cli("leaderboard", "--suite", "uamix-table2", "--results-dir", str(results), "--papers-ci").stdout
    assert "Ours (1.96·σ/√n, population σ (the papers' way))" in papers and "z-test" in papers


@pytest.mark.slow
def test_bench_checks_every_cell_before_embedding_and_keeps_going_past_failures(table2, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    roots = {**table2, "scv2": tmp_path / "no-such-folder"}
    res = _bench(roots, results, cache, check=False)
    assert res.returncode == 2
    assert "2 of 10 cells failed the checks (nothing was embedded)" in res.stderr
    assert "AudioMAE / SCv2" in res.stderr and "floor / SCv2" in res.stderr
    assert not (cache / "embeddings").exists() and not results.exists()
    res = _bench(roots, results, cache, "--keep-going", check=False)
    assert res.returncode == 1
    assert "8 done, 0 skipped (valid record), 2 failed" in res.stdout


def _suite_file(tmp_path: Path) -> Path:
    """Two columns on the same ESC-50 data and crop: the second must reuse the first's embeddings."""
    path = tmp_path / "tiny-suite.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny", "tasks": [{"task": "esc50-5way1shot", "label": "ESC", "params": {"episodes": 50},
                                   "sweep": {"k_shot": [1, 2]}}],
        "models": [{"label": "floor", "encoder": "logmel-stats", "checkpoint": "none"}]}))
    return path


@pytest.mark.slow
def test_launchers_give_the_in_process_records_and_share_the_cache(table2, tmp_path):
    suite = _suite_file(tmp_path)
    common = ["--data-root", f"esc50={table2['esc50']}", "--cache-dir", str(tmp_path / "cache")]
    out = {}
    for name, extra in (("inline", []), ("local", ["--launcher", "local", "--jobs", "2"]),
                        ("submitit", ["--launcher", "slurm", "--submitit-cluster", "local", "--time", "5"])):
        # launchers in a fresh process, as a user runs them (submitit adds logging handlers bound to the
        # stderr of the process it starts in; under click's in-process runner that stream is closed after)
        res = cli("bench", str(suite), *common, "--results-dir", str(tmp_path / name), *extra, subprocess_only=bool(extra))
        assert "2 done, 0 skipped (valid record), 0 failed" in res.stdout, res.stdout
        out[name] = {p.name: json.loads(p.read_text()) for p in (tmp_path / name / "suites" / "tiny").rglob("*.json")}
    assert sorted(out["inline"]) == ["ESC_k_shot_1.json", "ESC_k_shot_2.json"]
    inline = out["inline"]
    assert inline["ESC_k_shot_2.json"]["embedding"]["cache_hit"], "same data, same crop: embeddings not reused"
    for name in ("local", "submitit"):
        for f, rec in out[name].items():
            assert rec["scores"] == inline[f]["scores"] and rec["episode_hash"] == inline[f]["episode_hash"]
            assert rec["suite"] == inline[f]["suite"]
            assert rec["embedding"]["cache_key"] == inline[f]["embedding"]["cache_key"]
    assert list((tmp_path / "submitit" / "_submitit" / "tiny").glob("*_log.out")), "no per-cell submitit logs"
    assert list((tmp_path / "local" / "_logs" / "tiny").glob("*.log"))


@pytest.mark.slow
def test_bench_resumes_after_a_kill_without_redoing_finished_cells(table2, tmp_path):
    results, cache = tmp_path / "results", tmp_path / "cache"
    args = [sys.executable, "-m", "asc_bench", "bench", "uamix-table2", "--model", "AudioMAE=logmel-stats:none",
            "--model", "floor=logmel-stats:random", *_roots(table2), "--results-dir", str(results),
            "--cache-dir", str(cache)]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    folder = results / "suites" / "uamix-table2"
    deadline = time.time() + 300
    while time.time() < deadline and not list(folder.rglob("*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {f: f.stat().st_mtime_ns for f in folder.rglob("*.json")}
    assert 1 <= len(finished) < 10, "the kill came too late to test a resume"
    res = _bench(table2, results, cache)
    assert f"{10 - len(finished)} done, {len(finished)} skipped (valid record), 0 failed" in res.stdout
    for f, stamp in finished.items():
        assert f.stat().st_mtime_ns == stamp


def test_list_weights_says_what_was_never_released():
    from asc_bench.embedding.weight_sources import official_name

    rows = {r["encoder"]: r for r in json.loads(cli("list", "weights", "--json").stdout)}
    assert "BEATs_iter3_plus_AS2M.pt" in rows["beats"]["files"] and "pretrained.pth" in rows["audiomae"]["files"]
    assert "no uaMix-MAE weights were ever released" in rows["uamix-mae"]["not released"] and "train uamix-mae" in rows["uamix-mae"]["recipe"]
    assert "no ContrastASC teacher or student weights were ever released" in rows["contrastasc-cpm-126k"]["not released"]
    digest = "ab" * 32
    assert official_name(digest, {digest: "BEATs_iter3.pt"}) == "official BEATs_iter3.pt"
    assert official_name(digest.upper(), {digest: "BEATs_iter3.pt"}) == "official BEATs_iter3.pt"
    assert official_name("cd" * 32, {digest: "BEATs_iter3.pt"}) is None and official_name(digest) is None


@pytest.mark.slow
def test_columns_on_the_same_files_with_other_labels_reuse_the_embeddings(table2, tmp_path):
    """The embedding of a clip does not depend on its label or split: a family-labelled task on the same
    NSynth files must hit the cache the instrument-labelled task filled."""
    family = tmp_path / "nsynth-family.yaml"
    family.write_text(yaml.safe_dump({
        "name": "nsynth-family-5way1shot", "dataset": "nsynth", "protocol": "fewshot-prototype",
        "dataset_options": {"label": "family", "splits": ["test"]},
        # group_disjoint off: the miniature has one instrument per family, and this test is about the cache
        "params": {"n_way": 5, "k_shot": 1, "n_query": 15, "episodes": 50, "group_disjoint": False},
        "audio": {"crop": "whole"}}))
    suite = tmp_path / "labels.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "labels", "tasks": [{"task": "nsynth-5way1shot", "label": "instrument", "params": {"episodes": 50}},
                                    {"task": str(family), "label": "family"}],
        "models": [{"label": "floor", "encoder": "logmel-stats", "checkpoint": "none"}]}))
    cli("bench", str(suite), "--data-root", f"nsynth={table2['nsynth']}", "--cache-dir", str(tmp_path / "cache"),
        "--results-dir", str(tmp_path / "results"))
    folder = tmp_path / "results" / "suites" / "labels" / "floor"
    first, second = (json.loads((folder / f"{c}.json").read_text()) for c in ("instrument", "family"))
    assert first["dataset"]["fingerprint"] != second["dataset"]["fingerprint"]      # other labels, other episodes
    assert second["embedding"]["cache_hit"] and second["embedding"]["forward_passes"] == 0
    assert second["embedding"]["cache_key"] == first["embedding"]["cache_key"]


@pytest.mark.slow
def test_a_cell_failing_at_run_time_is_reported_and_the_others_run(table2, tmp_path):
    """An unreadable clip is found only when embedding: that cell fails, the next cell still runs."""
    import shutil

    esc = tmp_path / "esc50"
    shutil.copytree(table2["esc50"], esc)
    victim = sorted((esc / "ESC-50-master" / "audio").glob("*.wav"))[3]
    victim.write_bytes(b"RIFF not really a wav")
    suite = tmp_path / "two.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "two", "tasks": [{"task": "esc50-5way1shot", "label": "ESC", "params": {"episodes": 20}},
                                 {"task": "nsynth-5way1shot", "label": "NSynth", "params": {"episodes": 20}}],
        "models": [{"label": "floor", "encoder": "logmel-stats", "checkpoint": "none"}]}))
    res = cli("bench", str(suite), "--data-root", f"esc50={esc}", "--data-root", f"nsynth={table2['nsynth']}",
              "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results"), check=False)
    assert res.returncode == 1
    assert "1 done, 0 skipped (valid record), 1 failed" in res.stdout
    assert "floor / ESC" in res.stderr and victim.name in res.stderr
    assert (tmp_path / "results" / "suites" / "two" / "floor" / "NSynth.json").is_file()
    assert not (tmp_path / "results" / "suites" / "two" / "floor" / "ESC.json").exists()


def test_submitit_launcher_resubmits_crashed_jobs_but_not_failed_cells():
    """A job that raised (node failure, time limit) is resubmitted while retries remain; a cell that failed
    inside asc-bench returns a failed outcome and is not."""
    from asc_bench.evaluation.bench import BenchSettings, CellOutcome, CellPlan
    from asc_bench.evaluation.launchers import SubmititLauncher
    from asc_bench.evaluation.suites import Cell, SuiteColumn, SuiteModel

    plans = [CellPlan(Cell("s", SuiteModel(label, "logmel-stats"), SuiteColumn("t", "T"))) for label in "abc"]
    crashes = {"a / T": 1, "b / T": 5}          # a crashes once, b always
    submitted: list[list[str]] = []

    class Job:
        def __init__(self, plan):
            self.plan, self.job_id = plan, f"job-{plan.cell.id}"

        def result(self):
            cid = self.plan.cell.id
            if crashes.get(cid, 0) > 0:
                crashes[cid] -= 1
                raise RuntimeError("node failure\nslurmstepd: CANCELLED")
            return CellOutcome(cid, "failed" if cid == "c / T" else "done", "bad data" if cid == "c / T" else "")

    class Executor:
        def map_array(self, fn, plans_, settings_):
            submitted.append([p.cell.id for p in plans_])
            return [Job(p) for p in plans_]

    launcher = SubmititLauncher(cluster="local", suite="s", retries=2)
    launcher.executor = lambda folder: Executor()
    got: dict[str, CellOutcome] = {}
    launcher.run(plans, BenchSettings(results_dir="/tmp/unused"), lambda o: got.__setitem__(o.cell_id, o))
    assert submitted == [["a / T", "b / T", "c / T"], ["a / T", "b / T"], ["b / T"]]
    assert got["a / T"].status == "done" and got["c / T"].message == "bad data"
    assert got["b / T"].status == "failed" and "after 3 attempt(s)" in got["b / T"].message
    assert "CANCELLED" in got["b / T"].message
