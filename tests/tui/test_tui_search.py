"""The search screen against real results files: leaderboard order, incremental updates, commands, crashed
runs, diagram, filter, export, help, palette, NO_COLOR and both sizes."""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path

import pytest
from conftest import drive, until
from rich.console import Console

from smash_engine import halving, store
from smash_engine.space import Architecture
from smash_tui.app import SmashApp
from smash_tui.diagram import diagram, summary_lines
from smash_tui.screens.help import HelpScreen, key_rows
from smash_tui.screens.search import SearchScreen
from smash_tui.widgets.bank_diagram import BankDiagram
from smash_tui.widgets.leaderboard import ARCH_CHARS, Leaderboard
from smash_tui.widgets.loss_plot import LossPlot
from smash_tui.widgets.status import StatusLine


def read(db: Path, fn, *args):
    conn = store.connect_reader(db)
    try:
        run = store.get_run(conn)
        return fn(conn, run["id"], *args) if fn else run
    finally:
        conn.close()


def search(app: SmashApp) -> SearchScreen:
    s = app.screen
    assert isinstance(s, SearchScreen), type(s)
    return s


async def loaded(pilot) -> SearchScreen:
    await until(pilot, lambda: isinstance(pilot.app.screen, SearchScreen) and pilot.app.screen.polls > 0,
                what="the first poll")
    return search(pilot.app)


def screen_lines(app) -> list[str]:
    """The terminal's rows as the compositor draws them (a styled span does not split a row's text here)."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def screen_text(app) -> str:
    """What the terminal shows, as the SVG screenshot's text (spaces are &#160; there)."""
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


def status_text(s: SearchScreen) -> str:
    return s.query_one(StatusLine).text.plain


def test_leaderboard_shows_the_files_ranking_in_order(db):
    expected = [r["arch_id"] for r in read(db, store.leaderboard)]
    assert len(expected) >= 10

    async def check(pilot):
        s = await loaded(pilot)
        board = s.board
        assert board.shown == expected
        assert [board.get_row_at(i)[1] for i in range(board.row_count)] == [a[:ARCH_CHARS] for a in expected]
        assert [board.get_row_at(i)[0] for i in range(3)] == ["1", "2", "3"]
        done = [r for r in read(db, store.finals) if r["status"] == "done"]
        row = board.get_row_at(expected.index(done[0]["arch_id"]))
        assert row[7] == "done" and row[8] == f"{100 * done[0]['test_error']:.2f}%"
        assert "DONE" in status_text(s) and f"{len(expected)} scored" in status_text(s)

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_new_score_appears_in_place_after_a_poll(db):
    run = read(db, None)
    old = read(db, store.leaderboard)
    conn = store.connect_reader(db)
    spec = store.get_arch(conn, old[0]["arch_id"])["spec_json"]
    conn.close()

    async def check(pilot):
        s = await loaded(pilot)
        board = s.board
        keys_before = list(board.rows)
        calls = []
        board.clear = lambda *a, **k: calls.append("clear")  # a rebuild would call these
        board.remove_row = lambda *a, **k: calls.append("remove_row")
        with store.connect_writer(db) as w:
            w.add_arch(run["id"], "feedfacecafe0001", spec, "sample", None, 1234, 5678, 3, 3)
            w.add_score(run["id"], "feedfacecafe0001", 0.01, 0.1, 300, 0, source="sample")
        await until(pilot, lambda: board.shown and board.shown[0] == "feedfacecafe0001", what="the new best")
        assert calls == []
        assert list(board.rows)[: len(keys_before)] == keys_before  # old rows kept, new one appended
        assert board.get_row_at(0)[:3] == ["1", "feedfacecafe", "1.00%"]
        assert board.get_row_at(1)[0] == "2" and board.shown[1] == old[0]["arch_id"]

    drive(SmashApp(db=db, runs_dir=db.parent), check)


console = Console()


def verify_cell(board: Leaderboard, arch_id: str) -> tuple[str, str | None]:
    """The verify cell of `arch_id`'s row: its text and its style (None when unstyled)."""
    cell = board.get_row_at(board.shown.index(arch_id))[5]
    if isinstance(cell, str):
        return cell, None
    styles = {str(cell.get_style_at_offset(console, i)) for i in range(len(cell))}
    assert len(styles) == 1, styles  # the whole cell in one style
    return cell.plain, styles.pop()


