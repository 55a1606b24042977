"""The search screen: status line, loss plot, leaderboard, memory-bank diagram, event/command log, controls.

Data flow: a thread worker polls the results file (`RunFeed`, incremental) and posts a `Polled` batch when
something changed, looking every POLL_S (IDLE_POLL_S while no engine is alive); the handlers here apply it to
the widgets on the event loop, redrawing only what the batch changed. Controls write one
`commands` row each (`store.insert_command`) from a worker; the row stays "pending" on the status line
until the engine marks it done or error, and its answer lands in the log.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer

from smash_engine import store
from smash_engine.errors import SmashError
from smash_engine.space import Architecture

from ..launch import spawn_engine
from ..messages import ArchLoaded, Batch, CommandSent, Notice, Polled, PollFailed
from ..widgets.bank_diagram import BankDiagram
from ..widgets.board_model import parse_filter, verify_line
from ..widgets.event_log import EventLog
from ..widgets.leaderboard import Leaderboard
from ..widgets.loss_plot import LossPlot
from ..widgets.status import Progress, Rate, StatusLine
from .base import IDLE_POLL_S, POLL_S, BaseScreen
from .dialogs import AskNumber, Confirm, FilterDialog
from .feed import RunFeed
from .studies import StudiesScreen

WIDE = 150  # columns from which plot and leaderboard sit beside diagram and log
ALIVE = ("running", "paused")
ENGINE_COMMAND_ECHO = re.compile(r"^command (pause|continue|stop|sample|final)( failed)?: ")


def describe(kind: str, args: dict[str, Any]) -> str:
    if kind == "sample":
        return f"sample {args.get('n', 100)}"
    if kind == "final":
        return f"final {str(args.get('arch', '?'))[:8]}" + (f" {args['epochs']} ep" if args.get("epochs") else "")
    return kind


class SearchScreen(BaseScreen):
    BINDINGS = [
        Binding("p", "pause_continue", "Pause", tooltip="pause the engine, or continue a paused one"),
        Binding("n", "sample", "Sample N", tooltip="score N more random architectures (asks N, default 100)"),
        Binding("f", "final", "Final", tooltip="final-train the highlighted architecture (asks epochs, confirms)"),
        Binding("s", "stop", "Stop", tooltip="stop the search: checkpoint and exit the engine (confirms)"),
        Binding("r", "resume", "Resume", tooltip="start an engine on a stopped, crashed or finished run"),
        Binding("d", "toggle_diagram", "Diagram", tooltip="show or hide the memory-bank diagram"),
        # the footer shows the keys above (and q, ?) in 80 columns; these are in the help (?) and palette
        Binding("e", "export", "Export", show=False,
                tooltip="write the highlighted architecture's JSON to the run folder"),
        Binding("slash", "filter", "Filter", key_display="/", show=False,
                tooltip="filter the leaderboard: params < 2e6"),
        Binding("l", "log_scale", "Log y", show=False, tooltip="log scale on the plot's y axes"),
        Binding("m", "smooth", "Smooth", show=False, tooltip="smooth the plotted curves (moving average)"),
        Binding("g", "cycle_curve", "Curve", show=False, tooltip="plot the search, or each final training in turn"),
        Binding("t", "studies", "Studies", show=False, tooltip="the run's studies (smash-tui study), their statistics"),
        Binding("a", "ascii", "ASCII", show=False, tooltip="ASCII-only diagram on or off"),
        Binding("escape", "back", "Runs", show=False, tooltip="back to the list of runs (the engine keeps running)"),
    ]

    def __init__(self, db: Path) -> None:
        super().__init__()
        self.db = Path(db)
        self.feed = RunFeed(self.db)
        self.run: dict[str, Any] | None = None
        self.state = "created"
        self.progress = Progress()
        self.rates = {"smash": Rate(), "scores": Rate()}
        self.by_source: Counter[str] = Counter()
        self.finals: list[dict[str, Any]] = []
        self.verifications: list[dict[str, Any]] = []
        self._verify_over = False  # the run has left the verify phase (its line then ranks the last rung)
        self.cmd_status: dict[int, str] = {}  # command id -> status last seen
        self.cmd_text: dict[int, str] = {}
        self.cmd_count: dict[int, str] = {}  # running sample/score command id -> " scored/total"
        self.arch_rows: dict[str, dict[str, Any] | None] = {}  # cache of archs rows read for the diagram
        self.show_diagram: bool | None = None  # None: shown when wide, on demand (d) when narrow
        self.polls = 0
        self._enabled: tuple[str, bool] | None = None
        self._plot_caption: Text | None = None

    def compose(self) -> ComposeResult:
        yield StatusLine(id="status")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield LossPlot(id="plot")
                yield Leaderboard(id="board")
            with Vertical(id="right"):
                yield BankDiagram(id="diagram")
                yield EventLog(id="log")
        yield Footer(show_command_palette=False)  # 80 columns hold the keys or the palette's hint, not both

    def on_mount(self) -> None:
        self.plot.colorless = self.app.no_color
        self._caption_plot()
        self.query_one("#diagram").border_title = "memory banks (d hides, a ASCII)"
        self.log_view.border_title = "events and commands"
        self.board.border_title = Text("leaderboard (loading)")
        self.board.focus()
        self._layout()
        self.poll_loop()

    # -- widgets -------------------------------------------------------------------------------------
    @property
    def plot(self) -> LossPlot:
        return self.query_one(LossPlot)

    @property
    def board(self) -> Leaderboard:
        return self.query_one(Leaderboard)

    @property
    def diagram(self) -> BankDiagram:
        return self.query_one(BankDiagram)

    @property
    def log_view(self) -> EventLog:
        return self.query_one(EventLog)

    def on_resize(self) -> None:
        self._layout()

    def _layout(self) -> None:
        """80x24: plot above leaderboard, the diagram replacing the plot on demand; wide: two columns."""
        narrow = self.size.width < WIDE
        shown = (not narrow) if self.show_diagram is None else self.show_diagram
        self.set_class(narrow, "narrow")
        self.set_class(narrow and shown, "diagram-on")
        self.set_class(not narrow and not shown, "-hide-diagram")

    # -- polling -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def poll_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                try:
                    conn = conn or self.feed.connect()
                    batch = self.feed.poll_changes(conn)
                    if batch is not None:
                        self.post_poll(Polled(batch))
                except (SmashError, sqlite3.Error) as e:  # locked, replaced, not migrated yet: try again
                    self.post_poll(PollFailed(str(e)))
                    if conn is not None:
                        conn.close()
                    conn = None
                # nothing but an engine writes to a run, so without one alive there is little to look for
                if not self.wait_next_poll(POLL_S if self.feed.state in (*ALIVE, "created") else IDLE_POLL_S):
                    return
        finally:
            if conn is not None:
                conn.close()

    def on_poll_failed(self, msg: PollFailed) -> None:
        if self.polls == 0 or "no results file" not in msg.error:
            self.log_view.add(f"cannot read {self.db}: {msg.error}", "warning")
        self._drawn.set()

    def on_polled(self, msg: Polled) -> None:
        try:
            self.apply(msg.batch)
        finally:
            self._drawn.set()

    def apply(self, b: Batch) -> None:
        self.polls += 1
        self.run, self.state = b.run, b.state
        if b.steps or b.val_steps:
            self.plot.add_steps(b.steps, b.val_steps)
            for r in b.steps[-30:]:
                self.rates["smash"].add(r["step"], r["at"])
        for e in b.events:
            # the engine also logs each command's answer as an event; live, the UI logs it from the commands
            # table (with its #id), so skip the echo; the history (first poll) keeps it
            if b.first or not ENGINE_COMMAND_ECHO.match(e["message"]):
                self.log_view.add_event(e)
        self._apply_commands(b.commands)
        if b.scores:
            self.board.model.add_scores(b.scores)
            self.by_source.update(s.get("source") or "?" for s in b.scores if s["status"] == "ok")
            for s in b.scores[-30:]:
                self.rates["scores"].add(sum(self.by_source.values()), s["scored_at"])
        # after the scores: a final's row needs its architecture on the board
        changed = self.board.model.set_finals(b.finals) if b.scores or b.finals != self.finals else []
        self.finals = b.finals
        verify_moved = b.verifications != self.verifications
        if b.scores or verify_moved:
            changed += self.board.model.set_verifications(b.verifications)
        self.verifications = b.verifications
        over = b.run is not None and b.run["phase"] in ("final", "done")
        if verify_moved or over != self._verify_over:
            self._verify_over = over
            if self.diagram.arch_id:
                self.diagram.set_verify(self._verify_line(self.diagram.arch_id))
        for fid, rows in b.final_steps.items():
            f = next((f for f in b.finals if f["id"] == fid), {})
            name = str(f.get("arch_id", "?"))[:8]
            # a transfer final (`smash-tui final --dataset`) trained on another dataset: say which
            self.plot.set_final(fid, name + (f" on {f['dataset']}" if f.get("dataset") else ""), rows)
        if b.scores or changed or b.first:
            self.board.sync()
        if b.first and self.board.row_count:
            self.board.move_cursor(row=0)
            self._want_arch(self.board.highlighted)
        self._caption_plot()
        self._show_status()
        # what check_action greys out depends on these alone; refreshing bindings rebuilds the whole footer
        enabled = (self.state, self.board.row_count > 0)
        if enabled != self._enabled:
            self._enabled = enabled
            self.refresh_bindings()

    def _caption_plot(self) -> None:
        caption = self.plot.caption()
        if caption != self._plot_caption:  # setting a border title repaints the widget, changed or not
            self._plot_caption = caption
            self.plot.border_title = caption

    def _apply_commands(self, rows: list[dict[str, Any]]) -> None:
        for c in reversed(rows):  # oldest first, so the log reads in order
            cid, status = c["id"], c["status"]
            self.cmd_text.setdefault(cid, f"#{cid} {describe(c['kind'], json.loads(c['args_json'] or '{}'))}")
            old = self.cmd_status.get(cid)
            self.cmd_status[cid] = status
            # sample and score run with a count until every architecture is scored
            if status == "running" and c.get("total"):
                self.cmd_count[cid] = f" {c.get('progress') or 0}/{c['total']}"
            else:
                self.cmd_count.pop(cid, None)
            if old is not None and old != status and status in ("done", "error"):
                level = "info" if status == "done" else "error"
                self.log_view.add(f"command {self.cmd_text[cid]} {status}: {c['message'] or ''}", level)

    def _show_status(self) -> None:
        p, run = self.progress, self.run
        if run is None:
            self.query_one(StatusLine).show(None, self.state, p, self.app.no_color)
            return
        cfg = json.loads(run["config_json"]).get("train", {})
        p.phase = run["phase"]
        p.scored = len(self.board.model)
        p.per_s, p.unit, p.done, p.total = None, "archs", 0, 0
        if p.phase == "smash":
            p.done, p.total, p.unit = run["step"], run["total_steps"] or 0, "steps"
            p.per_s = self.rates["smash"].per_s()
        elif p.phase == "rank":
            p.done, p.total, p.per_s = self.by_source["random"], cfg.get("n_random", 0), self.rates["scores"].per_s()
        elif p.phase == "refine":
            p.done = self.by_source["perturb"] + self.by_source["hillclimb"]
            p.total, p.per_s = cfg.get("n_perturb", 0) + cfg.get("n_hillclimb", 0), self.rates["scores"].per_s()
        elif p.phase == "final":
            own = [f for f in self.finals if not f.get("dataset")]  # the engine's; transfers run elsewhere
            p.done, p.total, p.unit = sum(f["status"] == "done" for f in own), len(own), "finals"
        order = self.board.model.order
        p.best = (order[0][2], order[0][0]) if order else None
        running = [f for f in self.finals if f["status"] == "running"]
        p.final = f"final #{running[0]['id']} epoch {running[0]['epoch']}/{running[0]['epochs']}" if running else ""
        p.pending = [self.cmd_text[c] + self.cmd_count.get(c, "") for c, s in sorted(self.cmd_status.items())
                     if s in ("pending", "running")]
        self.query_one(StatusLine).show(run, self.state, p, self.app.no_color)

    # -- the diagram follows the leaderboard cursor --------------------------------------------------
    @on(DataTable.RowHighlighted, "#board")
    @on(Leaderboard.ArchUnderCursor, "#board")
    def _row_highlighted(self) -> None:
        # the table's current row, not the event's: a re-sort between the event and now moved rows under it
        self._want_arch(self.board.highlighted)

    def _want_arch(self, arch_id: str | None) -> None:
        if arch_id is None or arch_id == self.diagram.arch_id:
            return
        if arch_id in self.arch_rows:
            self.diagram.show(arch_id, self.arch_rows[arch_id], self._verify_line(arch_id))
        else:
            self.load_arch(arch_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="arch")
    def load_arch(self, arch_id: str) -> None:
        conn = store.connect_reader(self.db)
        try:
            self.post_message(ArchLoaded(arch_id, store.get_arch(conn, arch_id)))
        finally:
            conn.close()

    def on_arch_loaded(self, msg: ArchLoaded) -> None:
        if len(self.arch_rows) > 500:
            self.arch_rows.clear()
        self.arch_rows[msg.arch_id] = msg.row
        if msg.arch_id == self.board.highlighted:
            self.diagram.show(msg.arch_id, msg.row, self._verify_line(msg.arch_id))

    def _verify_line(self, arch_id: str) -> str | None:
        if not self.verifications:
            return None
        # verify_eta is in the config of runs since successive halving; older ones verified in one rung
        eta = json.loads(self.run["config_json"]).get("train", {}).get("verify_eta") if self.run else None
        return verify_line(arch_id, self.verifications, eta, self._verify_over)

    # -- controls ------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resume":
            return self.state not in ALIVE or None  # greyed out while an engine holds the run
        if action in ("final", "export"):
            return self.board.row_count > 0 or None
        return True

    def action_pause_continue(self) -> None:
        if self.state not in ALIVE:
            self.log_view.add(f"the engine is {self.state}: nothing to pause (r resumes it)", "warning")
            return
        self.send("continue" if self.state == "paused" else "pause", {})

    def action_sample(self) -> None:
        def chosen(n: int | None) -> None:
            if n:
                self.send("sample", {"n": n})

        self.app.push_screen(AskNumber("sample more architectures", "how many random architectures to score?",
                                       100), chosen)

    def action_final(self) -> None:
        arch = self.board.highlighted
        if arch is None:
            self.log_view.add("no architecture highlighted: move the leaderboard cursor first", "warning")
            return
        default = json.loads(self.run["config_json"])["train"].get("final_epochs", 15) if self.run else 15

        def confirm(epochs: int | None) -> None:
            def go(yes: bool | None) -> None:
                if yes:
                    self.send("final", {"arch": arch, "epochs": epochs})

            if epochs:
                self.app.push_screen(Confirm("final training", self.final_question(arch, epochs)), go)

        self.app.push_screen(AskNumber("final training", f"epochs of final training for {arch}:", default), confirm)

    def final_question(self, arch: str, epochs: int) -> str:
        q = f"Train {arch} from scratch for {epochs} epochs?"
        if self.state not in ALIVE:  # nothing will pick the command up until an engine starts
            return (f"{q} No engine is running on this run ({self.state}): y queues the training, then press r "
                    "to start an engine, which runs it.")
        phase = self.run["phase"] if self.run else ""
        when = "next" if phase in ("final", "done") else "after the search phases"  # as the engine answers
        return f"{q} The engine queues it and runs it {when}."

    def action_stop(self) -> None:
        if self.state not in ALIVE:
            self.log_view.add(f"the engine is {self.state} already", "warning")
            return
        def go(yes: bool | None) -> None:
            if yes:
                self.send("stop", {})

        self.app.push_screen(Confirm("stop the search", "Stop the search? The engine writes a checkpoint and "
                                     "exits; r resumes it later."), go)

    @work(thread=True, exit_on_error=False, group="command")
    def send(self, kind: str, args: dict[str, Any]) -> None:
        """Write the command row (a short write transaction, so off the event loop), then re-read the run so
        the answer says whether a live engine will pick it up."""
        run_id = self.run["id"] if self.run else 1
        cid = store.insert_command(self.db, run_id, kind, args)
        conn = store.connect_reader(self.db)
        try:
            run = store.get_run(conn, run_id)
        finally:
            conn.close()
        self.post_message(CommandSent(cid, kind, args, store.engine_state(run) if run else "created"))

    def on_command_sent(self, msg: CommandSent) -> None:
        text = self.cmd_text[msg.command_id] = f"#{msg.command_id} {describe(msg.kind, msg.args)}"
        self.cmd_status.setdefault(msg.command_id, "pending")
        if msg.engine_state in ALIVE:
            self.log_view.add(f"sent {text}: pending until the engine answers", "ui")
        else:
            self.log_view.add(f"queued {text}: the engine is {msg.engine_state}; press r to resume it and it "
                              "will run the command", "warning")
        self._show_status()

    def action_resume(self) -> None:
        if self.state in ALIVE:
            self.log_view.add(f"the engine is {self.state}: no need to resume", "warning")
            return
        self.resume_engine()

    @work(thread=True, exit_on_error=False, group="command")
    def resume_engine(self) -> None:
        pid = spawn_engine(self.db)
        log = self.db.with_suffix("") / "engine.log"
        self.post_message(Notice(f"started an engine (pid {pid}) on {self.db}; its output goes to {log}", "ui"))

    def action_studies(self) -> None:
        self.app.push_screen(StudiesScreen(self.db, self.run["id"] if self.run else 1))

    def action_export(self) -> None:
        arch = self.board.highlighted
        if arch is None:
            self.log_view.add("no architecture highlighted to export", "warning")
            return
        self.export_arch(arch)

    @work(thread=True, exit_on_error=False, group="export")
    def export_arch(self, arch_id: str) -> None:
        conn = store.connect_reader(self.db)
        try:
            row = store.get_arch(conn, arch_id)
        finally:
            conn.close()
        if row is None:
            raise SmashError(f"architecture {arch_id} is not in {self.db}")
        path = self.db.with_suffix("") / f"{arch_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(Architecture.from_json(row["spec_json"]).to_json(indent=2) + "\n")
        os.replace(tmp, path)  # never a half-written file under the final name
        self.post_message(Notice(f"exported {arch_id} to {path}", "ui"))

    def on_notice(self, msg: Notice) -> None:
        self.log_view.add(msg.text, msg.level)
        self.app.notify(msg.text, severity="error" if msg.level == "error" else "information", timeout=4)

    # -- view toggles --------------------------------------------------------------------------------
    def action_toggle_diagram(self) -> None:
        self.show_diagram = not self.diagram_visible
        self._layout()

    @property
    def diagram_visible(self) -> bool:
        return self.has_class("diagram-on") or not (self.has_class("narrow") or self.has_class("-hide-diagram"))

    def action_filter(self) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.board.set_filter(text, parse_filter(text))

        self.app.push_screen(FilterDialog(self.board.filter_text), apply)

    def action_log_scale(self) -> None:
        self.plot.log_scale = not self.plot.log_scale
        self._replot()

    def action_smooth(self) -> None:
        self.plot.smooth = not self.plot.smooth
        self._replot()

    def action_cycle_curve(self) -> None:
        if not self.plot.finals:
            self.log_view.add("no final training has logged an epoch yet: the plot shows the search", "warning")
        self.plot.cycle_view()
        self._replot()

    def action_ascii(self) -> None:
        self.diagram.toggle_ascii()

    def _replot(self) -> None:
        self._caption_plot()
        self.plot.refresh()

    def action_back(self) -> None:
        self.app.switch_to_runs()  # type: ignore[attr-defined]
