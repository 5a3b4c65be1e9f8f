"""The generic adapters (csv, hf), the shared layout helpers, and the registration of every adapter."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import soundfile as sf

import dataset_miniatures as dm
from asc_bench.api import DatasetRequest, LayoutError, UsageError
from asc_bench_plugins.datasets import _layout, csv_list, hf


def req(root: Path | None, tmp_path: Path, **options) -> DatasetRequest:
    return DatasetRequest(root=root, options=options, cache_dir=tmp_path / "cache")


def test_every_adapter_is_registered():
    from asc_bench.plugins import get_manager

    names = set(get_manager().registries["datasets"])
    assert {"esc50", "tut17", "tau22", "icme24", "nsynth", "scv2", "voxceleb1", "fsdkaggle2018", "csv", "hf",
            "folder", "demo"} <= names


# --------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("crlf,bom", [(False, False), (True, False), (True, True), (False, True)])
def test_read_table_handles_line_endings_and_bom(tmp_path, crlf, bom):
    path = tmp_path / "m.csv"
    dm.write_text(path, ["filename,scene_label", "a,Urban park", "", "b,"], crlf=crlf, bom=bom)
    table = _layout.read_table(str(path), ",", "x", "X", header="filename")
    assert table.has_header and table.columns == {"filename": 0, "scene_label": 1}
    assert table.rows == [["a", "Urban park"], ["b", ""]]
    assert table.line_numbers == [2, 4]                       # blank lines are skipped but counted


def test_locate_finds_a_renamed_folder_and_refuses_two(tmp_path):
    dm.esc50(tmp_path / "data")
    (tmp_path / "data" / "ESC-50-master").rename(tmp_path / "data" / "esc50-copy")
    assert _layout.locate(str(tmp_path / "data"), "meta/esc50.csv", ("ESC-50-master",), "esc50", "ESC-50") \
        == str(tmp_path / "data" / "esc50-copy")
    dm.esc50(tmp_path / "data")
    with pytest.raises(LayoutError, match="several folders"):
        _layout.locate(str(tmp_path / "data"), "meta/esc50.csv", (), "esc50", "ESC-50")


# --------------------------------------------------------------------------------------------- csv
def _wavs(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        dm.write_wav(folder / name, name, 0.1, 16000, seed=i)


def test_csv_paths_labels_splits_and_extras(tmp_path):
    _wavs(tmp_path / "audio", ["a.wav", "b.wav", "c.wav"])
    dm.write_text(tmp_path / "lists" / "clips.csv",
                  ["path,label,split,speaker", "audio/a.wav,dog,train,s1", "audio/b.wav,cat,test,s2",
                   f"{tmp_path / 'audio' / 'c.wav'},cat,,s3"], crlf=True, bom=True)
    clips = csv_list.build(req(tmp_path, tmp_path, file="lists/clips.csv"))
    assert [(Path(c.path).name, c.label, c.split, dict(c.extra)) for c in clips] == [
        ("a.wav", "dog", "train", {"speaker": "s1"}), ("b.wav", "cat", "test", {"speaker": "s2"}),
        ("c.wav", "cat", None, {"speaker": "s3"})]
    assert all(Path(c.path).is_file() for c in clips)


def test_csv_custom_columns_tab_and_relative_to_file(tmp_path):
    _wavs(tmp_path / "set" / "wav", ["x.wav", "y.wav"])
    dm.write_text(tmp_path / "set" / "meta.tsv", ["class\tfile", "bird\twav/x.wav", "frog\twav/y.wav"])
    clips = csv_list.build(req(None, tmp_path, file=str(tmp_path / "set" / "meta.tsv"), path_column="file",
                               label_column="class"))
    assert [(Path(c.path).name, c.label, c.split) for c in clips] == [("x.wav", "bird", None), ("y.wav", "frog", None)]


def test_csv_errors(tmp_path):
    _wavs(tmp_path, ["a.wav"])
    with pytest.raises(UsageError, match="option 'file'"):
        csv_list.build(req(tmp_path, tmp_path))
    with pytest.raises(LayoutError, match=str(tmp_path / "none.csv")):
        csv_list.build(req(tmp_path, tmp_path, file="none.csv"))
    dm.write_text(tmp_path / "nohead.csv", ["a.wav,dog"])
    with pytest.raises(LayoutError, match="header"):
        csv_list.build(req(tmp_path, tmp_path, file="nohead.csv"))
    dm.write_text(tmp_path / "bad.csv", ["path,label", "a.wav,dog", "a.wav,dog,extra"])
    with pytest.raises(LayoutError, match=rf"bad.csv:3\b"):
        csv_list.build(req(tmp_path, tmp_path, file="bad.csv"))
    dm.write_text(tmp_path / "missing.csv", ["path,label", "a.wav,dog", "gone1.wav,dog", "gone2.wav,cat"])
    with pytest.raises(LayoutError, match=r"2 of 3 clips .*gone1.wav, .*gone2.wav"):
        csv_list.build(req(tmp_path, tmp_path, file="missing.csv"))


# --------------------------------------------------------------------------------------------- hf
@pytest.fixture
def hf_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    return datasets


def _hf_dataset(datasets, tmp_path: Path, labels: list[int], names: list[str]):
    """A Dataset whose audio column carries the bytes of real WAV files (what save_to_disk / parquet
    exports hold). Built through a plain struct column because datasets' own Audio encoder needs torchcodec."""
    records = []
    for i, label in enumerate(labels):
        path = tmp_path / "src" / f"clip{i}.wav"
        dm.write_wav(path, f"c{label}", 0.1, 16000, seed=i)
        records.append({"bytes": path.read_bytes(), "path": path.name})
    raw = datasets.Features({"audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                             "label": datasets.ClassLabel(names=names)})
    ds = datasets.Dataset.from_dict({"audio": records, "label": labels}, features=raw)
    return ds.cast_column("audio", datasets.Audio()), records


def test_hf_save_to_disk_materialises_bytes_content_addressed(tmp_path, hf_offline):
    datasets = hf_offline
    train, rec_train = _hf_dataset(datasets, tmp_path, [0, 1, 0, 1], ["dog", "cat"])
    test, _ = _hf_dataset(datasets, tmp_path / "t", [1, -1, 0], ["dog", "cat"])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "saved"))
    clips = hf.build(req(tmp_path, tmp_path, path="saved"))
    assert [(c.label, c.split) for c in clips] == [("dog", "train"), ("cat", "train"), ("dog", "train"),
                                                    ("cat", "train"), ("cat", "test"), ("dog", "test")]
    for clip, record in zip(clips, rec_train):
        digest = hashlib.sha256(record["bytes"]).hexdigest()
        assert clip.path == str(tmp_path / "cache" / "hf-audio" / digest[:2] / f"{digest}.wav")
        assert Path(clip.path).read_bytes() == record["bytes"]
        assert sf.info(clip.path).samplerate == 16000
    stamp = os.stat(clips[0].path).st_mtime_ns
    again = hf.build(req(tmp_path, tmp_path, path=str(tmp_path / "saved"), split="train"))
    assert [c.path for c in again] == [c.path for c in clips[:4]]
    assert os.stat(clips[0].path).st_mtime_ns == stamp                # not rewritten
    assert not list((tmp_path / "cache" / "hf-audio").rglob(".part-*"))


