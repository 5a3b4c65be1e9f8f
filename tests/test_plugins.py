"""Plugins: a third-party package installed with pip, broken and clashing plugins, the documentation."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli

from asc_bench import hookspecs

LOCAL = str(REPO / "tests" / "plugins_local")


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """The example plugin pip-installed into its own folder; its entry point is found through PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(REPO / "tests" / "example_plugin")],
                   check=True, cwd=build, capture_output=True)
    return {"PYTHONPATH": str(target) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
def test_pip_installed_plugin_is_listed_and_runs(installed_example, demo_root, tmp_path):
    encoders = {e["name"]: e for e in json.loads(cli("list", "encoders", "--json", env=installed_example).stdout)}
    assert encoders["example-frame-energy"]["plugin"] == "example"
    plugins = {p["name"]: p for p in json.loads(cli("plugins", "--json", env=installed_example).stdout)}
    assert plugins["example"]["version"] == "asc-bench-example-plugin 0.0.1"
    assert plugins["example"]["hooks"] == ["register_encoders", "register_task_dirs"]
    tasks = {t["name"] for t in json.loads(cli("list", "tasks", "--json", env=installed_example).stdout)}
    assert "example-demo-3way" in tasks
    rec = json.loads(cli("run", "--encoder", "example-frame-energy", "--task", "example-demo-3way", "--data-root",
                         str(demo_root), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
                         "--json", env=installed_example).stdout)
    assert rec["encoder"]["name"] == "example-frame-energy" and rec["summary"]["n"] == 200
    # Without the package on the path the encoder is gone: it really came from the installed entry point.
    assert "example-frame-energy" not in cli("list", "encoders", "--json").stdout


@pytest.mark.slow
def test_broken_plugin_is_reported_and_the_rest_works():
    env = {"PYTHONPATH": LOCAL}
    proc = cli("--plugin", "broken_plugin", "plugins", "--json", env=env)
    rows = {p["name"]: p for p in json.loads(proc.stdout)}
    assert "broken on purpose" in rows["broken_plugin"]["error"]
    assert rows["baselines"]["error"] == ""
    listed = json.loads(cli("--plugin", "broken_plugin", "list", "encoders", "--json", env=env).stdout)
    assert "logmel-stats" in {e["name"] for e in listed}
    human = cli("plugins", env={**env, "ASC_BENCH_PLUGINS": "broken_plugin"}).stdout
    assert "FAILED" in human and "broken on purpose" in human


@pytest.mark.slow
def test_strict_mode_makes_a_broken_plugin_fatal():
    proc = cli("--plugin", "broken_plugin", "list", "encoders", env={"PYTHONPATH": LOCAL,
                                                                      "ASC_BENCH_STRICT_PLUGINS": "1"}, check=False)
    assert proc.returncode == 1 and "broken_plugin" in proc.stderr


@pytest.mark.slow
def test_name_clash_refuses_only_the_name_and_keeps_the_rest_of_both_plugins():
    env = {"PYTHONPATH": LOCAL}
    rows = {p["name"]: p for p in json.loads(cli("--plugin", "clashing_plugin", "plugins", "--json", env=env).stdout)}
    assert rows["clashing_plugin"]["error"] == "" and rows["baselines"]["error"] == ""
    [clash] = rows["clashing_plugin"]["clashes"]
    assert "encoder 'logmel-stats'" in clash and "'baselines' keeps it" in clash and "'clashing_plugin' is refused" in clash
    listed = {e["name"]: e for e in json.loads(cli("--plugin", "clashing_plugin", "list", "encoders", "--json",
                                                   env=env).stdout)}
    assert listed["logmel-stats"]["plugin"] == "baselines"           # first registration wins
    assert listed["logmel-stats"]["clash"] == "also registered by 'clashing_plugin' (refused)"
    assert listed["clash-own-encoder"]["plugin"] == "clashing_plugin"  # the rest of the later plugin works
    assert listed["clash-own-encoder"]["clash"] is None
    assert {"beats", "audiomae", "uamix-mae"} <= set(listed)                # and of the built-ins
    human = cli("--plugin", "clashing_plugin", "plugins", env=env).stdout
    assert "name refused" in human and "FAILED" not in human
    # Without a clash the listing has no clash column.
    assert "clash" not in json.loads(cli("list", "encoders", "--json").stdout)[0]


def test_every_hookspec_is_documented_with_its_exact_signature():
    text = (REPO / "CONTRIBUTING.md").read_text()
    specs = [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if hasattr(fn, "asc_bench_spec")]
    assert len(specs) >= 7
    for name, fn in specs:
        signature = f"def {name}{inspect.signature(fn)}"
        assert signature.replace("'", "") in text, f"CONTRIBUTING.md lacks `{signature}`"


def test_builtins_are_declared_as_entry_points():
    tomllib = pytest.importorskip("tomllib")

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["asc_bench"]
    plugins = {p["name"]: p for p in json.loads(cli("plugins", "--json").stdout)}
    for name, module in declared.items():
        assert plugins[name]["source"] == "entry point" and plugins[name]["module"] == module
        assert re.match(r"asc_bench_plugins(\.|$)", module)


@pytest.mark.slow
def test_hear_module_runs_as_an_encoder_without_a_plugin(demo_root, tmp_path):
    rec = json.loads(cli("run", "--encoder", "hear:hear_toy", "--task", "demo-5way1shot", "--param", "episodes=50",
                         "--data-root", str(demo_root), "--cache-dir", str(tmp_path / "c"),
                         "--results-dir", str(tmp_path / "r"), "--json", env={"PYTHONPATH": LOCAL}).stdout)
    assert rec["encoder"]["config"]["hear_module"] == "hear_toy" and rec["summary"]["n"] == 50
