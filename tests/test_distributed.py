"""torchrun with 2 CPU ranks (gloo) gives the results of one process.

- Training: a few steps of the ContrastASC teacher (BEATs has no BatchNorm; SupCon is gathered across
  ranks) and of the toy recipe with gradient accumulation on 2 ranks end with the weights of a
  single-process run with the same global batch, within 1e-5 relative (max |a − b| / max |a| per
  tensor; the only differences are float summation orders of the gradient all-reduce).
  Augmentations are off: their draws are per rank by design, so they cannot match one process.
- Extraction: `asc-bench run` under torchrun embeds a shard set per rank; the committed cache matrix
  equals a single-process extraction within 1e-6.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from asc_bench.distributed import global_batch_slice, shard_indices
from asc_bench.embedding.checkpoints import find_state_dict, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
REL_TOL = 1e-5
TINY_DATA = {"clips_per_class": 2, "seconds": 1.0}


def run(args: list[str], tmp: Path, ranks: int | None, extra_env: dict[str, str] | None = None) -> str:
    launcher = [sys.executable] if ranks is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "ASC_BENCH_CACHE": str(tmp / "cache"),
           **(extra_env or {})}
    proc = subprocess.run([*launcher, "-m", "asc_bench", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, f"{' '.join(args)} ({ranks} ranks) failed\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


# The attention key bias has an exactly zero gradient (q·(k + b) shifts every key of a query by the
# same amount, which softmax ignores); its float-noise gradient is scaled to a full step by Adam's
# normalisation, so it differs between any two summation orders and says nothing about DDP.
ZERO_GRADIENT = ("self_attn.k_proj.bias",)


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        if k.endswith(ZERO_GRADIENT):
            continue
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
            continue
        scale = float(a[k].abs().max()) or 1.0
        worst = max(worst, float((a[k] - b[k]).abs().max()) / scale)
    return worst


def load(path: Path) -> dict[str, torch.Tensor]:
    return find_state_dict(read_checkpoint(path))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dist-data")


def test_shard_indices_partition_in_order():
    for n in (0, 1, 5, 17):
        for world in (1, 2, 3, 8):
            blocks = [shard_indices(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError, match="not divisible"):
        global_batch_slice(6, 0, 4)


@pytest.mark.slow
def test_teacher_steps_on_two_ranks_match_one_process(tmp_path, data_root):
    cfg = yaml.safe_load((REPO / "plugins/contrastasc/configs/teacher-tiny.yaml").read_text())
    cfg.update(steps=4, batch_size=8, checkpoint_every=100, dataset_options=TINY_DATA, cache_dir=str(tmp_path / "c"))
    cfg["recipe"].update(mixup_alpha=0.0, head_steps=2)
    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump(cfg))
    common = ["train", "contrastasc-teacher", "--config", str(path), "--data-root", str(data_root)]
    run([*common, "--out", str(tmp_path / "one")], tmp_path, None)
    run([*common, "--out", str(tmp_path / "two")], tmp_path, 2)
    for name in ("beats.pt", "head.safetensors"):
        one, two = (load(tmp_path / d / "export/teacher" / name) for d in ("one", "two"))
        assert relative_difference(one, two) < REL_TOL, name
    metrics = [json.loads(l) for l in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert [m["stage"] for m in metrics][-1] == "B-all"


@pytest.mark.slow
def test_grad_accumulation_on_two_ranks_matches_one_process(tmp_path, data_root):
    cfg = {"seed": 5, "steps": 5, "batch_size": 8, "grad_accum": 2, "lr": 3e-3, "warmup_steps": 1,
           "layer_decay": 0.7, "checkpoint_every": 100, "dataset": "demo", "dataset_options": TINY_DATA,
           "cache_dir": str(tmp_path / "c"), "recipe": {"hidden": 16, "head_steps": 2, "noise": 0.0, "dropout": 0.0}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    extra = {"ASC_BENCH_PLUGINS": "train_toy_recipe", "PYTHONPATH": os.pathsep.join(
        [str(TESTS), os.environ.get("PYTHONPATH", "")])}
    common = ["train", "toy", "--config", str(path), "--data-root", str(data_root)]
    run([*common, "--out", str(tmp_path / "one")], tmp_path, None, extra)
    run([*common, "--out", str(tmp_path / "two")], tmp_path, 2, extra)
    one, two = (load(tmp_path / d / "export/toy.safetensors") for d in ("one", "two"))
    assert relative_difference(one, two) < REL_TOL


@pytest.mark.slow
def test_extraction_on_two_ranks_equals_one_process(tmp_path, data_root):
    from asc_bench.embedding.cache import EmbeddingCache

    common = ["run", "--encoder", "logmel-stats", "--task", "demo-5way1shot", "--data-root", str(data_root),
              "--param", "episodes=10", "--shard-size", "32", "--json"]
    records = {}
    for name, ranks in (("one", None), ("two", 2)):
        out = run([*common, "--cache-dir", str(tmp_path / name), "--results-dir", str(tmp_path / f"r-{name}")],
                  tmp_path, ranks)
        records[name] = json.loads(out)
    key = records["one"]["embedding"]["cache_key"]
    assert records["two"]["embedding"]["cache_key"] == key
    assert records["two"]["embedding"]["clips"] < records["one"]["embedding"]["clips"]   # rank 0 did a share
    a = EmbeddingCache(tmp_path / "one").load(key)
    b = EmbeddingCache(tmp_path / "two").load(key)
    assert a is not None and b is not None and a.embeddings.shape == b.embeddings.shape
    np.testing.assert_allclose(np.asarray(b.embeddings), np.asarray(a.embeddings), rtol=0, atol=1e-6)
    assert records["one"]["scores"] == records["two"]["scores"]
