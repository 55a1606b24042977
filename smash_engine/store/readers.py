"""Readers for the CLI and the UI: read-only connections, incremental `WHERE id > :last_seen` polls,
the command table's one insert, and the read-only SQL of `smash-tui query`."""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from smash_engine.errors import ConfigError, ResultsFileError
from smash_engine.store.files import (
    age_s,
    as_dicts,
    check_choice,
    connect_file,
    dumps_json,
    file_version,
    immediate,
    now_iso,
    open_writable,
    pid_alive,
)
from smash_engine.store.schema import COMMAND_KINDS, SCHEMA_VERSION, STALE_AFTER


def connect_reader(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only, autocommit connection (rows are sqlite3.Row) for the CLI and the UI."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ResultsFileError(f"no results file at {path}: check the path, or start a run first")
    version = file_version(path)
    if version < SCHEMA_VERSION:
        raise ResultsFileError(
            f"{path} holds no results yet, or an older schema ({version}; this smash-tui reads "
            f"{SCHEMA_VERSION}): resume its run once with this smash-tui to upgrade it"
        )
    return connect_file(path, readonly=True)


def get_run(conn: sqlite3.Connection, run_id: int | None = None) -> dict[str, Any] | None:
    """The run with this id, or the latest one."""
    if run_id is None:
        rows = as_dicts(conn, "SELECT * FROM runs ORDER BY id DESC LIMIT 1")
    else:
        rows = as_dicts(conn, "SELECT * FROM runs WHERE id = ?", run_id)
    return rows[0] if rows else None


def leaderboard(
    conn: sqlite3.Connection, run_id: int, limit: int | None = None, rank: int | None = None
) -> list[dict[str, Any]]:
    """Best first. `rank` keeps only the row of that rank (ranks stay the ranks among all scored
    archs)."""
    where, args = ("", ()) if rank is None else (" AND rank = ?", (rank,))
    sql = f"SELECT * FROM leaderboard WHERE run_id = ?{where} ORDER BY rank LIMIT ?"
    return as_dicts(conn, sql, run_id, *args, -1 if limit is None else limit)


def steps_since(conn: sqlite3.Connection, run_id: int, after_step: int, phase: str = "train") -> list[dict[str, Any]]:
    sql = "SELECT * FROM steps WHERE run_id = ? AND phase = ? AND step > ? ORDER BY step"
    return as_dicts(conn, sql, run_id, phase, after_step)


def loss_curve(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """The `loss_curve` view's rows of one run, oldest first."""
    return as_dicts(conn, "SELECT * FROM loss_curve WHERE run_id = ? ORDER BY step", run_id)


def scores_since(conn: sqlite3.Connection, run_id: int, after_id: int) -> list[dict[str, Any]]:
    """Scores with id > after_id, oldest first, with the arch's params, flops, n_ops, depth,
    source and parent_id."""
    sql = (
        "SELECT s.*, a.params, a.flops, a.n_ops, a.depth, a.source, a.parent_id FROM scores s"
        " LEFT JOIN archs a ON a.id = s.arch_id WHERE s.run_id = ? AND s.id > ? ORDER BY s.id"
    )
    return as_dicts(conn, sql, run_id, after_id)


def events_since(conn: sqlite3.Connection, run_id: int, after_id: int) -> list[dict[str, Any]]:
    sql = "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id"
    return as_dicts(conn, sql, run_id, after_id)


def accepted_work(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """`sample` and `score` commands the engine accepted and has not finished, oldest first: what it owes."""
    sql = ("SELECT * FROM commands WHERE run_id = ? AND status = 'running' AND kind IN ('sample', 'score') "
           "AND total IS NOT NULL ORDER BY id")
    return as_dicts(conn, sql, run_id)


def commands(conn: sqlite3.Connection, run_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The latest commands, newest first."""
    sql = "SELECT * FROM commands WHERE run_id = ? ORDER BY id DESC LIMIT ?"
    return as_dicts(conn, sql, run_id, limit)


def finals(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    return as_dicts(conn, "SELECT * FROM finals WHERE run_id = ? ORDER BY id", run_id)


def final_steps(conn: sqlite3.Connection, final_id: int) -> list[dict[str, Any]]:
    return as_dicts(conn, "SELECT * FROM final_steps WHERE final_id = ? ORDER BY epoch", final_id)


def get_arch(conn: sqlite3.Connection, arch_id: str) -> dict[str, Any] | None:
    """The arch with this id, or with this unique id prefix (at least 4 characters)."""
    rows = as_dicts(conn, "SELECT * FROM archs WHERE id = ?", arch_id)
    if not rows and len(arch_id) >= 4:
        sql = "SELECT * FROM archs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 3"
        rows = as_dicts(conn, sql, len(arch_id), arch_id)
    if len(rows) > 1:
        ids = ", ".join(r["id"] for r in rows[:2])
        raise ResultsFileError(f"arch id {arch_id!r} is ambiguous ({ids}, ...): give more of it")
    return rows[0] if rows else None


def count_scores(conn: sqlite3.Connection, run_id: int, source: str) -> int:
    """Scores (ok or failed) a stage has recorded: where that stage resumes."""
    sql = "SELECT count(*) FROM scores WHERE run_id = ? AND source = ?"
    return int(conn.execute(sql, (run_id, source)).fetchone()[0])


def provisional_scores(conn: sqlite3.Connection, run_id: int, trained_step: int) -> list[dict[str, Any]]:
    """Architectures whose latest ok score was taken with HyperNet weights from before `trained_step` (a
    `sample` or `score` command during SMASH training), with their spec_json, oldest first: the rank phase
    scores them again with the trained HyperNet."""
    # HyperNet steps only grow, so the latest score is the one with the highest step
    sql = (
        "SELECT s.arch_id, a.spec_json FROM scores s JOIN archs a ON a.id = s.arch_id"
        " WHERE s.run_id = ? AND s.status = 'ok' GROUP BY s.arch_id HAVING max(s.hypernet_step) < ?"
        " ORDER BY min(s.id)"
    )
    return as_dicts(conn, sql, run_id, trained_step)


def best_score(conn: sqlite3.Connection, run_id: int, sources: tuple[str, ...]) -> dict[str, Any] | None:
    """The lowest-error ok score among stages `sources`, the earliest winning a tie, with its spec_json.

    Over random + perturb + hillclimb this is exactly the greedy hill-climb's current architecture (a
    candidate replaces it only when strictly better), so the walk resumes from the file alone."""
    marks = ", ".join("?" * len(sources))
    sql = (
        "SELECT s.arch_id, s.smash_error, s.source, a.spec_json FROM scores s JOIN archs a ON a.id = s.arch_id"
        f" WHERE s.run_id = ? AND s.status = 'ok' AND s.source IN ({marks}) ORDER BY s.smash_error, s.id LIMIT 1"
    )
    rows = as_dicts(conn, sql, run_id, *sources)
    return rows[0] if rows else None


def next_queued_final(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    """The oldest queued final, with its architecture's spec_json."""
    sql = (
        "SELECT f.*, a.spec_json FROM finals f JOIN archs a ON a.id = f.arch_id"
        " WHERE f.run_id = ? AND f.status = 'queued' ORDER BY f.id LIMIT 1"
    )
    rows = as_dicts(conn, sql, run_id)
    return rows[0] if rows else None


def pick(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    """The run's pick (the `pick` view: the finished final with the lowest validation error, ties to the better
    SMASH rank), or None before a final training finishes."""
    rows = as_dicts(conn, "SELECT * FROM pick WHERE run_id = ?", run_id)
    return rows[0] if rows else None


def run_summary(conn: sqlite3.Connection, run_id: int | None = None) -> dict[str, Any] | None:
    """One line of `smash-tui ls`: the run with its engine state, scored count, SMASH's first place (`top_smash`)
    and the run's `pick` (None before a final finishes)."""
    run = get_run(conn, run_id)
    if run is None:
        return None
    sql = (
        "SELECT (SELECT count(*) FROM scores WHERE run_id = :r AND status = 'ok'),"
        " (SELECT min(smash_error) FROM scores WHERE run_id = :r AND status = 'ok')"
    )
    n, top_smash = conn.execute(sql, {"r": run["id"]}).fetchone()
    return {**run, "state": engine_state(run), "n_scored": n, "top_smash": top_smash, "pick": pick(conn, run["id"])}


def insert_command(path: str | os.PathLike[str], run_id: int, kind: str, args: dict[str, Any] | None = None) -> int:
    """Queue a command for the engine: the one write a UI or CLI makes."""
    check_choice("command", kind, COMMAND_KINDS, ConfigError)
    path = os.fspath(path)
    conn = open_writable(path, create=False)
    try:
        with immediate(conn, path) as c:
            if c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise ResultsFileError(f"no run {run_id} in {path}")
            sql = "INSERT INTO commands (run_id, kind, args_json, created_at) VALUES (?, ?, ?, ?)"
            cur = c.execute(sql, (run_id, kind, dumps_json(args or {}), now_iso()))
            return int(cur.lastrowid or 0)
    finally:
        conn.close()


def engine_state(run: Mapping[str, Any] | sqlite3.Row, now: datetime | str | None = None) -> str:
    """The run's status, except 'crashed' for running/paused with a heartbeat older than
    STALE_AFTER, or whose engine process on this host is gone (known at once, without waiting)."""
    status = str(run["status"])
    if status in ("running", "paused"):
        if age_s(run["heartbeat_at"], now) > STALE_AFTER:
            return "crashed"
        pid, host = run["pid"], run["host"]
        if pid is None or (host == socket.gethostname() and not pid_alive(pid)):
            return "crashed"
    return status


_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_READ_ACTIONS |= {sqlite3.SQLITE_RECURSIVE}
_INFO_PRAGMAS = set("table_info table_xinfo index_list index_info index_xinfo foreign_key_list".split())


def _read_only_authorizer(action: int, arg1: str | None, *_: object) -> int:
    if action in _READ_ACTIONS or (action == sqlite3.SQLITE_PRAGMA and arg1 in _INFO_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def run_readonly_query(path: str | os.PathLike[str], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read statement (SELECT, WITH, table_info-like PRAGMA); anything else is refused."""
    conn = connect_reader(path)
    conn.row_factory = None
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_authorizer(_read_only_authorizer)
        cur = conn.execute(sql)
        return [d[0] for d in cur.description or ()], cur.fetchall()
    except (sqlite3.ProgrammingError, sqlite3.Warning) as e:
        raise ResultsFileError(f"query is read-only: give one statement ({e})") from e
    except sqlite3.DatabaseError as e:
        if "authoriz" in str(e) or "readonly" in str(e):
            raise ResultsFileError(f"query is read-only: {sql.strip()[:60]!r} was refused") from e
        raise ResultsFileError(f"query failed: {e}") from e
    finally:
        conn.close()


def studies(conn: sqlite3.Connection, run_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    """The run's studies (of one kind), oldest first."""
    if kind is None:
        return as_dicts(conn, "SELECT * FROM studies WHERE run_id = ? ORDER BY id", run_id)
    return as_dicts(conn, "SELECT * FROM studies WHERE run_id = ? AND kind = ? ORDER BY id", run_id, kind)


def get_study(conn: sqlite3.Connection, study_id: int) -> dict[str, Any] | None:
    rows = as_dicts(conn, "SELECT * FROM studies WHERE id = ?", study_id)
    return rows[0] if rows else None


def study_archs(conn: sqlite3.Connection, study_id: int, variant: str | None = None) -> list[dict[str, Any]]:
    """A study's measurements in (variant, trial) order."""
    if variant is None:
        return as_dicts(conn, "SELECT * FROM study_archs WHERE study_id = ? ORDER BY variant, trial", study_id)
    sql = "SELECT * FROM study_archs WHERE study_id = ? AND variant = ? ORDER BY trial"
    return as_dicts(conn, sql, study_id, variant)


def verifications(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    """The verify phase's trainings, a row per (candidate, rung), by rung then leaderboard rank: status, and the
    held-out error and loss once trained."""
    return as_dicts(conn, "SELECT * FROM verifications WHERE run_id = ? ORDER BY rung, smash_rank", run_id)


def study_stats(conn: sqlite3.Connection, study_id: int) -> list[dict[str, Any]]:
    return as_dicts(conn, "SELECT * FROM study_stats WHERE study_id = ? ORDER BY variant", study_id)


def transfer_final(conn: sqlite3.Connection, run_id: int, arch_id: str, dataset: str) -> dict[str, Any] | None:
    """The latest final of this (rebuilt) architecture on `dataset` (to resume or report it)."""
    sql = "SELECT * FROM finals WHERE run_id = ? AND arch_id = ? AND dataset = ? ORDER BY id DESC LIMIT 1"
    rows = as_dicts(conn, sql, run_id, arch_id, dataset)
    return rows[0] if rows else None
