"""Run by test_tui_torch_free.py in a fresh interpreter (so no other test's imports count): opens a run the
way `smash-tui watch` does, shows its diagram for two architectures, the help and the studies, then prints
the torch modules loaded (none expected) as JSON on the last line.

    python tests/tui/torch_free_probe.py RUN.db
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from conftest import until  # this folder's: pytest and the results file's readers, no torch

import smash_tui.cli  # noqa: F401  (`smash-tui watch` starts here)
from smash_tui.app import SmashApp
from smash_tui.screens.search import SearchScreen
from smash_tui.widgets.bank_diagram import BankDiagram


async def main(db: Path) -> dict:
    app = SmashApp(db=db, runs_dir=db.parent)
    drawn = []
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SearchScreen) and app.screen.board.row_count > 1,
                    what="the leaderboard")
        s = app.screen
        d = s.query_one(BankDiagram)
        await pilot.press("d")
        for key in ("", "down"):
            if key:
                await pilot.press(key)
            await until(pilot, lambda: d.arch_id == s.board.highlighted and d.lines(), what="the diagram")
            drawn.append((d.arch_id, d.lines()[-1]))
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        await pilot.press("escape", "t")
        await pilot.pause(0.3)
        await pilot.press("escape")
    return {"drawn": drawn, "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
