"""Every dialog, hint and footer reads whole at 80x24 and 100x30: rendered by the real app, the text each one
was given is found on screen (wrapped lines joined), never cut at the border."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import drive, until
from textual.widgets import Label, Static
from textual.widgets._footer import FooterKey

from smash_engine import store
from smash_tui.app import SmashApp
from smash_tui.screens.dialogs import Dialog
from smash_tui.screens.search import SearchScreen
from smash_tui.screens.start import StartScreen

SIZES = [(80, 24), (100, 30)]
BORDER = re.compile(r"[│┃┌┐└┘─━╭╮╰╯▊▎▏▔▁]")


def screen_lines(app) -> list[str]:
    """The terminal's rows as the compositor draws them (what a user sees, modal dialogs over the screen)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def region_text(app, widget) -> str:
    """The text drawn inside `widget`'s region, rows joined by spaces, borders and runs of blanks dropped."""
    r = widget.region
    rows = [line[r.x : r.right] for line in screen_lines(app)[r.y : r.bottom]]
    return squash(" ".join(BORDER.sub(" ", row) for row in rows))


def squash(text: str) -> str:
    return " ".join(text.split())


def given(widget: Static) -> str:
    return squash(str(widget.content))


def assert_dialog_reads_whole(app) -> str:
    dialog = app.screen
    assert isinstance(dialog, Dialog), type(dialog)
    box = dialog.query_one(".dialog")
    shown = region_text(app, box)
    labels = [given(label) for label in dialog.query(Label) if given(label)]
    assert labels
    for text in labels:
        assert reads_whole(text, shown), f"{text!r} not whole in {shown!r}"
    return shown


def reads_whole(text: str, shown: str) -> bool:
    """Every character of `text`, in order, on screen; blanks aside, since wrapping turns a space into a line
    break, or folds a word longer than the line (a path) anywhere."""
    return text.replace(" ", "") in shown.replace(" ", "")


def assert_footer_reads_whole(app) -> None:
    keys = [k for k in app.screen.query(FooterKey) if k.display]
    assert keys
    last_row = screen_lines(app)[-1]
    for k in keys:
        assert f"{k.key_display} {k.description}" in last_row, (k.key_display, last_row)
    assert any(k.key_display == "?" for k in keys)  # the rest is under the help


def make_alive(db: Path) -> None:
    with store.connect_writer(db) as w:
        w.heartbeat(1, status="running", pid=999_999, host="elsewhere")


async def opened(pilot) -> SearchScreen:
    await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen) and pilot.app.screen.polls > 0,
                what="the run")
    await until(pilot, lambda: pilot.app.screen.board.row_count > 0, what="the leaderboard")
    return pilot.app.screen


@pytest.mark.parametrize("size", SIZES)
def test_search_dialogs_and_footer_read_whole_on_a_finished_run(db, size):
    async def check(pilot):
        s = await opened(pilot)
        await until(pilot, lambda: any(k.key_display == "?" for k in s.query(FooterKey)), what="the footer")
        # the footer's keys exist a frame before they are painted (a blank last row was seen once under load)
        await until(pilot, lambda: screen_lines(pilot.app)[-1].strip(), what="the footer drawn")
        assert_footer_reads_whole(pilot.app)
        arch = s.board.highlighted
        for keys in (("n",), ("slash",), ("f",)):
            await pilot.press(*keys)
            assert_dialog_reads_whole(pilot.app)
            await pilot.press("escape")
        await pilot.press("f", "enter")  # the epochs, then the confirmation
        shown = assert_dialog_reads_whole(pilot.app)
        # no engine will run it by itself: the dialog says so, and which key starts one
        assert f"Train {arch} from scratch" in shown and "No engine is running" in shown and "press r" in shown
        await pilot.press("n")
        await pilot.press("s")  # nothing to stop on a finished run: no dialog, a line in the log
        assert not isinstance(pilot.app.screen, Dialog)

    drive(SmashApp(db=db, runs_dir=db.parent), check, size=size)


