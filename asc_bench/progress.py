"""Progress reporting: rich bars on a terminal, a few plain lines otherwise (logs, CI)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

stderr = Console(stderr=True)


class Tracker:
    """Counts work done. `advance(n)` adds n; `update(done, total)` sets both (a protocol that learns
    its total only once it has sampled its episodes reports this way). Plain mode prints at each
    quarter so logs stay readable."""

    def __init__(self, description: str, total: int | None, bar: Progress | None):
        self.description, self.total, self.done = description, total, 0
        self._bar = bar
        self._task: TaskID | None = bar.add_task(description, total=total) if bar is not None else None
        self._next_quarter = 0.25

    def describe(self, description: str) -> None:
        """Change the label (e.g. the cell in progress); plain mode prints it at the next quarter."""
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def advance(self, n: int = 1) -> None:
        if n > 0:
            self.update(self.done + n, self.total)

    def update(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        if not total:
            return
        if done / total >= self._next_quarter or done == total:
            print(f"{self.description}: {done}/{total}", file=sys.stderr, flush=True)
            while self._next_quarter <= done / total:
                self._next_quarter += 0.25


class _Silent(Tracker):
    def update(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total


@contextmanager
def progress(description: str, total: int | None = None, enabled: bool = True) -> Iterator[Tracker]:
    if not enabled:
        yield _Silent(description, total, None)
        return
    if sys.stderr.isatty():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=stderr, transient=True) as bar:
            yield Tracker(description, total, bar)
        return
    yield Tracker(description, total, None)
