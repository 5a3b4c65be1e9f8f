"""Task specs: declarative YAML files naming a dataset, a protocol and its parameters."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

import yaml

from asc_bench.api import UsageError
from asc_bench.data.audio import CropPolicy

S = TypeVar("S")                        # a spec type with `.name` and `.path` (TaskSpec, Suite)

REQUIRED = ("name", "dataset", "protocol")
OPTIONAL = ("description", "group", "dataset_options", "params", "audio", "seed", "source", "unverified")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str
    protocol: str
    description: str = ""
    group: str = ""
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    audio: CropPolicy = CropPolicy()
    seed: int = 0
    source: str = ""
    unverified: tuple[str, ...] = ()
    path: str = ""

    @property
    def spec_hash(self) -> str:
        """sha256 of what determines the episodes and scores (not the name or prose)."""
        payload = {"dataset": self.dataset, "dataset_options": dict(self.dataset_options),
                   "protocol": self.protocol, "params": dict(self.params), "audio": self.audio.as_dict()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def with_params(self, overrides: Mapping[str, Any]) -> "TaskSpec":
        if not overrides:
            return self
        return replace(self, params={**self.params, **overrides})


def parse_task(data: Any, source: str) -> TaskSpec:
    if not isinstance(data, Mapping):
        raise UsageError(f"{source}: a task file must be a YAML mapping")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise UsageError(f"{source}: unknown task field(s) {unknown}; valid fields: "
                         f"{', '.join(REQUIRED + OPTIONAL)}")
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise UsageError(f"{source}: missing required task field(s) {missing}")
    for key in ("dataset_options", "params"):
        if data.get(key) is not None and not isinstance(data[key], Mapping):
            raise UsageError(f"{source}: field '{key}' must be a mapping")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise UsageError(f"{source}: field 'seed' must be an integer")
    return TaskSpec(
        name=str(data["name"]), dataset=str(data["dataset"]), protocol=str(data["protocol"]),
        description=str(data.get("description", "")), group=str(data.get("group", "") or data["name"]),
        dataset_options=dict(data.get("dataset_options") or {}), params=dict(data.get("params") or {}),
        audio=_crop(data.get("audio"), source), seed=seed, source=str(data.get("source", "")),
        unverified=tuple(str(u) for u in (data.get("unverified") or ())), path=source)


def _crop(spec: Any, source: str) -> CropPolicy:
    try:
        return CropPolicy.from_spec(spec)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc}") from None


def load_yaml_spec(path: str | Path, kind: str, parse: Callable[[Any, str], S]) -> S:
    """One YAML spec file (a task, a suite...) parsed by `parse(data, source)`; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{kind} file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc})") from None
    return parse(data, str(path))


def discover_yaml_specs(dirs: Sequence[tuple[Path, str]], kind: str, load: Callable[[Path], S]) -> dict[str, S]:
    """Every spec in the registered directories, by `.name`; a name defined twice is an error naming
    both files."""
    found: dict[str, S] = {}
    for directory, plugin in dirs:
        for file in sorted(Path(directory).glob("*.yaml")):
            spec = load(file)
            if spec.name in found:
                raise UsageError(f"{kind} '{spec.name}' is defined twice: {found[spec.name].path} and {file} "
                                 f"(plugin '{plugin}')")
            found[spec.name] = spec
    return found


def resolve_yaml_spec(name_or_path: str, dirs: Sequence[tuple[Path, str]], kind: str,
                      load: Callable[[Path], S]) -> S:
    """A registered spec name, or a path to a YAML file; an unknown name gets "did you mean"."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load(Path(name_or_path))
    specs = discover_yaml_specs(dirs, kind, load)
    if name_or_path not in specs:
        from asc_bench.plugins import unknown_name

        raise unknown_name(f"{kind}s", name_or_path, specs)
    return specs[name_or_path]


def load_task_file(path: str | Path) -> TaskSpec:
    return load_yaml_spec(path, "task", parse_task)


def discover_tasks(task_dirs: Sequence[tuple[Path, str]]) -> dict[str, TaskSpec]:
    """Every task in the registered directories; a name defined twice is an error naming both files."""
    return discover_yaml_specs(task_dirs, "task", load_task_file)


def resolve_task(name_or_path: str, task_dirs: Sequence[tuple[Path, str]]) -> TaskSpec:
    """A registered task name, or a path to a YAML file."""
    return resolve_yaml_spec(name_or_path, task_dirs, "task", load_task_file)
