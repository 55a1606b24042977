"""Messages the UI's thread workers post to the screens (the only way data crosses from a worker thread to
the event loop: a worker never touches a widget)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message


@dataclass
class Batch:
    """What one poll of a results file found: the run row, and only the rows newer than the last poll
    (steps, scores, events); commands and finals are small tables, read whole (latest first for commands)."""

    run: dict[str, Any] | None
    state: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    val_steps: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    final_steps: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    verifications: list[dict[str, Any]] = field(default_factory=list)  # the verify phase's candidates (few)
    first: bool = False  # the first poll of this file: the whole history


class Polled(Message):
    """A poll of the open run's results file."""

    def __init__(self, batch: Batch) -> None:
        super().__init__()
        self.batch = batch


class PollFailed(Message):
    """The results file could not be read this time (the worker keeps trying)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class RunsListed(Message):
    """The start screen's scan of the runs folder: one summary dict per file (or an `error` key)."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.runs = runs


class ArchLoaded(Message):
    """An architecture's row (with spec_json) read for the diagram or the export."""

    def __init__(self, arch_id: str, row: dict[str, Any] | None) -> None:
        super().__init__()
        self.arch_id, self.row = arch_id, row


class CommandSent(Message):
    """A command row was written to the results file."""

    def __init__(self, command_id: int, kind: str, args: dict[str, Any], engine_state: str) -> None:
        super().__init__()
        self.command_id, self.kind, self.args, self.engine_state = command_id, kind, args, engine_state


class Notice(Message):
    """A one-line outcome of a background action (export written, engine started, a failure) for the log."""

    def __init__(self, text: str, level: str = "info") -> None:
        super().__init__()
        self.text, self.level = text, level


class Launch(Message):
    """What a search started from the runs list is doing, or why it failed ("" once its run opens)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SearchStarted(Message):
    """`smash-tui run --detach` created a results file and started its engine."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = db
