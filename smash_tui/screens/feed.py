"""The search screen's data feed: incremental reads of one results file, run in a thread worker.

Plain Python (no Textual): `RunFeed.poll(conn)` returns a `Batch` of only what is new since the last poll
(`WHERE step > :last`, `WHERE id > :last`), so a refresh costs the same after ten minutes as after ten hours.
The connection is made and used in the worker's own thread (sqlite3 connections are per-thread).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from smash_engine import store

from ..messages import Batch


class RunFeed:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.run_id: int | None = None
        self.last_step = -1
        self.last_val_step = -1
        self.last_score = 0
        self.last_event = 0
        self.final_epochs: dict[int, int] = {}  # final id -> epochs already sent
        self.polls = 0
        self.data_version: int | None = None
        self.run: dict[str, Any] | None = None
        self.state = "created"
        self.tables: tuple[list[dict[str, Any]], ...] = ([], [], [])  # commands, finals, verifications last read

    def connect(self) -> sqlite3.Connection:
        self.data_version = None  # each connection counts its own versions
        return store.connect_reader(self.db)

    def poll_changes(self, conn: sqlite3.Connection) -> Batch | None:
        """`poll`, or None when nothing has changed since the last one. SQLite moves `PRAGMA data_version`
        whenever another connection commits, so a look at a finished run costs one pragma, not eight
        queries. The engine's state is recomputed each time regardless: an engine can die without writing."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.data_version:
            self.data_version = version
            return self.poll(conn)
        if self.run is None:
            return None
        state = store.engine_state(self.run)
        if state == self.state:
            return None
        self.state = state
        # the small tables are read whole each time: an empty list would say they emptied
        commands, finals, verifications = self.tables
        return Batch(run=self.run, state=state, commands=commands, finals=finals, verifications=verifications)

    def poll(self, conn: sqlite3.Connection) -> Batch:
        run = self.run = store.get_run(conn, self.run_id)
        if run is None:
            self.state = "created"
            return Batch(run=None, state="created", first=self.polls == 0)
        rid = self.run_id = int(run["id"])
        self.state = store.engine_state(run)
        batch = Batch(run=run, state=self.state, first=self.polls == 0)
        batch.steps = store.steps_since(conn, rid, self.last_step, "train")
        batch.val_steps = store.steps_since(conn, rid, self.last_val_step, "val")
        batch.scores = store.scores_since(conn, rid, self.last_score)
        batch.events = store.events_since(conn, rid, self.last_event)
        batch.commands = store.commands(conn, rid, limit=50)
        batch.finals = store.finals(conn, rid)
        batch.final_steps = self._final_steps(conn, batch.finals)
        batch.verifications = store.verifications(conn, rid)
        self._advance(batch)
        self.tables = (batch.commands, batch.finals, batch.verifications)
        return batch

    def _final_steps(self, conn: sqlite3.Connection, finals: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch rows of the finals that moved on since the last poll (a final has tens of epochs: read whole)."""
        out = {}
        for f in finals:
            if f["epoch"] != self.final_epochs.get(f["id"]):
                out[f["id"]] = store.final_steps(conn, f["id"])
        return out

    def _advance(self, b: Batch) -> None:
        if b.steps:
            self.last_step = b.steps[-1]["step"]
        if b.val_steps:
            self.last_val_step = b.val_steps[-1]["step"]
        if b.scores:
            self.last_score = b.scores[-1]["id"]
        if b.events:
            self.last_event = b.events[-1]["id"]
        for fid, rows in b.final_steps.items():
            self.final_epochs[fid] = max((r["epoch"] for r in rows), default=0)
        self.polls += 1
