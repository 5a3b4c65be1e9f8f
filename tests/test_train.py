"""The training loop and the three recipes, end to end on tiny configs and the synthetic demo data.

What is proven here:
- config validation names the offending key and the valid ones (common keys and recipe sections);
- the schedule, layer-wise lr decay and no-decay rules, and the (seed, step) data stream;
- each recipe trains (every logged loss term falls over a tiny full-batch run) and exports an artefact
  that `asc-bench run` loads: teacher -> student -> `--encoder contrastasc-cpm-6k`, and the teacher's
  backbone as `--encoder beats`; uaMix-MAE -> `--encoder uamix-mae`;
- a run SIGKILLed after a checkpoint and resumed ends with bit-identical weights to an uninterrupted
  run with the same seed (teacher: mixup generator; student: CRD memory and negative sampler;
  uaMix-MAE: NNCLR queue, top-k draws, T-CutMix generator, EMA projector).
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from asc_bench.embedding.checkpoints import find_state_dict, read_checkpoint
from asc_bench.training.config import ConfigError, TrainConfig, from_mapping, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"contrastasc-teacher": REPO / "plugins/contrastasc/configs/teacher-tiny.yaml",
           "contrastasc-student": REPO / "plugins/contrastasc/configs/student-tiny.yaml",
           "uamix-mae": REPO / "plugins/uamix_mae/configs/uamix-tiny.yaml"}
TINY_DATA = {"clips_per_class": 2, "seconds": 1.0}      # 24 clips: one batch holds the whole set


def write_config(path: Path, recipe: str, recipe_changes: dict[str, Any] | None = None, **changes: Any) -> Path:
    cfg = yaml.safe_load(CONFIGS[recipe].read_text())
    cfg.update(changes)
    cfg["recipe"] = {**cfg.get("recipe", {}), **(recipe_changes or {})}
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "ASC_BENCH_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


def cli(*args: str, tmp: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "asc_bench", *args], capture_output=True, text=True,
                          env=env(tmp), cwd=REPO, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"asc-bench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_falls(rows: list[dict[str, Any]], key: str, k: int = 3) -> None:
    values = [r[key] for r in rows]
    first, last = float(np.mean(values[:k])), float(np.mean(values[-k:]))
    assert last < first, f"{key} did not fall: first {values[:k]} last {values[-k:]}"


def tiny_task(tmp: Path) -> str:
    """demo-5way1shot on the tiny training set (reuses its generated audio)."""
    spec = yaml.safe_load((REPO / "tasks/demo-5way1shot.yaml").read_text())
    spec.update(name="demo-tiny-5way1shot", dataset_options=TINY_DATA)
    spec["params"] = {**spec["params"], "episodes": 20, "n_query": 1}   # 2 clips per class
    path = tmp / "demo-tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    return find_state_dict(read_checkpoint(path))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-data")


def train(recipe: str, tmp: Path, data_root: Path, out: str, recipe_changes=None, **changes) -> Any:
    from asc_bench.training.loop import run_training

    cfg = write_config(tmp / f"{out}.yaml", recipe, recipe_changes, cache_dir=str(tmp / "cache"), **changes)
    return run_training(recipe, cfg, data_root=data_root, out_dir=tmp / out, quiet=True)


# ------------------------------------------------------------------------------------------ config
def test_unknown_common_key_names_it_and_the_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "'stepz'" in msg and "did you mean 'steps'" in msg and "batch_size" in msg and "layer_decay" in msg


@pytest.mark.parametrize("yaml_text, fragment", [
    ("steps: many\n", "'steps' must be int"),
    ("lr_schedule: linear\n", "'lr_schedule' must be one of cosine, constant"),
    ("grad_accum: 0\n", "'grad_accum' must be >= 1"),
    ("warmup_steps: 50\nsteps: 10\n", "'warmup_steps' (50) exceeds 'steps' (10)"),
    ("lr: fast\n", "'lr' must be float"),
])
def test_bad_common_values_are_named(tmp_path, yaml_text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=None) as err:
        load_config(path)
    assert fragment in str(err.value)


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-4\n")                 # YAML 1.1 reads this as a string
    assert load_config(path).lr == pytest.approx(1e-4)


def test_dotted_overrides_set_one_key_of_a_section():
    cfg = load_config(CONFIGS["contrastasc-teacher"], {"recipe.head_steps": 2, "dataset_options.seconds": 2.0})
    base = yaml.safe_load(CONFIGS["contrastasc-teacher"].read_text())
    assert cfg.recipe == {**base["recipe"], "head_steps": 2}
    assert cfg.dataset_options == {**base["dataset_options"], "seconds": 2.0}


@pytest.mark.parametrize("recipe, section, fragment", [
    ("contrastasc-teacher", {"random_init": True, "lamda": 0.3}, "'recipe.lamda'"),
    ("contrastasc-teacher", {"random_init": True, "lambda_on": "both"}, "'recipe.lambda_on' must be one of ce, supcon"),
    ("contrastasc-teacher", {}, "exactly one of 'recipe.backbone_checkpoint'"),
    ("contrastasc-student", {"teacher": "x", "kd_reduction": "mean"}, "'recipe.kd_reduction'"),
    ("contrastasc-student", {}, "'recipe.teacher' is required"),
    ("uamix-mae", {"random_init": True, "mixer": "cutmix"}, "'recipe.mixer' must be one of t-cutmix, mixup-ls"),
    ("uamix-mae", {"random_init": True, "head_steps": 99}, "'recipe.head_steps' (99) exceeds 'steps'"),
])
def test_recipe_sections_are_validated_by_name(tmp_path, recipe, section, fragment):
    from asc_bench.training.loop import prepare

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"steps": 10, "recipe": section}))
    with pytest.raises(ConfigError) as err:
        prepare(recipe, path)
    assert fragment in str(err.value)
    if "'recipe.lamda'" in fragment:
        assert "loss_lambda" in str(err.value)         # the valid keys are listed


@pytest.mark.skipif(torch.cuda.is_available(), reason="autocast is allowed on CUDA")
def test_autocast_on_cpu_is_refused(tmp_path, data_root):
    with pytest.raises(ConfigError, match="autocast"):
        train("contrastasc-teacher", tmp_path, data_root, "ac", autocast="bf16")


@pytest.mark.slow
def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\nbatchsize: 4\n")
    proc = cli("train", "contrastasc-teacher", "--config", str(path), "--out", str(tmp_path / "o"),
               tmp=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "batchsize" in proc.stderr and "batch_size" in proc.stderr


# ------------------------------------------------------------------------------------------ loop parts
def test_layer_decay_weight_decay_and_schedule():
    from asc_bench.training.loop import ParamGroup, Stage
    from asc_bench.training.optim import build_optimizer, lr_factor

    body = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    head = torch.nn.Linear(2, 1)
    cfg = from_mapping(TrainConfig, {"lr": 0.1, "layer_decay": 0.5, "weight_decay": 0.05, "steps": 10,
                                     "warmup_steps": 2, "min_lr_ratio": 0.1})
    groups = [ParamGroup("body", [(f"body.{n}", p) for n, p in body.named_parameters()],
                         layer_id=lambda n: int(n.split(".")[1]) + 1, num_layers=2),
              ParamGroup("head", [(f"head.{n}", p) for n, p in head.named_parameters()], lr_scale=2.0,
                         weight_decay=0.0)]
    opt, _ = build_optimizer(groups, cfg)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    # layer 1 of 2: 0.5 ** (2 + 1 - 1); layer 2: 0.5 ** 1; biases never decay
    assert by_param[id(body[0].weight)]["base_lr"] == pytest.approx(0.1 * 0.25)
    assert by_param[id(body[1].weight)]["base_lr"] == pytest.approx(0.1 * 0.5)
    assert by_param[id(body[0].weight)]["weight_decay"] == 0.05 and by_param[id(body[0].bias)]["weight_decay"] == 0
    assert by_param[id(head.weight)]["base_lr"] == pytest.approx(0.2) and by_param[id(head.weight)]["weight_decay"] == 0
    run = Stage("all", 0, 10, ("body",))
    assert [lr_factor(cfg, s, run) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(cfg, 2, run) == pytest.approx(1.0)
    expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))
    assert lr_factor(cfg, 9, run) == pytest.approx(expected)
    # schedule_scope=stage restarts warm-up at a stage boundary
    assert lr_factor(cfg, 5, Stage("b", 5, 10, ("body",))) == 0.5


def test_data_stream_is_a_function_of_seed_and_position():
    from asc_bench.distributed import global_batch_slice
    from asc_bench.training.data import StreamBatches, stream_indices

    n = 7
    order = stream_indices(n, seed=3, start=0, stop=4 * n)
    for e in range(3):                                   # every epoch is a permutation
        assert sorted(order[e * n:(e + 1) * n]) == list(range(n))
    assert list(stream_indices(n, 3, 5, 16)) == list(order[5:16])
    one = [item.index for b in StreamBatches(n, 3, 4, 2, slice(0, 4), 1, 3) for item in b]
    two = []
    for step_micro in range(4):
        for rank in range(2):
            rows = global_batch_slice(4, rank, 2)
            two += [item.index for item in StreamBatches(n, 3, 4, 2, rows, 1, 3).batch(step_micro)]
    assert one == two == list(order[8:24])


def test_worker_processes_do_not_change_the_run(tmp_path, data_root):
    from safetensors.torch import load_file

    from asc_bench.training.loop import run_training

    cfg = {"seed": 2, "steps": 4, "batch_size": 8, "lr": 3e-3, "checkpoint_every": 100, "dataset": "demo",
           "dataset_options": TINY_DATA, "cache_dir": str(tmp_path / "c"), "crop": "random", "clip_seconds": 0.5,
           "recipe": {"hidden": 8, "head_steps": 1}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    outs = []
    for workers in (0, 2):
        out = run_training("toy", path, data_root=data_root, out_dir=tmp_path / f"w{workers}", quiet=True,
                           overrides={"num_workers": workers}, plugins=["train_toy_recipe"]).export_path
        outs.append(load_file(str(out)))
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.slow
def test_max_steps_checkpoints_and_plain_progress(tmp_path, data_root):
    cfg = write_config(tmp_path / "t.yaml", "contrastasc-teacher", None, steps=6, checkpoint_every=2,
                       log_every=1, dataset_options=TINY_DATA, cache_dir=str(tmp_path / "cache"))
    proc = cli("train", "contrastasc-teacher", "--config", str(cfg), "--out", str(tmp_path / "run"),
               "--data-root", str(data_root), "--max-steps", "3", "--set", "recipe.head_steps=2", tmp=tmp_path)
    assert "step 3:" in proc.stdout and "\x1b[" not in proc.stdout      # plain lines when not a TTY
    ckpts = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert ckpts == ["step-00000002", "step-00000003"]
    assert [r["step"] for r in losses(tmp_path / "run")] == [1, 2, 3]
    assert [r["stage"] for r in losses(tmp_path / "run")] == ["A-heads", "A-heads", "B-all"]
    state = torch.load(tmp_path / "run/checkpoints/step-00000003/state.pt", weights_only=True)
    assert state["step"] == 3 and "optimizer" in state and "rng" in state
    again = cli("train", "contrastasc-teacher", "--config", str(cfg), "--out", str(tmp_path / "run"),
                "--data-root", str(data_root), "--set", "recipe.head_steps=2", tmp=tmp_path, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr


# ------------------------------------------------------------------------------------------ recipes
@pytest.fixture(scope="module")
def teacher(tmp_path_factory, data_root) -> Path:
    """A tiny teacher trained full-batch (24 clips, no mixup) so its losses must fall."""
    tmp = tmp_path_factory.mktemp("teacher")
    result = train("contrastasc-teacher", tmp, data_root, "run", {"mixup_alpha": 0.0, "backbone_lr_scale": 0.1},
                   steps=14, batch_size=24, log_every=1, checkpoint_every=100, dataset_options=TINY_DATA)
    return result.export_path


def test_teacher_losses_fall_and_backbone_loads_as_beats(teacher, tmp_path):
    rows = losses(teacher.parents[1])
    for key in ("ce", "supcon"):
        assert_falls(rows, key)
    assert {r["stage"] for r in rows} == {"A-heads", "B-all"}
    doc = json.loads((teacher / "teacher.json").read_text())
    assert doc["classifier_scale"] == 56.0 and len(doc["classes"]) == 12
    from asc_bench.plugins import get_manager
    from asc_bench.runner import build_encoder

    enc = build_encoder(get_manager(), "beats", checkpoint=teacher / "beats.pt")
    wave = torch.randn(2, 16000) * 0.1
    out = enc.module(wave, torch.tensor([16000, 16000]))
    assert out.shape == (2, 64) and torch.isfinite(out).all()


@pytest.mark.slow
def test_student_losses_fall_and_student_runs_as_encoder(teacher, tmp_path, data_root):
    result = train("contrastasc-student", tmp_path, data_root, "student", {"teacher": str(teacher)},
                   steps=14, batch_size=24, log_every=1, checkpoint_every=100, dataset_options=TINY_DATA)
    rows = losses(tmp_path / "student")
    for key in ("ce", "kd", "crd"):
        assert_falls(rows, key)
    student = result.export_path
    assert student.name == "student.safetensors" and student.with_suffix(".json").is_file()
    proc = cli("run", "--encoder", "contrastasc-cpm-6k", "--checkpoint", str(student), "--task", tiny_task(tmp_path),
               "--data-root", str(data_root), "--cache-dir", str(tmp_path / "c2"),
               "--results-dir", str(tmp_path / "results"), "--json", tmp=tmp_path)
    record = json.loads(proc.stdout)
    assert record["encoder"]["config"]["norm"] == "layer" and record["encoder"]["config"]["base_channels"] == 8
    assert len(record["scores"]) == 20


@pytest.mark.slow
def test_uamix_loss_falls_and_runs_as_encoder(tmp_path, data_root):
    # alpha 1000 pins λ near 0.5, so the virtual-label entropy (the loss floor) is the same every step
    result = train("uamix-mae", tmp_path, data_root, "ua", {"mixer_alpha": 1000.0}, steps=16, batch_size=24,
                   log_every=1, checkpoint_every=100, dataset_options=TINY_DATA)
    rows = losses(tmp_path / "ua")
    assert_falls(rows, "nnclr", k=4)
    assert {r["stage"] for r in rows} == {"1-head", "2-top-half"}
    assert all(0.45 < r["lam"] < 0.55 for r in rows)
    proc = cli("run", "--encoder", "uamix-mae", "--checkpoint", str(result.export_path), "--encoder-option",
               "num_heads=4", "--task", tiny_task(tmp_path), "--data-root", str(data_root),
               "--cache-dir", str(tmp_path / "c2"), "--results-dir", str(tmp_path / "results"), "--json", tmp=tmp_path)
    record = json.loads(proc.stdout)
    assert record["encoder"]["name"] == "uamix-mae" and record["encoder"]["config"]["architecture"]["depth"] == 2


# ------------------------------------------------------------------------------------------ kill + resume
KILL_CASES = {
    "contrastasc-teacher": {"head_steps": 3},                    # mixup on (the tiny config's alpha)
    "contrastasc-student": {},                                   # CRD memory + sampler
    "uamix-mae": {"head_steps": 3},                              # queue, top-k, T-CutMix, EMA
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(KILL_CASES))
def test_kill_then_resume_equals_uninterrupted(recipe, tmp_path, data_root, request):
    changes = dict(KILL_CASES[recipe])
    if recipe == "contrastasc-student":
        changes["teacher"] = str(request.getfixturevalue("teacher"))
    cfg = write_config(tmp_path / "k.yaml", recipe, changes, steps=9, batch_size=8, checkpoint_every=2,
                       keep_checkpoints=5, log_every=1, dataset_options=TINY_DATA, cache_dir=str(tmp_path / "cache"))
    base = ["train", recipe, "--config", str(cfg), "--data-root", str(data_root)]
    # The uninterrupted reference runs alongside the run we kill.
    ref = subprocess.Popen([sys.executable, "-m", "asc_bench", *base, "--out", str(tmp_path / "ref")],
                           env=env(tmp_path), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim_log = open(tmp_path / "victim.log", "w")
    victim = subprocess.Popen([sys.executable, "-m", "asc_bench", *base, "--out", str(tmp_path / "run")],
                              env=env(tmp_path), cwd=REPO, stdout=victim_log, stderr=subprocess.STDOUT)
    first = tmp_path / "run/checkpoints/step-00000002"
    deadline = time.monotonic() + 240
    while not first.is_dir() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    code = victim.wait()
    victim_log.close()
    assert code == -signal.SIGKILL, f"the run ended (exit {code}) before it could be killed:\n" + \
        (tmp_path / "victim.log").read_text()[-3000:]
    assert not (tmp_path / "run/export").exists()
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err
    cli(*base, "--out", str(tmp_path / "run"), "--resume", tmp=tmp_path)
    resumed = losses(tmp_path / "run")
    assert [r["step"] for r in resumed] == list(range(1, 10))       # no duplicated or missing lines
    for a_path in (tmp_path / "ref/export").rglob("*"):
        if a_path.suffix not in (".safetensors", ".pt"):
            continue
        a, b = tensors_of(a_path), tensors_of(tmp_path / "run/export" / a_path.relative_to(tmp_path / "ref/export"))
        assert a.keys() == b.keys()
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        assert not diff, f"{a_path.name}: {len(diff)} tensors differ after resume, e.g. {diff[:3]}"
