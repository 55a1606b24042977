"""The memory-bank diagram of the highlighted architecture (text from `smash_tui.diagram`), redrawn to the
widget's width, scrollable when a deep architecture has more ops than rows."""

from __future__ import annotations

import os
import sys
import textwrap

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from smash_engine.errors import SmashError
from smash_engine.space import Architecture

from ..diagram import LEGEND, diagram, summary_lines


def wants_ascii() -> bool:
    """ASCII when asked (SMASH_TUI_ASCII=1) or when the terminal's encoding cannot show the middle dot."""
    if os.environ.get("SMASH_TUI_ASCII", "") not in ("", "0"):
        return True
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return bool(encoding) and encoding not in ("utf8", "utf16", "utf32")


class BankDiagram(VerticalScroll):
    """Call `show(arch_id, row, verify)` with an `archs` row (spec_json, params, flops, source...) and the line
    on its verify phase (`board_model.verify_line`), `set_verify` when only that line changed."""

    DEFAULT_CSS = "BankDiagram { height: 1fr; } BankDiagram > Static { width: auto; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ascii_only = wants_ascii()
        self.arch_id: str | None = None
        self.row: dict | None = None
        self.arch: Architecture | None = None
        self.error: str | None = None
        self.verify: str | None = None
        self._width = 0

    def compose(self):
        yield Static("move the leaderboard cursor to an architecture to see its banks", id="diagram-text")

    def show(self, arch_id: str, row: dict | None, verify: str | None = None) -> None:
        self.arch_id, self.row, self.arch, self.error, self.verify = arch_id, row, None, None, verify
        if row is None:
            self.error = f"architecture {arch_id} is not in the results file"
        else:
            try:
                self.arch = Architecture.from_json(row["spec_json"])
            except SmashError as e:  # a spec this version cannot read: say so, keep the UI alive
                self.error = f"cannot draw {arch_id}: {e}"
        self._redraw()
        self.scroll_home(animate=False)

    def set_verify(self, verify: str | None) -> None:
        if verify != self.verify:  # a redraw re-renders the whole diagram: not for a line that stayed
            self.verify = verify
            self._redraw()

    def toggle_ascii(self) -> None:
        self.ascii_only = not self.ascii_only
        self._redraw()

    def lines(self) -> list[str]:
        if self.error:
            return [self.error]
        if self.arch is None or self.row is None:
            return []
        width = max(self._width, 40)
        r = self.row
        head = (f"{r['id']}  {r['source']}  params {r['params'] or 0:,}  MFLOPs {(r['flops'] or 0) / 1e6:.2f}"
                + (f"  parent {r['parent_id']}" if r.get("parent_id") else ""))
        # the verify line sits under the headline, where it is seen without scrolling; it wraps, not cuts
        verify = textwrap.wrap(self.verify, width, subsequent_indent="  ") if self.verify else []
        return [head[:width], *verify, *diagram(self.arch, width=width, ascii_only=self.ascii_only),
                LEGEND[:width], "",
                *(line[:width] for line in summary_lines(self.arch))]

    def on_resize(self) -> None:
        width = self.scrollable_content_region.width
        if width != self._width:
            self._width = width
            self._redraw()

    def _redraw(self) -> None:
        lines = self.lines()
        if lines:
            text = Text("\n".join(lines), no_wrap=True)
            text.stylize("bold", 0, len(lines[0]))
            self.query_one("#diagram-text", Static).update(text)
