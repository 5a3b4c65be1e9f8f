"""`asc-bench episodes` on miniatures of the official layouts: the exported episodes/draws/folds of the
shipped tasks never put a query with a support clip of the same recording/source (ESC-50 src_file,
TUT17 location, VoxCeleb1 video, Speech Commands speaker); same seed -> same file."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

import dataset_miniatures as dm
from conftest import cli

REPO = Path(__file__).resolve().parents[1]


def _src(rel: str) -> str:            # ESC-50: {fold}-{src_file}-{take}-{target}.wav
    return rel.rsplit("/", 1)[-1].split("-")[1]


def _location(rel: str) -> str:       # TUT17: audio/{location}_{start}_{end}.wav
    return rel.rsplit("/", 1)[-1].split("_", 1)[0]


def _video(rel: str) -> str:          # VoxCeleb1: wav/{speaker}/{youtube}/{utt}.wav
    return rel.split("/")[-2]


def _speaker(rel: str) -> str:        # SCv2: {word}/{speaker}_nohash_{n}.wav
    return rel.rsplit("/", 1)[-1].split("_nohash_")[0]


VOX_TEST = ("id10270", "id10271", "id10272", "id10273", "id10274")
# task -> (miniature writer, true group of a path relative to the data root, param overrides)
CASES: dict[str, tuple[Callable[[Path], dm.Mini], Callable[[str], str], list[str]]] = {
    "tut17-5shot": (lambda p: dm.tut17(p), _location, ["draws=6"]),
    "esc50-5way1shot": (lambda p: dm.esc50(p, per_fold=4, takes=2), _src, ["n_query=4", "episodes=60"]),
    "voxceleb1-5way1shot": (lambda p: dm.voxceleb1(p, speakers=("id10001", *VOX_TEST), test_speakers=VOX_TEST,
                                                   videos=3),
                            _video, ["n_query=4", "episodes=60"]),
    "scv2-5way1shot": (lambda p: dm.scv2(p, speakers=30, seconds=0.1), _speaker,
                       ["n_query=2", "episodes=60"]),
}


def _export(task: str, root: Path, out: Path, *extra: str) -> list[dict]:
    proc = cli("episodes", "--task", task, "--data-root", str(root), "--out", str(out), *extra)
    assert "group-disjoint" in proc.stdout
    return [json.loads(line) for line in out.read_text().splitlines()]


def _leaking(units: list[dict], truth: Callable[[str], str]) -> int:
    bad = 0
    for u in units:
        taken = {truth(c["path"]) for c in u["support"]}
        bad += any(truth(c["path"]) in taken for c in u["query"])
    return bad


@pytest.mark.parametrize("task", sorted(CASES))
def test_exported_episodes_never_share_a_recording_between_support_and_queries(task, tmp_path):
    write, truth, overrides = CASES[task]
    mini = write(tmp_path / "data")
    params = [a for o in overrides for a in ("--param", o)]
    units = _export(task, tmp_path / "data", tmp_path / "a.jsonl", *params)
    want = int(overrides[0].split("=")[1])
    assert [u["index"] for u in units] == list(range(want if task == "tut17-5shot" else 60))
    base_rel = mini.base.relative_to(tmp_path / "data").as_posix()
    for u in units:
        for c in u["support"] + u["query"]:
            rel = c["path"][len(base_rel) + 1:] if base_rel != "." else c["path"]
            assert (tmp_path / "data" / c["path"]).is_file()          # relative to the data root
            assert mini.clips[rel]["label"] == c["label"]
            assert c["group"] == truth(c["path"])                     # the adapter's group is the truth
        support_labels = Counter(c["label"] for c in u["support"])
        query_labels = Counter(c["label"] for c in u["query"])
        assert set(query_labels) <= set(support_labels)
        if task != "tut17-5shot":                                     # fixed n_query per way
            assert set(query_labels.values()) == {int(overrides[0].split("=")[1])}
            assert len(support_labels) == 5 and set(support_labels.values()) == {1}
        else:                                                         # all-way 5-shot draws
            assert set(support_labels.values()) == {5} and len(support_labels) == 5
    assert _leaking(units, truth) == 0
    # determinism: same seed, same bytes; another seed, other episodes
    again = _export(task, tmp_path / "data", tmp_path / "b.jsonl", *params)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes() and again == units
    other = _export(task, tmp_path / "data", tmp_path / "c.jsonl", *params, "--seed", "1")
    assert other != units


def test_opting_out_is_explicit_and_leaks(tmp_path):
    """Without the policy, the same miniature does put queries with their support's source."""
    dm.esc50(tmp_path / "data", per_fold=4, takes=2)
    proc = cli("episodes", "--task", "esc50-5way1shot", "--data-root", str(tmp_path / "data"), "--out",
               str(tmp_path / "e.jsonl"), "--param", "n_query=4", "--param", "group_disjoint=false")
    assert "not group-disjoint" in proc.stdout
    units = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert _leaking(units, _src) > 0


def test_fold_protocols_export_their_folds(tmp_path):
    mini = dm.tut17(tmp_path / "data")
    out = tmp_path / "folds.jsonl"
    proc = cli("episodes", "--task", "tut17-linear", "--data-root", str(tmp_path / "data"), "--out", str(out))
    assert "4 folds" in proc.stdout
    folds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [f["test_splits"] for f in folds] == ["fold1", "fold2", "fold3", "fold4"]
    for f in folds:
        assert len(f["train"]) + len(f["test"]) == len(mini.clips)
        assert not {c["path"] for c in f["train"]} & {c["path"] for c in f["test"]}
        assert not {c["group"] for c in f["train"]} & {c["group"] for c in f["test"]}   # official folds