def drawn_verify(app, d: BankDiagram) -> str | None:
    """The diagram pane's verify line as the terminal shows it, wrapped rows joined (None if not drawn)."""
    rows = [line[d.region.x : d.region.x + d.scrollable_content_region.width].rstrip()
            for line in screen_lines(app)[d.region.y : d.region.bottom]]
    at = next((i for i, row in enumerate(rows) if row.startswith("verify: ")), None)
    if at is None:
        return None
    more = [row.strip() for row in itertools.takewhile(lambda row: row.startswith("  "), rows[at + 1 :])]
    return " ".join([rows[at], *more])


def test_verify_column_and_line_after_a_real_halving(db):
    """The session's run verified SMASH's best 4 in two rungs (verify_top=4, verify_eta=2): the 2 that went on
    are bold with rung 2, the 2 halved out dim with rung 1; sorting by verify lists the order final training
    took them in, and the diagram pane's verify line says how each did."""
    rows = read(db, store.verifications)
    assert sorted(r["rung"] for r in rows) == [0, 0, 0, 0, 1, 1] and all(r["status"] == "done" for r in rows)
    err = {(r["arch_id"], r["rung"]): r["val_error"] for r in rows}
    loss = {(r["arch_id"], r["rung"]): r["val_loss"] for r in rows}
    up = [a for a, rung in err if rung == 1]
    out = [a for a, rung in err if rung == 0 and a not in up]
    order = halving.order(rows)
    assert set(order[:2]) == set(up)
    images = {r["rung"]: r["images"] * r["epochs"] for r in rows}

    def pct(x: float) -> str:  # four characters after the rung
        return f"{100 * x:.1f}" if x >= 0.09995 else f"{100 * x:.2f}"

    async def check(pilot):
        s = await loaded(pilot)
        board, d = s.board, s.query_one(BankDiagram)
        for a in up:
            assert verify_cell(board, a) == (f"2 {pct(err[a, 1])}", "bold")
        for a in out:
            assert verify_cell(board, a) == (f"1 {pct(err[a, 0])}", "dim")
        others = [a for a in board.shown if a not in {a for a, _ in err}]
        assert others and all(verify_cell(board, a) == ("-", None) for a in others)
        await pilot.press("o", "o", "o", "o")  # rank -> SMASH -> params -> FLOPs -> verify
        assert board.sort_by == "verify_error" and board.shown[:4] == order
        assert board.get_row_at(0)[5].plain.startswith("2 ")
        assert "sorted by verify rung, loss" in board.title()
        await pilot.press("d")  # 80 columns: the diagram pane on demand
        best, last = order[0], order[-1]
        await until(pilot, lambda: d.arch_id == best, what="the diagram of the verify phase's best")
        assert d.verify == (f"verify: rung 2/2 (best of 2), held-out {100 * err[best, 1]:.2f}% (loss "
                            f"{loss[best, 1]:.3f}) on {images[1]:,} images; rung 1 {100 * err[best, 0]:.2f}%")
        await until(pilot, lambda: drawn_verify(pilot.app, d) == d.verify, what="the line drawn")
        board.move_cursor(row=board.shown.index(last))
        await until(pilot, lambda: d.arch_id == last, what="the diagram of one halved out")
        assert d.verify == (f"verify: out at rung 1/2, held-out {100 * err[last, 0]:.2f}% (loss {loss[last, 0]:.3f}) "
                            f"on {images[0]:,} images")
        board.move_cursor(row=board.shown.index(others[0]))
        await until(pilot, lambda: d.arch_id == others[0], what="the diagram of one never verified")
        assert d.verify is None and not any(line.startswith("verify") for line in d.lines())

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_verify_column_follows_the_verify_phase(db):
    """Live, rung by rung: every candidate is in while rung 1 trains (wait, busy, then its error); once rung 2
    is queued the 2 left behind turn dim, and the pane says who is still in and who is out, and why one got
    in (via flops)."""
    run = read(db, None)
    ids = [r["arch_id"] for r in read(db, store.leaderboard)]
    a, b, c, d_ = ids[:3] + [ids[-1]]  # the last: a candidate by FLOPs, not by SMASH rank
    with store.connect_writer(db) as w:
        with w.transaction() as conn:  # the session run's own (finished) phase, replaced by one under way
            conn.execute("DELETE FROM verifications")
        w.update_run(run["id"], phase="verify")
        w.queue_verifications(run["id"], [(a, 1, "smash"), (b, 2, "smash"), (c, 3, "smash"),
                                          (d_, len(ids), "flops")], 0, 1, 50)
        w.set_verification(run["id"], a, 0, "done", 0.3, 0.6, 1.0)
        w.set_verification(run["id"], d_, 0, "done", 0.1, 0.2, 1.0)

    async def check(pilot):
        s = await loaded(pilot)
        board, d = s.board, s.query_one(BankDiagram)
        assert verify_cell(board, a) == ("1 30.0", "bold") and verify_cell(board, d_) == ("1 10.0", "bold")
        assert verify_cell(board, b) == ("1 wait", "bold") and verify_cell(board, c) == ("1 wait", "bold")
        with store.connect_writer(db) as w:
            w.set_verification(run["id"], b, 0, "running")
        await until(pilot, lambda: verify_cell(board, b) == ("1 busy", "bold"), what="the running verification")
        await pilot.press("o", "o", "o", "o")  # rank -> SMASH -> params -> FLOPs -> verify
        assert board.sort_by == "verify_error" and board.shown[:2] == [d_, a]
        with store.connect_writer(db) as w:
            w.set_verification(run["id"], b, 0, "done", 0.2, 0.4, 1.0)
            w.set_verification(run["id"], c, 0, "done", 0.4, 0.8, 1.0)
            w.queue_verifications(run["id"], [(d_, len(ids), "flops"), (b, 2, "smash")], 1, 1, 100)
            w.set_verification(run["id"], b, 1, "running")
        # halved out: the text stays, the style must change
        await until(pilot, lambda: verify_cell(board, a) == ("1 30.0", "dim"), what="a candidate halved out")
        assert verify_cell(board, c) == ("1 40.0", "dim")
        assert verify_cell(board, d_) == ("2 wait", "bold") and verify_cell(board, b) == ("2 busy", "bold")
        assert board.shown[:4] == [d_, b, a, c]  # the 2 still in first, then by loss (here 2 x the error)
        await pilot.press("d")
        board.move_cursor(row=board.shown.index(d_))
        await until(pilot, lambda: d.arch_id == d_, what="the diagram of the FLOPs candidate")
        assert d.verify == "verify: rung 2/2 (still in, via flops), queued for 100 images; rung 1 10.00%"
        with store.connect_writer(db) as w:
            w.set_verification(run["id"], d_, 1, "done", 0.05, 0.1, 1.0)
        want = "verify: rung 2/2 (still in, via flops), held-out 5.00% (loss 0.100) on 100 images; rung 1 10.00%"
        await until(pilot, lambda: d.verify == want, what="the pane to follow the phase")
        await until(pilot, lambda: verify_cell(board, d_) == ("2 5.00", "bold"), what="its rung 2 error")
        # wider than the pane at 80 columns: wrapped, not cut
        # wider than the pane at 80 columns: wrapped, not cut
        await until(pilot, lambda: drawn_verify(pilot.app, d) == want, what="the line drawn at 80 columns")
        board.move_cursor(row=board.shown.index(a))
        await until(pilot, lambda: d.arch_id == a, what="the diagram of one halved out")
        assert d.verify == "verify: out at rung 1/2, held-out 30.00% (loss 0.600) on 50 images"

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def make_alive(db: Path, status: str = "running") -> int:
    run = read(db, None)
    with store.connect_writer(db) as w:
        w.heartbeat(run["id"], status=status, pid=999_999, host="elsewhere")
    return run["id"]


