"""Progress reporting: rich bars on a terminal, a few plain lines otherwise (logs, CI)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

stderr = Console(stderr=True)


@contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`. Plain mode prints at most ~5 lines so logs stay readable."""
    if not enabled or total <= 0:
        yield lambda n=1: None
        return
    if sys.stderr.isatty():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=stderr, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)
        return
    state = {"done": 0, "next": 0.25}

    def advance(n: int = 1) -> None:
        if n <= 0:
            return
        state["done"] += n
        if state["done"] / total >= state["next"] or state["done"] == total:
            print(f"{description}: {state['done']}/{total}", file=sys.stderr, flush=True)
            while state["next"] <= state["done"] / total:
                state["next"] += 0.25

    yield advance
