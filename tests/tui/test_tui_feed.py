"""The search screen's feed reads a results file only when it changed (what keeps an idle UI near 0% CPU),
and still notices an engine that died without writing anything."""

from __future__ import annotations

import socket
import subprocess
import sys

from smash_engine import store
from smash_tui.screens.feed import RunFeed


def test_feed_reads_only_after_a_commit_and_sees_a_dead_engine_without_one(db):
    feed = RunFeed(db)
    conn = feed.connect()
    try:
        first = feed.poll_changes(conn)
        assert first is not None and first.first and first.scores and first.state == "done"
        assert feed.poll_changes(conn) is None  # nothing written: not even the run row is read again

        board = store.leaderboard(conn, first.run["id"])
        with store.connect_writer(db) as w:
            w.add_score(first.run["id"], board[3]["arch_id"], 0.001, 0.1, 300, 0, source="rescore")
        batch = feed.poll_changes(conn)
        assert batch is not None and [s["arch_id"] for s in batch.scores] == [board[3]["arch_id"]]
        assert feed.poll_changes(conn) is None

        # an engine on this host, alive; then gone without a word to the file
        engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            with store.connect_writer(db) as w:
                w.heartbeat(first.run["id"], status="running", pid=engine.pid, host=socket.gethostname())
            assert feed.poll_changes(conn).state == "running"
            assert feed.poll_changes(conn) is None
        finally:
            engine.kill()
            engine.wait()
        crashed = feed.poll_changes(conn)
        assert crashed is not None and crashed.state == "crashed" and not crashed.scores
        assert crashed.finals == batch.finals and crashed.finals  # not "no finals any more"
        assert feed.poll_changes(conn) is None
    finally:
        conn.close()