def test_episodes_need_no_embedding_and_bad_input_is_a_usage_error(tmp_path):
    dm.esc50(tmp_path / "data", per_fold=4, takes=2)
    cache = tmp_path / "cache"
    cli("episodes", "--task", "esc50-5way1shot", "--data-root", str(tmp_path / "data"), "--out",
        str(tmp_path / "e.jsonl"), "--param", "n_query=4", "--cache-dir", str(cache))
    assert not cache.exists() or not any(cache.rglob("*.npy"))          # nothing was embedded
    bad = cli("episodes", "--task", "esc50-5way1shot", "--data-root", str(tmp_path / "data"), "--out",
              str(tmp_path / "x.jsonl"), "--param", "n_query=40", check=False)
    assert bad.returncode == 1 and "fewer clips than" in bad.stderr and not (tmp_path / "x.jsonl").exists()
    bad = cli("episodes", "--task", "esc50-5way1shot", "--data-root", str(tmp_path / "data"), "--out",
              str(tmp_path / "x.jsonl"), "--param", "colour=blue", check=False)
    assert bad.returncode == 2 and "colour" in bad.stderr


# ------------------------------------------------------------------------------ adapters' groups
def _listed(name: str, root: Path, tmp_path: Path, **options) -> list:
    from asc_bench.data.listing import list_clips
    from asc_bench.plugins import get_manager

    return list_clips(get_manager(), name, options, root, tmp_path / "cache")


def test_adapters_fill_the_group_from_their_metadata(tmp_path):
    dm.tau22(tmp_path / "tau")
    for c in _listed("tau22", tmp_path / "tau", tmp_path):
        assert c.group == c.extra["identifier"] and c.group
    dm.fsdkaggle2018(tmp_path / "fsd")
    assert all(c.group == c.extra["freesound_id"] for c in _listed("fsdkaggle2018", tmp_path / "fsd", tmp_path))
    dm.fsdkaggle2018(tmp_path / "kaggle", kaggle_era=True)
    kaggle = _listed("fsdkaggle2018", tmp_path / "kaggle", tmp_path)
    assert {c.group is None for c in kaggle if c.split == "train"} == {True}   # train.csv has no id
    dm.icme24(tmp_path / "icme", apsipa=True)
    assert all(c.group == f"Shanghai {c.extra['record_time']}" for c in _listed("icme24", tmp_path / "icme", tmp_path))
    dm.icme24(tmp_path / "icme_base")
    assert all(c.group is None for c in _listed("icme24", tmp_path / "icme_base", tmp_path))
    dm.nsynth(tmp_path / "ns")
    two = ["valid", "test"]
    assert all(c.group == c.extra["instrument"] for c in _listed("nsynth", tmp_path / "ns", tmp_path, splits=two))
    assert all(c.group is None for c in _listed("nsynth", tmp_path / "ns", tmp_path, splits=two,
                                                label="instrument"))


def test_csv_and_folder_groups_are_optional(tmp_path):
    for label in ("dog", "cat"):
        for rec in ("r1", "r2"):
            dm.write_wav(tmp_path / "f" / label / rec / "a.wav", label, 0.1, 16000)
        dm.write_wav(tmp_path / "f" / label / "loose.wav", label, 0.1, 16000)
    clips = _listed("folder", tmp_path / "f", tmp_path, groups="subfolder")
    assert {(Path(c.path).relative_to(tmp_path / "f").as_posix(), c.group) for c in clips} == {
        ("dog/r1/a.wav", "r1"), ("dog/r2/a.wav", "r2"), ("dog/loose.wav", None),
        ("cat/r1/a.wav", "r1"), ("cat/r2/a.wav", "r2"), ("cat/loose.wav", None)}
    assert all(c.group is None for c in _listed("folder", tmp_path / "f", tmp_path))
    dm.write_text(tmp_path / "f" / "list.csv", ["path,label,rec", "dog/r1/a.wav,dog,x", "cat/r1/a.wav,cat,"])
    rows = _listed("csv", tmp_path / "f", tmp_path, file="list.csv", group_column="rec")
    assert [c.group for c in rows] == ["x", None] and all("rec" not in c.extra for c in rows)
    assert all(c.group is None for c in _listed("csv", tmp_path / "f", tmp_path, file="list.csv"))
    from asc_bench.api import LayoutError
    with pytest.raises(LayoutError, match="group_column"):
        _listed("csv", tmp_path / "f", tmp_path, file="list.csv", group_column="speaker")


def test_groups_enter_the_listing_fingerprint_but_not_the_cache_key(tmp_path):
    from dataclasses import replace

    from asc_bench.data.listing import fingerprints
    dm.esc50(tmp_path / "data", takes=1)
    clips = _listed("esc50", tmp_path / "data", tmp_path)
    bare = [replace(c, group=None) for c in clips]
    moved = [replace(c, group=c.group + "x") for c in clips]
    fp, files = fingerprints(clips)
    assert fingerprints(bare)[1] == fingerprints(moved)[1] == files          # embeddings do not change
    assert len({fp, fingerprints(bare)[0], fingerprints(moved)[0]}) == 3      # episodes may
