"""Text a user controls (run names, event messages, a command's arguments, the run's message) may hold Rich or
Textual markup: the UI shows it literally, never interprets it, never crashes on it (a property test, a bounded
number of examples: each opens the real app at 80x24)."""

from __future__ import annotations

import html
import sqlite3

from conftest import copy_run, drive, until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from smash_engine import store
from smash_tui.app import SmashApp
from smash_tui.screens.search import SearchScreen
from smash_tui.widgets.status import StatusLine

MARKUP = ["[bold]", "[/]", "[/bold]", "[link=https://example.com]", "[@click=app.quit]", "[red on blue]", "\\[",
          "[", "]", "[b]x[/b]", "[reverse]", "[on #ff0000]", ":smile:", "$x", "[/link]", "[[", "[dim]\\"]
pieces = st.one_of(st.sampled_from(MARKUP), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=4))
markup_text = st.lists(pieces, min_size=1, max_size=5).map("".join).filter(lambda s: s.strip() != "")


@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=markup_text, event=markup_text, arg=markup_text)
def test_markup_in_user_text_is_shown_literally(tiny_run, tmp_path_factory, name, event, arg):
    db = copy_run(tiny_run, tmp_path_factory.mktemp("markup") / "runs")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE runs SET name = ?, message = ?", (name[:20], event))
        conn.execute("INSERT INTO events (run_id, at, level, message) VALUES (1, '2026-12-03T00:00:00.000Z', "
                     "'warning', ?)", (event,))
    conn.close()
    store.insert_command(db, 1, "final", {"arch": arg})  # a pending command is shown by its arguments

    async def check(pilot):
        await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen) and pilot.app.screen.polls > 0,
                    what="the first poll")
        s = pilot.app.screen
        await until(pilot, lambda: any(event in line for line in s.log_view.lines_written), what="the event")
        status = s.query_one(StatusLine).text.plain
        assert name[:20] in status and arg[:8] in status, status
        shown = html.unescape(pilot.app.export_screenshot()).replace("\xa0", " ")
        assert name[:20].strip() in shown

    drive(SmashApp(db=db, runs_dir=db.parent), check)
