"""Small modal dialogs: a number (sample N, final epochs), a yes/no confirmation, the leaderboard filter and the
new-search form. Each dismisses with its answer, or None on Escape; keyboard only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select

from smash_engine.errors import ConfigError

from ..widgets.board_model import parse_filter

PRESETS = ("quick", "fmnist", "paper")
DATASETS = ("digits", "mnist", "fashion-mnist", "fashion-mnist16", "cifar10", "cifar100", "stl10", "imagenet32")
DEVICES = ("auto", "cpu", "cuda")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a file name on any system, never a path


class Dialog(ModalScreen):
    """Common frame: a titled box in the middle of the screen; Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title

    def action_cancel(self) -> None:
        self.dismiss(None)

    def frame(self, *children: Any) -> Vertical:
        box = Vertical(*children, classes="dialog")
        box.border_title = self.title_text
        return box

    def error(self, text: str) -> None:
        self.query_one(".dialog-error", Label).update(text)


class AskNumber(Dialog):
    def __init__(self, title: str, prompt: str, default: int) -> None:
        super().__init__(title)
        self.prompt, self.default = prompt, default

    def compose(self) -> ComposeResult:
        yield self.frame(Label(self.prompt), Input(str(self.default), type="integer", id="number"),
                         Label("", classes="dialog-error"), Label("Enter accepts, Escape cancels", classes="hint"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            n = int(event.value)
        except ValueError:
            n = 0
        if n <= 0:
            self.error("give a whole number above 0")
            return
        self.dismiss(n)


class Confirm(Dialog):
    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, title: str, question: str) -> None:
        super().__init__(title)
        self.question = question

    def compose(self) -> ComposeResult:
        yield self.frame(Label(self.question), Label("y / Enter: yes    n / Escape: no", classes="hint"))

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class FilterDialog(Dialog):
    """Returns the filter text ("" clears it); a filter that does not parse keeps the dialog open."""

    def __init__(self, current: str) -> None:
        super().__init__("filter the leaderboard")
        self.current = current

    def compose(self) -> ComposeResult:
        yield self.frame(
            Label("FIELD OP VALUE [and ...]   fields: rank smash params flops ops depth source test final"),
            Input(self.current, placeholder="params < 2e6 and smash < 80%", id="filter"),
            Label("", classes="dialog-error"),
            Label("Enter applies (empty clears), Escape cancels", classes="hint"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            parse_filter(event.value)
        except ConfigError as e:
            self.error(str(e))
            return
        self.dismiss(event.value.strip())


class NewSearch(Dialog):
    """The new-search form; returns the `smash-tui run` options it sets (name "" for the preset's, made
    unique)."""

    BINDINGS = [Binding("ctrl+s", "start", "Start")]

    def __init__(self, title: str, runs_dir: Path) -> None:
        super().__init__(title)
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        def select(options: tuple[str, ...], id: str, first: str | None = None) -> Select:
            items = ([(first, "")] if first else []) + [(o, o) for o in options]
            return Select(items, value=items[0][1], allow_blank=False, id=id, compact=True)

        yield self.frame(
            Label(f"name: the results file {self.runs_dir}/NAME.db (empty: the preset's, made unique)"),
            Input("", placeholder="e.g. digits-long", id="name", compact=True),
            Label("preset"), select(PRESETS, "preset"),
            Label("dataset"), select(DATASETS, "dataset", first="the preset's"),
            Label("SMASH epochs (empty: the preset's)"), Input("", type="integer", id="epochs", compact=True),
            Label("device"), select(DEVICES, "device"),
            # one row: the form must still read whole at 80x24 with an error under it (tests/tui/test_tui_fits.py)
            Horizontal(Label("budget, empty for none: max params"),
                       Input("", type="integer", placeholder="100000", id="max_params", compact=True),
                       Label("max MFLOPs"), Input("", type="number", placeholder="3.5", id="max_mflops", compact=True),
                       classes="budget"),
            Label("", classes="dialog-error"),
            Label("Tab moves, Enter or Ctrl+S starts, Escape cancels", classes="hint"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_start()

    def action_start(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        if name and not RUN_NAME.fullmatch(name):
            self.error("name: letters, digits, '.', '_' or '-', starting with a letter or digit")
            return
        if name and ((self.runs_dir / f"{name}.db").exists() or (self.runs_dir / name).exists()):
            self.error(f"name: {self.runs_dir / name}.db (or its run folder) exists already; pick another")
            return
        epochs = self.query_one("#epochs", Input).value.strip()
        if epochs and (not epochs.isdigit() or int(epochs) <= 0):
            self.error("epochs: a whole number above 0, or empty")
            return
        budget: dict[str, float | None] = {}
        for key, cast in (("max_params", int), ("max_mflops", float)):
            text = self.query_one(f"#{key}", Input).value.strip()
            try:
                budget[key] = cast(text) if text else None
            except ValueError:
                budget[key] = -1
            if budget[key] is not None and budget[key] <= 0:  # type: ignore[operator]
                self.error(f"budget: {'parameters' if key == 'max_params' else 'MFLOPs'} above 0, or empty")
                return
        opts = {k: str(self.query_one(f"#{k}", Select).value) for k in ("preset", "dataset", "device")}
        self.dismiss({**opts, "name": name, "epochs": int(epochs) if epochs else None, **budget})
