"""Trustworthy runs: every record names the model that produced it, is sealed and verified on load,
and mistakes are caught before any audio is decoded."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, cli

LOCAL = str(Path(__file__).parent / "plugins_local")
sys.path.insert(0, LOCAL)
PLUGIN = ("--plugin", "weighted_plugin")
TASK = "demo-5way1shot"


def _run(demo_root: Path, base: Path, *args: str, check: bool = True):
    return cli(*PLUGIN, "run", "--task", TASK, "--param", "episodes=60", "--data-root", str(demo_root),
               "--cache-dir", str(base / "cache"), "--results-dir", str(base / "results"), *args, "--json",
               check=check)


@pytest.fixture(scope="module")
def two_models(demo_root, tmp_path_factory):
    """tiny-weighted with a checkpoint and with --random-init, plus logmel-stats, on one task."""
    base = tmp_path_factory.mktemp("records")
    ckpt = base / "w.npy"
    np.save(ckpt, np.random.default_rng(7).standard_normal((256, 16)).astype(np.float32))
    recs = {
        "ckpt": json.loads(_run(demo_root, base, "--encoder", "tiny-weighted", "--checkpoint", str(ckpt)).stdout),
        "random": json.loads(_run(demo_root, base, "--encoder", "tiny-weighted", "--random-init").stdout),
        "logmel": json.loads(_run(demo_root, base, "--encoder", "logmel-stats").stdout),
    }
    return base, ckpt, recs


def _compare(base: Path, *args: str, check: bool = True):
    return cli(*PLUGIN, "compare", "--task", TASK, "--results-dir", str(base / "results"), *args, check=check)


def test_checkpoint_and_random_init_are_two_labelled_rows_and_random_is_marked(two_models, tmp_path):
    base, ckpt, recs = two_models
    import hashlib

    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert recs["ckpt"]["encoder"]["weights"] == f"sha256:{sha}"
    assert recs["ckpt"]["encoder"]["label"] == f"tiny-weighted@{sha[:6]}"
    assert recs["random"]["encoder"]["label"] == "tiny-weighted (random init)"
    assert recs["random"]["encoder"]["random_init"] is True
    assert recs["ckpt"]["embedding"]["cache_key"] != recs["random"]["embedding"]["cache_key"]

    # The bare encoder name is ambiguous now: exit 2, and the suggested command works as given.
    proc = _compare(base, "tiny-weighted", "logmel-stats", check=False)
    assert proc.returncode == 2 and "tiny-weighted (random init)" in proc.stderr
    suggested = proc.stderr.split("`")[1]
    argv = shlex.split(suggested)
    assert argv[:2] == ["asc-bench", "compare"]
    out = json.loads(cli(*PLUGIN, *argv[1:], "--results-dir", str(base / "results"), "--json").stdout)
    assert sorted(out["encoders"]) == sorted([recs["ckpt"]["encoder"]["label"], "tiny-weighted (random init)"])

    table = tmp_path / "lb.md"
    cli(*PLUGIN, "leaderboard", "--results-dir", str(base / "results"), "--out", str(table))
    rows = [line for line in table.read_text().splitlines() if line.startswith("| tiny-weighted")]
    assert len(rows) == 2
    assert sum("(random init)" in row for row in rows) == 1


def test_a_custom_label_naming_two_models_is_an_error_saying_how_to_pick(two_models, demo_root, tmp_path):
    base, ckpt, _ = two_models
    for args in (("--encoder", "logmel-stats"), ("--encoder", "tiny-weighted", "--checkpoint", str(ckpt))):
        _run(demo_root, tmp_path, *args, "--label", "mine")
    proc = cli(*PLUGIN, "leaderboard", "--results-dir", str(tmp_path / "results"), "--out",
               str(tmp_path / "lb.md"), check=False)
    assert proc.returncode == 2
    assert "label 'mine' names 2 different models" in proc.stderr and "--label NEW-LABEL" in proc.stderr


def test_a_tampered_record_is_refused_by_compare_and_leaderboard_naming_the_file(two_models, tmp_path):
    base, _, recs = two_models
    folder = tmp_path / "results"
    folder.mkdir()
    files = {json.loads(p.read_text())["integrity"]["sha256"]: p for p in (base / "results").glob("*.json")}
    for name in ("ckpt", "logmel"):
        p = files[recs[name]["integrity"]["sha256"]]
        (folder / p.name).write_bytes(p.read_bytes())
    victim = folder / files[recs["ckpt"]["integrity"]["sha256"]].name
    data = json.loads(victim.read_text())
    data["scores"][0] = 1.0 if data["scores"][0] != 1.0 else 0.0
    victim.write_text(json.dumps(data))

    labels = (recs["ckpt"]["encoder"]["label"], "logmel-stats")
    proc = cli(*PLUGIN, "compare", "--task", TASK, *labels, "--results-dir", str(folder), check=False)
    assert proc.returncode == 1 and victim.name in proc.stderr and "integrity hash mismatch" in proc.stderr
    proc = cli("leaderboard", "--results-dir", str(folder), "--out", str(tmp_path / "lb.md"), check=False)
    assert proc.returncode == 1 and victim.name in proc.stderr
    assert not (tmp_path / "lb.md").exists()


def test_summary_must_recompute_from_scores_even_with_a_resealed_hash(two_models, tmp_path):
    from asc_bench.evaluation.records import RecordError, load_records, seal

    _, _, recs = two_models
    forged = dict(recs["logmel"])
    forged["scores"] = [0.0] + forged["scores"][1:]          # the summary still claims the old mean
    (tmp_path / "forged.json").write_text(json.dumps(seal(forged)))
    with pytest.raises(RecordError, match=r"forged\.json: summary\.mean .* does not recompute"):
        load_records(tmp_path)


def test_truncated_and_incomplete_records_are_reported_not_dropped(two_models, tmp_path):
    from asc_bench.evaluation.records import RecordError, load_records, seal

    _, _, recs = two_models
    text = json.dumps(recs["logmel"])
    (tmp_path / "truncated.json").write_text(text[: len(text) // 2])
    no_hash = {k: v for k, v in recs["logmel"].items() if k != "episode_hash"}
    (tmp_path / "no-episode-hash.json").write_text(json.dumps(seal(no_hash)))
    (tmp_path / "unrelated.json").write_text('{"something": "else"}')
    with pytest.raises(RecordError) as info:
        load_records(tmp_path)
    msg = str(info.value)
    assert "truncated.json: not valid JSON" in msg
    assert "no-episode-hash.json: missing field 'episode_hash'" in msg
    assert "unrelated.json" not in msg


def test_sweep_cells_are_named_in_files_and_selected_with_param(demo_root, tmp_path):
    for enc in ("logmel-stats",):
        cli("run", "--encoder", enc, "--task", TASK, "--n-way", "3,5", "--param", "episodes=40",
            "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"))
    cli(*PLUGIN, "run", "--encoder", "tiny-weighted", "--random-init", "--task", TASK, "--n-way", "3,5",
        "--param", "episodes=40", "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"),
        "--results-dir", str(tmp_path / "r"))
    names = sorted(p.name for p in (tmp_path / "r").glob("*.json"))
    assert sum("n_way=3" in n for n in names) == 2 and sum("n_way=5" in n for n in names) == 2

    proc = cli(*PLUGIN, "compare", "--task", TASK, "logmel-stats", "tiny-weighted", "--results-dir",
               str(tmp_path / "r"), check=False)
    assert proc.returncode == 2 and "2 sweep cells" in proc.stderr and "--param n_way=3" in proc.stderr
    argv = shlex.split(proc.stderr.split("`")[1])
    out = json.loads(cli(*PLUGIN, *argv[1:], "--results-dir", str(tmp_path / "r"), "--json").stdout)
    assert out["pairs"][0]["n"] == 40
    for way in (3, 5):
        out = json.loads(cli(*PLUGIN, "compare", "--task", TASK, "logmel-stats", "tiny-weighted", "--param",
                             f"n_way={way}", "--results-dir", str(tmp_path / "r"), "--json").stdout)
        assert out["pairs"][0]["n"] == 40


def test_compare_with_an_unknown_model_exits_2_with_did_you_mean(two_models):
    base, _, _ = two_models
    proc = _compare(base, "logmel-stat", "tiny-weighted (random init)", check=False)
    assert proc.returncode == 2 and "Did you mean: logmel-stats" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (("--param", "n_way=13"), "n_way"),                   # 13 ways on the 12 demo classes
    (("--param", "k_shot=12"), "fewer clips than 12 support + 5 query"),   # 16 clips per class
    (("--param", "n_wya=5"), "does not know param(s) ['n_wya']"),
    (("--n-way", "5,abc"), "n_way"),
])
def test_bad_protocol_params_fail_before_any_audio_is_decoded(demo_root, tmp_path, args, message, monkeypatch):
    import asc_bench.embedding.extract as extract

    def no_decoding(*a, **k):
        raise AssertionError("audio was decoded before the pre-checks failed")

    monkeypatch.setattr(extract, "load_clip", no_decoding)
    proc = cli("run", "--encoder", "logmel-stats", "--task", TASK, "--data-root", str(demo_root),
               "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not list((tmp_path / "c").rglob("*.npy")) and not (tmp_path / "c" / "models").exists()


def test_an_unwritable_results_folder_fails_before_any_audio_is_decoded(demo_root, tmp_path, monkeypatch):
    import asc_bench.embedding.extract as extract

    monkeypatch.setattr(extract, "load_clip", lambda *a, **k: pytest.fail("audio was decoded"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    proc = cli("run", "--encoder", "logmel-stats", "--task", TASK, "--data-root", str(demo_root),
               "--cache-dir", str(tmp_path / "c"), "--results-dir", str(blocker / "results"), check=False)
    assert proc.returncode == 2 and f"results folder {blocker / 'results'} is not writable" in proc.stderr
    assert not list((tmp_path / "c").rglob("*.npy"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_fails_before_any_audio_is_decoded(demo_root, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    proc = cli("run", "--encoder", "logmel-stats", "--task", TASK, "--data-root", str(demo_root),
               "--cache-dir", str(tmp_path / "c"), "--results-dir", str(ro), check=False)
    assert proc.returncode == 2 and str(ro) in proc.stderr
    assert not list((tmp_path / "c").rglob("*.npy"))


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    proc = cli("compare", "--task", TASK, "a", "b", "--results-dir", str(tmp_path), "--debug", check=False)
    assert proc.returncode == 1 and "no result records" in proc.stderr
    assert "Traceback" in proc.stderr


def test_default_results_folder_is_stable_and_env_overrides_it(demo_root, tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "ASC_BENCH_RESULTS": ""}
    cli("run", "--encoder", "logmel-stats", "--task", TASK, "--param", "episodes=20", "--data-root",
        str(demo_root), "--cache-dir", str(tmp_path / "c"), env=env)
    assert len(list((tmp_path / "xdg" / "asc-bench" / "results").glob("*.json"))) == 1
    env["ASC_BENCH_RESULTS"] = str(tmp_path / "mine")
    cli("run", "--encoder", "logmel-stats", "--task", TASK, "--param", "episodes=20", "--data-root",
        str(demo_root), "--cache-dir", str(tmp_path / "c"), env=env)
    assert len(list((tmp_path / "mine").glob("*.json"))) == 1


def test_provenance_names_command_versions_plugins_and_host(two_models):
    _, _, recs = two_models
    prov = recs["ckpt"]["provenance"]
    assert prov["command"].startswith("asc-bench ") or prov["command"]
    assert prov["asc_bench_version"] == recs["ckpt"]["asc_bench_version"]
    assert prov["plugins"]["encoder"].startswith("weighted_plugin")
    assert prov["plugins"]["dataset"].startswith("asc-bench ") and prov["plugins"]["protocol"].startswith("asc-bench ")
    assert prov["host"] and prov["cpu_count"] >= 1
    if (REPO / ".git").exists():
        assert len(prov["git"]["commit"]) == 40


def test_plugin_version_and_weights_enter_the_cache_key():
    from asc_bench.runner import ModelIdentity, embedding_key
    from asc_bench.tasks import TaskSpec

    spec = TaskSpec(name="t", dataset="demo", protocol="fewshot-prototype")
    a = ModelIdentity("enc", "none", {}, "pkg 1.0", "enc")
    keys = {embedding_key(i, spec, "fp") for i in (
        a, ModelIdentity("enc", "none", {}, "pkg 1.1", "enc"), ModelIdentity("enc", "random", {}, "pkg 1.0", "x"),
        ModelIdentity("enc", "none", {"layer": "3"}, "pkg 1.0", "enc"))}
    assert len(keys) == 4
    assert embedding_key(ModelIdentity("enc", "none", {}, "pkg 1.0", "another label"), spec, "fp") == \
        embedding_key(a, spec, "fp")          # the label is a name, not part of the identity


def _fresh_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": LOCAL, **env}, cwd=REPO, timeout=600)


RUN_AND_REPORT = """
import json, sys
from asc_bench.cli import cli
sys.argv = ["asc-bench", *{args!r}]
try:
    cli(prog_name="asc-bench")
