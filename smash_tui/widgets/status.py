"""The status line: run, engine state (by heartbeat), phase, progress, throughput, ETA, device; and a second
line with the best architecture, pending commands and the key that fixes a dead engine."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.text import Text
from textual.widgets import Static

from smash_engine.report import hyper_label

STATE_STYLE = {"running": "bold green", "paused": "bold yellow", "crashed": "bold white on red",
               "failed": "bold white on red", "stopped": "bold", "done": "bold cyan", "created": "bold"}


def parse_time(at: str | None) -> float | None:
    if not at:
        return None
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Rate:
    """Units per second over the last `window` observations (step numbers, or scores counted), from the
    results file's own timestamps, so a UI opened mid-run knows the rate at once."""

    def __init__(self, window: int = 30) -> None:
        self.points: deque[tuple[float, float]] = deque(maxlen=window)

    def add(self, value: float, at: str | None) -> None:
        t = parse_time(at)
        if t is not None:
            self.points.append((value, t))

    def per_s(self) -> float | None:
        if len(self.points) < 2:
            return None
        (v0, t0), (v1, t1) = self.points[0], self.points[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 and v1 > v0 else None


@dataclass
class Progress:
    phase: str = "smash"
    done: int = 0
    total: int = 0
    unit: str = "steps"
    per_s: float | None = None
    best: tuple[str, float] | None = None  # arch id, SMASH error
    scored: int = 0
    pending: list[str] = field(default_factory=list)  # "#3 pause", ...
    final: str = ""  # "final #2 epoch 3/15"


def _duration(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def status_text(run: dict[str, Any] | None, state: str, p: Progress, colorless: bool = False) -> Text:
    def style(s: str) -> str:
        return "" if colorless else s

    if run is None:
        return Text("waiting for the engine to create the run...")
    pct = f" {100 * p.done / p.total:.0f}%" if p.total else ""
    count = f" {p.done}/{p.total} {p.unit}" if p.total else ""
    eta = ""
    if p.per_s and p.total and state == "running":
        eta = f" ETA {_duration((p.total - p.done) / p.per_s)}"
    ips = f" {run['images_per_s']:.0f} img/s" if run.get("images_per_s") and p.phase == "smash" else ""
    line1 = Text.assemble(
        (f"{run['name']} ", style("bold")), (f" {state.upper()} ", style(STATE_STYLE.get(state, "bold"))),
        f" {p.phase}{count}{pct} ep {run['epoch']}{ips}{eta} ",
        (f"[{run['device'] or '?'}, {hyper_label(run)} HyperNet]", style("dim")))
    parts: list[tuple[str, str] | str] = []
    message = str(run.get("message") or "")
    if message.startswith("pick "):  # a finished search: its pick (README "What a search gives you") comes first
        parts.append(message + "  ")
        message = ""
    elif p.best:  # SMASH's first place, named as such: "best" is the pick, which needs a finished final
        parts.append(f"top SMASH {100 * p.best[1]:.2f}% {p.best[0][:8]}  ")
    parts.append(f"{p.scored} scored  ")
    if p.final:
        parts.append(f"{p.final}  ")
    if p.pending:
        parts.append((f"pending: {', '.join(p.pending[-3:])}  ", style("yellow")))
    if state == "created":
        parts.append(("no engine has picked the run up yet (r starts one)", style("bold")))
    elif state in ("crashed", "stopped", "failed"):
        parts.append(("engine not running: r resumes", style("bold red" if state != "stopped" else "bold")))
    elif message and state not in ("running",):
        parts.append(message)
    return Text.assemble(line1, "\n", *parts, no_wrap=True, overflow="ellipsis")


class StatusLine(Static):
    DEFAULT_CSS = "StatusLine { height: 2; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("opening the results file...", id=id)
        self.text = Text()

    def show(self, run: dict[str, Any] | None, state: str, progress: Progress, colorless: bool) -> None:
        text = status_text(run, state, progress, colorless)
        if text.plain != self.text.plain:
            self.text = text
            self.update(text)