def test_pause_key_writes_a_command_shown_pending_until_marked_done(db):
    make_alive(db)

    async def check(pilot):
        s = await loaded(pilot)
        assert s.state == "running"
        await pilot.press("p")
        await until(pilot, lambda: read(db, store.commands), what="a command row")
        cmd = read(db, store.commands)[0]
        assert (cmd["kind"], cmd["status"], json.loads(cmd["args_json"])) == ("pause", "pending", {})
        await until(pilot, lambda: f"pending: #{cmd['id']} pause" in status_text(s), what="pending shown")
        with store.connect_writer(db) as w:
            w.mark_command(cmd["id"], "done", "paused; checkpoint written")
        await until(pilot, lambda: "pending" not in status_text(s), what="pending cleared")
        log = "\n".join(s.log_view.lines_written)
        assert f"sent #{cmd['id']} pause: pending" in log
        assert f"command #{cmd['id']} pause done: paused; checkpoint written" in log

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_stale_heartbeat_shows_crashed_with_resume_key(db):
    run = read(db, None)
    with store.connect_writer(db) as w:
        w.update_run(run["id"], status="running", heartbeat_at="2020-01-01T00:00:00.000Z", pid=999_999)

    async def check(pilot):
        s = await loaded(pilot)
        assert s.state == "crashed"
        assert "CRASHED" in status_text(s) and "r resumes" in status_text(s)
        assert s.check_action("resume", ()) is True
        await pilot.press("p")  # nothing to pause: no command is written
        await pilot.pause(0.3)
        assert read(db, store.commands) == []

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_sample_on_a_finished_run_is_queued_and_offers_resume(db):
    async def check(pilot):
        s = await loaded(pilot)
        await pilot.press("n")
        await pilot.press("backspace", "backspace", "backspace", "7", "enter")
        await until(pilot, lambda: read(db, store.commands), what="the sample command")
        assert json.loads(read(db, store.commands)[0]["args_json"]) == {"n": 7}
        await until(pilot, lambda: any("press r to resume" in x for x in s.log_view.lines_written), what="offer")

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_diagram_shows_the_highlighted_architecture(db):
    ids = [r["arch_id"] for r in read(db, store.leaderboard)]

    async def check(pilot):
        s = await loaded(pilot)
        d = s.query_one(BankDiagram)
        assert d.display and s.query_one(LossPlot).display  # 200 columns: both beside each other
        await pilot.press("down")
        await until(pilot, lambda: d.arch_id == ids[1], what="the diagram of rank 2")
        conn = store.connect_reader(db)
        arch = Architecture.from_json(store.get_arch(conn, ids[1])["spec_json"])
        conn.close()
        expected = diagram(arch, width=d._width, ascii_only=d.ascii_only)
        # rank 2 was a verify candidate (verify_top=4): its line (wrapped to the pane) sits between the headline
        # and the diagram
        assert d.lines()[1].startswith("verify: rung ")
        start = next(i for i, line in enumerate(d.lines()) if line.startswith("architecture "))
        assert " ".join(line.strip() for line in d.lines()[1:start]) == d.verify
        assert d.lines()[start : start + len(expected)] == expected
        assert any(line.startswith("block 0:") for line in d.lines())
        assert d.lines()[-len(summary_lines(arch)):] == [line[:d._width] for line in summary_lines(arch)]
        await pilot.press("a")
        assert d.ascii_only and all(line.isascii() for line in d.lines())

    drive(SmashApp(db=db, runs_dir=db.parent), check, size=(200, 60))


