"""Shared fixtures: a demo dataset generated once per session, isolated cache and results folders."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo scenes, generated once and shared (tests pass it as --data-root)."""
    from asc_bench.api import DatasetRequest
    from asc_bench_plugins.datasets.demo import build_demo

    root = tmp_path_factory.mktemp("demo-data")
    build_demo(DatasetRequest(root=root, options={}, cache_dir=root))
    return root


@pytest.fixture
def dirs(tmp_path) -> dict[str, Path]:
    return {"cache": tmp_path / "cache", "results": tmp_path / "results"}


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600,
        subprocess_only: bool = False) -> subprocess.CompletedProcess:
    """Run `asc-bench ARGS` as a user would.

    In-process through click's runner (fast: torch is imported once) unless the call needs its own
    Python path, which only a fresh process can have.
    """
    if subprocess_only or (env and "PYTHONPATH" in env):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run([sys.executable, "-m", "asc_bench", *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=REPO)
    else:
        from click.testing import CliRunner

        from asc_bench.cli import cli as entry

        result = CliRunner().invoke(entry, list(args), env=env, catch_exceptions=False)
        proc = subprocess.CompletedProcess(["asc-bench", *args], result.exit_code, result.stdout, result.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"asc-bench {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_json(*args: str, env: dict[str, str] | None = None) -> dict:
    return json.loads(cli("run", *args, "--json", env=env).stdout)
