"""Shared helpers for the official-layout adapters: finding the dataset folder, reading metadata text
(LF/CRLF, UTF-8 BOM), matching columns by header name, checking audio exists without reading it, and
the precise `LayoutError` / `UsageError` messages every adapter gives.

Listing must stay fast for 150k-row datasets, so paths are handled as plain strings (no per-row
`Path`) and existence is checked against one `os.scandir` per audio folder.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from asc_bench.api import Clip, LayoutError, UsageError
from asc_bench.data.listing import missing_audio_policy

DOCS = "see the expected layout in asc-bench's docs/datasets.md, section '{}'"
FIRST_FEW = 5


def hint(section: str) -> str:
    return DOCS.format(section)


# ------------------------------------------------------------------------------------------ options
def check_options(options: Mapping[str, Any], allowed: Iterable[str], dataset: str) -> dict[str, Any]:
    opts = dict(options or {})
    allowed = tuple(allowed)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise UsageError(f"dataset '{dataset}': unknown option(s) {unknown}; valid options: {valid}")
    return opts


def opt_bool(opts: Mapping[str, Any], key: str, default: bool, dataset: str) -> bool:
    """A boolean option; strings from the command line ('true', '0', ...) are accepted too."""
    value = opts.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"dataset '{dataset}': option '{key}' must be true or false, got {value!r}")


def opt_choice(opts: Mapping[str, Any], key: str, choices: Sequence[str], default: str, dataset: str) -> str:
    value = str(opts.get(key, default))
    if value not in choices:
        raise UsageError(f"dataset '{dataset}': option '{key}' must be one of {', '.join(choices)}, "
                         f"got {value!r}")
    return value


def opt_list(opts: Mapping[str, Any], key: str, choices: Sequence[str] | None, default: Sequence[str],
             dataset: str) -> list[str]:
    """A list option, given as a YAML list or a comma-separated string; checked against `choices`."""
    value = opts.get(key, default)
    items = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    items = [v for v in items if v]
    if not items:
        raise UsageError(f"dataset '{dataset}': option '{key}' must not be empty")
    if choices is not None:
        bad = [v for v in items if v not in choices]
        if bad:
            raise UsageError(f"dataset '{dataset}': option '{key}' has unknown value(s) {bad}; valid: "
                             f"{', '.join(choices)}")
    return items


# ------------------------------------------------------------------------------------------ folders
def require_root(root: Any, dataset: str) -> str:
    if root is None:
        raise UsageError(f"dataset '{dataset}' needs its files: pass --data-root PATH (the unpacked "
                         f"official folder or its parent), or set $ASC_BENCH_DATA")
    path = os.path.abspath(os.fspath(root))
    if not os.path.isdir(path):
        raise LayoutError(f"dataset '{dataset}': data root {path} does not exist or is not a folder")
    return path


def locate(root: str, marker: str, folder_names: Sequence[str], dataset: str, section: str,
           what: str = "metadata file") -> str:
    """The folder holding `marker` (a relative path): `root` itself, an official folder name inside
    it, or any single immediate subfolder (the user may have renamed the unpacked folder)."""
    for base in [root] + [os.path.join(root, n) for n in folder_names]:
        if os.path.exists(os.path.join(base, marker)):
            return base
    found = []
    with os.scandir(root) as it:
        for entry in it:
            if entry.is_dir() and os.path.exists(os.path.join(entry.path, marker)):
                found.append(entry.path)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise LayoutError(f"dataset '{dataset}': several folders under {root} hold {marker}: "
                          f"{', '.join(sorted(found))}; pass one of them as --data-root")
    alt = f" (or {os.path.join(root, folder_names[0], marker)} when --data-root is its parent folder)" \
        if folder_names else ""
    raise LayoutError(f"dataset '{dataset}': {what} not found: expected {os.path.join(root, marker)}"
                      f"{alt}; {hint(section)}")


def first_existing(candidates: Sequence[str]) -> str | None:
    for c in candidates:
        if os.path.exists(c):
            return c
    return None


def missing_file(dataset: str, expected: str | Sequence[str], section: str, what: str = "metadata file"
                 ) -> LayoutError:
    names = [expected] if isinstance(expected, str) else list(expected)
    shown = names[0] if len(names) == 1 else " or ".join(names)
    return LayoutError(f"dataset '{dataset}': {what} not found: expected {shown}; {hint(section)}")


# ------------------------------------------------------------------------------------------ metadata text
def read_lines(path: str, dataset: str, section: str) -> list[str]:
    """Lines of a text file without line endings; LF or CRLF, optional UTF-8 BOM."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:   # universal newlines drop the \r
            text = f.read()
    except FileNotFoundError:
        raise missing_file(dataset, path, section) from None
    except UnicodeDecodeError as exc:
        raise LayoutError(f"dataset '{dataset}': {path} is not UTF-8 text ({exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclass
class Table:
    """Rows of a delimited metadata file. `columns` maps a header name to its index."""

    path: str
    columns: dict[str, int]
    rows: list[list[str]]
    line_numbers: list[int]     # 1-based line of each row, for file:line messages
    has_header: bool

    def index(self, name: str, dataset: str, section: str, aliases: Sequence[str] = ()) -> int:
        for key in (name, *aliases):
            if key in self.columns:
                return self.columns[key]
        raise LayoutError(f"dataset '{dataset}': {self.path} has no column '{name}' (header: "
                          f"{', '.join(self.columns) or 'none'}); {hint(section)}")

    def required(self, names: Sequence[str], dataset: str, section: str) -> list[int]:
        """Indices of the named columns; every row must reach the last of them (else file:line)."""
        idx = [self.index(n, dataset, section) for n in names]
        need = max(idx) + 1
        short = next((r for r, row in enumerate(self.rows) if len(row) < need), None)
        if short is not None:
            raise malformed(dataset, self.where(short), f"expected {len(self.columns)} fields "
                            f"({', '.join(self.columns)}), got {len(self.rows[short])}", section)
        return idx

    def optional(self, name: str) -> int | None:
        return self.columns.get(name)

    def where(self, row: int) -> str:
        return f"{self.path}:{self.line_numbers[row]}"


def read_table(path: str, delimiter: str, dataset: str, section: str, *, header: str | None,
               default_columns: Sequence[str] = (), min_fields: int = 1) -> Table:
    """Read a delimited file.

    header: None = no header line (columns are `default_columns` by position); otherwise a column name
    the header line must contain (anywhere: later versions reorder and add columns); a first line
    without it is read as data with `default_columns` (some copies drop the header). Blank lines are skipped. A row with fewer
    than `min_fields` fields (or fewer fields than a header-less layout needs) is a malformed row.
    """
    lines = read_lines(path, dataset, section)
    if delimiter == "," and any('"' in line for line in lines):   # quoted fields: let csv parse them
        rows = [next(csv.reader([line])) if '"' in line else line.split(",") for line in lines]
    else:
        rows = [line.split(delimiter) for line in lines]
    numbers = list(range(1, len(rows) + 1))
    keep = [i for i, r in enumerate(rows) if len(r) > 1 or r[0].strip()]
    if len(keep) != len(rows):   # blank lines: drop them but keep each row's true line number
        rows, numbers = [rows[i] for i in keep], [numbers[i] for i in keep]
    has_header = bool(rows) and header is not None and header in {f.strip() for f in rows[0]}
    if has_header:
        columns = {n.strip(): i for i, n in enumerate(rows[0]) if n.strip()}
        rows, numbers = rows[1:], numbers[1:]
    else:
        columns = {n: i for i, n in enumerate(default_columns)}
    need = max(min_fields, 1)
    short = next((i for i, r in enumerate(rows) if len(r) < need), None)
    if short is not None:
        line = delimiter.join(rows[short])
        raise LayoutError(f"dataset '{dataset}': malformed row at {path}:{numbers[short]}: expected at least "
                          f"{need} {_delim_name(delimiter)}-separated fields, got {len(rows[short])}: "
                          f"{line[:200]!r}; {hint(section)}")
    return Table(path=path, columns=columns, rows=rows, line_numbers=numbers, has_header=has_header)


def split_fields(line: str, delimiter: str) -> list[str]:
    if delimiter == "," and '"' in line:   # quoted CSV field (commas inside a licence or label)
        return next(csv.reader([line]))
    return line.split(delimiter)


def _delim_name(delimiter: str) -> str:
    return {"\t": "TAB", ",": "comma", " ": "space", ";": "semicolon"}.get(delimiter, repr(delimiter))


def malformed(dataset: str, where: str, why: str, section: str) -> LayoutError:
    return LayoutError(f"dataset '{dataset}': malformed row at {where}: {why}; {hint(section)}")


# ------------------------------------------------------------------------------------------ audio existence
class DirIndex:
    """Names in each folder, one `os.scandir` per folder (far faster than a stat per file)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def names(self, folder: str) -> frozenset[str]:
        got = self._names.get(folder)
        if got is None:
            try:
                with os.scandir(folder) as it:
                    got = frozenset(e.name for e in it)
            except (FileNotFoundError, NotADirectoryError):
                got = frozenset()
            self._names[folder] = got
        return got

    def exists(self, path: str) -> bool:
        folder, _, name = path.rpartition(os.sep)
        return name in self.names(folder)


def check_audio(dataset: str, paths: Sequence[str], listed_in: str, section: str,
                index: DirIndex | None = None) -> None:
    """Raise one LayoutError counting every listed clip whose audio file is absent, unless the run
    skips bad audio (`--on-bad-audio skip`): then missing files stay listed and decoding reports
    each one by name as skipped."""
    index = index or DirIndex()
    missing = []
    folder, names = None, frozenset()
    for p in paths:   # clips of one folder come in runs: look the folder's name set up once per run
        d, _, name = p.rpartition(os.sep)
        if d != folder:
            folder, names = d, index.names(d)
        if name not in names:
            missing.append(p)
    if missing and missing_audio_policy() != "skip":
        shown = ", ".join(missing[:FIRST_FEW]) + (", ..." if len(missing) > FIRST_FEW else "")
        raise LayoutError(f"dataset '{dataset}': {len(missing)} of {len(paths)} clips listed in {listed_in} "
                          f"have no audio file; first few: {shown}. Unpack every audio archive into the "
                          f"official folders; {hint(section)}")


def sorted_clips(clips: list[Clip], base: str) -> list[Clip]:
    """Clips in order of their path relative to `base`, so every machine lists the same order
    whatever the metadata row order or the file system's directory order. (All paths share the
    `base` prefix, so sorting the absolute paths gives that order.)"""
    return sorted(clips, key=_path_of)


def _path_of(clip: Clip) -> str:
    return clip.path


def join(base: str, rel: str) -> str:
    """`base/rel` for a metadata path written with '/' (or '\\' in hand-made copies)."""
    if "\\" in rel or rel[:1] in ("/", " ") or rel[-1:] == " ":
        rel = rel.strip().replace("\\", "/").lstrip("/")
    return base + os.sep + rel.replace("/", os.sep) if os.sep != "/" else base + "/" + rel
