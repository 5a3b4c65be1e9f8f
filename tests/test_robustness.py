"""Killed extractions resume bit-identically; bad audio is named and never half-written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, cli, run_json

SLOW_PLUGIN = "slow_plugin"


def _write_folder_dataset(root: Path, classes: int = 4, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for k in range(per_class):
            tone = np.sin(2 * np.pi * (200 + 150 * c) * np.arange(8000) / 16000)
            sf.write(root / f"class{c}" / f"{k}.wav", (0.5 * tone + 0.05 * rng.standard_normal(8000)).astype(np.float32), 16000)


def _task(tmp_path: Path, n_query: int = 2) -> Path:
    task = tmp_path / "folder-task.yaml"
    task.write_text("name: folder-2way\ndataset: folder\nprotocol: fewshot-prototype\n"
                    f"params: {{n_way: 2, k_shot: 1, n_query: {n_query}, episodes: 20}}\n")
    return task


def _committed(cache: Path) -> list[Path]:
    return [p for p in (cache / "embeddings").glob("*") if p.is_dir() and not p.name.endswith(".partial")]


@pytest.mark.slow
def test_sigkill_during_extraction_resumes_to_identical_embeddings(demo_root, tmp_path):
    env = {"PYTHONPATH": str(REPO / "tests" / "plugins_local") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "ASC_BENCH_PLUGINS": SLOW_PLUGIN}
    killed_cache, clean_cache = tmp_path / "killed", tmp_path / "clean"
    args = ["--encoder", "slow-logmel-stats", "--task", "demo-5way1shot", "--data-root", str(demo_root),
            "--shard-size", "16", "--batch-size", "4", "--results-dir", str(tmp_path / "results"), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "asc_bench", "run", *args, "--cache-dir", str(killed_cache)],
                            env={**os.environ, **env, "SLOW_PLUGIN_SECONDS": "0.3"}, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(killed_cache.glob("embeddings/*.partial/shard-*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(killed_cache.glob("embeddings/*.partial/shard-*.json")))
    assert finished >= 2 and not _committed(killed_cache), "kill must land mid-extraction"

    resumed = run_json(*args, "--cache-dir", str(killed_cache), env=env)
    assert any("resumed" in n for n in resumed["notes"])
    assert resumed["embedding"]["clips"] == 192 - 16 * finished
    clean = run_json(*args, "--cache-dir", str(clean_cache), env=env)
    assert clean["embedding"]["cache_key"] == resumed["embedding"]["cache_key"]
    key = clean["embedding"]["cache_key"]
    a = np.load(killed_cache / "embeddings" / key / "embeddings.npy")
    b = np.load(clean_cache / "embeddings" / key / "embeddings.npy")
    assert a.shape == (192, 256) and np.array_equal(a, b)
    assert resumed["scores"] == clean["scores"]


def test_corrupt_wav_is_named_and_nothing_is_committed(tmp_path):
    data = tmp_path / "data"
    _write_folder_dataset(data)
    bad = data / "class1" / "corrupt.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage that is not audio")
    cache, results = tmp_path / "cache", tmp_path / "results"
    common = ["--encoder", "logmel-stats", "--task", str(_task(tmp_path)), "--data-root", str(data),
              "--cache-dir", str(cache), "--results-dir", str(results)]
    proc = cli("run", *common, check=False)
    assert proc.returncode == 1
    assert str(bad) in proc.stderr and "--on-bad-audio skip" in proc.stderr and "Traceback" not in proc.stderr
    assert not results.exists() or not list(results.glob("*.json"))
    assert not _committed(cache)

    rec = run_json(*common, "--on-bad-audio", "skip")
    assert [s["path"] for s in rec["skipped_files"]] == [str(bad)]
    assert rec["dataset"]["n_clips"] == 25 and len(list(results.glob("*.json"))) == 1
    # The committed entry remembers the skipped file: a strict rerun still refuses it, by name.
    proc = cli("run", *common, check=False)
    assert proc.returncode == 1 and str(bad) in proc.stderr


def test_empty_and_nan_audio_are_rejected_by_name(tmp_path):
    data = tmp_path / "data"
    _write_folder_dataset(data)
    empty = data / "class0" / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    nan = data / "class2" / "nan.wav"
    sf.write(nan, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    common = ["--encoder", "logmel-stats", "--task", str(_task(tmp_path)), "--data-root", str(data),
              "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]
    proc = cli("run", *common, check=False)
    assert proc.returncode == 1 and ("empty.wav" in proc.stderr or "nan.wav" in proc.stderr)
    rec = run_json(*common, "--on-bad-audio", "skip")
    reasons = {Path(s["path"]).name: s["reason"] for s in rec["skipped_files"]}
    assert set(reasons) == {"empty.wav", "nan.wav"}
    assert "zero-length" in reasons["empty.wav"] and "NaN" in reasons["nan.wav"]


def test_clip_shorter_than_the_encoder_minimum_is_named(tmp_path):
    data = tmp_path / "data"
    _write_folder_dataset(data)
    short = data / "class3" / "short.wav"
    sf.write(short, np.zeros(200, np.float32), 16000)
    common = ["--encoder", "logmel-stats", "--task", str(_task(tmp_path)), "--data-root", str(data),
              "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]
    proc = cli("run", *common, check=False)
    assert proc.returncode == 1 and str(short) in proc.stderr and "minimum of 400" in proc.stderr
    rec = run_json(*common, "--on-bad-audio", "skip")
    assert [s["path"] for s in rec["skipped_files"]] == [str(short)]


def _folder_run(tmp_path: Path, data: Path) -> list[str]:
    return ["--encoder", "logmel-stats", "--task", str(_task(tmp_path)), "--data-root", str(data),
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]


def test_wav_truncated_to_half_its_data_is_bad_audio(tmp_path):
    data = tmp_path / "data"
    _write_folder_dataset(data)
    whole = (data / "class2" / "0.wav").read_bytes()       # 16-bit mono: 44-byte header + 16000 bytes
    cut = data / "class2" / "cut.wav"
    cut.write_bytes(whole[:44 + 8000])                     # what `head -c 8044` leaves
    proc = cli("run", *_folder_run(tmp_path, data), check=False)
    assert proc.returncode == 1 and str(cut) in proc.stderr
    assert "header declares 8000 frames, the file holds 4000" in proc.stderr
    rec = run_json(*_folder_run(tmp_path, data), "--on-bad-audio", "skip")
    assert [(s["path"], "truncated" in s["reason"]) for s in rec["skipped_files"]] == [(str(cut), True)]


def _csv_dataset(tmp_path: Path, rows: list[str]) -> tuple[Path, Path]:
    data = tmp_path / "data"
    _write_folder_dataset(data)
    (data / "list.csv").write_text("\n".join(["path,label"] + rows) + "\n")
    task = tmp_path / "csv-task.yaml"
    task.write_text("name: csv-2way\ndataset: csv\ndataset_options: {file: list.csv}\nprotocol: fewshot-prototype\n"
                    "params: {n_way: 2, k_shot: 1, n_query: 2, episodes: 20}\n")
    return data, task


def _csv_run(tmp_path: Path, data: Path, task: Path) -> list[str]:
    return ["--encoder", "logmel-stats", "--task", str(task), "--data-root", str(data),
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "results")]


ROWS = [f"class{c}/{k}.wav,class{c}" for c in range(2) for k in range(6)]


def test_skip_mode_also_skips_listed_but_missing_files(tmp_path):
    data, task = _csv_dataset(tmp_path, ROWS + ["class1/gone.wav,class1"])
    proc = cli("run", *_csv_run(tmp_path, data, task), check=False)
    assert proc.returncode == 1 and "have no audio file" in proc.stderr and "gone.wav" in proc.stderr
    rec = run_json(*_csv_run(tmp_path, data, task), "--on-bad-audio", "skip")
    assert rec["skipped_files"] == [{"path": str(data / "class1" / "gone.wav"), "reason": "file not found"}]
    assert rec["dataset"]["n_clips"] == 13 and rec["summary"]["n"] == 20


@pytest.mark.parametrize("escaping", ["../outside.wav", "class0/../../outside.wav", "ABSOLUTE"])
def test_metadata_path_outside_the_dataset_root_is_refused_naming_the_row(tmp_path, escaping):
    outside = tmp_path / "outside.wav"
    sf.write(outside, np.zeros(8000, np.float32), 16000)
    (tmp_path / "data").mkdir()
    row = str(outside) if escaping == "ABSOLUTE" else escaping      # relative to data/, the root
    data, task = _csv_dataset(tmp_path, ROWS + [f"{row},class1"])
    proc = cli("run", *_csv_run(tmp_path, data, task), check=False)
    assert proc.returncode == 1, proc.stdout
    assert "outside the data root" in proc.stderr and "row 13 of the listing" in proc.stderr
    assert str(outside) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "embeddings").exists()     # refused before any decoding


def test_duplicate_rows_are_refused(tmp_path):
    data, task = _csv_dataset(tmp_path, ROWS + ["class0/3.wav,class0"])
    proc = cli("run", *_csv_run(tmp_path, data, task), check=False)
    assert proc.returncode == 1
    assert f"{data / 'class0' / '3.wav'} is listed twice (rows 4 and 13" in proc.stderr


def test_listing_check_allows_the_cache_and_folders_the_options_name(tmp_path):
    from asc_bench.api import Clip, LayoutError
    from asc_bench.data.listing import check_listing

    root, cache, chosen = tmp_path / "data", tmp_path / "cache", tmp_path / "elsewhere"
    clips = [Clip(str(root / "a.wav"), "x"), Clip(str(cache / "hf-audio" / "b.wav"), "x"),
             Clip(str(chosen / "c.wav"), "y")]
    check_listing("hf", clips, root, extra_bases=[cache, chosen])     # adapter output, user's choices: fine
    with pytest.raises(LayoutError, match=r"'.*c\.wav' \(row 3 of the listing, label 'y'\) is outside"):
        check_listing("hf", clips, root, extra_bases=[cache])
    with pytest.raises(LayoutError, match="row 2 of the listing"):
        check_listing("esc50", [clips[0], Clip(str(root / "x" / ".." / ".." / "d.wav"), "x")], root)
    check_listing("csv", clips, None)                                  # no root: nothing to escape from