@pytest.mark.parametrize("size", SIZES)
def test_final_and_stop_confirmations_read_whole_on_a_live_run(db, size):
    make_alive(db)

    async def check(pilot):
        s = await opened(pilot)
        await until(pilot, lambda: s.state == "running", what="the live engine")
        await pilot.press("f", "enter")
        shown = assert_dialog_reads_whole(pilot.app)
        assert "No engine" not in shown and "The engine queues it" in shown
        await pilot.press("n", "s")
        shown = assert_dialog_reads_whole(pilot.app)
        assert "Stop the search?" in shown
        await pilot.press("n")

    drive(SmashApp(db=db, runs_dir=db.parent), check, size=size)


@pytest.mark.parametrize("size", SIZES)
def test_run_list_hint_footer_engine_column_and_new_search_form_read_whole(db, size):
    make_alive(db)

    async def check(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, StartScreen)
        table = screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 1, what="the run")
        await until(pilot, lambda: "pid 999999" in "\n".join(screen_lines(pilot.app)), what="the engine column")
        hint = screen.query_one("#start-hint", Static)
        # a longer hint takes a second row at the next layout, a frame after its text
        await until(pilot, lambda: reads_whole(given(hint), region_text(pilot.app, hint)), what="the hint whole")
        # the footer's keys exist a frame before they are painted (a blank last row was seen once under load)
        await until(pilot, lambda: screen_lines(pilot.app)[-1].strip(), what="the footer drawn")
        assert_footer_reads_whole(pilot.app)
        await pilot.press("n")
        shown = assert_dialog_reads_whole(pilot.app)
        assert "name" in shown and "Ctrl+S starts, Escape cancels" in shown

    drive(SmashApp(db=None, runs_dir=db.parent), check, size=size)


def test_new_search_says_at_once_that_it_is_starting_and_why_it_failed(tmp_path, monkeypatch):
    """Enter gets an answer on screen before the child `smash-tui run --detach` has done anything; a dataset
    that is not on disk makes that child fail in a few seconds (no engine is started), and the hint says why."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the child's default data folder: empty
    runs = tmp_path / "runs"

    async def check(pilot):
        screen = pilot.app.screen
        await pilot.press("n")
        form = pilot.app.screen
        await pilot.press(*"mine")
        form.query_one("#dataset").value = "cifar10"  # a Select's overlay list, chosen as its keys would
        await pilot.press("enter")
        hint = screen.query_one("#start-hint", Static)
        assert pilot.app.screen is screen
        assert f"starting engine for {runs / 'mine.db'}" in given(hint)
        await until(pilot, lambda: reads_whole(given(hint), region_text(pilot.app, hint)), what="the hint whole")
        await until(pilot, lambda: "could not start the search" in given(hint), timeout=120, what="the failure")
        assert "cifar10" in given(hint) and "--data-dir" in given(hint)
        await until(pilot, lambda: reads_whole(given(hint), region_text(pilot.app, hint)), what="the reason whole")
        assert not (runs / "mine.db").exists() and pilot.app.screen is screen

    drive(SmashApp(db=None, runs_dir=runs), check)


def test_new_search_form_refuses_a_name_that_is_taken_or_not_a_file_name(db):
    async def check(pilot):
        await pilot.press("n")
        form = pilot.app.screen
        for name, why in ((db.stem, "exists already"), ("../up", "letters, digits")):
            await pilot.press("ctrl+u", *name, "enter")
            assert pilot.app.screen is form
            assert why in given(form.query_one(".dialog-error", Label))
            assert_dialog_reads_whole(pilot.app)

    drive(SmashApp(db=None, runs_dir=db.parent), check)


def test_new_search_form_takes_a_budget_and_refuses_a_bad_one(db):
    got = {}

    async def check(pilot):
        await pilot.press("n")
        form = pilot.app.screen
        form.query_one("#max_params").value = "0"
        form.action_start()
        await pilot.pause()
        assert pilot.app.screen is form and "parameters above 0" in given(form.query_one(".dialog-error", Label))
        form.query_one("#max_params").value = "100000"
        form.query_one("#max_mflops").value = "3.5"
        form.dismiss = lambda opts: got.update(opts)  # what the form hands to `smash-tui run --detach`
        form.action_start()
        assert_dialog_reads_whole(pilot.app)

    drive(SmashApp(db=None, runs_dir=db.parent), check)
    assert got["max_params"] == 100000 and got["max_mflops"] == 3.5
