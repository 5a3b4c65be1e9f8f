"""Where the shared reference fixtures are: ../shared/fixtures beside the checkout, or $ASC_BENCH_FIXTURES."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def fixtures_dir() -> Path:
    path = Path(os.environ.get("ASC_BENCH_FIXTURES") or Path(__file__).resolve().parents[1].parent / "shared" / "fixtures")
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"reference fixtures not found at {path} (CI must have ../shared beside the checkout)")
        pytest.skip(f"reference fixtures not found at {path}; set ASC_BENCH_FIXTURES")
    return path
