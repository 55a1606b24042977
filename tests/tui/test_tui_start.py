"""The start screen over a folder of real results files, and the UI driving a real engine: pause/continue
acknowledged by it, a final training launched from the UI trained to the end, a new search started from the
form. These start real engine processes (detached, as users get them) and stop them at the end."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import copy_run, drive, until

from smash_engine import store
from smash_tui.app import SmashApp
from smash_tui.screens.search import SearchScreen
from smash_tui.screens.start import StartScreen


def run_row(db: Path) -> dict:
    conn = store.connect_reader(db)
    try:
        return store.run_summary(conn)
    finally:
        conn.close()


def cells(table, key: str) -> list:
    return [str(c) for c in table.get_row(key)]


def test_start_screen_lists_runs_with_their_state_and_opens_one(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    done, crashed = copy_run(tiny_run, runs, "alpha"), copy_run(tiny_run, runs, "beta")
    with store.connect_writer(crashed) as w:
        w.update_run(1, status="running", heartbeat_at="2020-01-01T00:00:00.000Z", pid=999_999)
    (runs / "broken.db").write_text("not a results file")
    summary = run_row(done)

    async def check(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, StartScreen)
        table = screen.query_one("#runs")
        await until(pilot, lambda: table.row_count == 3, what="three rows")
        a, b, broken = cells(table, str(done)), cells(table, str(crashed)), cells(table, str(runs / "broken.db"))
        assert a[:2] == ["alpha", "done"] and a[2] == f"done {summary['n_scored']} scored"
        assert a[3] == f"{100 * summary['top_smash']:.2f}%" and a[4] == f"{100 * summary['pick']['test_error']:.2f}%"
        assert a[6] == "-"
        assert b[:2] == ["beta", "crashed"]
        assert broken[:2] == ["broken", "unreadable"]
        assert "n starts a new search" in str(screen.query_one("#start-hint").render())
        await pilot.press("enter")  # the first row: alpha
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), what="the search screen")
        assert pilot.app.screen.db == done
        await pilot.press("escape")
        await until(pilot, lambda: pilot.app.screen is screen, what="back to the list")

    drive(SmashApp(db=None, runs_dir=runs), check)


def test_start_screen_on_an_empty_folder_says_how_to_start(tmp_path):
    async def check(pilot):
        hint = pilot.app.screen.query_one("#start-hint")
        await until(pilot, lambda: "press n to start" in str(hint.render()), what="the hint")

    drive(SmashApp(db=None, runs_dir=tmp_path / "runs"), check)


def stop_engine(db: Path, timeout: float = 60) -> None:
    """SIGTERM the detached engine (it checkpoints and exits) and wait until it has let go of the file."""
    row = run_row(db)
    if row["pid"]:
        try:
            os.kill(row["pid"], signal.SIGTERM)
        except ProcessLookupError:
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end and run_row(db)["pid"] is not None:
            time.sleep(0.5)


def test_final_training_from_the_ui_is_queued_resumed_and_finishes(tiny_run, tmp_path):
    """On a finished run: f (epochs 1, confirm) queues a command, r starts a real engine, which trains the
    highlighted architecture; the board shows the final done with its test error."""
    db = copy_run(tiny_run, tmp_path / "runs")
    conn = store.connect_reader(db)
    rows = store.leaderboard(conn, 1)
    conn.close()
    # not the best, nor the one the run final-trained already (the verify phase may have picked another)
    at = next(i for i, r in enumerate(rows) if i > 0 and r["final_id"] is None)
    arch = rows[at]["arch_id"]

    async def check(pilot):
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen) and pilot.app.screen.polls,
                    what="the run")
        s = pilot.app.screen
        await pilot.press(*["down"] * at, "f")
        await pilot.press("ctrl+u", "1", "enter", "y")
        await until(pilot, lambda: any("press r to resume" in x for x in s.log_view.lines_written), what="queued")
        await pilot.press("r")
        try:
            await until(pilot, lambda: s.board.model.entries[arch].final_status == "done", timeout=480,
                        what="the final training to finish")
            row = s.board.get_row_at(s.board.shown.index(arch))
            assert row[7] == "done" and row[8].endswith("%")
            await until(pilot, lambda: any("final training #2 done" in x for x in s.log_view.lines_written),
                        what="the engine's event")
        finally:
            stop_engine(db)
        conn = store.connect_reader(db)
        cmd = store.commands(conn, 1)[0]
        conn.close()
        assert (cmd["kind"], cmd["status"], json.loads(cmd["args_json"])) == ("final", "done",
                                                                               {"arch": arch, "epochs": 1})

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_new_search_form_starts_an_engine_that_answers_pause_and_stop(tmp_path, monkeypatch):
    """n opens the form; the UI runs `smash-tui run --detach`; the detached engine acknowledges p (pause), p
    (continue) and s (stop, confirmed) sent from the keyboard."""
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"

    async def check(pilot):
        await pilot.press("n")
        # name "mine", preset quick, dataset: the preset's, 5 epochs
        await pilot.press(*"mine", "tab", "tab", "tab", "5", "enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen), timeout=120, what="the new run")
        s = pilot.app.screen
        db = s.db
        assert db == runs / "mine.db"
        try:
            await until(pilot, lambda: s.state == "running", timeout=480, what="the engine to start")
            for key, answer, state in (("p", "paused", "paused"), ("p", "continuing", "running")):
                await pilot.press(key)
                await until(pilot, lambda a=answer: any(f"done: {a}" in x for x in s.log_view.lines_written),
                            timeout=120, what=answer)
                await until(pilot, lambda st=state: s.state == st, what=state)
            await pilot.press("s", "y")
            await until(pilot, lambda: s.state == "stopped", timeout=120, what="stopped")
            assert "resume" in pilot.app.exit_message()
        finally:
            stop_engine(db)
        cfg = json.loads(run_row(db)["config_json"])
        assert (cfg["preset"], cfg["train"]["epochs"]) == ("quick", 5)

    drive(SmashApp(db=None, runs_dir=runs), check)
