"""Opening a results file: version checks, WAL connections, write transactions, engine liveness."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smash_engine.errors import ResultsFileError
from smash_engine.store.schema import BUSY_TIMEOUT_S, MIGRATIONS, SCHEMA_VERSION, SQLITE_HEADER, STALE_AFTER


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def age_s(stamp: str | None, now: datetime | str | None = None) -> float:
    """Seconds since an ISO-8601 time (infinite when there is none)."""
    if not stamp:
        return float("inf")
    now = datetime.fromisoformat(now) if isinstance(now, str) else now or datetime.now(UTC)
    return (now - datetime.fromisoformat(stamp)).total_seconds()


def _refuse_newer(path: str, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise ResultsFileError(
            f"{path} was written by a newer smash-tui (schema {version}, this one reads "
            f"{SCHEMA_VERSION}): upgrade smash-tui"
        )


def file_version(path: str) -> int:
    """Schema version of the file (0: absent or empty); refuses what is not ours, writes nothing."""
    if not os.path.exists(path):
        return 0
    if os.path.isdir(path):
        raise ResultsFileError(f"{path} is a folder: give the path of a results file (.db)")
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if not head:
        return 0
    if head != SQLITE_HEADER:
        raise ResultsFileError(f"{path} is not a SQLite file: give the path of a results file")
    conn = connect_file(path, readonly=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "schema_version" not in tables:
            raise ResultsFileError(
                f"{path} is a SQLite database but not a smash-tui results file (tables: "
                f"{', '.join(sorted(tables)[:5])}): give another path"
            )
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] if tables else 0
    except sqlite3.DatabaseError as e:
        raise ResultsFileError(f"{path} cannot be read as a results file ({e})") from e
    finally:
        conn.close()
    _refuse_newer(path, version or 0)
    return version or 0


def _check_writable(path: str) -> None:
    """Refuse a read-only file or folder (mode bits too: root ignores them, we do not)."""
    folder = os.path.dirname(os.path.abspath(path))
    for target in (path, folder):
        if os.path.exists(target) and (not os.access(target, os.W_OK) or not os.stat(target).st_mode & 0o222):
            what = "folder" if target == folder else "file"
            raise ResultsFileError(
                f"{path} cannot be written: the {what} {target} is read-only; make it writable or give another path"
            )


def connect_file(path: str, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            uri = Path(path).absolute().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        else:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as e:
        raise ResultsFileError(f"cannot open {path}: {e}") from e
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def open_writable(path: str, create: bool) -> sqlite3.Connection:
    version = file_version(path)  # checks before anything is written
    if not create and version == 0:
        raise ResultsFileError(f"no results in {path}: check the path, or start a run first")
    _check_writable(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
        raise ResultsFileError(f"cannot create the folder for {path}: {e}") from e
    conn = connect_file(path, readonly=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); joins a transaction already open."""
    if conn.in_transaction:
        yield conn
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as e:
        raise ResultsFileError(
            f"{path} stayed locked for {BUSY_TIMEOUT_S:g} s ({e}): another program holds a write "
            "transaction; close it and retry"
        ) from e
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # some errors (disk full) have rolled back already
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def check_choice(what: str, value: str, allowed: tuple[str, ...], error: type[Exception]) -> None:
    if value not in allowed:
        raise error(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")


def as_dicts(conn: sqlite3.Connection, sql: str, *params: Any) -> list[dict[str, Any]]:
    """One statement, fetched whole (no read transaction stays open), as dicts."""
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def dumps_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def engine_alive(pid: int | None, host: str | None, heartbeat_at: str | None) -> bool:
    if pid is None or age_s(heartbeat_at) > STALE_AFTER:
        return False
    return host != socket.gethostname() or pid_alive(pid)


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the migrations the file lacks, all in one write transaction."""
    with immediate(conn, path):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        have = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        _refuse_newer(path, have)
        for version in range(have + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now_iso()))
