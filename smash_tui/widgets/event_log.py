"""The log of engine events and command results: timestamped lines, newest at the bottom, capped."""

from __future__ import annotations

from collections import deque
from datetime import datetime

from rich.text import Text
from textual.widgets import RichLog

LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red", "ui": "cyan"}


def _clock(at: str | None) -> str:
    """ISO-8601 UTC from the results file -> local HH:MM:SS (what a person compares with their clock)."""
    if not at:
        return datetime.now().strftime("%H:%M:%S")
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return at[11:19]


class EventLog(RichLog):
    DEFAULT_CSS = "EventLog { height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=1000, wrap=True, markup=False, auto_scroll=True)
        self.lines_written: deque[str] = deque(maxlen=1000)  # plain text, for tests and the help of a screen reader

    def add(self, message: str, level: str = "info", at: str | None = None) -> None:
        tag = "" if level in ("info", "ui") else f"{level}: "
        plain = f"{_clock(at)} {tag}{message}"
        self.lines_written.append(plain)
        self.write(Text(plain, style=LEVEL_STYLE.get(level, "")))

    def add_event(self, row: dict) -> None:
        self.add(row["message"], row["level"], row["at"])

