"""The plugin manager: loads plugins, collects what they register, reports the broken ones.

Plugins come from three places, in this order: entry points in the group ``asc_bench`` (built-ins
are declared there exactly like third-party packages), modules named in ``ASC_BENCH_PLUGINS``
(comma separated) and modules given with ``--plugin``. A plugin that fails to import or to register is
recorded in ``PluginManager.failures`` and skipped, unless ``ASC_BENCH_STRICT_PLUGINS=1``. A name
another plugin registered first is refused on its own (``PluginManager.clashes``, shown by
``asc-bench plugins`` and ``asc-bench list``); the rest of both plugins keeps working.
"""
from __future__ import annotations

import importlib
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from asc_bench import hookspecs
from asc_bench.api import (AscBenchError, AugmentationEntry, DatasetEntry, EncoderEntry, LossEntry,
                           ProtocolEntry, RecipeEntry)

ENTRY_POINT_GROUP = "asc_bench"

# kind -> (hook name, entry class, name of the entry's main callable field)
KINDS: dict[str, tuple[str, type, str]] = {
    "encoders": ("register_encoders", EncoderEntry, "build"),
    "datasets": ("register_datasets", DatasetEntry, "build"),
    "protocols": ("register_protocols", ProtocolEntry, "run"),
    "losses": ("register_losses", LossEntry, "build"),
    "augmentations": ("register_augmentations", AugmentationEntry, "build"),
    "recipes": ("register_recipes", RecipeEntry, "recipe"),
}


@dataclass
class PluginInfo:
    name: str
    source: str                 # "entry point", "ASC_BENCH_PLUGINS", "--plugin"
    module: str
    version: str = ""
    hooks: list[str] = field(default_factory=list)
    error: str = ""
    clashes: list[str] = field(default_factory=list)   # names of this plugin refused (see Clash)


@dataclass(frozen=True)
class Clash:
    """A name registered by two plugins. The plugin loaded first keeps it (the loading order is
    deterministic: entry points sorted by distribution and entry-point name, then ASC_BENCH_PLUGINS,
    then --plugin); only this one name of the later plugin is refused, its other entries stay."""

    kind: str           # registry kind, e.g. "encoders"
    name: str
    kept_by: str        # plugin whose entry is used
    refused_from: str   # plugin whose entry is refused

    def __str__(self) -> str:
        return (f"{self.kind[:-1]} '{self.name}' is registered by both '{self.kept_by}' and "
                f"'{self.refused_from}'; the one from '{self.refused_from}' is refused, '{self.kept_by}' "
                f"keeps it (uninstall one of them or rename)")


@dataclass
class PluginManager:
    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    registries: dict[str, dict[str, Any]]
    task_dirs: list[tuple[Path, str]]
    clashes: list[Clash] = field(default_factory=list)
    suite_dirs: list[tuple[Path, str]] = field(default_factory=list)

    def clashes_of(self, kind: str) -> dict[str, list[Clash]]:
        """Refused registrations of `kind`, by name."""
        out: dict[str, list[Clash]] = {}
        for c in self.clashes:
            if c.kind == kind:
                out.setdefault(c.name, []).append(c)
        return out

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def get(self, kind: str, name: str) -> Any:
        registry = self.registries[kind]
        if name not in registry:
            raise unknown_name(kind, name, registry)
        return registry[name]


def unknown_name(kind: str, name: str, known: Iterable[str]) -> AscBenchError:
    import difflib

    from asc_bench.api import UsageError

    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UsageError(f"unknown {kind[:-1]} '{name}'.{hint} Known {kind}: {', '.join(known) or 'none'} "
                      f"(see `asc-bench list {kind}`).")


