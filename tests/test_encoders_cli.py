"""Every reference encoder runs a task from its fixture checkpoint through the CLI; weights are never silent."""
from __future__ import annotations

import pytest

from conftest import cli, run_json
from fixtures_path import fixtures_dir

CASES = {
    "beats": ("beats/beats_pretrained.pt", []),
    "audiomae": ("audiomae/audiomae_pretrained_layout.pth", ["--encoder-option", "num_heads=3"]),
    "uamix-mae": ("uamix/uamix_synthetic.ckpt", ["--encoder-option", "num_heads=2"]),
    "contrastasc-cpm-6k": ("cpmobile/dcase23_cpmobile_b8_m1.8_e2.1/lightning_style.ckpt", []),
}


@pytest.mark.parametrize("encoder", sorted(CASES))
def test_fixture_checkpoint_runs_the_demo_task(encoder, demo_root, tmp_path):
    path, options = CASES[encoder]
    ckpt = fixtures_dir() / path
    rec = run_json("--encoder", encoder, "--checkpoint", str(ckpt), *options, "--task", "demo-5way1shot",
                   "--param", "episodes=50", "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"),
                   "--results-dir", str(tmp_path / "r"))
    assert rec["encoder"]["checkpoint_sha256"] and rec["encoder"]["params"] > 0 and rec["summary"]["n"] == 50


def test_no_checkpoint_and_no_random_init_is_an_error(tmp_path):
    proc = cli("run", "--encoder", "contrastasc-cpm-126k", "--task", "demo-5way1shot",
               "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), check=False)
    assert proc.returncode == 1 and "--random-init" in proc.stderr and "--checkpoint" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_changing_the_checkpoint_file_changes_the_cache_key(demo_root, tmp_path):
    src = fixtures_dir() / CASES["contrastasc-cpm-6k"][0]
    copy = tmp_path / "student.ckpt"
    copy.write_bytes(src.read_bytes())
    common = ["--encoder", "contrastasc-cpm-6k", "--checkpoint", str(copy), "--task", "demo-5way1shot",
              "--param", "episodes=20", "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"),
              "--results-dir", str(tmp_path / "r")]
    first = run_json(*common)
    import torch

    obj = torch.load(copy, weights_only=True)
    obj["epoch"] = 999                      # same weights, different file: a different sha256
    torch.save(obj, copy)
    second = run_json(*common)
    assert first["encoder"]["checkpoint_sha256"] != second["encoder"]["checkpoint_sha256"]
    assert second["embedding"]["cache_hit"] is False
