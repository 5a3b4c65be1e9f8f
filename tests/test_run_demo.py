"""The spine end to end, through the CLI: run, cache reuse, records, task files, errors."""
from __future__ import annotations

import json

import numpy as np
from scipy import stats as sps

from conftest import cli, run_json


def test_demo_run_is_above_chance_with_a_ci_that_excludes_it(demo_root, dirs):
    rec = run_json("--encoder", "logmel-stats", "--task", "demo-5way1shot", "--data-root", str(demo_root),
                   "--cache-dir", str(dirs["cache"]), "--results-dir", str(dirs["results"]))
    scores = np.array(rec["scores"])
    assert len(scores) == rec["protocol"]["params"]["episodes"] == rec["summary"]["n"]
    # The summary is recomputed here from the stored per-episode scores with scipy.
    low, high = sps.t.interval(0.95, len(scores) - 1, loc=scores.mean(), scale=sps.sem(scores))
    assert rec["summary"]["mean"] == np.float64(scores.mean())
    assert np.isclose(rec["summary"]["ci_low"], low) and np.isclose(rec["summary"]["ci_high"], high)
    assert rec["summary"]["ci_low"] > 1 / 5, "CI must exclude 5-way chance"
    files = list(dirs["results"].glob("*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["episode_hash"] == rec["episode_hash"] and stored["scores"] == rec["scores"]
    for key in ("task", "encoder", "dataset", "seed", "protocol", "summary", "packages", "wall_time_s", "embedding"):
        assert key in stored
    assert stored["encoder"]["name"] == "logmel-stats"
    assert stored["embedding"]["cache_hit"] is False and stored["embedding"]["forward_passes"] > 0


def test_second_task_on_same_data_reuses_the_cache(demo_root, dirs, tmp_path):
    common = ["--encoder", "logmel-stats", "--data-root", str(demo_root), "--cache-dir", str(dirs["cache"]),
              "--results-dir", str(dirs["results"])]
    first = run_json(*common, "--task", "demo-5way1shot")
    other = tmp_path / "demo-3way.yaml"
    other.write_text("name: demo-3way-from-file\ndataset: demo\nprotocol: fewshot-prototype\n"
                     "params: {n_way: 3, k_shot: 2, n_query: 4, episodes: 50}\n")
    second = run_json(*common, "--task", str(other))
    assert second["task"]["name"] == "demo-3way-from-file"
    assert second["embedding"]["cache_hit"] is True and second["embedding"]["forward_passes"] == 0
    assert second["embedding"]["cache_key"] == first["embedding"]["cache_key"]
    assert second["episode_hash"] != first["episode_hash"]


def test_same_task_and_seed_give_identical_episodes_other_seed_differs(demo_root, dirs):
    common = ["--encoder", "logmel-stats", "--task", "demo-5way1shot", "--data-root", str(demo_root),
              "--cache-dir", str(dirs["cache"]), "--results-dir", str(dirs["results"]), "--param", "episodes=100"]
    a = run_json(*common)
    b = run_json(*common)
    c = run_json(*common, "--seed", "7")
    assert a["episode_hash"] == b["episode_hash"] and a["scores"] == b["scores"]
    assert c["episode_hash"] != a["episode_hash"]


def test_unknown_names_are_usage_errors_with_suggestions(demo_root, dirs):
    proc = cli("run", "--encoder", "logmel-stat", "--task", "demo-5way1shot", "--cache-dir", str(dirs["cache"]),
               check=False)
    assert proc.returncode == 2
    assert "logmel-stats" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", "--encoder", "logmel-stats", "--task", "demo-5way1sht", "--cache-dir", str(dirs["cache"]),
               check=False)
    assert proc.returncode == 2 and "demo-5way1shot" in proc.stderr


def test_bad_task_file_names_the_field(tmp_path, dirs):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: demo\nprotocol: fewshot-prototype\nepisodes: 3\n")
    proc = cli("run", "--encoder", "logmel-stats", "--task", str(bad), "--cache-dir", str(dirs["cache"]), check=False)
    assert proc.returncode == 2 and "episodes" in proc.stderr and str(bad) in proc.stderr


def test_list_json_shows_builtins():
    encoders = json.loads(cli("list", "encoders", "--json").stdout)
    assert "logmel-stats" in {e["name"] for e in encoders}
    tasks = {t["name"]: t for t in json.loads(cli("list", "tasks", "--json").stdout)}
    assert tasks["demo-5way1shot"]["dataset"] == "demo"
    assert tasks["demo-5way1shot"]["protocol"] == "fewshot-prototype"


def test_table_on_stdout_and_plain_progress_lines_when_not_a_terminal(demo_root, dirs):
    proc = cli("run", "--encoder", "logmel-stats", "--task", "demo-5way1shot", "--param", "episodes=100",
               "--data-root", str(demo_root), "--cache-dir", str(dirs["cache"]), "--results-dir", str(dirs["results"]))
    assert "score ± 95% CI" in proc.stdout and "100 episodes" in proc.stdout
    assert "embedding: 192/192" in proc.stderr and "scoring (fewshot-prototype): 100/100" in proc.stderr
    assert len(proc.stderr.splitlines()) < 12
