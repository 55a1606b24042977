"""The help screen: every key of the screen it was opened from (read from the bindings themselves, so it
cannot drift from them), the app's keys, and what happens to the engine when you leave."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

NOTES = (
    "Ctrl+P opens the command palette: every control above, searchable by name.\n"
    "Quitting the UI, closing the terminal or dropping SSH leaves the engine running; reopen the run with "
    "`smash-tui watch runs/NAME.db` (or bare `smash-tui`) to see its whole history.\n"
    "A run whose engine stopped sending heartbeats shows as CRASHED: r starts a new engine on it.\n"
    "Commands sent while the engine is not running wait in the results file until it is resumed.\n"
    "Leaderboard filter: FIELD OP VALUE [and ...], e.g. `params < 2e6 and smash < 80%`.\n"
    "The verify column reads RUNG ERROR: the verify phase's highest rung a candidate reached and its held-out "
    "error (%) there; bold while it is still in, dim once halved out; wait/busy while that rung's training is "
    "queued or running. The line under the diagram gives the whole story."
)


def key_rows(groups: list[tuple[str, list[BindingType]]]) -> list[tuple[str, str, str]]:
    rows, seen = [], set()
    for where, bindings in groups:
        for b in bindings:
            if not isinstance(b, Binding) or not b.description or (where, b.key) in seen:
                continue
            seen.add((where, b.key))
            keys = b.key_display or " / ".join(k.strip() for k in b.key.split(","))
            rows.append((where, keys, b.tooltip or b.description))
    return rows


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, groups: list[tuple[str, list[BindingType]]]) -> None:
        super().__init__()
        self.groups = groups

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, expand=True, padding=(0, 1))
        table.add_column("key", style="bold", no_wrap=True, min_width=6)
        table.add_column("does", ratio=1)
        last = None
        for where, keys, does in key_rows(self.groups):
            if where != last:
                table.add_row(Text(f"{where} keys", style="underline"), "")
                last = where
            table.add_row(keys, does)
        box = VerticalScroll(Static(table), Static(Text(NOTES), classes="hint"), classes="dialog help")
        box.border_title = "keys (Escape closes)"
        yield box

    def action_close(self) -> None:
        self.dismiss(None)
