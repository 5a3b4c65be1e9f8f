"""The shipped task specs: each parses, names a registered dataset and protocol, and runs end to end
with `logmel-stats` on a miniature of its dataset in the official format (protocol sizes shrunk by
`overrides` to fit the miniature; the dataset options are the task's own)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import dataset_miniatures as dm

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"

# task -> (miniature writer, expected clip filter over Mini.clips, overrides, score count, chance or None)
FEWSHOT = {"n_query": 2, "episodes": 20}
PROBE = {"Cs": [0.1, 1.0], "inner_folds": 2}
CASES: dict[str, tuple[Callable[[Path], dm.Mini], Callable[[dict], bool], dict[str, Any], int, float | None]] = {
    "esc50-5way1shot": (lambda p: dm.esc50(p), lambda c: True, FEWSHOT, 20, 0.2),
    "voxceleb1-5way1shot": (
        lambda p: dm.voxceleb1(p, speakers=("id10001", "id10270", "id10271", "id10272", "id10273", "id10274"),
                               test_speakers=("id10270", "id10271", "id10272", "id10273", "id10274")),
        lambda c: c["label"] != "id10001", FEWSHOT, 20, 0.2),
    "nsynth-5way1shot": (lambda p: dm.nsynth(p, splits=("test",)), lambda c: True, FEWSHOT, 20, 0.2),
    "scv2-5way1shot": (lambda p: dm.scv2(p, speakers=9), lambda c: c["split"] == "testing", FEWSHOT, 20, 0.2),
    "kaggle18-5way1shot": (lambda p: dm.fsdkaggle2018(p, train_per_class=3, test_per_class=2), lambda c: True,
                           FEWSHOT, 20, 0.2),
    "tut17-5shot": (lambda p: dm.tut17(p), lambda c: True, {"k_shot": 2, "draws": 5}, 5, 0.2),
    "icme24-5shot": (lambda p: dm.icme24(p, per_class=5), lambda c: bool(c["label"]), {"k_shot": 2, "draws": 5},
                     5, 0.2),
    "tau22-closed": (lambda p: dm.tau22(p, train_per_class=4, eval_per_class=2), lambda c: True, PROBE, 1, None),
    "esc50-linear": (lambda p: dm.esc50(p), lambda c: True, PROBE, 5, None),
    "tut17-linear": (lambda p: dm.tut17(p), lambda c: True, PROBE, 4, None),
    "nsynth-linear": (lambda p: dm.nsynth(p), lambda c: True, PROBE, 1, None),
}
GROUPS = {"uamix-table2": {"esc50-5way1shot", "voxceleb1-5way1shot", "nsynth-5way1shot", "scv2-5way1shot",
                           "kaggle18-5way1shot"},
          "contrastasc-5shot": {"tut17-5shot", "icme24-5shot"},
          "linear-probe": {"tau22-closed", "esc50-linear", "tut17-linear", "nsynth-linear"}}


def test_task_files_parse_and_name_registered_plugins():
    from asc_bench.plugins import get_manager
    from asc_bench.tasks import load_task_file

    manager = get_manager()
    for group, names in GROUPS.items():
        for name in names:
            spec = load_task_file(TASKS / f"{name}.yaml")
            assert spec.name == name and spec.group == group
            assert spec.dataset in manager.registries["datasets"]
            assert spec.protocol in manager.registries["protocols"]
            assert spec.source, f"{name} must cite its source protocol"
            assert isinstance(spec.unverified, tuple)


def test_fewshot_tasks_have_enough_episodes_for_a_one_point_ci():
    """Episode counts are justified by the CI target: 95% half-width <= 1 point at per-episode s.d. 0.2."""
    from asc_bench.tasks import load_task_file

    for name in GROUPS["uamix-table2"]:
        params = load_task_file(TASKS / f"{name}.yaml").params
        assert (params["n_way"], params["k_shot"], params["n_query"]) == (5, 1, 15)
        assert 1.96 * 0.2 / math.sqrt(params["episodes"]) <= 0.01
    for name in GROUPS["contrastasc-5shot"]:
        params = load_task_file(TASKS / f"{name}.yaml").params
        assert params["k_shot"] == 5 and 1.96 * 0.05 / math.sqrt(params["draws"]) <= 0.01


@pytest.mark.parametrize("task", sorted(CASES))
def test_task_runs_end_to_end_on_its_miniature(task, tmp_path):
    runner = pytest.importorskip("asc_bench.runner")
    write, keep, overrides, n_scores, chance = CASES[task]
    mini = write(tmp_path / "data")
    expected = [rel for rel, c in mini.clips.items() if keep(c)]
    record = runner.run_task("logmel-stats", TASKS / f"{task}.yaml", data_root=tmp_path / "data",
                             cache_dir=tmp_path / "cache", results_dir=tmp_path / "results", seed=0,
                             overrides=overrides)
    assert record["task"]["name"] == task
    assert record["dataset"]["n_clips"] == len(expected)
    assert record["dataset"]["n_classes"] == len({mini.clips[r]["label"] for r in expected})
    scores = np.asarray(record["scores"], dtype=float)
    assert scores.shape == (n_scores,) and np.all((scores >= 0) & (scores <= 1))
    if chance is not None:
        # the tones differ by class: a listing that mismatched labels and files would sit at chance
        assert scores.mean() > chance + 0.2, (task, scores.mean())
    assert list((tmp_path / "results").glob("*.json"))
