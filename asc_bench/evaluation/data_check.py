"""`asc-bench data check`: is a dataset on disk usable, and by which built-in tasks?

Lists the dataset with its adapter (metadata only) and reports classes, clips per class, splits, groups
(the distinct values of grouping extras such as fold, location, speaker or instrument), and, for every
registered task on that dataset, whether its listing works (with the task's dataset_options) and whether
its protocol accepts the listing (the same dry run `bench` does before embedding). With `decode`, every
listed file is decoded (soundfile; resampling skipped) and the failures are reported by path.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asc_bench.api import AscBenchError

GROUP_KEYS = ("fold", "location", "identifier", "city", "device", "speaker", "instrument", "src_file", "youtube")


@dataclass
class TaskCheck:
    task: str
    ok: bool
    detail: str


@dataclass
class DataCheck:
    dataset: str
    root: str
    n_clips: int = 0
    classes: dict[str, int] = field(default_factory=dict)        # label -> clips
    splits: dict[str, int] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)         # extra key -> distinct values
    listing_error: str = ""
    tasks: list[TaskCheck] = field(default_factory=list)
    decoded: int = 0
    bad_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No file failed to decode, and some built-in task can use the data (or, without tasks, it lists)."""
        if self.bad_files or not self.n_clips:
            return False
        return any(t.ok for t in self.tasks) if self.tasks else not self.listing_error


def check_dataset(name: str, data_root: str | Path | None, *, decode: bool = False, plugins: tuple[str, ...] = (),
                  cache_dir: str | Path | None = None) -> DataCheck:
    """Check dataset `name` (an adapter name, or a download source name such as nsynth-test)."""
    from asc_bench.evaluation.bench import dry_run_protocol
    from asc_bench.data.download import load_registry
    from asc_bench.data.listing import dataset_root, list_clips
    from asc_bench.embedding.cache import default_cache_dir
    from asc_bench.plugins import get_manager
    from asc_bench.tasks import discover_tasks

    manager = get_manager(plugins)
    if name not in manager.registries["datasets"]:
        sources = load_registry()
        if name in sources:
            name = sources[name].dataset
    manager.get("datasets", name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    report = DataCheck(name, str(dataset_root(name, data_root)))
    tasks = sorted((t for t in discover_tasks(manager.task_dirs).values() if t.dataset == name), key=lambda t: t.name)
    listings: dict[str, Any] = {}

    def listing(options: dict[str, Any]) -> Any:
        key = repr(sorted(options.items()))
        if key not in listings:
            try:
                listings[key] = list_clips(manager, name, options, data_root, cache)
            except AscBenchError as exc:
                listings[key] = exc
        return listings[key]

    clips = listing({})
    if isinstance(clips, Exception):
        report.listing_error = str(clips)
    for spec in tasks:
        got = listing(dict(spec.dataset_options))
        if isinstance(got, Exception):
            report.tasks.append(TaskCheck(spec.name, False, f"{spec.name} cannot list its data: {got}"))
            continue
        problem = dry_run_protocol(manager.get("protocols", spec.protocol), spec, got, spec.seed)
        report.tasks.append(TaskCheck(spec.name, not problem, problem or f"{len(got)} clips, "
                                                                          f"{len({c.label for c in got})} classes"))
        if isinstance(clips, Exception):
            clips = got        # describe the data through the first listing that works
    if isinstance(clips, Exception):
        return report
    report.n_clips = len(clips)
    report.classes = dict(sorted(Counter(c.label for c in clips).items()))
    report.splits = dict(sorted(Counter(str(c.split) for c in clips).items()))
    for key in GROUP_KEYS:
        values = {c.extra.get(key) for c in clips if key in c.extra}
        if values:
            report.groups[key] = len(values)
    if decode:
        from asc_bench.data.audio import decode as decode_audio
        import soundfile as sf

        for c in clips:
            try:
                info = sf.info(c.path)
                decode_audio(c.path, int(info.samplerate))
                report.decoded += 1
            except Exception as exc:   # every unreadable file is reported by path
                report.bad_files.append((c.path, f"{type(exc).__name__}: {exc}"))
    return report
