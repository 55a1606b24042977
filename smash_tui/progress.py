"""Headless progress: Rich bars on a terminal, plain throttled lines when output is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from smash_engine.report import detail, plain_reporter


@contextmanager
def headless_reporter(stream=None) -> Iterator[Callable[[dict], None]]:
    stream = stream or sys.stderr
    if stream.isatty():
        with _rich(stream) as report:
            yield report
    else:
        yield plain_reporter(stream)


@contextmanager
def _rich(stream) -> Iterator[Callable[[dict], None]]:
    progress = Progress(TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=Console(file=stream), refresh_per_second=4)
    tasks: dict[str, TaskID] = {}

    def report(info: dict) -> None:
        phase = info["phase"]
        if info.get("note"):  # pause, continue: a line above the bars
            progress.console.print(f"{phase}: {info['note']}")
            return
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=info.get("total") or None, detail="")
        progress.update(tasks[phase], completed=info.get("done", 0), total=info.get("total") or None,
                        detail=detail(info))

    with progress:
        yield report
