"""Training progress: the metrics JSONL log and a rich bar (TTY) or plain lines (logs, CI)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping

from asc_bench import distributed as dist


def fmt(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in values.items() if not isinstance(v, str))


def trim_metrics(path: Path, start_step: int) -> None:
    # After a resume the log must not hold lines from steps that are about to be re-run.
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip()
            and json.loads(line).get("step", 0) <= start_step]
    path.write_text("".join(line + "\n" for line in keep))


class TrainLogger:
    """Metrics JSONL plus a rich bar (TTY) or plain lines (logs, CI)."""

    def __init__(self, path: Path, total: int, quiet: bool):
        self.path, self.total, self.quiet = path, total, quiet
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> "TrainLogger":
        if not self.quiet and sys.stdout.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def write(self, step: int, values: dict[str, Any], steps_per_s: float | None, samples_per_s: float | None) -> None:
        if not dist.is_main():
            return
        row = {"step": step, **values, "steps_per_s": steps_per_s, "samples_per_s": samples_per_s}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        info = f"{fmt({k: v for k, v in values.items() if k != 'lr'})} | {steps_per_s or 0:.3g} steps/s"
        if self.bar is not None:
            self.bar.update(self.task, info=info)
        elif not self.quiet:
            print(f"step {step}: {info} | lr {values['lr']:.3g} | stage {values['stage']}", flush=True)

    def advance(self, step: int, loss: float | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1)
