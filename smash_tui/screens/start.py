"""The start screen: the runs in the runs folder with their state, and keys to open one, start a new search
(a form; the engine is started detached by `smash-tui run --detach`) or resume a stopped or crashed one."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from smash_engine import store
from smash_engine.errors import SmashError

from ..cli_common import pct
from ..launch import spawn_engine
from ..messages import Launch, Notice, RunsListed, SearchStarted
from ..widgets.status import STATE_STYLE, parse_time
from .base import IDLE_POLL_S, BaseScreen
from .dialogs import NewSearch

# a running engine's row has to fit 80 columns: the phase leads the progress cell, and an unreadable file's
# reason goes to the hint line (the cell would be too narrow for it anyway)
COLUMNS = (("run", "run"), ("state", "status"), ("progress", "progress"), ("top_smash", "top SMASH"),
           ("pick_test", "pick test"), ("age", "updated"), ("engine", "engine"))
ALIVE = ("running", "paused")


def _age(at: str | None) -> str:
    t = parse_time(at)
    if t is None:
        return "-"
    s = max(int(datetime.now(UTC).timestamp() - t), 0)
    return f"{s}s ago" if s < 60 else f"{s // 60}m ago" if s < 3600 else f"{s // 3600}h ago" if s < 86400 \
        else f"{s // 86400}d ago"


def summarize(path: Path) -> dict[str, Any]:
    """One row of the list (read in a worker): the run's summary, or why the file cannot be read."""
    try:
        conn = store.connect_reader(path)
    except SmashError as e:
        return {"path": path, "error": str(e)}
    try:
        return {"path": path, **(store.run_summary(conn) or {"error": "no run in this file yet"})}
    finally:
        conn.close()


def row_cells(s: dict[str, Any], colorless: bool) -> tuple[Any, ...]:
    name = Path(s["path"]).stem
    if "error" in s:
        return (name, "unreadable", "-", "-", "-", "-", "-")
    state = s["state"]
    if s["phase"] == "smash" and s["total_steps"]:
        progress = f"smash {s['step']}/{s['total_steps']}"
    else:
        progress = f"{s['phase']} {s['n_scored']} scored"
    pick = s["pick"]  # the run's pick (README: "best"), once a final training has finished
    engine = f"pid {s['pid']}" if state in ALIVE else "-"
    return (name, Text(state, style="" if colorless else STATE_STYLE.get(state, "")), progress,
            pct(s["top_smash"]), pct(pick["test_error"] if pick else None), _age(s["heartbeat_at"] or s["updated_at"]),
            engine)