def test_hf_parquet_folder_and_single_file(tmp_path, hf_offline):
    datasets = hf_offline
    ds, records = _hf_dataset(datasets, tmp_path, [2, 0, 1], ["low", "mid", "high"])
    (tmp_path / "pq" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    ds.to_parquet(str(tmp_path / "pq" / "data" / "test-00000-of-00001.parquet"))
    clips = hf.build(req(None, tmp_path, path=str(tmp_path / "pq")))
    assert sorted({c.split for c in clips}) == ["test", "train"] and len(clips) == 6
    assert [c.label for c in clips if c.split == "train"] == ["high", "low", "mid"]
    single = hf.build(req(tmp_path / "pq" / "data", tmp_path, path="test-00000-of-00001.parquet", split="eval"))
    assert [(c.label, c.split) for c in single] == [("high", "eval"), ("low", "eval"), ("mid", "eval")]
    assert Path(single[1].path).read_bytes() == records[1]["bytes"]


def test_hf_errors(tmp_path, hf_offline):
    datasets = hf_offline
    ds, _ = _hf_dataset(datasets, tmp_path, [0, 1], ["a", "b"])
    ds.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(LayoutError, match="no column 'category'"):
        hf.build(req(tmp_path, tmp_path, path="one", label_column="category"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UsageError, match="split 'valid'"):
        hf.build(req(tmp_path, tmp_path, path="dd", split="valid"))
    with pytest.raises(LayoutError, match="not found"):
        hf.build(req(tmp_path, tmp_path, path=str(tmp_path / "absent")))
    with pytest.raises(UsageError, match="unknown option"):
        hf.build(req(tmp_path, tmp_path, path="one", decode=True))