except SystemExit as exc:
    assert not exc.code, exc.code
print("MODULES", json.dumps(sorted(m for m in sys.modules if m == "torch" or m.startswith("weighted_impl"))))
"""


@pytest.mark.slow
def test_a_fully_cached_run_builds_no_encoder_and_imports_no_torch(two_models, demo_root):
    base, ckpt, _ = two_models
    args = [*PLUGIN, "run", "--encoder", "tiny-weighted", "--checkpoint", str(ckpt), "--task", TASK,
            "--param", "episodes=60", "--data-root", str(demo_root), "--cache-dir", str(base / "cache"),
            "--results-dir", str(base / "results-cached"), "--json"]
    proc = _fresh_python(RUN_AND_REPORT.format(args=args), {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.rsplit("MODULES", 1)[1])
    record = json.loads(proc.stdout.rsplit("MODULES", 1)[0])
    assert record["embedding"]["cache_hit"] is True
    assert "weighted_impl" not in modules            # the encoder's module was never imported
    baseline = _fresh_python("import sys\nfrom asc_bench.plugins import get_manager\nget_manager()\n"
                             "print('torch' in sys.modules)", {})
    if baseline.stdout.strip() == "True":
        pytest.skip("loading the built-in plugins imports torch on this branch (lazy registration is "
                    "issue 15's start-up work); the runner's own path is checked above")
    assert "torch" not in modules
    assert "| torch\n" not in proc.stderr and not any(line.rstrip().endswith("| torch")
                                                      for line in proc.stderr.splitlines())


RUNNER_ONLY = """
import json, sys
import asc_bench.plugins as plugins
every = plugins._candidates
# Only the built-in dataset and protocol plugins, and the test encoder: the runner's own imports.
plugins._candidates = lambda extra: [c for c in every(extra) if c[1] != "entry point"
                                     or c[0] in ("datasets", "protocols")]
