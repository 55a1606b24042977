"""The Textual app: the runs list (`StartScreen`) at the bottom of the stack, one run (`SearchScreen`) above it.

Owns what is the same everywhere: quit (which says whether the engine keeps running), help (generated from the
bindings), the command palette entries (the current screen's controls), and the one handler for a worker that
failed. Never imports torch or training code: runs are created by `smash-tui run --detach` in a child process
and engines are started detached (`smash_tui.launch.spawn_engine`), so they outlive this process.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import Worker

from smash_engine.errors import SmashError

from .screens.help import HelpScreen
from .screens.search import ALIVE, SearchScreen
from .screens.start import StartScreen
from .widgets.leaderboard import Leaderboard


class SmashApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "smash-tui"
    BINDINGS = [
        Binding("q", "quit_ui", "Quit", tooltip="leave the UI (a running engine keeps running)"),
        Binding("ctrl+q", "quit_ui", "Quit", show=False, priority=True, tooltip="leave the UI"),
        Binding("question_mark,f1", "help", "Help", key_display="?", tooltip="every key, and what leaving does"),
    ]

    def __init__(self, db: Path | None = None, runs_dir: Path = Path("runs")) -> None:
        super().__init__()
        self.db = Path(db) if db is not None else None
        self.runs_dir = Path(runs_dir)
        self.animation_level = "none"  # no animations: they cost redraws over SSH and help nobody

    def on_mount(self) -> None:
        self.push_screen(StartScreen(self.runs_dir))
        if self.db is not None:
            self.open_run(self.db)

    # -- navigation ------------------------------------------------------------------------------------
    def open_run(self, db: Path) -> None:
        self.switch_to_runs()
        self.push_screen(SearchScreen(db))

    def switch_to_runs(self) -> None:
        while isinstance(self.screen, SearchScreen):
            self.pop_screen()

    def search_screen(self) -> SearchScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, SearchScreen)), None)

    # -- leaving ---------------------------------------------------------------------------------------
    def exit_message(self) -> str:
        s = self.search_screen()
        if s is None or s.run is None:
            return "smash-tui: left the UI; engines started from it keep running (list them with `smash-tui ls`)"
        if s.state in ALIVE:
            return (f"smash-tui: the engine of {s.run['name']} keeps running (pid {s.run['pid']}); reattach "
                    f"with `smash-tui watch {s.db}`, stop it with `smash-tui control {s.db} stop`")
        if s.state == "done":
            return f"smash-tui: {s.run['name']} is done; `smash-tui show {s.db}` prints its leaderboard"
        return f"smash-tui: {s.run['name']} is {s.state}; continue it with `smash-tui resume {s.db}`"

    def action_quit_ui(self) -> None:
        self.exit(message=Text(self.exit_message()))

    # -- help and the command palette --------------------------------------------------------------
    def key_groups(self, screen: Screen) -> list[tuple[str, list[BindingType]]]:
        groups: list[tuple[str, list[BindingType]]] = [(type(screen).__name__.replace("Screen", "").lower(),
                                                        list(screen.BINDINGS))]
        if isinstance(screen, SearchScreen):
            groups.append(("leaderboard", list(Leaderboard.BINDINGS)))
        return [*groups, ("anywhere", list(self.BINDINGS))]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.key_groups(self.screen)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every control of the screen the palette was opened on, by its name, then Textual's own."""
        for where, bindings in self.key_groups(screen):
            for b in bindings:
                if isinstance(b, Binding) and b.description:
                    node: App[Any] | Widget = self if where == "anywhere" else screen
                    if where == "leaderboard":
                        node = screen.query_one(Leaderboard)
                    yield SystemCommand(f"{b.description} ({b.key_display or b.key})", b.tooltip or b.description,
                                        partial(node.run_action, b.action))
        yield from super().get_system_commands(screen)

    # -- the one place a failed worker is reported --------------------------------------------------
    def report_worker_error(self, worker: Worker) -> None:
        error = worker.error
        known = isinstance(error, SmashError | OSError)
        text = f"{worker.name or 'background task'} failed: {error}" if known else \
            f"{worker.name or 'background task'} failed: {type(error).__name__}: {error} (a bug: please report it)"
        s = self.search_screen()
        if s is not None and s.is_mounted:
            s.log_view.add(text, "error")
        self.notify(text, severity="error", timeout=8)
