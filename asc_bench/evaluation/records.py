"""The result record: one schema-versioned JSON file per run, written atomically."""
from __future__ import annotations

import json
import math
import platform
import re
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from asc_bench.atomic import atomic_write_json

SCHEMA = "asc-bench/result/1"
DEFAULT_RESULTS_DIR = Path("leaderboard") / "results"
_PACKAGES = ("asc-bench", "torch", "numpy", "scipy", "scikit-learn", "soundfile", "soxr", "pluggy")


def json_safe(obj: Any) -> Any:
    """Plain JSON: numpy scalars/arrays become Python values, NaN and infinities become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_filename(record: dict[str, Any]) -> str:
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s))
    stamp = record["timestamp"].replace(":", "").replace("-", "").replace(".", "")
    return f"{safe(record['task']['name'])}__{safe(record['encoder']['name'])}__seed{record['seed']}__{stamp}.json"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    path = Path(results_dir) / record_filename(record)
    atomic_write_json(path, json_safe(record))
    return path


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every valid record under `results_dir` (recursively), oldest first; other JSON is ignored."""
    records = []
    for path in sorted(Path(results_dir).rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            data["_path"] = str(path)
            records.append(data)
    return sorted(records, key=lambda r: (r["timestamp"], r["_path"]))
