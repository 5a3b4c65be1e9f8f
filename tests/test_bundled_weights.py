"""Encoders whose weights ship inside their package (`bundled_weights`): listed, hashed, recorded, keyed."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO, cli, run_json

from asc_bench import plugins
from test_plugins import installed_example  # noqa: F401  (the example plugin pip-installed, a fixture)

ENCODER = "example-bundled-projection"


@pytest.fixture
def plugin_copy(tmp_path, monkeypatch):
    """The example plugin's package copied to a temporary folder on sys.path (so a test may edit its files)."""
    shutil.copytree(REPO / "tests" / "example_plugin" / "asc_bench_example", tmp_path / "pkg" / "asc_bench_example")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.delitem(sys.modules, "asc_bench_example", raising=False)
    plugins._MANAGER = None          # the cached manager would hold another copy's module
    yield tmp_path / "pkg" / "asc_bench_example"
    sys.modules.pop("asc_bench_example", None)
    plugins._MANAGER = None


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_args(demo_root, tmp_path) -> list[str]:
    return ["--plugin", "asc_bench_example", "run", "--encoder", ENCODER, "--task", "demo-5way1shot",
            "--param", "episodes=20", "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"),
            "--results-dir", str(tmp_path / "r"), "--json"]


def test_declaration_defaults_keep_todays_behaviour():
    from asc_bench.api import EncoderEntry

    assert EncoderEntry("a", build=print).weights_kind == "checkpoint"
    assert EncoderEntry("a", build=print, requires_weights=False).weights_kind == "none needed"
    entry = EncoderEntry("a", build=print, bundled_weights="w/x.safetensors")
    assert entry.weights_kind == "bundled" and entry.bundled_weights == (Path("w/x.safetensors"),)


@pytest.mark.slow
def test_bundled_weights_are_listed_and_a_missing_file_is_caught_before_embedding(plugin_copy, demo_root, tmp_path):
    listed = {e["name"]: e for e in json.loads(cli("--plugin", "asc_bench_example", "list", "encoders", "--json").stdout)}
    assert listed[ENCODER]["weights"] == "bundled" and listed["example-frame-energy"]["weights"] == "none needed"
    assert listed["logmel-stats"]["weights"] != "bundled"
    (plugin_copy / "weights" / "projection.safetensors").unlink()
    proc = cli(*_run_args(demo_root, tmp_path), check=False)
    assert proc.returncode == 1 and "projection.safetensors is missing" in proc.stderr
    assert "package-data" in proc.stderr and not (tmp_path / "c").exists() and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_bundled_weights_sha256_is_recorded_and_keys_the_cache(plugin_copy, demo_root, tmp_path):
    weights = plugin_copy / "weights" / "projection.safetensors"
    common = _run_args(demo_root, tmp_path)
    first = json.loads(cli(*common).stdout)        # no --checkpoint needed
    assert first["encoder"]["weights_source"] == {"source": "bundled", "id": f"sha256:{_sha256(weights)}",
                                           "files": {"projection.safetensors": _sha256(weights)}}
    assert first["encoder"]["weights"] == f"sha256:{_sha256(weights)}" and first["encoder"]["checkpoint_sha256"] is None

    state = load_file(weights)
    state["weight"] = state["weight"] * 2          # other weights in the same file name
    save_file(state, weights)
    second = json.loads(cli(*common).stdout)
    assert second["embedding"]["cache_hit"] is False
    assert second["embedding"]["cache_key"] != first["embedding"]["cache_key"]
    assert second["encoder"]["weights"] == f"sha256:{_sha256(weights)}" != first["encoder"]["weights"]


@pytest.mark.slow
def test_random_init_replaces_bundled_weights_and_records_none(plugin_copy, demo_root, tmp_path):
    rec = json.loads(cli("--plugin", "asc_bench_example", "run", "--encoder", ENCODER, "--random-init", "--task",
                         "demo-5way1shot", "--param", "episodes=10", "--data-root", str(demo_root), "--cache-dir",
                         str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "--json").stdout)
    assert rec["encoder"]["weights"] == "random" and rec["encoder"]["weights_source"] is None


@pytest.mark.slow
def test_pip_installed_package_ships_its_weights(installed_example, demo_root, tmp_path):  # noqa: F811
    """The package-data line in tests/example_plugin/pyproject.toml is what puts the file in the wheel."""
    listed = {e["name"]: e for e in json.loads(cli("list", "encoders", "--json", env=installed_example).stdout)}
    assert listed[ENCODER]["weights"] == "bundled"
    rec = run_json("--encoder", ENCODER, "--task", "demo-5way1shot", "--param", "episodes=10", "--data-root",
                   str(demo_root), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
                   env=installed_example)
    source = REPO / "tests" / "example_plugin" / "asc_bench_example" / "weights" / "projection.safetensors"
    assert rec["encoder"]["weights_source"]["files"] == {"projection.safetensors": _sha256(source)}
    assert torch.isfinite(torch.tensor(rec["scores"])).all()
