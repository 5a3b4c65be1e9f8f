"""The identity of an encoder's weights when they do not come from `--checkpoint`.

A checkpoint file is identified by its sha256 (`BuiltEncoder.checkpoint_sha256`). Weights can also be
package data shipped with a plugin (`EncoderEntry.bundled_weights`), a Hugging Face hub snapshot
(identified by its resolved commit hash) or a `save_pretrained` folder (identified by the hash of its
content). `WeightsIdentity` names them in one shape: `id` keys the embedding cache and goes into the
result record, `files` lists the sha256 of each file that was hashed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from asc_bench.api import CheckpointError


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes (streamed; no torch): how checkpoints and weight files are named."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise CheckpointError(f"weights file {path} cannot be read ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class WeightsIdentity:
    source: str                     # "bundled", "hf-hub" or "hf-folder"
    id: str                         # "sha256:<hex>" (content) or "hf:<repo>@<commit>" (hub snapshot)
    files: Mapping[str, str] = field(default_factory=dict)   # file name -> sha256, for what was hashed

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "id": self.id, "files": dict(self.files)}


def content_sha256(files: Mapping[str, str]) -> str:
    """One sha256 over named file hashes; a single file's is its own sha256, so it can be checked by hand."""
    if len(files) == 1:
        return next(iter(files.values()))
    lines = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def files_identity(source: str, paths: Iterable[Path], root: Path | None = None) -> WeightsIdentity:
    """Hash each file; names are relative to `root` when given (a folder), else the file names."""
    files = {(p.relative_to(root).as_posix() if root is not None else p.name): sha256_file(p) for p in paths}
    return WeightsIdentity(source=source, id=f"sha256:{content_sha256(files)}", files=files)


def folder_identity(folder: Path, source: str = "hf-folder") -> WeightsIdentity:
    """The content hash of every file under `folder` (hidden files and folders, e.g. `.cache`, left out)."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return files_identity(source, paths, root=folder)
