"""The results file: schema, refusals, writer, readers, engine lock, read-only queries, concurrency.

Every test works on a real SQLite file in tmp_path.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smash_engine import store
from smash_engine.errors import ConfigError, EngineBusy, ResultsFileError
from smash_engine.store import (
    DOCS_END,
    DOCS_START,
    SCHEMA_VERSION,
    connect_reader,
    connect_writer,
)

ROOT = Path(__file__).resolve().parents[2]

TABLE_COLUMNS = {
    "schema_version": ["version", "applied_at"],
    "runs": [
        "id",
        "name",
        "created_at",
        "updated_at",
        "status",
        "phase",
        "epoch",
        "step",
        "total_steps",
        "progress",
        "config_json",
        "dataset",
        "preset",
        "device",
        "seed",
        "pid",
        "host",
        "heartbeat_at",
        "images_per_s",
        "message",
        "uid",
    ],
    "archs": [
        "id",
        "run_id",
        "spec_json",
        "source",
        "parent_id",
        "params",
        "flops",
        "n_ops",
        "depth",
        "created_at",
    ],
    "scores": [
        "id",
        "run_id",
        "arch_id",
        "smash_error",
        "smash_loss",
        "n_images",
        "hypernet_step",
        "status",
        "reason",
        "source",
        "scored_at",
    ],
    "steps": ["run_id", "step", "epoch", "phase", "loss", "error", "lr", "images_per_s", "at"],
    "finals": [
        "id",
        "run_id",
        "arch_id",
        "status",
        "epochs",
        "epoch",
        "best_val_error",
        "test_error",
        "params",
        "flops",
        "weights_path",
        "started_at",
        "finished_at",
        "message",
        "dataset",
        "val_images",
        "test_images",
    ],
    "studies": ["id", "run_id", "kind", "status", "options_json", "created_at", "updated_at", "message"],
    "study_archs": [
        "study_id", "variant", "trial", "arch_id", "smash_error", "smash_loss", "val_error", "test_error",
        "epochs", "at",
    ],
    "verifications": [
        "run_id", "arch_id", "rung", "smash_rank", "via", "status", "epochs", "images", "seeds", "val_error",
        "val_loss", "seconds", "at",
    ],
    "study_stats": [
        "study_id", "variant", "n", "kendall_tau", "kendall_p", "spearman_rho", "spearman_p", "top_k",
        "top_k_overlap", "regret", "win_rate", "mean_gap", "mean_error", "best_error", "extra_json", "at",
        "kendall_lo", "kendall_hi", "spearman_lo", "spearman_hi",
    ],
    "final_steps": [
        "final_id",
        "epoch",
        "train_loss",
        "train_error",
        "val_error",
        "test_error",
        "lr",
        "images_per_s",
        "at",
    ],
    "commands": [
        "id",
        "run_id",
        "kind",
        "args_json",
        "status",
        "created_at",
        "handled_at",
        "message",
        "progress",
        "total",
    ],
    "events": ["id", "run_id", "at", "level", "message"],
}
VIEW_COLUMNS = {
    "leaderboard": [
        "run_id", "rank", "arch_id", "smash_error", "smash_loss", "params", "flops", "n_ops",
        "depth", "source", "parent_id", "scored_at", "final_id", "final_status",
        "final_test_error", "final_val_error", "verify_error", "verify_loss", "verify_rung", "verify_status",
        "verify_in",
        "verify_via",
    ],
    "loss_curve": [
        "run_id", "step", "epoch", "train_loss", "train_error", "val_loss", "val_error", "lr",
        "images_per_s",
    ],
    "final_curve": [
        "run_id", "final_id", "arch_id", "epoch", "train_loss", "train_error", "val_error",
        "test_error", "lr",
    ],
    "ranking_quality": [
        "run_id", "study_id", "kind", "predictor", "n", "kendall_tau", "kendall_lo", "kendall_hi",
        "spearman_rho", "spearman_lo", "spearman_hi", "top_k", "top_k_overlap", "regret",
        "tau_over_best_baseline",
    ],
    "pick": [
        "run_id", "arch_id", "final_id", "val_error", "test_error", "val_images", "test_images", "params",
        "flops", "epochs", "weights_path", "smash_rank", "smash_error",
    ],
}  # fmt: skip


def iso_ago(seconds: float) -> str:
    t = datetime.now(UTC) - timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run(w: store.Writer, name: str = "quick") -> int:
    return w.create_run(name, {"lr": 0.1}, "digits", "quick", "cpu", 0, 2000)


def add_arch(w: store.Writer, run_id: int, arch_id: str, params: int = 1000) -> None:
    w.add_arch(run_id, arch_id, '{"ops": []}', "random", None, params, 2 * params, 3, 2)


def step_row(run_id: int, step: int, phase: str = "train", **extra: float) -> dict:
    return {"run_id": run_id, "step": step, "epoch": step // 100, "phase": phase,
            "loss": 1.0 / step, "error": 0.5, "lr": 0.1, **extra}  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "quick.db"


@pytest.fixture
def writer(db: Path):
    w = connect_writer(db)
    yield w
    w.close()


# ---------------------------------------------------------------------------- schema


def test_exact_tables_views_and_columns(writer: store.Writer) -> None:
    conn = writer.conn
    names = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view')"))
    assert {n for n, t in names.items() if t == "table"} == set(TABLE_COLUMNS)
    assert {n for n, t in names.items() if t == "view"} == set(VIEW_COLUMNS)
    for name, columns in (TABLE_COLUMNS | VIEW_COLUMNS).items():
        assert [r[1] for r in conn.execute(f"PRAGMA table_info({name})")] == columns, name
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"scores_by_error", "commands_by_status", "events_by_run"} <= indexes
    pk = [r[1] for r in sorted(conn.execute("PRAGMA table_info(steps)"), key=lambda r: r[5]) if r[5]]
    assert pk == ["run_id", "phase", "step"]


def test_writer_pragmas(writer: store.Writer) -> None:
    c = writer.conn
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert c.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    assert [r[0] for r in c.execute("SELECT version FROM schema_version")] == [1, 2, 3, 4, 5, 6, 7]
    assert SCHEMA_VERSION == len(store.MIGRATIONS) == 7


def test_reader_is_read_only_patient_and_holds_no_snapshot(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    writer.add_steps([step_row(run_id, s) for s in range(1, 300)])
    conn = connect_reader(db)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO events (run_id, at, level, message) VALUES (1, 'x', 'info', 'x')")
    assert len(store.steps_since(conn, run_id, 0)) == 299
    store.leaderboard(conn, run_id)
    store.get_run(conn)
    # a reader holding a read transaction would stop the checkpoint from emptying the WAL
    busy, wal_frames, _ = writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert (busy, wal_frames) == (0, 0)
    conn.close()


def test_migrations_idempotent_on_reopen(db: Path) -> None:
    with connect_writer(db) as w:
        run_id = new_run(w)
        ddl = store.schema_sql(w.conn)
    with connect_writer(db) as w:
        assert store.schema_sql(w.conn) == ddl
        assert [r[0] for r in w.conn.execute("SELECT version FROM schema_version")] == [1, 2, 3, 4, 5, 6, 7]
        assert w.conn.execute("SELECT name FROM runs WHERE id = ?", (run_id,)).fetchone()[0] == "quick"


def _old_file(path: Path, version: int) -> sqlite3.Connection:
    """A results file as a smash-tui of schema `version` wrote it (open, for the test to fill)."""
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for v, migrate in enumerate(store.MIGRATIONS[:version], 1):
        migrate(raw)
        raw.execute("INSERT INTO schema_version VALUES (?, '2026-11-01T00:00:00.000Z')", (v,))
    return raw


def test_schema_2_file_gains_the_intervals_and_the_ranking_view(tmp_path: Path) -> None:
    """A results file written before schema 3 keeps its studies and gets the new columns and view."""
    path = tmp_path / "old.db"
    raw = _old_file(path, 2)
    raw.execute("INSERT INTO runs (name, created_at, updated_at, config_json) VALUES ('old', 'x', 'x', '{}')")
    raw.execute("INSERT INTO studies (run_id, kind, options_json, created_at, updated_at) "
                "VALUES (1, 'correlation', '{}', 'x', 'x')")
    raw.execute("INSERT INTO study_stats (study_id, variant, n, kendall_tau, at) VALUES (1, 'run', 30, -0.3, 'x')")
    raw.commit()
    raw.close()
    with connect_writer(path) as w:
        w.set_study_stats(1, [dict(variant="run", n=30, kendall_tau=-0.3, kendall_lo=-0.5, kendall_hi=-0.1),
                              dict(variant="params", n=30, kendall_tau=0.2)])
    with connect_reader(path) as conn:
        rows = conn.execute("SELECT predictor, kendall_lo, tau_over_best_baseline FROM ranking_quality").fetchall()
    assert [tuple(r) for r in rows] == [("params", None, 0.0), ("run", -0.5, pytest.approx(-0.5))]


def test_runs_from_before_identities_get_one(tmp_path: Path) -> None:
    """Schema 4: a run created by an older smash-tui gets its identity when the file is first opened."""
    path = tmp_path / "old.db"
    raw = _old_file(path, 3)
    for name in ("a", "b"):
        raw.execute("INSERT INTO runs (name, created_at, updated_at, config_json) VALUES (?, 'x', 'x', '{}')", (name,))
    raw.commit()
    raw.close()
    connect_writer(path).close()
    with connect_reader(path) as conn:
        uids = [r[0] for r in conn.execute("SELECT uid FROM runs")]
    assert len(set(uids)) == 2 and all(len(u) == 32 for u in uids)


def test_creates_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "r.db"
    connect_writer(path).close()
    assert path.read_bytes()[:16] == b"SQLite format 3\x00"


# ---------------------------------------------------------------------------- refusals


def test_newer_schema_refused_without_modification(db: Path) -> None:
    connect_writer(db).close()
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO schema_version VALUES (99, '2030-01-01T00:00:00.000Z')")
    raw.commit()
    raw.close()
    before = db.read_bytes()
    with pytest.raises(ResultsFileError) as e:
        connect_writer(db)
    msg = str(e.value)
    assert "newer smash-tui (schema 99, this one reads 7): upgrade smash-tui" in msg
    assert "\n" not in msg
    with pytest.raises(ResultsFileError, match="newer smash-tui"):
        connect_reader(db)
    with pytest.raises(ResultsFileError, match="newer smash-tui"):
        store.insert_command(db, 1, "pause", {})
    assert db.read_bytes() == before


def test_non_sqlite_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("step,loss\n1,2.3\n")
    for opener in (connect_writer, connect_reader):
        with pytest.raises(ResultsFileError, match="is not a SQLite file"):
            opener(path)
    assert path.read_text() == "step,loss\n1,2.3\n"


def test_foreign_sqlite_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE trials (id INTEGER PRIMARY KEY, value REAL)")
    raw.commit()
    raw.close()
    before = path.read_bytes()
    for opener in (connect_writer, connect_reader):
        with pytest.raises(ResultsFileError, match="not a smash-tui results file.*trials"):
            opener(path)
    assert path.read_bytes() == before


def test_reader_refuses_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ResultsFileError, match="no results file at"):
        connect_reader(tmp_path / "nope.db")
    assert not (tmp_path / "nope.db").exists()
    (tmp_path / "empty.db").write_bytes(b"")
    with pytest.raises(ResultsFileError, match="no results yet"):
        connect_reader(tmp_path / "empty.db")


def test_read_only_file_refused_for_writing_but_readable(db: Path) -> None:
    with connect_writer(db) as w:
        run_id = new_run(w)
    db.chmod(0o444)
    try:
        before = db.read_bytes()
        with pytest.raises(ResultsFileError, match="read-only"):
            connect_writer(db)
        with pytest.raises(ResultsFileError, match="read-only"):
            store.insert_command(db, run_id, "pause", {})
        conn = connect_reader(db)
        assert store.get_run(conn)["name"] == "quick"
        conn.close()
        assert db.read_bytes() == before
    finally:
        db.chmod(0o644)


def test_read_only_folder_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ResultsFileError, match="folder .* is read-only"):
            connect_writer(folder / "r.db")
        assert not (folder / "r.db").exists()
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------------------- writer


def test_runs_update_whitelist_and_heartbeat(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    conn = connect_reader(db)
    run = store.get_run(conn, run_id)
    assert (run["status"], run["phase"], run["step"], run["config_json"]) == (
        "created", "smash", 0, '{"lr": 0.1}',
    )  # fmt: skip
    writer.update_run(run_id, status="running", step=5, progress=0.25, config_json={"lr": 0.2})
    writer.heartbeat(run_id, images_per_s=1234.5)
    run = store.get_run(conn)
    assert (run["status"], run["step"], run["progress"], run["images_per_s"]) == (
        "running", 5, 0.25, 1234.5,
    )  # fmt: skip
    assert run["config_json"] == '{"lr": 0.2}' and run["heartbeat_at"].endswith("Z")
    assert run["updated_at"] >= run["created_at"]
    with pytest.raises(ValueError, match="no writable column"):
        writer.update_run(run_id, id=7)
    with pytest.raises(ValueError, match="unknown run status"):
        writer.update_run(run_id, status="exploded")
    with pytest.raises(ResultsFileError, match="no row 99"):
        writer.update_run(99, step=1)
    conn.close()


def test_add_steps_is_one_transaction_and_replaces(writer: store.Writer) -> None:
    run_id = new_run(writer)
    statements: list[str] = []
    writer.conn.set_trace_callback(statements.append)
    writer.add_steps([step_row(run_id, s) for s in range(1, 101)])
    writer.conn.set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1 and statements.count("COMMIT") == 1
    writer.add_steps([step_row(run_id, 7, loss=9.0)])
    rows = writer.conn.execute("SELECT step, loss FROM steps WHERE step = 7").fetchall()
    assert [tuple(r) for r in rows] == [(7, 9.0)]
    assert writer.conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 100


def test_transaction_groups_and_rolls_back(writer: store.Writer) -> None:
    run_id = new_run(writer)
    with pytest.raises(RuntimeError), writer.transaction():
        writer.add_event(run_id, "info", "a")
        writer.add_event(run_id, "info", "b")
        raise RuntimeError("boom")
    assert writer.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert not writer.conn.in_transaction


def test_add_arch_insert_or_ignore_and_foreign_keys(writer: store.Writer) -> None:
    run_id = new_run(writer)
    add_arch(writer, run_id, "a1b2c3d4", params=10)
    add_arch(writer, run_id, "a1b2c3d4", params=99)
    assert writer.conn.execute("SELECT params FROM archs").fetchall()[0][0] == 10
    with pytest.raises(sqlite3.IntegrityError):
        writer.add_score(run_id, "unknown", 0.5, 1.0, 100, 1)


# ---------------------------------------------------------------------------- readers


def test_leaderboard_order_ranks_latest_score_and_final(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    for arch_id in ("aaaa01", "bbbb02", "cccc03", "dddd04"):
        add_arch(writer, run_id, arch_id)
    writer.add_score(run_id, "aaaa01", 0.30, 1.1, 500, 10)
    writer.add_score(run_id, "bbbb02", 0.20, 1.0, 500, 10)
    writer.add_score(run_id, "cccc03", 0.25, 1.0, 500, 10)
    writer.add_score(run_id, "dddd04", None, None, 0, 10, status="failed", reason="OOM")
    writer.add_score(run_id, "bbbb02", 0.40, 1.5, 500, 20)  # rescored later: this one counts
    writer.add_score(run_id, "aaaa01", 0.25, 1.0, 500, 20)  # ties cccc03, scored after it
    queued = writer.create_final(run_id, "aaaa01", 10, 1000, 2000)
    done = writer.create_final(run_id, "aaaa01", 10, 1000, 2000, status="running")
    writer.update_final(done, status="done", test_error=0.08, best_val_error=0.07)
    conn = connect_reader(db)
    board = store.leaderboard(conn, run_id)
    assert [(r["rank"], r["arch_id"], r["smash_error"]) for r in board] == [
        (1, "cccc03", 0.25), (2, "aaaa01", 0.25), (3, "bbbb02", 0.40),
    ]  # fmt: skip
    assert list(board[0]) == VIEW_COLUMNS["leaderboard"]
    assert (board[1]["final_id"], board[1]["final_status"], board[1]["final_test_error"]) == (
        done, "done", 0.08,
    )  # fmt: skip
    assert board[0]["final_status"] is None and queued != done
    assert [r["arch_id"] for r in store.leaderboard(conn, run_id, limit=1)] == ["cccc03"]
    filtered = store.leaderboard(conn, run_id, rank=2)
    assert [(r["rank"], r["arch_id"]) for r in filtered] == [(2, "aaaa01")]
    assert [r["arch_id"] for r in store.leaderboard(conn, run_id, limit=1, rank=3)] == ["bbbb02"]
    assert store.leaderboard(conn, run_id, rank=4) == []  # dddd04's failed score is not ranked
    assert store.leaderboard(conn, run_id + 1) == []
    conn.close()


def test_pick_is_the_lowest_validation_error_and_a_tie_goes_to_the_better_smash_rank(
        writer: store.Writer, db: Path) -> None:
    """The one meaning of "best" (README "What a search gives you"): never the test error, never queue order."""
    run_id = new_run(writer)
    for arch_id, err in (("aaaa01", 0.10), ("bbbb02", 0.20), ("cccc03", 0.30)):
        add_arch(writer, run_id, arch_id)
        writer.add_score(run_id, arch_id, err, 1.0, 500, 10)
    conn = connect_reader(db)
    assert store.pick(conn, run_id) is None  # no finished final: no pick
    # a user-queued final of SMASH's third place finishes first and ties the first place on validation error
    third = writer.create_final(run_id, "cccc03", 5, 1000, 2000)
    writer.update_final(third, status="done", best_val_error=0.05, test_error=0.01, val_images=300,
                        test_images=297)
    first = writer.create_final(run_id, "aaaa01", 5, 1000, 2000)
    writer.update_final(first, status="done", best_val_error=0.05, test_error=0.04, val_images=300,
                        test_images=297)
    second = writer.create_final(run_id, "bbbb02", 5, 1000, 2000)  # lower test error, higher validation error
    writer.update_final(second, status="done", best_val_error=0.06, test_error=0.0)
    transfer = writer.create_transfer_final(run_id, "bbbb02", 5, 1000, 2000, "cifar10")
    writer.update_final(transfer, status="done", best_val_error=0.01, test_error=0.0)
    p = store.pick(conn, run_id)
    assert (p["arch_id"], p["final_id"], p["smash_rank"], p["val_images"], p["test_images"]) == (
        "aaaa01", first, 1, 300, 297)
    assert list(p) == VIEW_COLUMNS["pick"]
    board = {r["arch_id"]: r for r in store.leaderboard(conn, run_id)}
    assert board["bbbb02"]["final_id"] == second  # the leaderboard's final is chosen by validation error too
    summary = store.run_summary(conn, run_id)
    assert summary["pick"]["arch_id"] == "aaaa01" and summary["top_smash"] == 0.10
    conn.close()


def _old_run_file(path: Path, version: int, scores: dict[str, float]) -> sqlite3.Connection:
    """A schema-`version` file holding one run with these SMASH scores, the first architecture final-trained
    (committed; open for the test to add to)."""
    raw = _old_file(path, version)
    raw.execute("INSERT INTO runs (name, created_at, updated_at, config_json) VALUES ('old', 'x', 'x', '{}')")
    for arch, err in scores.items():
        raw.execute("INSERT INTO archs (id, run_id, spec_json, source, created_at) VALUES (?, 1, '{}', 'random', 'x')",
                    (arch,))
        raw.execute("INSERT INTO scores (run_id, arch_id, smash_error, scored_at) VALUES (1, ?, ?, 'x')", (arch, err))
    raw.execute("INSERT INTO finals (run_id, arch_id, status, epochs, best_val_error, test_error) "
                "VALUES (1, ?, 'done', 5, 0.1, 0.12)", (next(iter(scores)),))
    raw.commit()
    return raw


def test_schema_4_file_gains_the_split_sizes_and_the_pick(tmp_path: Path) -> None:
    """Schema 5: an older file keeps its finals, gets the split-size columns (NULL for old finals) and the pick."""
    path = tmp_path / "old.db"
    _old_run_file(path, 4, {"aaaa01": 0.2}).close()
    connect_writer(path).close()
    with connect_reader(path) as conn:
        p = store.pick(conn, 1)
    assert (p["arch_id"], p["val_error"], p["test_images"], p["smash_rank"]) == ("aaaa01", 0.1, None, 1)


def test_schema_5_file_keeps_its_verifications_as_rung_0(tmp_path: Path) -> None:
    """Schema 6 rebuilds `verifications` with a rung per row: an older file's rows become rung 0 of SMASH's
    candidates, the leaderboard still shows their error, and the pick view is there again."""
    path = tmp_path / "old.db"
    raw = _old_run_file(path, 5, {"aaaa01": 0.2, "bbbb02": 0.3})
    raw.execute("INSERT INTO verifications (run_id, arch_id, smash_rank, status, epochs, images, val_error, at) "
                "VALUES (1, 'aaaa01', 1, 'done', 1, 200, 0.15, 'x'), (1, 'bbbb02', 2, 'queued', 1, 200, NULL, 'x')")
    raw.commit()
    raw.close()
    connect_writer(path).close()
    with connect_reader(path) as conn:
        rows = store.verifications(conn, 1)
        board = {r["arch_id"]: r for r in store.leaderboard(conn, 1)}
        p = store.pick(conn, 1)
    assert [(r["arch_id"], r["rung"], r["via"], r["status"], r["val_error"]) for r in rows] == [
        ("aaaa01", 0, "smash", "done", 0.15), ("bbbb02", 0, "smash", "queued", None)]
    a = board["aaaa01"]
    assert (a["verify_error"], a["verify_rung"], a["verify_in"]) == (0.15, 0, 1)
    assert (board["bbbb02"]["verify_error"], board["bbbb02"]["verify_status"]) == (None, "queued")
    assert p["arch_id"] == "aaaa01"


def test_leaderboard_shows_each_candidates_highest_rung(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    for arch, err in (("aaaa01", 0.2), ("bbbb02", 0.3), ("cccc03", 0.4)):
        add_arch(writer, run_id, arch)
        writer.add_score(run_id, arch, err, 1.0, 100, 1)
    writer.queue_verifications(run_id, [("aaaa01", 1, "smash"), ("bbbb02", 2, "smash"), ("cccc03", 3, "flops")],
                               0, 1, 100)
    for arch, err in (("aaaa01", 0.5), ("bbbb02", 0.4), ("cccc03", 0.45)):
        writer.set_verification(run_id, arch, 0, "done", err, 2 * err, 1.0)
    writer.queue_verifications(run_id, [("bbbb02", 2, "smash"), ("cccc03", 3, "flops")], 1, 1, 400)
    writer.set_verification(run_id, "cccc03", 1, "done", 0.3, 0.6, 2.0)
    conn = connect_reader(db)
    board = {r["arch_id"]: r for r in store.leaderboard(conn, run_id)}
    got = {a: (r["verify_rung"], r["verify_status"], r["verify_error"], r["verify_in"], r["verify_via"])
           for a, r in board.items()}
    assert got == {"aaaa01": (0, "done", 0.5, 0, "smash"),  # out after rung 0
                   "bbbb02": (1, "queued", 0.4, 1, "smash"),  # in, its rung-1 training not done: rung 0's error
                   "cccc03": (1, "done", 0.3, 1, "flops")}
    assert [(r["arch_id"], r["rung"]) for r in store.verifications(conn, run_id)] == [
        ("aaaa01", 0), ("bbbb02", 0), ("cccc03", 0), ("bbbb02", 1), ("cccc03", 1)]
    conn.close()


def test_incremental_readers_return_only_newer_rows(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    conn = connect_reader(db)
    writer.add_steps([step_row(run_id, s) for s in (1, 2, 3)] + [step_row(run_id, 3, "val")])
    assert [r["step"] for r in store.steps_since(conn, run_id, 0)] == [1, 2, 3]
    writer.add_steps([step_row(run_id, s) for s in (4, 5)])
    assert [r["step"] for r in store.steps_since(conn, run_id, 3)] == [4, 5]
    assert [r["step"] for r in store.steps_since(conn, run_id, 0, phase="val")] == [3]
    assert store.steps_since(conn, run_id, 5) == []
    add_arch(writer, run_id, "aaaa01")
    first = writer.add_score(run_id, "aaaa01", 0.3, 1.0, 100, 1)
    second = writer.add_score(run_id, "aaaa01", 0.2, 0.9, 100, 2)
    new = store.scores_since(conn, run_id, first)
    assert [(r["id"], r["smash_error"], r["params"], r["source"]) for r in new] == [
        (second, 0.2, 1000, "random"),
    ]  # fmt: skip
    e1 = writer.add_event(run_id, "info", "one")
    writer.add_event(run_id, "warning", "two")
    assert [(r["level"], r["message"]) for r in store.events_since(conn, run_id, e1)] == [
        ("warning", "two"),
    ]  # fmt: skip
    conn.close()


def test_loss_curve_pivots_train_and_val(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    rows = [step_row(run_id, s) for s in (10, 20)] + [
        step_row(run_id, 20, "val", error=0.4, loss=1.2),
        step_row(run_id, 25, "val", error=0.3, loss=1.1),  # no training row logged at 25
    ]
    writer.add_steps(rows)
    conn = connect_reader(db)
    curve = [dict(r) for r in conn.execute("SELECT * FROM loss_curve")]
    assert [(r["step"], r["train_loss"], r["val_error"]) for r in curve] == [
        (10, 0.1, None), (20, 0.05, 0.4), (25, None, 0.3),
    ]  # fmt: skip
    assert curve[1]["val_loss"] == 1.2 and curve[1]["lr"] == 0.1
    conn.close()


def test_finals_and_final_curve(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    add_arch(writer, run_id, "aaaa01")
    final_id = writer.create_final(run_id, "aaaa01", 2, 1000, 2000)
    writer.update_final(final_id, status="running")
    writer.add_final_step(final_id, epoch=1, train_loss=1.5, val_error=0.4, test_error=0.41)
    writer.add_final_step(final_id, epoch=2, train_loss=0.9, val_error=0.3, test_error=0.32)
    writer.update_final(final_id, status="done", epoch=2, best_val_error=0.3, test_error=0.32)
    conn = connect_reader(db)
    (final,) = store.finals(conn, run_id)
    assert final["status"] == "done" and final["started_at"] and final["finished_at"]
    assert [r["val_error"] for r in store.final_steps(conn, final_id)] == [0.4, 0.3]
    curve = conn.execute("SELECT arch_id, epoch, train_loss FROM final_curve").fetchall()
    assert [tuple(r) for r in curve] == [("aaaa01", 1, 1.5), ("aaaa01", 2, 0.9)]
    with pytest.raises(ValueError, match="unknown final status"):
        writer.update_final(final_id, status="great")
    conn.close()


def test_get_arch_by_id_and_prefix(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    for arch_id in ("abcd1111", "abcd2222", "ef012345"):
        add_arch(writer, run_id, arch_id)
    conn = connect_reader(db)
    assert store.get_arch(conn, "abcd1111")["id"] == "abcd1111"
    assert store.get_arch(conn, "ef01")["id"] == "ef012345"
    assert store.get_arch(conn, "ef0") is None  # prefixes need 4 characters
    assert store.get_arch(conn, "9999") is None
    with pytest.raises(ResultsFileError, match="ambiguous"):
        store.get_arch(conn, "abcd")
    conn.close()


def test_commands_round_trip(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    first = store.insert_command(db, run_id, "pause", {})
    second = store.insert_command(db, run_id, "final", {"arch_id": "abcd", "epochs": 5})
    pending = writer.pending_commands(run_id)
    assert [(r["id"], r["kind"], r["args_json"]) for r in pending] == [
        (first, "pause", "{}"), (second, "final", '{"arch_id": "abcd", "epochs": 5}'),
    ]  # fmt: skip
    writer.mark_command(first, "running")
    writer.mark_command(first, "done", "paused at step 40")
    writer.mark_command(second, "error", "unknown arch abcd")
    assert writer.pending_commands(run_id) == []
    conn = connect_reader(db)
    listed = store.commands(conn, run_id)
    assert [(r["id"], r["status"], r["message"]) for r in listed] == [
        (second, "error", "unknown arch abcd"), (first, "done", "paused at step 40"),
    ]  # fmt: skip
    assert all(r["handled_at"] for r in listed)
    assert len(store.commands(conn, run_id, limit=1)) == 1
    conn.close()
    with pytest.raises(ConfigError, match="unknown command 'explode'"):
        store.insert_command(db, run_id, "explode", {})
    with pytest.raises(ResultsFileError, match="no run 42"):
        store.insert_command(db, 42, "stop", {})
    with pytest.raises(ValueError):
        writer.mark_command(first, "pending")
    with pytest.raises(ResultsFileError, match="no command 999"):
        writer.mark_command(999, "done")


# ---------------------------------------------------------------------------- engine lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_live_engine_elsewhere_is_busy(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    writer.acquire_engine(run_id, pid=4242, host="gpu-box-7")
    with connect_writer(db) as other, pytest.raises(EngineBusy) as e:
        other.acquire_engine(run_id)
    assert "pid 4242" in str(e.value) and "gpu-box-7" in str(e.value)
    assert e.value.exit_code == 3


def test_live_engine_on_this_host_is_busy(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    writer.acquire_engine(run_id, pid=os.getppid(), host=socket.gethostname())
    with connect_writer(db) as other, pytest.raises(EngineBusy, match=f"pid {os.getppid()}"):
        other.acquire_engine(run_id)


def test_stale_engines_are_taken_over(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    host = socket.gethostname()
    # dead process on this host, fresh heartbeat
    writer.acquire_engine(run_id, pid=dead_pid(), host=host)
    with connect_writer(db) as other:
        other.acquire_engine(run_id)
        assert store.get_run(other.conn, run_id)["pid"] == os.getpid()
    # another host that stopped beating
    writer.acquire_engine(run_id, pid=4242, host="gpu-box-7")
    writer.update_run(run_id, heartbeat_at=iso_ago(store.STALE_AFTER + 5))
    with connect_writer(db) as other:
        other.acquire_engine(run_id)
        run = store.get_run(other.conn, run_id)
        assert (run["pid"], run["host"]) == (os.getpid(), host)
        other.acquire_engine(run_id)  # re-acquiring our own lock is fine
    events = [r["message"] for r in store.events_since(writer.conn, run_id, 0)]
    assert len(events) == 2 and all("took over from a stale engine" in m for m in events)
    assert "pid 4242 on host gpu-box-7" in events[1]
    assert store.get_run(writer.conn, run_id)["pid"] is None  # released on close


def test_engine_state(writer: store.Writer) -> None:
    now = datetime.now(UTC)
    fresh, old = iso_ago(1), iso_ago(store.STALE_AFTER + 1)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    assert store.engine_state({"status": "running", "heartbeat_at": fresh, **me}) == "running"
    assert store.engine_state({"status": "running", "heartbeat_at": old, **me}) == "crashed"
    assert store.engine_state({"status": "paused", "heartbeat_at": None, **me}) == "crashed"
    assert store.engine_state({"status": "done", "heartbeat_at": old, **me}) == "done"
    later = (now + timedelta(seconds=store.STALE_AFTER + 5)).isoformat()
    assert store.engine_state({"status": "running", "heartbeat_at": fresh, **me}, now=later) == "crashed"
    # a dead engine on this host is crashed at once; one on another host only once its heartbeat is stale
    dead = subprocess.run(["true"]).returncode or 2**22 - 1
    assert store.engine_state({"status": "running", "heartbeat_at": fresh, "pid": dead,
                               "host": socket.gethostname()}) == "crashed"
    assert store.engine_state({"status": "running", "heartbeat_at": fresh, "pid": dead, "host": "far"}) == "running"
    assert store.engine_state({"status": "running", "heartbeat_at": fresh, "pid": None, "host": None}) == "crashed"


def test_fail_stale_leaves_no_running_rows(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    add_arch(writer, run_id, "aaaa01")
    running = writer.create_final(run_id, "aaaa01", 5, 1, 1, status="running")
    queued = writer.create_final(run_id, "aaaa01", 5, 1, 1)
    cmd_running = store.insert_command(db, run_id, "final", {"arch_id": "aaaa01"})
    cmd_pending = store.insert_command(db, run_id, "pause", {})
    writer.mark_command(cmd_running, "running")
    assert writer.fail_stale(run_id) == 2
    status = dict(writer.conn.execute("SELECT id, status FROM finals").fetchall())
    assert status == {running: "failed", queued: "queued"}
    cmds = dict(writer.conn.execute("SELECT id, status FROM commands").fetchall())
    assert cmds == {cmd_running: "error", cmd_pending: "pending"}
    msg = writer.conn.execute("SELECT message FROM finals WHERE id = ?", (running,)).fetchone()[0]
    assert "engine stopped" in msg
    assert writer.fail_stale(run_id) == 0
    assert len(store.events_since(writer.conn, run_id, 0)) == 1


# ---------------------------------------------------------------------------- read-only queries


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO events (run_id, at, level, message) VALUES (1, 'x', 'info', 'x')",
        "UPDATE runs SET name = 'x'",
        "DELETE FROM steps",
        "DROP TABLE steps",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "CREATE TABLE t (x)",
        "VACUUM INTO 'copy.db'",
        "BEGIN",
        "SELECT 1; DELETE FROM steps",
        "SELECT 1; SELECT 2",
    ],
)
def test_query_refuses_writes(writer: store.Writer, db: Path, sql: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where ATTACH or VACUUM INTO would create their files
    run_id = new_run(writer)
    writer.add_steps([step_row(run_id, 1)])
    with pytest.raises(ResultsFileError, match="^query is read-only: "):
        store.run_readonly_query(db, sql)
    assert writer.conn.execute("SELECT count(*) FROM steps").fetchone()[0] == 1
    assert writer.conn.execute("PRAGMA user_version").fetchone()[0] == 0
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "copy.db").exists()


def test_query_returns_rows_for_reads(writer: store.Writer, db: Path) -> None:
    run_id = new_run(writer)
    writer.add_steps([step_row(run_id, s) for s in (1, 2, 3)])
    cols, rows = store.run_readonly_query(db, "SELECT step, loss FROM steps ORDER BY step DESC")
    assert cols == ["step", "loss"] and rows == [(3, 1 / 3), (2, 0.5), (1, 1.0)]
    sql = "WITH s AS (SELECT step FROM steps WHERE step > 1) SELECT count(*) AS n FROM s"
    assert store.run_readonly_query(db, sql) == (["n"], [(2,)])
    cols, rows = store.run_readonly_query(db, "PRAGMA table_info(events)")
    assert [r[1] for r in rows] == TABLE_COLUMNS["events"]
    with pytest.raises(ResultsFileError, match="query failed: no such table: nope"):
        store.run_readonly_query(db, "SELECT * FROM nope")


# ---------------------------------------------------------------------------- concurrency


def test_concurrent_writer_readers_and_commands(db: Path) -> None:
    with connect_writer(db) as w:
        run_id = new_run(w)
    errors: list[BaseException] = []
    done = threading.Event()

    def engine() -> None:
        try:
            with connect_writer(db) as w:
                for batch in range(40):
                    w.add_steps([step_row(run_id, batch * 50 + i) for i in range(1, 51)])
                    with w.transaction():
                        add_arch(w, run_id, f"arch{batch:04d}")
                        w.add_score(run_id, f"arch{batch:04d}", 1 - batch / 100, 1.0, 10, batch)
                        w.heartbeat(run_id, step=batch * 50 + 50)
                    time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    seen: dict[int, list[int]] = {k: [] for k in range(3)}

    def reader(k: int) -> None:
        try:
            conn, last = connect_reader(db), 0
            while True:
                finished = done.is_set()  # read once more after the engine finished
                rows = store.steps_since(conn, run_id, last)
                seen[k] += [r["step"] for r in rows]
                last = rows[-1]["step"] if rows else last
                store.leaderboard(conn, run_id, limit=10)
                if finished:
                    break
                time.sleep(0.005)
            conn.close()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def ui() -> None:
        try:
            for _ in range(20):
                store.insert_command(db, run_id, "sample", {"n": 1})
                time.sleep(0.02)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=engine), threading.Thread(target=ui)]
    threads += [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    for steps in seen.values():
        assert steps == list(range(1, 2001))
    conn = connect_reader(db)
    board = store.leaderboard(conn, run_id)
    assert len(board) == 40 and board[0]["arch_id"] == "arch0039"
    assert len(store.commands(conn, run_id, limit=100)) == 20
    conn.close()


# ---------------------------------------------------------------------------- tools and docs


def test_sqlite_utils_reads_leaderboard_through_reader(writer: store.Writer, db: Path) -> None:
    sqlite_utils = pytest.importorskip("sqlite_utils")
    run_id = new_run(writer)
    add_arch(writer, run_id, "aaaa01")
    writer.add_score(run_id, "aaaa01", 0.3, 1.0, 100, 1)
    conn = connect_reader(db)
    database = sqlite_utils.Database(conn)
    assert "leaderboard" in database.view_names()
    rows = list(database["leaderboard"].rows)
    assert [(r["rank"], r["arch_id"], r["smash_error"]) for r in rows] == [(1, "aaaa01", 0.3)]
    conn.close()


def docs_ddl(text: str) -> str:
    block = text.split(DOCS_START, 1)[1].split(DOCS_END, 1)[0].strip()
    assert block.startswith("```sql\n") and block.endswith("```")
    return block.removeprefix("```sql\n").removesuffix("```")


def test_docs_ddl_matches_a_freshly_migrated_database(tmp_path: Path) -> None:
    with connect_writer(tmp_path / "fresh.db") as w:
        expected = store.schema_sql(w.conn)
    text = (ROOT / "docs" / "schema.md").read_text()
    assert docs_ddl(text) == expected, "run: python -m smash_engine.store --write-docs docs/schema.md"
    for name in TABLE_COLUMNS | VIEW_COLUMNS:
        assert f"`{name}`" in text.split(DOCS_START)[0], f"{name} is not described"


def test_write_docs_regenerates_the_ddl(tmp_path: Path) -> None:
    doc = tmp_path / "schema.md"
    doc.write_text(f"# Title\n\n{DOCS_START}\nstale\n{DOCS_END}\n\nafter\n")
    subprocess.run(
        [sys.executable, "-m", "smash_engine.store", "--write-docs", str(doc)],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    text = doc.read_text()
    assert text.startswith("# Title\n\n") and text.endswith(f"{DOCS_END}\n\nafter\n")
    assert "stale" not in text and "CREATE VIEW leaderboard AS" in docs_ddl(text)


def test_store_imports_only_the_standard_library() -> None:
    code = (
        "import sys, smash_engine.store; "
        "print(sorted(m for m in ('torch', 'numpy', 'textual', 'sqlite_utils') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
