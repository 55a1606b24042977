"""Fixtures for the UI tests: one real tiny search per session (the real engine, headless, ~20 s), copied
per test so each test may write commands, scores and heartbeats into its own file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from smash_engine import store

# a verify phase of two rungs (4 candidates, then the best 2): what the leaderboard and the diagram pane show of
# successive halving, from a real engine; the preset's 16 would cost more and halve the same way. SMASH's order, so
# the leaderboard's first rows are the candidates (which order picks them is the engine's tests' business)
TINY = dict(epochs=1, n_random=8, n_perturb=2, n_hillclimb=2, final_epochs=3, verify_top=4, verify_eta=2,
            verify_budget=10.0, verify_order="smash")  # final_epochs 3: rungs are cut to final training's length


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished real search (SMASH training, rank, refine, one final) on the bundled digits.
    SMASH_TUI_TEST_RUN=PATH reuses a file made this way (to iterate on the UI without waiting for it)."""
    reuse = os.environ.get("SMASH_TUI_TEST_RUN")
    if reuse and Path(reuse).exists():
        return Path(reuse)
    from smash_engine.config import make_config
    from smash_engine.engine import Engine
    from smash_engine.runs import create_run

    db = tmp_path_factory.mktemp("tui-run") / "tiny.db"
    create_run(db, make_config("quick", device="cpu", name="tiny", **TINY))
    assert Engine(db).run() == "done"
    return db


def copy_run(src: Path, dest_dir: Path, name: str = "tiny") -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{name}.db"
    conn = store.connect_reader(src)  # the backup API copies a consistent file, WAL included
    try:
        out = sqlite3.connect(dest)
        conn.backup(out)
        out.close()
    finally:
        conn.close()
    return dest


@pytest.fixture
def db(tiny_run, tmp_path) -> Path:
    return copy_run(tiny_run, tmp_path / "runs")


def drive(app, test: Callable, size: tuple[int, int] = (80, 24), **kw):
    """Run `await test(pilot)` against the real app at this size (pytest has no asyncio plugin here)."""

    async def main():
        async with app.run_test(size=size, **kw) as pilot:
            await test(pilot)

    asyncio.run(main())


async def until(pilot, cond: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Let the app run (workers poll at 2 Hz) until `cond()` is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.1)

