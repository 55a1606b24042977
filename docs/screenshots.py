"""SVG screenshots of the real UI for the README and docs/, taken with Textual's own screenshot support.

    .venv/bin/python docs/screenshots.py [--db RUN.db] [--out docs/img]

With --db it opens that results file; without it, it first runs a real tiny quick search on the bundled digits
(about a minute on a busy 2-core CPU) in a temporary folder. It writes, at 100x30:

- search.svg: the search screen (status, loss plot, leaderboard, events);
- diagram.svg: the same with the memory-bank diagram of the leaderboard's first architecture (`d`), which at
  this width takes the plot's place;
- runs.svg: the list of runs in the results file's folder;
- studies.svg: the run's studies (`t`), only if the file holds one (`smash-tui study ...`); else a note.

The UI reads the file and never writes it. The pictures in docs/img/ are of a finished `quick` search with one
small study, made in an empty folder (so that the list of runs reads `runs in runs/`):

    smash-tui run --preset quick --headless --db runs/quick.db
    smash-tui study correlation runs/quick.db --every 6 --count 10 --epochs 2
    python CHECKOUT/docs/screenshots.py --db runs/quick.db --out CHECKOUT/docs/img
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path

SIZE = (100, 30)
TIMEOUT_S = 30.0
# the tests' tiny search (tests/tui/conftest.py): every phase, a verify phase of two rungs, one final training
TINY = dict(epochs=1, n_random=8, n_perturb=2, n_hillclimb=2, final_epochs=3, verify_top=4, verify_eta=2,
            verify_budget=10.0)


def tiny_search(folder: Path) -> Path:
    """A finished real search (the engine, headless) in `folder`; imports torch, so only when asked."""
    from smash_engine.config import make_config
    from smash_engine.engine import Engine
    from smash_engine.runs import create_run

    db = folder / "tiny.db"
    create_run(db, make_config("quick", device="cpu", name="tiny", **TINY))
    status = Engine(db).run()
    if status != "done":
        raise SystemExit(f"screenshots: the tiny search ended {status}, not done")
    return db


def study_count(db: Path) -> int:
    from smash_engine import store

    conn = store.connect_reader(db)
    try:
        return len(store.studies(conn, store.get_run(conn)["id"]))
    finally:
        conn.close()


async def until(pilot, cond: Callable[[], object], what: str) -> None:
    """Let the app run (its workers poll the file) until `cond()` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT_S
    while not cond():
        if loop.time() > end:
            raise SystemExit(f"screenshots: timed out after {TIMEOUT_S:.0f} s waiting for {what}")
        await pilot.pause(0.1)


def save(app, path: Path) -> Path:
    path.write_text(app.export_screenshot(title=f"smash-tui: {path.stem}"), encoding="utf-8")
    print(f"wrote {path}")
    return path


async def search_shots(db: Path, out: Path, studies: bool) -> list[Path]:
    from smash_tui.app import SmashApp
    from smash_tui.screens.search import SearchScreen
    from smash_tui.screens.studies import StudiesScreen

    app = SmashApp(db=db, runs_dir=db.parent)
    written = []
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, SearchScreen) and app.screen.polls > 0, "the first poll")
        s = app.screen
        await until(pilot, lambda: s.board.row_count > 0 and s.board.highlighted is not None, "the leaderboard")
        await pilot.pause(0.5)  # the plot and the log draw from the same poll
        written.append(save(app, out / "search.svg"))
        await pilot.press("d")
        first = s.board.shown[0]
        await until(pilot, lambda: s.diagram.arch_id == first and s.diagram.arch is not None, "the diagram")
        await pilot.pause(0.3)
        written.append(save(app, out / "diagram.svg"))
        if studies:
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, StudiesScreen)
                        and "reading the studies" not in app.export_screenshot(), "the studies")
            await pilot.pause(0.3)
            written.append(save(app, out / "studies.svg"))
    return written


async def runs_shot(db: Path, out: Path) -> Path:
    from textual.widgets import DataTable

    from smash_tui.app import SmashApp

    app = SmashApp(db=None, runs_dir=db.parent)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(DataTable) and app.screen.query_one(DataTable).row_count > 0,
                    "the list of runs")
        await pilot.pause(0.3)
        return save(app, out / "runs.svg")


def shoot(db: Path, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    studies = study_count(db) > 0
    written = asyncio.run(search_shots(db, out, studies))
    written.append(asyncio.run(runs_shot(db, out)))
    if not studies:
        print(f"skipped studies.svg: {db} holds no study (`smash-tui study correlation DB` adds one)")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, help="results file to show (default: run a tiny quick search first)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img", help="folder for the SVGs")
    args = ap.parse_args(argv)
    if args.db is not None:
        if not args.db.is_file():
            ap.error(f"no results file at {args.db}")
        shoot(args.db, args.out)
        return 0
    with tempfile.TemporaryDirectory(prefix="smash-shots-") as tmp:
        shoot(tiny_search(Path(tmp)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