class StartScreen(BaseScreen):
    BINDINGS = [
        Binding("enter", "open", "Open", tooltip="open the highlighted run"),
        Binding("n", "new", "New search", tooltip="start a new search (preset, dataset, epochs, device)"),
        Binding("r", "resume", "Resume", tooltip="start an engine on the highlighted stopped or crashed run"),
    ]

    def __init__(self, runs_dir: Path) -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.summaries: dict[str, dict[str, Any]] = {}
        self.cells: dict[str, tuple[Any, ...]] = {}
        self.launch = ""  # what the search started from here is doing, or why it failed; "" once its run opens
        self._hint = ""

    def compose(self) -> ComposeResult:
        yield Static(f"runs in {self.runs_dir}/", id="start-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="start-hint")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()

    def on_screen_resume(self) -> None:
        self.scan_loop()  # poll only while visible

    def on_screen_suspend(self) -> None:
        self.workers.cancel_group(self, "scan")

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan")
    def scan_loop(self) -> None:
        while True:
            files = sorted(self.runs_dir.glob("*.db")) if self.runs_dir.is_dir() else []
            self.post_poll(RunsListed([summarize(p) for p in files]))
            if not self.wait_next_poll(IDLE_POLL_S):  # a list of runs changes slowly
                return

    def on_runs_listed(self, msg: RunsListed) -> None:
        self._drawn.set()
        table = self.query_one("#runs", DataTable)
        seen = set()
        for s in msg.runs:
            key = str(s["path"])
            seen.add(key)
            cells = row_cells(s, self.app.no_color)
            old = self.cells.get(key)
            if old is None:
                table.add_row(*cells, key=key)
            else:  # only what changed: a rewritten cell repaints the table
                for (col, _), value, was in zip(COLUMNS, cells, old, strict=True):
                    if value != was:
                        table.update_cell(key, col, value)
            self.summaries[key], self.cells[key] = s, cells
        for key in [k for k in self.summaries if k not in seen]:
            table.remove_row(key)
            del self.summaries[key], self.cells[key]
        self.show_hint()

    def show_hint(self) -> None:
        s = self.highlighted()
        if self.launch:
            hint: str | Text = Text(self.launch)
        elif s is not None and "error" in s:  # the table cell is too narrow for the reason: say it in full
            hint = Text(f"{Path(s['path']).name}: {s['error']}")
        elif not self.summaries:
            hint = f"no results files in {self.runs_dir}/ yet: press n to start a search"
        else:
            hint = "Enter opens a run, n starts a new search, r resumes a stopped or crashed one, ? lists every key"
        if str(hint) != self._hint:
            self._hint = str(hint)
            self.query_one("#start-hint", Static).update(hint)

    def on_data_table_row_highlighted(self) -> None:
        self.show_hint()

    def highlighted(self) -> dict[str, Any] | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.summaries.get(key or "")

    def action_open(self) -> None:
        s = self.highlighted()
        if s is not None and "error" not in s:
            self.app.open_run(Path(s["path"]))  # type: ignore[attr-defined]

    def on_data_table_row_selected(self) -> None:
        self.action_open()

    def action_resume(self) -> None:
        s = self.highlighted()
        if s is None or ("error" in s and "older schema" not in s["error"]):  # an engine upgrades old files
            return
        if s.get("state") in ALIVE:
            self.app.notify(f"{Path(s['path']).stem}: its engine is {s['state']}; Enter opens it")
            return
        self.resume(Path(s["path"]))

    @work(thread=True, exit_on_error=False, group="launch")
    def resume(self, db: Path) -> None:
        pid = spawn_engine(db)
        self.post_message(Notice(f"started an engine (pid {pid}) on {db}"))
        self.post_message(SearchStarted(db))

    def action_new(self) -> None:
        def chosen(opts: dict | None) -> None:
            if opts:
                db = self.runs_dir / f"{opts['name']}.db" if opts.get("name") else self._unique_db(opts["preset"])
                # said at once: creating the run loads torch in the child, which takes up to a minute
                self.set_launch(f"starting engine for {db} ... (creating the run loads torch: up to a minute; "
                                "it opens here when ready)")
                self.start_search(db, opts)

        self.app.push_screen(NewSearch("new search", self.runs_dir), chosen)

    @work(thread=True, exit_on_error=False, group="launch")
    def start_search(self, db: Path, opts: dict[str, Any]) -> None:
        """`smash-tui run --detach` in a child process: creating a run loads the training code, which this UI
        process never imports."""
        cmd = [sys.executable, "-m", "smash_tui.cli", "run", "--detach", "--preset", opts["preset"],
               "--device", opts["device"], "--db", str(db), "--name", db.stem]
        if opts.get("dataset"):
            cmd += ["--dataset", opts["dataset"]]
        for key in ("epochs", "max_params", "max_mflops"):  # the budget: 0 or absent means none
            if opts.get(key):
                cmd += [f"--{key.replace('_', '-')}", str(opts[key])]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1]
            self.post_message(Launch(f"could not start the search: {why}"))  # stays until the next try
            self.post_message(Notice(f"could not start the search: {why}", "error"))
            return
        self.post_message(Launch(""))
        self.post_message(SearchStarted(db))

    def _unique_db(self, name: str) -> Path:
        path, n = self.runs_dir / f"{name}.db", 1
        while path.exists() or path.with_suffix("").exists():  # a run folder left by a deleted file is taken
            n += 1
            path = self.runs_dir / f"{name}-{n}.db"
        return path

    def on_notice(self, msg: Notice) -> None:
        self.app.notify(msg.text, severity="error" if msg.level == "error" else "information",
                        timeout=8 if msg.level == "error" else 4)

    def set_launch(self, text: str) -> None:
        self.launch = text
        self.show_hint()

    def on_launch(self, msg: Launch) -> None:
        self.set_launch(msg.text)

    def on_search_started(self, msg: SearchStarted) -> None:
        self.app.open_run(msg.db)  # type: ignore[attr-defined]