def _strict() -> bool:
    return os.environ.get("ASC_BENCH_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def _candidates(extra_modules: Iterable[str]) -> list[tuple[str, str, Callable[[], Any], str]]:
    """(name, source, loader, version) for every plugin to try, without importing anything yet."""
    out: list[tuple[str, str, Callable[[], Any], str]] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        dist = ep.dist
        version = f"{dist.name} {dist.version}" if dist else ""
        out.append((ep.name, "entry point", ep.load, version))
    env = [m.strip() for m in os.environ.get("ASC_BENCH_PLUGINS", "").split(",") if m.strip()]
    for mod in env:
        out.append((mod, "ASC_BENCH_PLUGINS", lambda m=mod: importlib.import_module(m), ""))
    for mod in extra_modules:
        out.append((mod, "--plugin", lambda m=mod: importlib.import_module(m), ""))
    return out


def build_manager(extra_modules: Iterable[str] = ()) -> PluginManager:
    """Load every plugin and run its registration hooks; collect entries and failures."""
    pm = pluggy.PluginManager("asc_bench")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    registries: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    task_dirs: list[tuple[Path, str]] = []
    suite_dirs: list[tuple[Path, str]] = []
    seen_modules: set[int] = set()
    clashes: list[Clash] = []

    for name, source, load, version in _candidates(extra_modules):
        info = PluginInfo(name=name, source=source, module="", version=version)
        infos.append(info)
        try:
            module = load()
        except Exception as exc:  # a broken plugin must not take the others down
            info.error = f"import failed: {type(exc).__name__}: {exc}"
            if _strict():
                raise AscBenchError(f"plugin '{name}' ({source}) failed to import: {exc}") from exc
            continue
        info.module = getattr(module, "__name__", repr(module))
        if id(module) in seen_modules:
            continue
        seen_modules.add(id(module))
        try:
            pm.register(module, name=f"{source}:{name}")
        except ValueError as exc:
            info.error = f"registration failed: {exc}"
            continue
        info.hooks = sorted(h.name for h in pm.get_hookcallers(module) or [])
        staged: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        staged_dirs: list[Path] = []
        staged_suite_dirs: list[Path] = []
        try:
            for kind, (hook, entry_cls, _) in KINDS.items():
                for impl in _impls_of(pm, hook, module):
                    impl(register=_collector(kind, entry_cls, staged[kind], info.name))
            for impl in _impls_of(pm, "register_task_dirs", module):
                impl(register=lambda path: staged_dirs.append(Path(path)))
            for impl in _impls_of(pm, "register_suite_dirs", module):
                impl(register=lambda path: staged_suite_dirs.append(Path(path)))
        except Exception as exc:
            pm.unregister(module)
            info.error = f"registration failed: {type(exc).__name__}: {exc}"
            if _strict():
                raise AscBenchError(f"plugin '{name}' failed to register: {exc}\n"
                                    f"{traceback.format_exc()}") from exc
            continue
        for kind, entries in staged.items():
            for n, entry in entries.items():
                if n in registries[kind]:
                    clash = Clash(kind, n, kept_by=registries[kind][n].plugin, refused_from=info.name)
                    clashes.append(clash)
                    info.clashes.append(str(clash))
                else:
                    registries[kind][n] = entry
        if info.clashes and _strict():
            raise AscBenchError(f"plugin '{name}': name clash: {'; '.join(info.clashes)}")
        task_dirs.extend((d, info.name) for d in staged_dirs)
        suite_dirs.extend((d, info.name) for d in staged_suite_dirs)
    return PluginManager(pm=pm, plugins=infos, registries=registries, task_dirs=task_dirs, clashes=clashes,
                         suite_dirs=suite_dirs)


def _impls_of(pm: pluggy.PluginManager, hook: str, plugin: object) -> list[Callable[..., None]]:
    """This plugin's implementations of `hook` (called per plugin so entries know their plugin)."""
    return [impl.function for impl in getattr(pm.hook, hook).get_hookimpls() if impl.plugin is plugin]


def _collector(kind: str, entry_cls: type, sink: dict[str, Any], plugin: str) -> Callable[..., None]:
    def register(name: str, obj: Any, **meta: Any) -> None:
        if not isinstance(name, str) or not name:
            raise AscBenchError(f"{kind[:-1]} names must be non-empty strings, got {name!r}")
        if name in sink:
            raise AscBenchError(f"plugin '{plugin}' registers {kind[:-1]} '{name}' twice")
        field_name = KINDS[kind][2]
        sink[name] = entry_cls(name=name, plugin=plugin, **{field_name: obj}, **meta)
    return register


_MANAGER: PluginManager | None = None
_MANAGER_KEY: tuple[str, ...] = ()


def get_manager(extra_modules: Iterable[str] = ()) -> PluginManager:
    """The process-wide plugin manager (the one piece of global state), built on first use."""
    global _MANAGER, _MANAGER_KEY
    key = tuple(extra_modules) + (os.environ.get("ASC_BENCH_PLUGINS", ""),)
    if _MANAGER is None or key != _MANAGER_KEY:
        _MANAGER = build_manager(extra_modules)
        _MANAGER_KEY = key
    return _MANAGER
