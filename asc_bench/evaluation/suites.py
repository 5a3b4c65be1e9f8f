"""Benchmark suites: a named grid of (model, task) cells and the published numbers to compare with.

A suite is a YAML file. Built-ins live in the `suites/` folder (package `asc_bench_suites`); plugins
contribute more with the `register_suite_dirs` hook, exactly like task dirs. Format::

    name: uamix-table2                     # required, unique across all suite dirs
    description: ...
    source: "paper, table"                 # where the grid comes from
    tasks:                                 # required: the columns
      - task: esc50-5way1shot              # a registered task name (or a YAML path)
        label: ESC-50                      # column label (default: the task name)
        params: {n_way: 5}                 # optional protocol overrides
        sweep: {n_way: [5, 10], k_shot: [1, 5]}   # optional: one column per combination
    models:                                # the rows (may be empty: give --model on the CLI)
      - label: AudioMAE                    # row label, unique
        encoder: audiomae                  # registered encoder name
        checkpoint: ${ASC_BENCH_WEIGHTS}/pretrained.pth   # a path, `random` or `none`
        options: {}                        # encoder options
        compare_to: AudioMAE               # published row to check against (default: the label)
        note: "..."
    published:                             # optional: numbers from the papers
      - model: AudioMAE                    # row name as printed in the paper
        source: "uaMix-MAE Table 2"        # where the number is printed
        kind: value                        # value (accuracy %) or gain (points over `over`)
        over: "..."                        # for kind gain: the row the gain is measured against
        params: 50M                        # optional parameter count as reported
        n: 600                             # episodes behind the published CI, if stated or assumed
        ci_method: ericsson                # how the published CI was computed (see CI_METHODS)
        unverified: ["..."]                # what about this row is not verified
        values: {ESC-50: [61.1, 0.9], SCv2: 30.4}   # column label -> value or [value, ci half-width]

Guarantees: unknown fields are errors naming the file and the field; a column label, row label or
published (model, kind) appears once; every published value names a column of the suite; the cells of a
suite come out in a fixed order (models, then columns, as written), so progress and tables are stable.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence


from asc_bench.api import UsageError
from asc_bench.tasks import discover_yaml_specs, load_yaml_spec, resolve_yaml_spec

SUITE_FIELDS = ("name", "description", "source", "tasks", "models", "published", "unverified")
TASK_FIELDS = ("task", "label", "params", "sweep")
MODEL_FIELDS = ("label", "encoder", "checkpoint", "options", "compare_to", "note")
PUBLISHED_FIELDS = ("model", "source", "kind", "over", "params", "n", "ci_method", "unverified", "values")
KINDS = ("value", "gain")

# How a published CI was computed. Ericsson et al. 2021 (the evaluation code the uaMix-MAE paper follows):
# 600 episodes, half-width 1.96 * sigma / sqrt(n) with the population standard deviation (ddof = 0).
CI_METHODS = {
    "ericsson": "1.96·σ/√n with σ the population standard deviation (ddof=0) over the episodes "
                "(Ericsson et al. 2021 evaluation code)",
    "none": "no interval published",
}
RANDOM, NONE = "random", "none"


@dataclass(frozen=True)
class SuiteColumn:
    task: str
    label: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.task}|{json.dumps(dict(self.params), sort_keys=True, default=str)}"


@dataclass(frozen=True)
class SuiteModel:
    label: str
    encoder: str
    checkpoint: str | None = None           # a path (env vars and ~ expanded at use), or None
    random_init: bool = False
    options: Mapping[str, str] = field(default_factory=dict)
    compare_to: str | None = None
    note: str = ""

    def checkpoint_path(self) -> Path | None:
        """The checkpoint with `${VAR}` and `~` expanded; a UsageError names an unset variable."""
        if self.checkpoint is None:
            return None
        missing = [v for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", self.checkpoint) if v not in os.environ]
        if missing:
            raise UsageError(f"model '{self.label}': checkpoint {self.checkpoint} needs ${missing[0]} (the folder "
                             f"holding the weights; see `asc-bench list weights`), or replace the suite's "
                             f"models with --model LABEL=ENCODER:CHECKPOINT")
        return Path(os.path.expandvars(self.checkpoint)).expanduser()

    @property
    def weights(self) -> str:
        return RANDOM if self.random_init else (self.checkpoint or NONE)


@dataclass(frozen=True)
class Published:
    model: str
    values: Mapping[str, tuple[float, float | None]]    # column label -> (value %, CI half-width % or None)
    source: str = ""
    kind: str = "value"
    over: str | None = None
    params: str | None = None
    n: int | None = None
    ci_method: str = "none"
    unverified: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    columns: tuple[SuiteColumn, ...]
    models: tuple[SuiteModel, ...] = ()
    published: tuple[Published, ...] = ()
    description: str = ""
    source: str = ""
    unverified: tuple[str, ...] = ()
    path: str = ""

    def with_models(self, models: Sequence[SuiteModel]) -> "Suite":
        from dataclasses import replace

        _unique([m.label for m in models], "model label", self.path or self.name)
        return replace(self, models=tuple(models))

    def cells(self) -> list["Cell"]:
        return [Cell(self.name, m, c) for m in self.models for c in self.columns]

    def published_for(self, model: str, kind: str = "value") -> Published | None:
        return next((p for p in self.published if p.model == model and p.kind == kind), None)


@dataclass(frozen=True)
class Cell:
    suite: str
    model: SuiteModel
    column: SuiteColumn

    @property
    def id(self) -> str:
        return f"{self.model.label} / {self.column.label}"


# ------------------------------------------------------------------------------------------ parsing
def _check_fields(data: Any, allowed: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise UsageError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {unknown}; valid fields: {', '.join(allowed)}")
    return data


def _unique(items: Sequence[str], what: str, where: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise UsageError(f"{where}: {what} '{item}' appears twice")
        seen.add(item)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UsageError(f"{where} must be a mapping")
    return dict(value)


def _columns(entry: Mapping[str, Any], where: str) -> list[SuiteColumn]:
    if not entry.get("task"):
        raise UsageError(f"{where}: field 'task' is required")
    task = str(entry["task"])
    label = str(entry.get("label") or task)
    params = _mapping(entry.get("params"), f"{where}.params")
    sweep = _mapping(entry.get("sweep"), f"{where}.sweep")
    if not sweep:
        return [SuiteColumn(task, label, params)]
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where}.sweep.{key} must be a non-empty list")
    keys = list(sweep)
    out = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        over = dict(zip(keys, combo))
        out.append(SuiteColumn(task, f"{label} ({', '.join(f'{k}={v}' for k, v in over.items())})",
                               {**params, **over}))
    return out


def parse_model(entry: Any, where: str) -> SuiteModel:
    entry = _check_fields(entry, MODEL_FIELDS, where)
    for key in ("label", "encoder"):
        if not entry.get(key):
            raise UsageError(f"{where}: field '{key}' is required")
    ckpt = entry.get("checkpoint")
    ckpt = None if ckpt is None else str(ckpt)
    random_init = ckpt == RANDOM
    if ckpt in (RANDOM, NONE):
        ckpt = None
    options = {str(k): str(v) for k, v in _mapping(entry.get("options"), f"{where}.options").items()}
    return SuiteModel(label=str(entry["label"]), encoder=str(entry["encoder"]), checkpoint=ckpt,
                      random_init=random_init, options=options,
                      compare_to=str(entry["compare_to"]) if entry.get("compare_to") else None,
                      note=str(entry.get("note", "")))


def parse_model_arg(text: str) -> SuiteModel:
    """`LABEL=ENCODER:CHECKPOINT` (CHECKPOINT a path, `random` or `none`; `LABEL=ENCODER` means none)."""
    if "=" not in text:
        raise UsageError(f"--model expects LABEL=ENCODER:CHECKPOINT (checkpoint a path, 'random' or 'none'), "
                         f"got '{text}'")
    label, rest = (s.strip() for s in text.split("=", 1))
    encoder, _, ckpt = rest.partition(":")
    if not label or not encoder.strip():
        raise UsageError(f"--model {text}: label and encoder must not be empty (LABEL=ENCODER:CHECKPOINT)")
    return parse_model({"label": label, "encoder": encoder.strip(), "checkpoint": ckpt.strip() or NONE},
                       f"--model {text}")


def _published(entry: Any, where: str, columns: set[str]) -> Published:
    entry = _check_fields(entry, PUBLISHED_FIELDS, where)
    if not entry.get("model"):
        raise UsageError(f"{where}: field 'model' is required")
    kind = str(entry.get("kind", "value"))
    if kind not in KINDS:
        raise UsageError(f"{where}: kind must be one of {', '.join(KINDS)}, got '{kind}'")
    if kind == "gain" and not entry.get("over"):
        raise UsageError(f"{where}: a 'gain' row needs 'over' (the row the gain is measured against)")
    method = str(entry.get("ci_method", "none"))
    if method not in CI_METHODS:
        raise UsageError(f"{where}: ci_method must be one of {', '.join(CI_METHODS)}, got '{method}'")
    values: dict[str, tuple[float, float | None]] = {}
    for col, v in _mapping(entry.get("values"), f"{where}.values").items():
        if col not in columns:
            raise UsageError(f"{where}.values: '{col}' is not a column of the suite; columns: {', '.join(sorted(columns))}")
        pair = v if isinstance(v, list) else [v]
        if not 1 <= len(pair) <= 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair):
            raise UsageError(f"{where}.values.{col}: expected a number or [value, ci_half_width], got {v!r}")
        values[str(col)] = (float(pair[0]), float(pair[1]) if len(pair) == 2 else None)
    n = entry.get("n")
    if n is not None and (not isinstance(n, int) or n < 2):
        raise UsageError(f"{where}: n must be an integer >= 2, got {n!r}")
    return Published(model=str(entry["model"]), values=values, source=str(entry.get("source", "")), kind=kind,
                     over=str(entry["over"]) if entry.get("over") else None,
                     params=str(entry["params"]) if entry.get("params") is not None else None, n=n,
                     ci_method=method, unverified=tuple(str(u) for u in entry.get("unverified") or ()))


def parse_suite(data: Any, source: str) -> Suite:
    data = _check_fields(data, SUITE_FIELDS, source)
    if not data.get("name"):
        raise UsageError(f"{source}: field 'name' is required")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise UsageError(f"{source}: field 'tasks' must be a non-empty list")
    columns = [c for i, t in enumerate(tasks)
               for c in _columns(_check_fields(t, TASK_FIELDS, f"{source}: tasks[{i}]"), f"{source}: tasks[{i}]")]
    _unique([c.label for c in columns], "column label", source)
    models = [parse_model(m, f"{source}: models[{i}]") for i, m in enumerate(data.get("models") or [])]
    _unique([m.label for m in models], "model label", source)
    labels = {c.label for c in columns}
    published = [_published(p, f"{source}: published[{i}]", labels) for i, p in enumerate(data.get("published") or [])]
    _unique([f"{p.model} ({p.kind})" for p in published], "published row", source)
    return Suite(name=str(data["name"]), columns=tuple(columns), models=tuple(models), published=tuple(published),
                 description=str(data.get("description", "")), source=str(data.get("source", "")),
                 unverified=tuple(str(u) for u in data.get("unverified") or ()), path=source)


def load_suite_file(path: str | Path) -> Suite:
    return load_yaml_spec(path, "suite", parse_suite)


def discover_suites(suite_dirs: Sequence[tuple[Path, str]]) -> dict[str, Suite]:
    """Every suite in the registered directories; a name defined twice is an error naming both files."""
    return discover_yaml_specs(suite_dirs, "suite", load_suite_file)


def resolve_suite(name_or_path: str, suite_dirs: Sequence[tuple[Path, str]]) -> Suite:
    """A registered suite name, or a path to a suite YAML file."""
    return resolve_yaml_spec(name_or_path, suite_dirs, "suite", load_suite_file)
