"""The leaderboard table: the best `MAX_ROWS` architectures of the current sort and filter.

Rows are keyed by architecture id and never rebuilt: a refresh removes the rows that left the shown set,
adds the ones that joined, rewrites only the cells whose text changed (`update_cell`), and re-sorts only
when the order changed. The cursor stays on the same architecture while ranks move under it.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from .board_model import BoardModel, Condition, Entry

MAX_ROWS = 500  # a terminal shows a few dozen; past this, filter (the title says how many match)
VERIFY_WIDTH = 6
# (key, label, width): fixed widths, so 80 columns hold the whole table and columns never jitter as rows
# arrive; arch ids are shown by their first 12 hex digits (any unique prefix works in the CLI).
# The op count lives in the diagram pane (and in filters: `ops > 10`); its column went to the verify phase's
# error, which says more about which architecture to train.
COLUMNS = (("rank", "rank", 5), ("arch", "arch id", 12), ("smash_error", "SMASH", 6), ("params", "params", 6),
           ("flops", "MFLOPs", 6), ("verify_error", "verify", VERIFY_WIDTH), ("source", "source", 9),
           ("final_status", "final", 6), ("test_error", "test", 6))
ARCH_CHARS = 12
LABELS = {"rank": "rank", "smash_error": "SMASH error", "params": "params", "flops": "FLOPs", "n_ops": "ops",
          "verify_error": "verify rung, loss",
          "source": "source", "final_status": "final status", "test_error": "test error"}
SORTABLE = ("rank", "smash_error", "params", "flops", "verify_error", "source", "final_status", "test_error")


def _pct(x: float | None) -> str:
    return "-" if x is None else "100.0%" if x >= 0.99995 else f"{100 * x:.2f}%"


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


_VERIFY_STATE = {"queued": "wait", "running": "busy"}


def _fit(x: float, width: int) -> str:
    """A percentage (no % sign) with as many decimals as `width` characters hold: 9.87, 21.3, 100."""
    return next((s for d in (2, 1) if len((s := f"{100 * x:.{d}f}")) <= width), f"{100 * x:.0f}")


def verify_cell(e: Entry) -> str | Text:
    """`RUNG ERROR` in six characters: the rung it reached (1-based, as the engine's events count) and its
    held-out error there, in percent, or wait / busy while that rung's training is queued or running. A
    candidate still in (at the phase's highest rung) is bold, one halved out dim, so the survivors and how far
    each got read at a glance."""
    if e.verify_rung is None:
        return "-"
    head = f"{e.verify_rung + 1} "
    width = VERIFY_WIDTH - len(head)
    if e.verify_status == "done" and e.verify_error is not None:
        value = _fit(e.verify_error, width)
    else:
        value = _VERIFY_STATE.get(e.verify_status or "", "?")
    # styled by a span, not the Text's base style: a Text compares equal on its spans only, and the table
    # rewrites a cell when its Text changes (a candidate halved out keeps its text, not its style)
    return Text.styled((head + value)[:VERIFY_WIDTH], "bold" if e.verify_in else "dim")


def cells(e: Entry) -> tuple[str | Text, ...]:
    final = e.final_status or "-"
    if e.final_status == "running":
        final = f"{e.final_epoch}/{e.final_epochs}"  # epochs done of planned
    flops = "-" if e.flops is None else f"{e.flops / 1e6:.2f}"
    return (str(e.rank), e.arch_id[:ARCH_CHARS], _pct(e.smash_error), _count(e.params), flops, verify_cell(e),
            e.source or "-", final, _pct(e.test_error))


class Leaderboard(DataTable):
    class ArchUnderCursor(Message):
        """The architecture under the cursor changed without the cursor moving (a re-sort, a new best on the
        top row, a filter): DataTable posts RowHighlighted only when the cursor's coordinate changes."""

        def __init__(self, board: Leaderboard, arch_id: str | None) -> None:
            super().__init__()
            self.board, self.arch_id = board, arch_id

        @property
        def control(self) -> Leaderboard:
            return self.board

    BINDINGS = [Binding("o", "cycle_sort", "Sort", show=False, tooltip="sort by the next column"),
                Binding("O", "reverse_sort", "Reverse", show=False, tooltip="reverse the sort order")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.model = BoardModel()
        self.conditions: list[Condition] = []
        self.filter_text = ""
        self.sort_by, self.reverse = "rank", False
        self.shown: list[str] = []  # arch ids in table order
        self._text: dict[str, tuple[str | Text, ...]] = {}  # arch id -> the cells on screen
        self.matching = 0
        self._title = ""

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def highlighted(self) -> str | None:
        if not self.shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def set_filter(self, text: str, conditions: list[Condition]) -> None:
        self.filter_text, self.conditions = text, conditions
        self.sync()

    def action_cycle_sort(self) -> None:
        self.sort_by = SORTABLE[(SORTABLE.index(self.sort_by) + 1) % len(SORTABLE)]
        self.reverse = False
        self.sync()

    def action_reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self.sync()

    def sync(self) -> None:
        """Bring the table in line with the model (called after each poll that brought rows, and on
        sort or filter changes)."""
        # the cursor follows its architecture as ranks move, except on the top row: there it keeps watching
        # the best (what a person who has not moved it wants)
        before = self.highlighted
        keep = before if self.cursor_row > 0 else None
        want = self.model.top(MAX_ROWS, self.conditions, self.sort_by, self.reverse)
        ids = [e.arch_id for e in want]
        wanted = set(ids)
        for arch_id in [a for a in self.shown if a not in wanted]:
            self.remove_row(arch_id)
            del self._text[arch_id]
        for e in want:
            text = cells(e)
            old = self._text.get(e.arch_id)
            if old is None:
                self.add_row(*text, key=e.arch_id)
            elif old != text:
                for (key, _, _), new, was in zip(COLUMNS, text, old, strict=True):
                    if new != was:
                        self.update_cell(e.arch_id, key, new)
            self._text[e.arch_id] = text
        if [a for a in self.shown if a in wanted] + [a for a in ids if a not in self.shown] != ids:
            # the arch cell holds the id's first 12 hex digits: unique among any run's archs in practice
            pos = {a[:ARCH_CHARS]: i for i, a in enumerate(ids)}
            self.sort("arch", key=lambda a: pos[a])
        self.shown = ids
        self.matching = self.model.count(self.conditions)
        self._label_sorted_column()
        title = self.title()
        if title != self._title:  # setting a border title repaints the table, changed or not
            self._title = title
            self.border_title = Text(title)
        if keep in wanted:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        elif keep is None and self.row_count:
            self.move_cursor(row=0, animate=False)
        if self.highlighted != before:
            self.post_message(self.ArchUnderCursor(self, self.highlighted))

    def _label_sorted_column(self) -> None:
        arrow = "v" if self.reverse else "^"
        for key, label, width in COLUMNS:
            col = self.columns.get(key)  # type: ignore[call-overload]
            want = (label[: width - 1] + arrow) if key == self.sort_by else label
            if col is not None and col.label.plain != want:
                col.label = Text(want)
                self.refresh()

    def title(self) -> str:
        n, shown = len(self.model), len(self.shown)
        sort = f"sorted by {LABELS[self.sort_by]}{' (reversed)' if self.reverse else ''}"
        if self.conditions:
            return f"leaderboard: {self.matching} of {n} match {self.filter_text!r}, {sort}"
        more = f", top {shown} shown" if shown < n else ""
        return f"leaderboard: {n} scored{more}, {sort}"
