"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

The temporary file is created next to the target with the process umask applied (mode 0666 & ~umask,
like any `open(path, "w")`), not 0600 as `tempfile.mkstemp` would: a cache or results folder shared
by a group must stay readable by the others. Temporary names start with `.` and end with `.tmp`
(`TEMP_SUFFIX`), so a file left by a kill mid-write can be recognised and is never taken for data.
"""
from __future__ import annotations

import io
import json
import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np

TEMP_SUFFIX = ".tmp"


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file `atomic_write_bytes` creates (and may leave behind)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _create_temp(path: Path) -> tuple[int, str]:
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:   # 48 random bits: practically never
            continue


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Write `data` to `path` through a temporary file and one rename. `fsync=False` skips the flush to
    disk, for content-addressed files that are cheap to recreate (one fsync per file would dominate
    writing 100k small ones)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