from asc_bench.runner import run_task
record = run_task("tiny-weighted", {task!r}, plugins=["weighted_plugin"], checkpoint={ckpt!r},
                  data_root={data!r}, cache_dir={cache!r}, write=False, overrides={{"episodes": 60}})
print(json.dumps([record["embedding"]["cache_hit"], "torch" in sys.modules, "weighted_impl" in sys.modules]))
"""


@pytest.mark.slow
def test_the_runner_imports_no_torch_when_every_embedding_is_cached(two_models, demo_root):
    base, ckpt, _ = two_models
    code = RUNNER_ONLY.format(task=str(REPO / "tasks" / f"{TASK}.yaml"), ckpt=str(ckpt), data=str(demo_root),
                              cache=str(base / "cache"))
    proc = _fresh_python(code, {})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == [True, False, False]
    assert not any(line.rstrip().endswith("| torch") for line in proc.stderr.splitlines())


def _listing(per_class: int, n_classes: int, splits=None):
    from asc_bench.api import Clip, ListingInfo

    clips = [Clip(path=f"/x/{c}-{i}.wav", label=f"c{c}", split=None if splits is None else splits[i % len(splits)])
             for c in range(n_classes) for i in range(per_class)]
    return ListingInfo.from_clips(clips)


@pytest.mark.parametrize("protocol, params, splits, message", [
    ("fewshot-prototype", {"n_way": 12, "k_shot": 1, "n_query": 5, "episodes": 100}, None, "n_way"),
    ("fewshot-prototype", {"n_way": 5, "k_shot": 1, "n_query": 5, "episodes": 0}, None, "episodes"),
    ("fewshot-logistic", {"k_shot": 8}, None, "fewer clips than 8 support"),
    ("fewshot-logistic", {"k_shot": 1, "draws": -1}, None, "episodes"),
    ("linear-probe", {"folds": "official"}, None, "split/fold name on every clip"),
    ("linear-probe", {"Cs_typo": [1.0]}, ["1", "2"], "does not know param"),
    ("knn", {"k": 0}, ["1", "2"], "positive integer"),
    ("knn", {"folds": {"train": ["1"], "test": ["9"]}}, ["1", "2"], "no clip has"),
])
def test_builtin_protocol_checks_refuse_infeasible_cells_from_the_listing(protocol, params, splits, message):
    from asc_bench.api import AscBenchError
    from asc_bench.plugins import get_manager

    entry = get_manager().get("protocols", protocol)
    info = _listing(8, 10, splits)                       # 10 classes, 8 clips each
    with pytest.raises(AscBenchError, match=message):
        entry.check(info, params, 0)
    ok = {"fewshot-prototype": {"n_way": 5, "k_shot": 1, "n_query": 5, "episodes": 100},
          "fewshot-logistic": {"k_shot": 2}, "linear-probe": {}, "knn": {}}[protocol]
    entry.check(_listing(8, 10, ["1", "2"]), ok, 0)      # a feasible cell passes


def test_a_hear_module_version_enters_the_identity_without_importing_it(tmp_path, monkeypatch):
    from asc_bench.plugins import get_manager
    from asc_bench.runner import resolve_identity

    (tmp_path / "hear_probe_mod.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = resolve_identity(get_manager(), "hear:hear_probe_mod")
    assert "hear_probe_mod" not in sys.modules
    (tmp_path / "hear_probe_mod.py").write_text("raise RuntimeError('edited')\n")
    second = resolve_identity(get_manager(), "hear:hear_probe_mod")
    assert first.plugin != second.plugin and first.plugin.startswith("hear_probe_mod source sha256:")


def test_a_failed_record_write_names_the_path(tmp_path, monkeypatch):
    import errno

    import asc_bench.evaluation.records as records
    from asc_bench.api import AscBenchError

    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "atomic_write_json", disk_full)
    record = {"timestamp": "2026-01-01T00:00:00.000000Z", "task": {"name": "t"}, "seed": 0,
              "encoder": {"name": "e", "label": "e"}, "protocol": {"params": {"n_way": 5}}}
    with pytest.raises(AscBenchError, match=rf"{tmp_path}/t__e__n_way=5_p\w+__seed0__\w+\.json: No space left"):
        records.write_record(record, tmp_path)