def test_diagram_follows_the_highlighted_row_when_the_board_resorts_under_it(db):
    run = read(db, None)
    ids = [r["arch_id"] for r in read(db, store.leaderboard)]

    def rescore(arch_id: str, error: float) -> None:  # as the rank phase's rescoring writes it
        with store.connect_writer(db) as w:
            w.add_score(run["id"], arch_id, error, 0.1, 300, 0, source="rescore")

    async def check(pilot):
        s = await loaded(pilot)
        board, d = s.board, s.query_one(BankDiagram)
        await pilot.press("d")
        await until(pilot, lambda: d.arch_id == ids[0], what="the diagram of rank 1")

        async def diagram_is_the_highlighted_row(arch_id: str) -> None:
            await until(pilot, lambda: board.highlighted == arch_id, what=f"{arch_id} under the cursor")
            await until(pilot, lambda: d.arch_id == board.highlighted, what="the diagram to follow the cursor")
            await until(pilot, lambda: arch_id in screen_text(pilot.app), what="the diagram drawn")

        # the cursor on the top row watches the best: a new best moves under it without the cursor moving
        rescore(ids[4], 0.0001)
        await until(pilot, lambda: board.shown[0] == ids[4], what="the new best on top")
        await diagram_is_the_highlighted_row(ids[4])
        # off the top row the cursor keeps its architecture while the ranks around it move
        await pilot.press("down", "down")
        await diagram_is_the_highlighted_row(ids[1])
        rescore(ids[6], 0.0002)
        await until(pilot, lambda: board.shown[1] == ids[6], what="the second new best")
        await diagram_is_the_highlighted_row(ids[1])
        # a sort by another column puts other architectures on the cursor's row
        await pilot.press(*["up"] * board.cursor_row)
        top = board.highlighted
        assert top == board.shown[0]
        await pilot.press("o", "o")  # rank -> SMASH error -> params
        assert board.sort_by == "params" and board.shown[0] != top
        await diagram_is_the_highlighted_row(board.shown[0])

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_narrow_diagram_on_demand_replaces_the_plot(db):
    async def check(pilot):
        s = await loaded(pilot)
        plot, d = s.query_one(LossPlot), s.query_one(BankDiagram)
        assert s.has_class("narrow") and plot.display and not d.display
        await pilot.press("d")
        await pilot.pause()
        assert d.display and not plot.display and d.region.height >= 8
        await until(pilot, lambda: d.arch_id == s.board.shown[0], what="the diagram")

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_filter_hides_rows_and_sort_reorders(db):
    rows = read(db, store.leaderboard)
    cut = sorted(r["params"] for r in rows)[len(rows) // 2]

    async def check(pilot):
        s = await loaded(pilot)
        await pilot.press("slash")
        await pilot.press(*f"params < {cut}", "enter")
        want = [r["arch_id"] for r in rows if r["params"] < cut]
        await until(pilot, lambda: s.board.shown == want, what="filtered rows")
        assert 0 < len(want) < len(rows) and s.board.row_count == len(want)
        await pilot.press("slash", "ctrl+u", "b", "a", "d", "enter")  # not a filter: dialog stays, rows too
        await pilot.pause()
        assert "cannot read" in str(pilot.app.screen.query_one(".dialog-error").render())
        await pilot.press("escape", "o", "o")  # rank -> SMASH error -> params
        assert s.board.sort_by == "params"
        assert [s.board.model.entries[a].params for a in s.board.shown] == sorted(r["params"] for r in rows
                                                                                  if r["params"] < cut)

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_export_writes_the_highlighted_architecture(db):
    top = read(db, store.leaderboard)[0]["arch_id"]

    async def check(pilot):
        s = await loaded(pilot)
        await pilot.press("e")
        path = db.with_suffix("") / f"{top}.json"
        await until(pilot, path.exists, what="the export")
        assert Architecture.from_json(path.read_text()).id == top
        await until(pilot, lambda: any(str(path) in x for x in s.log_view.lines_written), what="where it went")

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_help_and_palette_list_every_control(db):
    async def check(pilot):
        s = await loaded(pilot)
        titles = [c.title for c in pilot.app.get_system_commands(s)]
        for b in SearchScreen.BINDINGS + Leaderboard.BINDINGS + SmashApp.BINDINGS:
            assert any(t.startswith(b.description) for t in titles), b.description
        await pilot.press("question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        shown = {keys for _, keys, _ in key_rows(pilot.app.key_groups(s))}
        for b in SearchScreen.BINDINGS + Leaderboard.BINDINGS + SmashApp.BINDINGS:
            assert (b.key_display or b.key.replace(",", " / ")) in shown, b.key
        await pilot.press("escape")
        assert pilot.app.screen is s

    drive(SmashApp(db=db, runs_dir=db.parent), check)


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
def test_both_sizes_render_plot_leaderboard_and_log(db, size):
    top = read(db, store.leaderboard)[0]["arch_id"]

    async def check(pilot):
        s = await loaded(pilot)
        await until(pilot, lambda: top[:ARCH_CHARS] in screen_text(pilot.app), what="the board drawn")
        # the footer fills in its bindings a refresh after the screen: wait for it rather than race it
        await until(pilot, lambda: "Pause" in screen_text(pilot.app), what="the footer drawn")
        shot = screen_text(pilot.app)
        for text in ("leaderboard", "train loss", "events and commands", "Pause"):
            assert text in shot, text
        plot = s.query_one(LossPlot)
        assert plot.region.height >= 8 and "┤" in plot.render().plain

    drive(SmashApp(db=db, runs_dir=db.parent), check, size=size)


def test_no_color(db, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def check(pilot):
        s = await loaded(pilot)
        assert pilot.app.no_color
        plot = s.query_one(LossPlot)
        await until(pilot, lambda: len(plot.train) > 0, what="steps")
        text = plot.render()
        assert "┤" in text.plain and not text.spans and not text.style
        assert not s.query_one(StatusLine).text.spans or all(not sp.style for sp in s.query_one(StatusLine).text.spans)

    drive(SmashApp(db=db, runs_dir=db.parent), check)


def test_quit_says_a_running_engine_keeps_running(db):
    make_alive(db)
    app = SmashApp(db=db, runs_dir=db.parent)

    async def check(pilot):
        await loaded(pilot)
        assert "keeps running" in app.exit_message() and str(db) in app.exit_message()
        await pilot.press("q")

    drive(app, check)
    assert app._exit


def test_studies_key_shows_each_study_and_its_statistics(db):
    async def empty(pilot):
        await loaded(pilot)
        await pilot.press("t")
        await until(pilot, lambda: "no studies yet" in screen_text(pilot.app), what="the empty message")
        await pilot.press("escape")
        assert isinstance(pilot.app.screen, SearchScreen)

    drive(SmashApp(db=db, runs_dir=db.parent), empty)
    w = store.connect_writer(db)
    sid = w.create_study(1, "correlation", {"every": 2})
    w.set_study_stats(sid, [dict(variant="run", n=12, kendall_tau=0.4242, kendall_p=0.05, spearman_rho=0.5757,
                                 spearman_p=0.05, top_k=5, top_k_overlap=0.6, regret=0.0123, kendall_lo=-0.1,
                                 kendall_hi=0.8),
                            dict(variant="params", n=12, kendall_tau=0.1111, kendall_lo=-0.3, kendall_hi=0.5)])
    w.update_study(sid, status="done", message="tau 0.424, rho 0.576 over 12 architectures")
    w.close()

    async def shown(pilot):
        await loaded(pilot)
        await pilot.press("t")
        await until(pilot, lambda: "0.424" in screen_text(pilot.app), what="the study's statistics")
        shot = screen_text(pilot.app)
        for text in ("correlation (done)", "tau 0.424, rho 0.576", "0.576", "0.60", "1.23 pts", "-0.10..+0.80",
                     "params", "+0.111", "-0.30..+0.50"):
            assert text in shot, text
        assert shot.index("run ") < shot.index("params")  # SMASH first, the baselines under it
        assert "win" not in shot  # columns no row uses are left out

    drive(SmashApp(db=db, runs_dir=db.parent), shown)


def test_g_cycles_final_curves_and_names_a_transfer_final_dataset(db):
    w = store.connect_writer(db)
    try:
        run = store.get_run(w.conn)
        engine_final = store.finals(w.conn, run["id"])[0]
        fid = w.create_transfer_final(run["id"], engine_final["arch_id"], 2, None, None, "modelnet10")
        for epoch in (1, 2):
            w.add_final_step(fid, epoch=epoch, train_loss=2.0 / epoch, train_error=0.5, val_error=0.4 / epoch,
                             test_error=0.45 / epoch, lr=0.1, images_per_s=None, at=store.now_iso())
    finally:
        w.close()

    async def check(pilot):
        s = await loaded(pilot)
        plot = s.query_one(LossPlot)
        await until(pilot, lambda: len(plot.finals) == 2, what="both final curves")
        captions = []
        for _ in range(3):
            await pilot.press("g")
            await pilot.pause()
            captions.append(plot.caption().plain)
        assert captions[0].startswith(f"final #{engine_final['id']} {engine_final['arch_id'][:8]}: ")
        assert captions[1].startswith(f"final #{fid} {engine_final['arch_id'][:8]} on modelnet10: ")
        assert captions[2].startswith("train loss")  # back to the search

    drive(SmashApp(db=db, runs_dir=db.parent), check)
