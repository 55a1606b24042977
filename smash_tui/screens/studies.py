"""The studies of a run (`smash-tui study ...`): each study's headline and its statistics per variant.

Read in a thread worker like every other read of the UI; the table is built once the rows arrive."""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from smash_engine import store

# (column, header, format) of study_stats worth showing; a column empty for every row is left out. Errors and
# their differences are fractions in the file and shown as the study headlines say them: percent and points.
COLUMNS = (("variant", "variant", "{}"), ("n", "n", "{}"), ("kendall_tau", "tau", "{:+.3f}"),
           ("kendall_ci", "tau 95%", "{}"), ("spearman_rho", "rho", "{:+.3f}"),
           ("top_k_overlap", "top-k", "{:.2f}"), ("regret", "regret", "{:.2f} pts"),
           ("win_rate", "true wins", "{:.0%}"), ("mean_gap", "mean gap", "{:+.2f} pts"),
           ("mean_error", "mean err", "{:.2f}%"), ("best_error", "best err", "{:.2f}%"))
_AS_POINTS = {"regret", "mean_gap", "mean_error", "best_error"}  # x100 before formatting
BASELINES = ("params", "flops", "synflow", "naswot")  # a correlation study's free predictors, listed after SMASH
EMPTY = "no studies yet: run `smash-tui study correlation|capacity|corrupt|archgrad DB` (docs/studies.md)"


def studies_text(rows: list[tuple[dict, list[dict]]]) -> list:
    """Renderables: per study a title line and a table of its statistics."""
    if not rows:
        return [Text(EMPTY)]
    out: list = []
    for study, stats in rows:
        out.append(Text(f"#{study['id']} {study['kind']} ({study['status']}): {study['message'] or ''}",
                        style="bold"))
        stats = [s | {"kendall_ci": None if s.get("kendall_lo") is None or s.get("kendall_hi") is None
                      else f"{s['kendall_lo']:+.2f}..{s['kendall_hi']:+.2f}"}
                 for s in sorted(stats, key=lambda s: s["variant"] in BASELINES)]
        cols = [c for c in COLUMNS if any(s.get(c[0]) is not None for s in stats)]
        table = Table(box=None, expand=False, padding=(0, 1))
        for _, header, _ in cols:
            table.add_column(header, no_wrap=True)
        for s in stats:
            table.add_row(*("-" if s.get(k) is None else fmt.format(100 * s[k] if k in _AS_POINTS else s[k])
                            for k, _, fmt in cols))
        out += [table, Text("")]
    return out


class StudiesScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,t", "close", "Close")]

    def __init__(self, db: Path, run_id: int) -> None:
        super().__init__()
        self.db, self.run_id = db, run_id

    def compose(self) -> ComposeResult:
        box = VerticalScroll(Static("reading the studies...", id="studies-body"), classes="dialog help")
        box.border_title = "studies (Escape closes)"
        yield box

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        conn = store.connect_reader(self.db)
        try:
            rows = [(s, store.study_stats(conn, s["id"])) for s in store.studies(conn, self.run_id)]
        finally:
            conn.close()
        self.app.call_from_thread(self.show, rows)

    def show(self, rows: list[tuple[dict, list[dict]]]) -> None:
        self.query_one("#studies-body", Static).update(Group(*studies_text(rows)))

    def action_close(self) -> None:
        self.dismiss(None)
