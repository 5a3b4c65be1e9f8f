"""uaMix-MAE Table 2 dataset adapters (esc50, nsynth, scv2, voxceleb1, fsdkaggle2018) on official-format
miniatures: listing, options, root handling and the layout errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

import dataset_miniatures as dm
from asc_bench.api import DatasetRequest, LayoutError, UsageError
from asc_bench_plugins.datasets import esc50, fsdkaggle2018, nsynth, scv2, voxceleb1


def req(root: Path | None, tmp_path: Path, **options) -> DatasetRequest:
    return DatasetRequest(root=root, options=options, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------------------------- ESC-50
@pytest.mark.parametrize("crlf", [False, True])
def test_esc50_lists_category_labels_and_official_folds(tmp_path, crlf):
    mini = dm.esc50(tmp_path, crlf=crlf)
    for root in (tmp_path, mini.base):                        # parent folder or ESC-50-master itself
        clips = esc50.build(req(root, tmp_path))
        dm.assert_lists(clips, mini)
    assert {c.split for c in clips} == {f"fold{i}" for i in range(1, 6)}
    info = sf.info(clips[0].path)
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")


def test_esc50_labels_come_from_metadata_not_positions(tmp_path):
    """ESC-10 ids are not contiguous; the label is the category string whatever the target id."""
    mini = dm.esc50(tmp_path, classes=[(38, "clock_tick"), (0, "dog"), (41, "chainsaw")])
    clips = esc50.build(req(tmp_path, tmp_path))
    assert {c.label for c in clips} == {"clock_tick", "dog", "chainsaw"}
    assert {c.extra["target"] for c in clips if c.label == "clock_tick"} == {"38"}
    esc10 = esc50.build(req(tmp_path, tmp_path, esc10=True))
    assert len(esc10) == len(mini.clips) and all(c.extra["esc10"] == "True" for c in esc10)


def test_esc50_esc10_option_keeps_only_the_subset(tmp_path):
    mini = dm.esc50(tmp_path, classes=[(0, "dog"), (2, "pig"), (10, "rain"), (3, "cow")])
    clips = esc50.build(req(tmp_path, tmp_path, esc10="true"))   # a string, as from the command line
    assert {c.label for c in clips} == {"dog", "rain"}
    assert len(clips) == sum(v["label"] in ("dog", "rain") for v in mini.clips.values())


def test_esc50_errors(tmp_path):
    mini = dm.esc50(tmp_path)
    meta = mini.base / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join(lines[:5] + ["1-999999-A-0.wav,one,0,dog,True,999999,A"] + lines[5:]) + "\n")
    with pytest.raises(LayoutError, match=rf"{meta}:6\b.*fold"):
        esc50.build(req(tmp_path, tmp_path))
    meta.unlink()
    with pytest.raises(LayoutError) as err:
        esc50.build(req(tmp_path, tmp_path))
    assert str(tmp_path / "meta" / "esc50.csv") in str(err.value)
    assert str(tmp_path / "ESC-50-master" / "meta" / "esc50.csv") in str(err.value)
    with pytest.raises(UsageError, match="--data-root"):
        esc50.build(req(None, tmp_path))
    with pytest.raises(LayoutError, match="does not exist"):
        esc50.build(req(tmp_path / "nowhere", tmp_path))


# --------------------------------------------------------------------------------------------- NSynth
def test_nsynth_families_by_default_with_extras(tmp_path):
    mini = dm.nsynth(tmp_path)
    clips = nsynth.build(req(tmp_path, tmp_path, splits=["valid", "test"]))
    dm.assert_lists(clips, mini)
    assert {c.split for c in clips} == {"valid", "test"}
    info = sf.info(clips[0].path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    text = (tmp_path / "nsynth-test" / "examples.json").read_text()
    assert '", \n' in text or ', \n' in text                    # the Python 2 formatting is reproduced


@pytest.mark.parametrize("label,key", [("instrument", "instrument"), ("source", "source"), ("family", "family")])
def test_nsynth_label_option(tmp_path, label, key):
    mini = dm.nsynth(tmp_path, splits=("test",))
    clips = nsynth.build(req(tmp_path, tmp_path, label=label, splits="test"))
    got = dm.listing(clips, mini.base)
    assert {rel: v["label"] for rel, v in got.items()} == {rel: v[key] for rel, v in mini.clips.items()}


def test_nsynth_missing_split_folder_and_bad_options(tmp_path):
    dm.nsynth(tmp_path, splits=("test",))
    with pytest.raises(LayoutError) as err:
        nsynth.build(req(tmp_path, tmp_path))                  # default reads train too, which is absent
    assert str(tmp_path / "nsynth-train" / "examples.json") in str(err.value)
    with pytest.raises(UsageError, match="label"):
        nsynth.build(req(tmp_path, tmp_path, label="pitch", splits=["test"]))
    clips = nsynth.build(req(tmp_path / "nsynth-test", tmp_path, splits=["test"]))   # split folder as root
    assert clips and all(c.split == "test" for c in clips)


def test_nsynth_missing_audio_and_malformed_json(tmp_path):
    dm.nsynth(tmp_path, splits=("test",))
    audio = sorted((tmp_path / "nsynth-test" / "audio").iterdir())
    audio[0].unlink()
    with pytest.raises(LayoutError, match=rf"1 of {len(audio)} clips .*{audio[0].name}"):
        nsynth.build(req(tmp_path, tmp_path, splits=["test"]))
    meta = tmp_path / "nsynth-test" / "examples.json"
    meta.write_text(meta.read_text()[:-40])
    with pytest.raises(LayoutError, match=rf"{meta}:\d+"):
        nsynth.build(req(tmp_path, tmp_path, splits=["test"]))


# --------------------------------------------------------------------------------------------- SCv2
def test_scv2_words_splits_and_speakers_without_background_noise(tmp_path):
    mini = dm.scv2(tmp_path)
    clips = scv2.build(req(tmp_path, tmp_path))
    dm.assert_lists(clips, mini)
    assert "_background_noise_" not in {c.label for c in clips}
    assert {c.split for c in clips} == {"train", "validation", "testing"}
    # one speaker, one split (the official lists are built by a hash of the speaker)
    by_speaker: dict[str, set] = {}
    for c in clips:
        by_speaker.setdefault(c.extra["speaker"], set()).add(c.split)
    assert all(len(s) == 1 for s in by_speaker.values())


def test_scv2_splits_option_and_parent_root(tmp_path):
    mini = dm.scv2(tmp_path / "speech_commands_v0.02")
    clips = scv2.build(req(tmp_path, tmp_path, splits=["testing"]))
    want = {k for k, v in mini.clips.items() if v["split"] == "testing"}
    assert set(dm.listing(clips, mini.base)) == want


def test_scv2_list_naming_a_missing_file_and_malformed_line(tmp_path):
    dm.scv2(tmp_path)
    listed = (tmp_path / "testing_list.txt").read_text().splitlines()
    (tmp_path / listed[0]).unlink()
    with pytest.raises(LayoutError, match=rf"1 of \d+ clips .*{listed[0].split('/')[1]}"):
        scv2.build(req(tmp_path, tmp_path))
    (tmp_path / "validation_list.txt").write_text("yes/ok_nohash_0.wav\nnot a path\n")
    with pytest.raises(LayoutError, match=rf"validation_list.txt:2\b"):
        scv2.build(req(tmp_path, tmp_path))


# --------------------------------------------------------------------------------------------- VoxCeleb1
@pytest.mark.parametrize("separate", [False, True])
def test_voxceleb1_iden_split_labels_and_extras(tmp_path, separate):
    mini = dm.voxceleb1(tmp_path, separate_test_folder=separate)
    clips = voxceleb1.build(req(tmp_path, tmp_path))
    dm.assert_lists(clips, mini)
    assert {c.split for c in clips} == {"train", "validation", "test"}


def test_voxceleb1_veri_test_speakers_and_splits(tmp_path):
    mini = dm.voxceleb1(tmp_path)
    clips = voxceleb1.build(req(tmp_path, tmp_path, speaker_set="veri_test"))
    assert {c.label for c in clips} == {"id10270", "id10271", "id10272"}
    assert len(clips) == sum(v["label"] in {"id10270", "id10271", "id10272"} for v in mini.clips.values())
    test_only = voxceleb1.build(req(tmp_path / "wav", tmp_path, splits=["test"]))   # wav/ as root
    assert test_only and {c.split for c in test_only} == {"test"}


def test_voxceleb1_only_the_test_archive_is_enough_for_veri_test(tmp_path):
    dm.voxceleb1(tmp_path, separate_test_folder=True)
    import shutil
    shutil.rmtree(tmp_path / "wav")                           # the 30 GB dev archive was never unpacked
    clips = voxceleb1.build(req(tmp_path, tmp_path, speaker_set="veri_test"))
    assert {c.label for c in clips} == {"id10270", "id10271", "id10272"}
    with pytest.raises(LayoutError, match="have no audio file"):
        voxceleb1.build(req(tmp_path, tmp_path))


def test_voxceleb1_errors(tmp_path):
    dm.voxceleb1(tmp_path)
    split = tmp_path / "iden_split.txt"
    lines = split.read_text().splitlines()
    split.write_text("\n".join(lines[:2] + ["4 id10001/abc/00001.wav"] + lines[2:]) + "\n")
    with pytest.raises(LayoutError, match=rf"iden_split.txt:3\b"):
        voxceleb1.build(req(tmp_path, tmp_path))
    split.unlink()
    with pytest.raises(LayoutError, match="iden_split.txt"):
        voxceleb1.build(req(tmp_path, tmp_path))


# --------------------------------------------------------------------------------------------- FSDKaggle2018
@pytest.mark.parametrize("kaggle_era", [False, True])
def test_fsdkaggle2018_train_and_test_with_verification_flag(tmp_path, kaggle_era):
    mini = dm.fsdkaggle2018(tmp_path, kaggle_era=kaggle_era)
    for root in (tmp_path, mini.base):
        clips = fsdkaggle2018.build(req(root, tmp_path))
        dm.assert_lists(clips, mini)
    assert "None" not in {c.label for c in clips}                # Kaggle padding clips are dropped
    verified = fsdkaggle2018.build(req(tmp_path, tmp_path, verified_only=True))
    assert {c.extra["manually_verified"] for c in verified} == {"1"}
    assert len(verified) == sum(v["manually_verified"] == "1" for v in mini.clips.values())


def test_fsdkaggle2018_post_competition_extras_and_errors(tmp_path):
    mini = dm.fsdkaggle2018(tmp_path)
    clips = fsdkaggle2018.build(req(tmp_path, tmp_path, splits=["test"]))
    assert {c.extra["usage"] for c in clips} == {"Public", "Private"}
    assert all(c.extra["license"] == "Creative Commons 0" for c in clips)
    (mini.base / "FSDKaggle2018.meta" / "test_post_competition_scoring_clips.csv").unlink()
    with pytest.raises(LayoutError) as err:
        fsdkaggle2018.build(req(tmp_path, tmp_path))
    assert "test_post_competition_scoring_clips.csv" in str(err.value)
    assert len(fsdkaggle2018.build(req(tmp_path, tmp_path, splits="train"))) == \
        sum(v["split"] == "train" for v in mini.clips.values())
