"""Headless progress: Rich bars on a terminal, plain throttled lines when output is not a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

PLAIN_EVERY_S = 5.0


def _detail(info: dict) -> str:
    parts = []
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.3f}")
    if info.get("error") is not None:
        parts.append(f"err {100 * info['error']:.1f}%")
    if info.get("images_per_s"):
        parts.append(f"{info['images_per_s']:.0f} img/s")
    return "  ".join(parts)


@contextmanager
def headless_reporter(stream=None) -> Iterator[Callable[[dict], None]]:
    stream = stream or sys.stderr
    if stream.isatty():
        with _rich(stream) as report:
            yield report
    else:
        yield _plain(stream)


@contextmanager
def _rich(stream) -> Iterator[Callable[[dict], None]]:
    progress = Progress(TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=Console(file=stream), refresh_per_second=4)
    tasks: dict[str, int] = {}

    def report(info: dict) -> None:
        phase = info["phase"]
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=info.get("total") or None, detail="")
        progress.update(tasks[phase], completed=info.get("done", 0), total=info.get("total") or None,
                        detail=_detail(info))

    with progress:
        yield report


def _plain(stream) -> Callable[[dict], None]:
    last = {"at": 0.0, "phase": None}

    def report(info: dict) -> None:
        now = time.monotonic()
        finished = info.get("total") and info.get("done") == info.get("total")
        if info["phase"] != last["phase"] or finished or now - last["at"] >= PLAIN_EVERY_S:
            last.update(at=now, phase=info["phase"])
            total = info.get("total") or "?"
            print(f"{info['phase']} {info.get('done', 0)}/{total} {_detail(info)}".rstrip(), file=stream, flush=True)

    return report
