"""The result record: one schema-versioned JSON file per run, written atomically, read back verified.

Guarantees:
- Every record names what produced it: `encoder` holds the model identity (name, weights, options)
  and its human `label`; `provenance` holds the command line, the asc-bench version and git commit,
  host/CPU/GPU, torch threads and the plugin distributions that provided the encoder, dataset and
  protocol; `cell` holds the protocol params of this sweep cell.
- `integrity.sha256` is the sha256 of the record's canonical content (`canonical_bytes`: sorted-key
  compact JSON of everything except `integrity` and keys starting with "_"). JSON floats round-trip
  exactly, so the hash of a record read back equals the hash written.
- `load_records` is the ONE way compare and leaderboard read records: it checks the hash, that
  `summary` recomputes from `scores`, and the required fields, and raises `RecordError` naming every
  bad file (truncated JSON, edited score, missing field) instead of skipping it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from asc_bench.api import AscBenchError, UsageError
from asc_bench.atomic import atomic_write_json

SCHEMA = "asc-bench/result/2"
SCHEMA_PREFIX = "asc-bench/result/"
RESULTS_ENV = "ASC_BENCH_RESULTS"
_PACKAGES = ("asc-bench", "torch", "numpy", "scipy", "scikit-learn", "soundfile", "soxr", "pluggy")
# (path in the record, what it is for): a record lacking one is refused, naming file and field.
REQUIRED_FIELDS = ("task.name", "encoder.name", "encoder.label", "encoder.weights", "seed",
                   "protocol.params", "episode_hash", "scores", "summary.mean", "summary.n",
                   "integrity.sha256", "timestamp")
RANDOM_WEIGHTS = "random"


class RecordError(AscBenchError):
    """One or more result records cannot be used; the message names each file and the reason."""


def default_results_dir() -> Path:
    """`$ASC_BENCH_RESULTS`, else `<user data dir>/asc-bench/results` (platformdirs): the same folder
    whatever the current directory, so runs from anywhere land in one place."""
    env = os.environ.get(RESULTS_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("asc-bench")) / "results"


def results_dir_or_default(results_dir: str | Path | None) -> Path:
    return Path(results_dir).expanduser() if results_dir is not None else default_results_dir()


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


# ------------------------------------------------------------------------------------- integrity
def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The bytes the integrity hash covers: every field but `integrity` and private `_` keys."""
    body = {k: v for k, v in record.items() if k != "integrity" and not str(k).startswith("_")}
    return json.dumps(json_safe(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON-safe record with its `integrity` block (what `write_record` stores)."""
    clean = json_safe({k: v for k, v in record.items() if not str(k).startswith("_")})
    clean["integrity"] = {"sha256": record_hash(clean), "covers": "canonical JSON of every field "
                          "but 'integrity' (sorted keys, compact separators, UTF-8)"}
    return clean


# ------------------------------------------------------------------------------------- identity
def is_random(record: Mapping[str, Any]) -> bool:
    return record.get("encoder", {}).get("weights") == RANDOM_WEIGHTS


def identity_key(record: Mapping[str, Any]) -> str:
    """Name + weights + options: two records with the same key come from the same model."""
    enc = record.get("encoder", {})
    return json.dumps([enc.get("name"), enc.get("weights"), enc.get("options") or {}], sort_keys=True)


def display_label(record: Mapping[str, Any]) -> str:
    """The label as tables show it: random-weight models are always marked."""
    label = str(record.get("encoder", {}).get("label") or record.get("encoder", {}).get("name"))
    if is_random(record) and "random" not in label.lower():
        label += " (random init)"
    return label


def record_label(record: Mapping[str, Any]) -> str:
    """The label a record is listed under (set by load_records; derived for in-memory records)."""
    return str(record.get("_label") or display_label(record))


def check_labels(records: Sequence[Mapping[str, Any]], labels: Iterable[str] | None = None) -> None:
    """UsageError when one label names two model identities (among `labels`, or all records)."""
    by_label: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        by_label.setdefault(record_label(r), {}).setdefault(identity_key(r), r)
    wanted = set(by_label) if labels is None else set(labels)
    for label in sorted(wanted & set(by_label)):
        ids = by_label[label]
        if len(ids) < 2:
            continue
        lines = []
        for r in ids.values():
            enc = r["encoder"]
            lines.append(f"  {enc['name']} weights {enc['weights']} options "
                         f"{json.dumps(enc.get('options') or {}, sort_keys=True)}: {r.get('_path', '?')}")
        cmd = next((r.get("provenance", {}).get("command") for r in ids.values()
                    if r.get("provenance", {}).get("command")), None)
        how = (f" e.g. `{cmd} --label NEW-LABEL`" if cmd and cmd.startswith("asc-bench run ")
               and "--label" not in cmd else "")
        raise UsageError(f"label {label!r} names {len(ids)} different models:\n" + "\n".join(lines)
                         + f"\nGive one of them another label: re-run it with --label NEW-LABEL{how}, "
                           f"or move its record out of the results folder.")


# ------------------------------------------------------------------------------------- files
def _safe(s: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(s)).strip("_")


def cell_name(params: Mapping[str, Any]) -> str:
    """A readable name of a sweep cell: n_way/k_shot values plus a short hash of all params."""
    public = {k: v for k, v in params.items() if not str(k).startswith("_")}
    shown = [f"{k}={public[k]}" for k in ("n_way", "k_shot") if k in public]
    digest = hashlib.sha256(json.dumps(json_safe(public), sort_keys=True).encode()).hexdigest()[:6]
    return _safe("_".join(shown + [f"p{digest}"]))


def record_filename(record: Mapping[str, Any]) -> str:
    """`<task>__<label>__<cell>__seed<seed>__<timestamp>.json`: the file says which cell it holds."""
    stamp = record["timestamp"].replace(":", "").replace("-", "").replace(".", "")
    label = record["encoder"].get("label") or record["encoder"]["name"]
    return (f"{_safe(record['task']['name'])}__{_safe(label)}__"
            f"{cell_name(record['protocol'].get('params', {}))}__seed{record['seed']}__{stamp}.json")


def check_writable(folder: str | Path, what: str, option: str) -> Path:
    """Create `folder` and write-test it now, so a read-only or missing-permission folder fails in
    seconds with its path, not after hours of embedding."""
    import tempfile

    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".asc-bench-write-test."):
            pass
    except OSError as exc:
        raise UsageError(f"{what} {path} is not writable ({exc.strerror or exc}); fix its permissions "
                         f"or pass {option} DIR") from None
    return path


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    """Seal and write atomically; a failed write (disk full, permissions) names the path."""
    path = Path(results_dir) / record_filename(record)
    try:
        atomic_write_json(path, seal(record))
    except OSError as exc:
        raise AscBenchError(f"cannot write the result record {path}: {exc.strerror or exc}. Free space "
                            f"or pass --results-dir DIR; nothing was written.") from None
    return path


# ------------------------------------------------------------------------------------- loading
@dataclass
class BadRecord:
    path: str
    reason: str


@dataclass
class RecordSet:
    records: list[dict[str, Any]] = field(default_factory=list)   # verified, oldest first
    bad: list[BadRecord] = field(default_factory=list)


def _get(record: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = record
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def verify_record(record: Mapping[str, Any]) -> str | None:
    """Why the record cannot be used, or None when it is sound."""
    for f in REQUIRED_FIELDS:
        try:
            _get(record, f)
        except KeyError:
            return f"missing field '{f}'"
    want = record["integrity"]["sha256"]
    if record_hash(record) != want:
        return ("integrity hash mismatch: the file was edited or damaged after it was written "
                "(re-run the run that produced it)")
    scores = record["scores"]
    if not isinstance(scores, list) or not scores or not all(isinstance(s, (int, float)) for s in scores):
        return "field 'scores' must be a non-empty list of numbers"
    from asc_bench.evaluation import stats

    ci = stats.mean_ci(np.asarray(scores, dtype=np.float64))
    summary = record["summary"]
    checks = [("n", ci.n), ("mean", ci.mean)]
    if summary.get("formula") == ci.formula:
        checks += [("ci_low", ci.low), ("ci_high", ci.high)]
    for key, value in checks:
        have = summary.get(key)
        if have is None and not math.isfinite(value):
            continue
        if not isinstance(have, (int, float)) or not math.isclose(have, value, rel_tol=1e-9, abs_tol=1e-12):
            return f"summary.{key} = {have!r} does not recompute from the scores ({value!r})"
    return None


def read_records(results_dir: str | Path) -> RecordSet:
    """Every record file under `results_dir` (recursively), verified; bad files listed, not dropped.

    JSON files that are not records (no `schema` starting with asc-bench/result/) are ignored;
    unparseable files are reported, since a truncated record looks exactly like that.
    """
    out = RecordSet()
    root = Path(results_dir)
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            out.bad.append(BadRecord(str(path), f"cannot be read ({exc.strerror or exc})"))
            continue
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            out.bad.append(BadRecord(str(path), f"not valid JSON, truncated or damaged ({exc})"))
            continue
        if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
            continue
        if data["schema"] != SCHEMA:
            out.bad.append(BadRecord(str(path), f"schema {data['schema']!r} (this asc-bench reads "
                                                f"{SCHEMA!r}; re-run it)"))
            continue
        reason = verify_record(data)
        if reason:
            out.bad.append(BadRecord(str(path), reason))
            continue
        data["_path"] = str(path)
        data["_label"] = display_label(data)
        out.records.append(data)
    out.records.sort(key=lambda r: (r["timestamp"], r["_path"]))
    return out


def load_records(results_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The verified records under `results_dir` (default: `default_results_dir()`), oldest first,
    each with `_path` and `_label` (the display label). RecordError names every bad file."""
    root = results_dir_or_default(results_dir)
    found = read_records(root)
    if found.bad:
        lines = "\n".join(f"  {b.path}: {b.reason}" for b in found.bad)
        raise RecordError(f"{len(found.bad)} result record(s) in {root} cannot be used:\n{lines}\n"
                          f"Nothing corrupt is used: delete or move these files (or re-run the runs "
                          f"that wrote them) and try again.")
    return found.records
