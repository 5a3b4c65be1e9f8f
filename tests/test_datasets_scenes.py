"""Acoustic-scene adapters (tut17, tau22, icme24) on miniatures in the exact official formats."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf

import dataset_miniatures as dm
from asc_bench.api import DatasetRequest, LayoutError, UsageError
from asc_bench_plugins.datasets import icme24, tau22, tut17


def req(root: Path | None, tmp_path: Path, **options) -> DatasetRequest:
    return DatasetRequest(root=root, options=options, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------------- TUT17
@pytest.mark.parametrize("crlf", [False, True])
def test_tut17_lists_labels_evaluate_folds_and_locations(tmp_path, crlf):
    mini = dm.tut17(tmp_path, crlf=crlf)
    clips = tut17.build(req(mini.base, tmp_path))
    dm.assert_lists(clips, mini)
    assert "cafe/restaurant" in {c.label for c in clips}          # a label with '/' survives
    assert {c.split for c in clips} == {"fold1", "fold2", "fold3", "fold4"}
    info = sf.info(clips[0].path)
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")   # miniature is faithful


def test_tut17_accepts_the_parent_folder_as_root(tmp_path):
    mini = dm.tut17(tmp_path / "data")
    clips = tut17.build(req(tmp_path / "data", tmp_path))
    dm.assert_lists(clips, mini)


def test_tut17_missing_meta_names_the_expected_path(tmp_path):
    mini = dm.tut17(tmp_path)
    (mini.base / "meta.txt").unlink()
    with pytest.raises(LayoutError) as err:
        tut17.build(req(mini.base, tmp_path))
    msg = str(err.value)
    assert str(mini.base / "meta.txt") in msg and "datasets.md" in msg


def test_tut17_missing_evaluation_setup_is_named(tmp_path):
    mini = dm.tut17(tmp_path)
    for f in (mini.base / "evaluation_setup").iterdir():
        f.unlink()
    with pytest.raises(LayoutError, match="fold1_evaluate.txt"):
        tut17.build(req(mini.base, tmp_path))


def test_tut17_missing_audio_gives_count_and_first_paths(tmp_path):
    mini = dm.tut17(tmp_path)
    gone = sorted((mini.base / "audio").iterdir())[:7]
    for f in gone:
        f.unlink()
    with pytest.raises(LayoutError) as err:
        tut17.build(req(mini.base, tmp_path))
    msg = str(err.value)
    assert f"7 of {len(mini.clips)} clips" in msg
    assert sum(str(f) in msg for f in gone) == 5                  # the first five, not all seven
    assert str(mini.base / "meta.txt") in msg


def test_tut17_malformed_row_gives_file_and_line(tmp_path):
    mini = dm.tut17(tmp_path)
    meta = mini.base / "meta.txt"
    lines = meta.read_text().splitlines()
    lines[3] = "audio/broken_row_without_tabs.wav"
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(LayoutError, match=rf"{meta}:4\b"):
        tut17.build(req(mini.base, tmp_path))


# --------------------------------------------------------------------------------------------- TAU22
def test_tau22_lists_fold1_train_and_evaluate_with_device_city_identifier(tmp_path):
    mini = dm.tau22(tmp_path)
    clips = tau22.build(req(mini.base, tmp_path))
    dm.assert_lists(clips, mini)                                   # the unsplit S5 extras are left out
    assert {c.split for c in clips} == {"train", "evaluate"}
    info = sf.info(clips[0].path)
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_24")


def test_tau22_splits_option_and_parent_root(tmp_path):
    mini = dm.tau22(tmp_path)
    clips = tau22.build(req(tmp_path, tmp_path, splits=["evaluate"]))
    assert clips and {c.split for c in clips} == {"evaluate"}
    assert len(clips) == sum(c["split"] == "evaluate" for c in mini.clips.values())
    with pytest.raises(UsageError, match="splits"):
        tau22.build(req(tmp_path, tmp_path, splits=["test"]))


def test_tau22_matches_meta_columns_by_header_name(tmp_path):
    """A later metadata version with reordered and extra columns means the same thing."""
    mini = dm.tau22(tmp_path)
    meta = mini.base / "meta.csv"
    rows = [line.split("\t") for line in meta.read_text().splitlines()]
    for r in rows[1:]:   # identifiers that the file-name fallback could not produce: they must come from meta
        r[2] = r[2].upper()
    for clip in mini.clips.values():
        clip["identifier"], clip["city"] = clip["identifier"].upper(), clip["city"].upper()
    order = [3, 0, 2, 1]
    meta.write_text("\n".join("\t".join([r[i] for i in order] + ["extra" if k else "new_column"])
                              for k, r in enumerate(rows)) + "\n")
    dm.assert_lists(tau22.build(req(mini.base, tmp_path)), mini)


def test_tau22_missing_fold_file_and_unknown_option(tmp_path):
    mini = dm.tau22(tmp_path)
    (mini.base / "evaluation_setup" / "fold1_evaluate.csv").unlink()
    with pytest.raises(LayoutError, match=str(mini.base / "evaluation_setup" / "fold1_evaluate.csv")):
        tau22.build(req(mini.base, tmp_path))
    with pytest.raises(UsageError, match="unknown option"):
        tau22.build(req(mini.base, tmp_path, devices=["a"]))


def test_tau22_missing_meta_names_official_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError) as err:
        tau22.build(req(tmp_path / "empty", tmp_path))
    assert "meta.csv" in str(err.value) and "TAU-urban-acoustic-scenes-2022-mobile-development" in str(err.value)


# --------------------------------------------------------------------------------------------- ICME24
def test_icme24_lists_labelled_clips_with_crlf_csv(tmp_path):
    mini = dm.icme24(tmp_path)
    assert b"\r\n" in (tmp_path / "ICME2024_ASC_dev_label.csv").read_bytes()
    labelled = dm.Mini(mini.base, {k: v for k, v in mini.clips.items() if v["label"]})
    clips = icme24.build(req(tmp_path, tmp_path))
    dm.assert_lists(clips, labelled)
    assert "Construction site" in {c.label for c in clips}        # labels with spaces, no stray \r
    assert all(c.split is None for c in clips)


def test_icme24_unlabelled_rows_by_option_and_function(tmp_path):
    mini = dm.icme24(tmp_path, unlabelled=5)
    want = {k for k, v in mini.clips.items() if not v["label"]}
    by_option = icme24.build(req(tmp_path, tmp_path, labelled=False))
    by_function = icme24.unlabelled_clips(tmp_path)
    for clips in (by_option, by_function):
        assert {Path(c.path).name for c in clips} == want and all(c.label == "" for c in clips)


def test_icme24_csv_in_data_folder_and_audio_folder_as_root(tmp_path):
    mini = dm.icme24(tmp_path, csv_dir="data")
    clips = icme24.build(req(tmp_path, tmp_path))
    assert len(clips) == sum(bool(v["label"]) for v in mini.clips.values())
    assert [c.path for c in icme24.build(req(mini.base, tmp_path))] == [c.path for c in clips]
    moved = tmp_path / "elsewhere" / "labels.csv"
    moved.parent.mkdir()
    (tmp_path / "data" / "ICME2024_ASC_dev_label.csv").rename(moved)
    with pytest.raises(LayoutError, match="ICME2024_ASC_dev_label.csv"):
        icme24.build(req(tmp_path, tmp_path))
    clips2 = icme24.build(req(tmp_path, tmp_path, labels="elsewhere/labels.csv"))
    assert [c.path for c in clips2] == [c.path for c in clips]


def test_icme24_apsipa_metadata_with_bom_and_extra_columns(tmp_path):
    mini = dm.icme24(tmp_path, apsipa=True)
    clips = icme24.build(req(tmp_path, tmp_path))
    labelled = dm.Mini(mini.base, {k: v for k, v in mini.clips.items() if v["label"]})
    dm.assert_lists(clips, labelled)
    assert all(c.extra["location"] == "Shanghai" and c.extra["record_time"] for c in clips)


def test_icme24_missing_audio_counted(tmp_path):
    mini = dm.icme24(tmp_path)
    victim = next(k for k, v in mini.clips.items() if v["label"])
    os.remove(mini.base / victim)
    with pytest.raises(LayoutError, match=rf"1 of \d+ clips .*{victim}"):
        icme24.build(req(tmp_path, tmp_path))
