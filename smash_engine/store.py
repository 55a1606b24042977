"""The results file: the one module that knows its SQL.

Owns the SQLite schema (`MIGRATIONS`, an append-only list: never edit a shipped migration, add one),
the engine's `Writer` (WAL, short `BEGIN IMMEDIATE` transactions, one engine per file held by pid,
host and heartbeat) and the read helpers the CLI and the Textual UI poll incrementally
(`WHERE id > :last_seen`). Readers open the file read-only and never hold a transaction open.
Times are ISO-8601 UTC text ("2026-11-27T17:43:32.123Z"). Standard library only, plus
`smash_engine.errors`. `python -m smash_engine.store --write-docs docs/schema.md` regenerates the
DDL section of the schema docs from a freshly migrated database.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smash_engine.errors import ConfigError, EngineBusy, ResultsFileError

STALE_AFTER = 30.0  # seconds without a heartbeat after which an engine counts as dead
BUSY_TIMEOUT_S = 10.0  # how long any connection waits for a lock before giving up
SQLITE_HEADER = b"SQLite format 3\x00"
DOCS_START, DOCS_END = "<!-- schema:start -->", "<!-- schema:end -->"

RUN_STATUSES = ("created", "running", "paused", "stopped", "done", "crashed", "failed")
PHASES = ("smash", "rank", "refine", "final", "done")
FINAL_STATUSES = ("queued", "running", "done", "failed", "stopped")
COMMAND_KINDS = ("pause", "continue", "stop", "sample", "final", "score")
COMMAND_STATUSES = ("pending", "running", "done", "error")
EVENT_LEVELS = ("info", "warning", "error")

# ---------------------------------------------------------------------------- schema

_M001 = (
    """CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'created', -- created|running|paused|stopped|done|crashed|failed
    phase TEXT NOT NULL DEFAULT 'smash',    -- smash|rank|refine|final|done
    epoch INTEGER NOT NULL DEFAULT 0,       -- SMASH epochs completed
    step INTEGER NOT NULL DEFAULT 0,        -- HyperNet steps taken
    total_steps INTEGER,                    -- HyperNet steps planned
    progress REAL NOT NULL DEFAULT 0,       -- 0..1 of the whole search
    config_json TEXT NOT NULL,              -- the resolved configuration
    dataset TEXT, preset TEXT, device TEXT, seed INTEGER,
    pid INTEGER, host TEXT,                 -- engine holding the file; pid NULL once released
    heartbeat_at TEXT,
    images_per_s REAL,                      -- recent SMASH training throughput
    message TEXT                            -- last status line, or why it failed
)""",
    """CREATE TABLE archs (
    id TEXT PRIMARY KEY,                    -- stable hash of the canonical spec JSON
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    spec_json TEXT NOT NULL,
    source TEXT NOT NULL,                   -- random|perturb|hillclimb|user|sample
    parent_id TEXT,                         -- the arch it was derived from
    params INTEGER, flops INTEGER,          -- flops: multiply-adds per image
    n_ops INTEGER, depth INTEGER,
    created_at TEXT NOT NULL
)""",
    """CREATE TABLE scores (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_id TEXT NOT NULL REFERENCES archs(id),
    smash_error REAL,                       -- 0..1 validation error with generated weights
    smash_loss REAL,                        -- validation cross-entropy, nats
    n_images INTEGER, hypernet_step INTEGER,
    status TEXT NOT NULL DEFAULT 'ok',      -- ok|failed
    reason TEXT,                            -- why it failed
    source TEXT,                            -- the stage that asked: random|perturb|hillclimb|sample|user
    scored_at TEXT NOT NULL
)""",
    """CREATE TABLE steps (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    step INTEGER NOT NULL,                  -- global HyperNet step
    epoch INTEGER NOT NULL,
    phase TEXT NOT NULL,                    -- train|val
    loss REAL, error REAL, lr REAL,         -- loss in nats, error 0..1
    images_per_s REAL,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, phase, step)
)""",
    """CREATE TABLE finals (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_id TEXT NOT NULL REFERENCES archs(id),
    status TEXT NOT NULL DEFAULT 'queued',  -- queued|running|done|failed|stopped
    epochs INTEGER NOT NULL,                -- planned
    epoch INTEGER NOT NULL DEFAULT 0,       -- completed
    best_val_error REAL, test_error REAL,   -- 0..1
    params INTEGER, flops INTEGER,
    weights_path TEXT,
    started_at TEXT, finished_at TEXT,
    message TEXT
)""",
    """CREATE TABLE final_steps (
    final_id INTEGER NOT NULL REFERENCES finals(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL, train_error REAL, val_error REAL, test_error REAL,
    lr REAL, images_per_s REAL,
    at TEXT NOT NULL,
    PRIMARY KEY (final_id, epoch)
)""",
    """CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                     -- pause|continue|stop|sample|final|score
    args_json TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'pending', -- pending|running|done|error
    created_at TEXT NOT NULL, handled_at TEXT,
    message TEXT                            -- the engine's answer
)""",
    """CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    level TEXT NOT NULL,                    -- info|warning|error
    message TEXT NOT NULL
)""",
    "CREATE INDEX scores_by_error ON scores (run_id, status, smash_error)",
    "CREATE INDEX scores_by_arch ON scores (arch_id, run_id)",
    "CREATE INDEX archs_by_run ON archs (run_id)",
    "CREATE INDEX finals_by_arch ON finals (arch_id, run_id)",
    "CREATE INDEX commands_by_status ON commands (run_id, status)",
    "CREATE INDEX events_by_run ON events (run_id)",
    """CREATE VIEW leaderboard AS
WITH latest AS (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY run_id, arch_id ORDER BY scored_at DESC, id DESC) AS nth
    FROM scores WHERE status = 'ok'
), best_final AS (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY run_id, arch_id
        ORDER BY status = 'done' DESC, test_error IS NULL, test_error, id DESC) AS nth
    FROM finals
)
SELECT s.run_id,
    ROW_NUMBER() OVER (PARTITION BY s.run_id ORDER BY s.smash_error, s.scored_at, s.id) AS rank,
    s.arch_id, s.smash_error, s.smash_loss, a.params, a.flops, a.n_ops, a.depth, a.source,
    a.parent_id, s.scored_at, f.id AS final_id, f.status AS final_status,
    f.test_error AS final_test_error, f.best_val_error AS final_val_error
FROM latest AS s
JOIN archs AS a ON a.id = s.arch_id
LEFT JOIN best_final AS f ON f.run_id = s.run_id AND f.arch_id = s.arch_id AND f.nth = 1
WHERE s.nth = 1
ORDER BY s.run_id, rank""",
    """CREATE VIEW loss_curve AS
SELECT run_id, step, max(epoch) AS epoch,
    max(CASE phase WHEN 'train' THEN loss END) AS train_loss,
    max(CASE phase WHEN 'train' THEN error END) AS train_error,
    max(CASE phase WHEN 'val' THEN loss END) AS val_loss,
    max(CASE phase WHEN 'val' THEN error END) AS val_error,
    max(CASE phase WHEN 'train' THEN lr END) AS lr,
    max(CASE phase WHEN 'train' THEN images_per_s END) AS images_per_s
FROM steps
GROUP BY run_id, step
ORDER BY run_id, step""",
    """CREATE VIEW final_curve AS
SELECT f.run_id, s.final_id, f.arch_id, s.epoch, s.train_loss, s.train_error, s.val_error,
    s.test_error, s.lr
FROM final_steps AS s JOIN finals AS f ON f.id = s.final_id
ORDER BY s.final_id, s.epoch""",
)


def m001_initial(conn: sqlite3.Connection) -> None:
    for statement in _M001:
        conn.execute(statement)


_M002 = (
    """CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,                     -- correlation|capacity|corrupt|archgrad
    status TEXT NOT NULL DEFAULT 'running', -- running|done|failed
    options_json TEXT NOT NULL,             -- the options and the picked architectures, fixed at creation
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    message TEXT                            -- one line: the headline result, or why it failed
)""",
    """CREATE TABLE study_archs (
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,                  -- what was measured: trained|<hyper preset>|true|<corrupted field>|
                                            -- start|guided|random
    trial INTEGER NOT NULL,                 -- position in the study's picks, or step of a walk
    arch_id TEXT NOT NULL REFERENCES archs(id),
    smash_error REAL, smash_loss REAL,      -- with generated weights (the variant's HyperNet or encoding)
    val_error REAL, test_error REAL,        -- 0..1 after normal training (correlation)
    epochs INTEGER,                         -- of that normal training
    at TEXT NOT NULL,
    PRIMARY KEY (study_id, variant, trial)
)""",
    """CREATE TABLE study_stats (
    study_id INTEGER NOT NULL REFERENCES studies(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,                  -- run (the run's HyperNet)|<hyper preset>|<corrupted field>|guided|random
    n INTEGER NOT NULL,                     -- architectures behind the figures
    kendall_tau REAL, kendall_p REAL,       -- SMASH error vs true validation error (scipy.stats, tau-b)
    spearman_rho REAL, spearman_p REAL,
    top_k INTEGER, top_k_overlap REAL,      -- |SMASH top k and true top k| / k
    regret REAL,                            -- true error of SMASH's pick minus the best true error
    win_rate REAL,                          -- corrupt: share of archs where the true encoding scores better
    mean_gap REAL,                          -- corrupt: mean(corrupted - true SMASH error)
    mean_error REAL, best_error REAL,       -- archgrad: SMASH error over the walk's trials
    extra_json TEXT,                        -- the rest (test-error statistics, Wilcoxon p, counts)
    at TEXT NOT NULL,
    PRIMARY KEY (study_id, variant)
)""",
    # finals.dataset: NULL for the run's own dataset; else a transfer final (`smash-tui final --dataset`)
    "ALTER TABLE finals ADD COLUMN dataset TEXT",
    # the engine requeues interrupted finals of its own dataset; a transfer final is resumed by `smash-tui final`
    """CREATE TRIGGER transfer_finals_never_queued BEFORE UPDATE OF status ON finals
WHEN NEW.dataset IS NOT NULL AND NEW.status = 'queued'
BEGIN SELECT RAISE(IGNORE); END""",
    "CREATE INDEX studies_by_run ON studies (run_id, kind)",
)


def m002_studies(conn: sqlite3.Connection) -> None:
    for statement in _M002:
        conn.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_studies]
SCHEMA_VERSION = len(MIGRATIONS)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the migrations the file lacks, all in one write transaction."""
    with _immediate(conn, path):
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        have = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        _refuse_newer(path, have)
        for version in range(have + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version - 1](conn)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, now_iso()))


def schema_sql(conn: sqlite3.Connection) -> str:
    """The DDL of every table, index and view, in creation order (as in `sqlite_master`)."""
    rows = conn.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return "".join(f"{row[0]};\n\n" for row in rows).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------- opening files


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age_s(stamp: str | None, now: datetime | str | None = None) -> float:
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


def _file_version(path: str) -> int:
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
    conn = _connect(path, readonly=True)
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


def _connect(path: str, readonly: bool) -> sqlite3.Connection:
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


def _open_writable(path: str, create: bool) -> sqlite3.Connection:
    version = _file_version(path)  # checks before anything is written
    if not create and version == 0:
        raise ResultsFileError(f"no results in {path}: check the path, or start a run first")
    _check_writable(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    except OSError as e:
        raise ResultsFileError(f"cannot create the folder for {path}: {e}") from e
    conn = _connect(path, readonly=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


@contextmanager
def _immediate(conn: sqlite3.Connection, path: str) -> Iterator[sqlite3.Connection]:
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


def _choice(what: str, value: str, allowed: tuple[str, ...], error: type[Exception]) -> None:
    if value not in allowed:
        raise error(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")


def _rows(conn: sqlite3.Connection, sql: str, *params: Any) -> list[dict[str, Any]]:
    """One statement, fetched whole (no read transaction stays open), as dicts."""
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _engine_alive(pid: int | None, host: str | None, heartbeat_at: str | None) -> bool:
    if pid is None or _age_s(heartbeat_at) > STALE_AFTER:
        return False
    return host != socket.gethostname() or _pid_alive(pid)


# ---------------------------------------------------------------------------- the engine's writer

_RUN_COLUMNS = frozenset(
    "name status phase epoch step total_steps progress config_json dataset preset device seed "
    "pid host heartbeat_at images_per_s message updated_at".split()
)
_FINAL_COLUMNS = frozenset(
    "status epochs epoch best_val_error test_error params flops weights_path started_at finished_at message".split()
)
STUDY_KINDS = ("correlation", "capacity", "corrupt", "archgrad")
STUDY_STATUSES = ("running", "done", "failed")
_STUDY_COLUMNS = frozenset("status options_json message updated_at".split())
_STUDY_ARCH_COLUMNS = tuple(
    "study_id variant trial arch_id smash_error smash_loss val_error test_error epochs at".split()
)
_STUDY_STAT_COLUMNS = tuple(
    "study_id variant n kendall_tau kendall_p spearman_rho spearman_p top_k top_k_overlap regret win_rate "
    "mean_gap mean_error best_error extra_json at".split()
)
_STEP_COLUMNS = ("run_id", "step", "epoch", "phase", "loss", "error", "lr", "images_per_s", "at")
_FINAL_STEP_COLUMNS = tuple("final_id epoch train_loss train_error val_error test_error lr images_per_s at".split())


def connect_writer(path: str | os.PathLike[str]) -> Writer:
    """Open the results file for the one engine that writes it, creating and migrating it."""
    path = os.fspath(path)
    conn = _open_writable(path, create=True)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return Writer(path, conn)


class Writer:
    """The engine's connection: each method is one short BEGIN IMMEDIATE transaction, unless
    called inside `with writer.transaction():`, which groups them. Use it from one thread."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path, self.conn = path, conn
        self._held: dict[int, tuple[int, str]] = {}  # run_id -> (pid, host) this writer holds it for

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return _immediate(self.conn, self.path)

    def _insert(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> int:
        with self.transaction() as c:
            return int(c.execute(sql, params).lastrowid or 0)

    def _update(self, table: str, key: int, fields: dict[str, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"{table} has no writable column(s) {', '.join(unknown)}")
        fields = {k: _json(v) if k.endswith("_json") else v for k, v in fields.items()}
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self.transaction() as c:
            cur = c.execute(f"UPDATE {table} SET {sets} WHERE id = :_key", {**fields, "_key": key})
        if cur.rowcount == 0:
            raise ResultsFileError(f"no row {key} in {table} of {self.path}")

    def _replace(self, table: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """INSERT OR REPLACE rows (missing keys are NULL, a missing `at` is now) in one transaction."""
        now = now_iso()
        values = [{k: row.get(k) for k in columns} | {"at": row.get("at") or now} for row in rows]
        marks = ", ".join(f":{k}" for k in columns)
        with self.transaction() as c:
            c.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)

    def create_run(
        self,
        name: str,
        config: dict[str, Any],
        dataset: str | None,
        preset: str | None,
        device: str | None,
        seed: int | None,
        total_steps: int | None,
    ) -> int:
        now = now_iso()
        return self._insert(
            "INSERT INTO runs (name, created_at, updated_at, config_json, dataset, preset, device,"
            " seed, total_steps) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, now, now, _json(config), dataset, preset, device, seed, total_steps),
        )

    def update_run(self, run_id: int, **fields: Any) -> None:
        if "status" in fields:
            _choice("run status", fields["status"], RUN_STATUSES, ValueError)
        if "phase" in fields:
            _choice("run phase", fields["phase"], PHASES, ValueError)
        fields["updated_at"] = now_iso()
        self._update("runs", run_id, fields, _RUN_COLUMNS)

    def heartbeat(self, run_id: int, **fields: Any) -> None:
        self.update_run(run_id, heartbeat_at=now_iso(), **fields)

    def acquire_engine(self, run_id: int, pid: int | None = None, host: str | None = None) -> None:
        """Take the run for this engine, or raise EngineBusy while another live engine holds it."""
        pid = os.getpid() if pid is None else pid
        host = socket.gethostname() if host is None else host
        with self.transaction() as c:
            run = c.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None:
                raise ResultsFileError(f"no run {run_id} in {self.path}")
            held_by = (run["pid"], run["host"])
            if run["pid"] is not None and held_by != (pid, host):
                if _engine_alive(run["pid"], run["host"], run["heartbeat_at"]):
                    raise EngineBusy(
                        f"{self.path} is being written by another engine (pid {run['pid']} on "
                        f"host {run['host']}, last heartbeat {run['heartbeat_at']}): stop it "
                        f"first, or wait {STALE_AFTER:g} s if it has died"
                    )
                self.add_event(
                    run_id,
                    "warning",
                    f"took over from a stale engine (pid {run['pid']} on host "
                    f"{run['host']}, last heartbeat {run['heartbeat_at']})",
                )
            self.update_run(run_id, pid=pid, host=host, heartbeat_at=now_iso())
        self._held[run_id] = (pid, host)

    def release_engine(self, run_id: int) -> None:
        """Give the run up (pid set to NULL) so a new engine need not wait STALE_AFTER."""
        pid, host = self._held.pop(run_id, (os.getpid(), socket.gethostname()))
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET pid = NULL, updated_at = ? WHERE id = ? AND pid = ? AND host = ?",
                (now_iso(), run_id, pid, host),
            )

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        """Insert or replace a batch of steps rows (keys as the columns; `at` defaults to now)."""
        if rows:
            self._replace("steps", _STEP_COLUMNS, rows)

    def add_arch(
        self,
        run_id: int,
        arch_id: str,
        spec_json: str | dict[str, Any],
        source: str,
        parent_id: str | None,
        params: int | None,
        flops: int | None,
        n_ops: int | None,
        depth: int | None,
    ) -> None:
        spec, now = _json(spec_json), now_iso()
        row = (arch_id, run_id, spec, source, parent_id, params, flops, n_ops, depth, now)
        with self.transaction() as c:
            c.execute("INSERT OR IGNORE INTO archs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def add_score(
        self,
        run_id: int,
        arch_id: str,
        smash_error: float | None,
        smash_loss: float | None,
        n_images: int | None,
        hypernet_step: int | None,
        status: str = "ok",
        reason: str | None = None,
        source: str | None = None,
    ) -> int:
        _choice("score status", status, ("ok", "failed"), ValueError)
        row = (run_id, arch_id, smash_error, smash_loss, n_images, hypernet_step, status, reason, source)
        return self._insert(
            "INSERT INTO scores (run_id, arch_id, smash_error, smash_loss, n_images, "
            "hypernet_step, status, reason, source, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*row, now_iso()),
        )

    def create_final(
        self,
        run_id: int,
        arch_id: str,
        epochs: int,
        params: int | None,
        flops: int | None,
        status: str = "queued",
    ) -> int:
        _choice("final status", status, FINAL_STATUSES, ValueError)
        started = now_iso() if status == "running" else None
        return self._insert(
            "INSERT INTO finals (run_id, arch_id, status, epochs, params, flops, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, arch_id, status, epochs, params, flops, started),
        )

    def update_final(self, final_id: int, **fields: Any) -> None:
        """Also stamps started_at on 'running' and finished_at on done/failed/stopped."""
        status = fields.get("status")
        if status is not None:
            _choice("final status", status, FINAL_STATUSES, ValueError)
        if status == "running":
            fields.setdefault("started_at", now_iso())
        elif status in ("done", "failed", "stopped"):
            fields.setdefault("finished_at", now_iso())
        self._update("finals", final_id, fields, _FINAL_COLUMNS)

    def add_final_step(self, final_id: int, **row: Any) -> None:
        self._replace("final_steps", _FINAL_STEP_COLUMNS, [{**row, "final_id": final_id}])

    def add_event(self, run_id: int, level: str, message: str) -> int:
        _choice("event level", level, EVENT_LEVELS, ValueError)
        return self._insert(
            "INSERT INTO events (run_id, at, level, message) VALUES (?, ?, ?, ?)",
            (run_id, now_iso(), level, message),
        )

    def pending_commands(self, run_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM commands WHERE run_id = ? AND status = 'pending' ORDER BY id", (run_id,)
        ).fetchall()

    def mark_command(self, command_id: int, status: str, message: str | None = None) -> None:
        _choice("command status", status, COMMAND_STATUSES[1:], ValueError)
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE commands SET status = ?, message = ?, handled_at = ? WHERE id = ?",
                (status, message, now_iso(), command_id),
            )
        if cur.rowcount == 0:
            raise ResultsFileError(f"no command {command_id} in {self.path}")

    def fail_stale(self, run_id: int) -> int:
        """Fail the finals and commands a dead engine left 'running'; returns how many."""
        now, why = now_iso(), "the engine stopped while this was running (crash or kill)"
        with self.transaction() as c:
            n = (
                c.execute(
                    "UPDATE finals SET status = 'failed', finished_at = ?, message = ? "
                    "WHERE run_id = ? AND status = 'running'",
                    (now, why, run_id),
                ).rowcount
                + c.execute(
                    "UPDATE commands SET status = 'error', handled_at = ?, message = ? "
                    "WHERE run_id = ? AND status = 'running'",
                    (now, why, run_id),
                ).rowcount
            )
            if n:
                self.add_event(run_id, "warning", f"marked {n} row(s) left running as failed")
        return n

    # -- studies and transfer finals (smash_engine.studies) --------------------------------------
    def create_study(self, run_id: int, kind: str, options: dict[str, Any]) -> int:
        _choice("study kind", kind, STUDY_KINDS, ValueError)
        now = now_iso()
        return self._insert(
            "INSERT INTO studies (run_id, kind, options_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, kind, _json(options), now, now),
        )

    def update_study(self, study_id: int, **fields: Any) -> None:
        if fields.get("status") is not None:
            _choice("study status", fields["status"], STUDY_STATUSES, ValueError)
        self._update("studies", study_id, {**fields, "updated_at": now_iso()}, _STUDY_COLUMNS)

    def add_study_arch(self, study_id: int, **row: Any) -> None:
        """One measurement (INSERT OR REPLACE on study, variant, trial), committed at once."""
        self._replace("study_archs", _STUDY_ARCH_COLUMNS, [{**row, "study_id": study_id}])

    def set_study_stats(self, study_id: int, rows: list[dict[str, Any]]) -> None:
        """Replace the statistics rows of a study (one per variant) in one transaction."""
        rows = [{**r, "study_id": study_id, "extra_json": _json(r.get("extra_json") or {})} for r in rows]
        self._replace("study_stats", _STUDY_STAT_COLUMNS, rows)

    def create_transfer_final(
        self, run_id: int, arch_id: str, epochs: int, params: int | None, flops: int | None, dataset: str
    ) -> int:
        """A final training on another dataset: 'running' at once, never queued for the engine."""
        return self._insert(
            "INSERT INTO finals (run_id, arch_id, status, epochs, params, flops, started_at, dataset, message) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            (run_id, arch_id, epochs, params, flops, now_iso(), dataset, f"transfer to {dataset}"),
        )

    def close(self) -> None:
        for run_id in list(self._held):
            self.release_engine(run_id)
        self.conn.close()


# ---------------------------------------------------------------------------- readers


def connect_reader(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only, autocommit connection (rows are sqlite3.Row) for the CLI and the UI."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ResultsFileError(f"no results file at {path}: check the path, or start a run first")
    version = _file_version(path)
    if version < SCHEMA_VERSION:
        raise ResultsFileError(
            f"{path} holds no results yet, or an older schema ({version}; this smash-tui reads "
            f"{SCHEMA_VERSION}): resume its run once with this smash-tui to upgrade it"
        )
    return _connect(path, readonly=True)


def get_run(conn: sqlite3.Connection, run_id: int | None = None) -> dict[str, Any] | None:
    """The run with this id, or the latest one."""
    if run_id is None:
        rows = _rows(conn, "SELECT * FROM runs ORDER BY id DESC LIMIT 1")
    else:
        rows = _rows(conn, "SELECT * FROM runs WHERE id = ?", run_id)
    return rows[0] if rows else None


def leaderboard(
    conn: sqlite3.Connection, run_id: int, limit: int | None = None, where_sql: str | None = None
) -> list[dict[str, Any]]:
    """Best first. `where_sql` is a trusted SQL condition on the view's columns (ranks stay
    the ranks among all scored archs)."""
    where = f" AND ({where_sql})" if where_sql else ""
    sql = f"SELECT * FROM leaderboard WHERE run_id = ?{where} ORDER BY rank LIMIT ?"
    return _rows(conn, sql, run_id, -1 if limit is None else limit)


def steps_since(conn: sqlite3.Connection, run_id: int, after_step: int, phase: str = "train") -> list[dict[str, Any]]:
    sql = "SELECT * FROM steps WHERE run_id = ? AND phase = ? AND step > ? ORDER BY step"
    return _rows(conn, sql, run_id, phase, after_step)


def scores_since(conn: sqlite3.Connection, run_id: int, after_id: int) -> list[dict[str, Any]]:
    """Scores with id > after_id, oldest first, with the arch's params, flops, n_ops, depth,
    source and parent_id."""
    sql = (
        "SELECT s.*, a.params, a.flops, a.n_ops, a.depth, a.source, a.parent_id FROM scores s"
        " LEFT JOIN archs a ON a.id = s.arch_id WHERE s.run_id = ? AND s.id > ? ORDER BY s.id"
    )
    return _rows(conn, sql, run_id, after_id)


def events_since(conn: sqlite3.Connection, run_id: int, after_id: int) -> list[dict[str, Any]]:
    sql = "SELECT * FROM events WHERE run_id = ? AND id > ? ORDER BY id"
    return _rows(conn, sql, run_id, after_id)


def commands(conn: sqlite3.Connection, run_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The latest commands, newest first."""
    sql = "SELECT * FROM commands WHERE run_id = ? ORDER BY id DESC LIMIT ?"
    return _rows(conn, sql, run_id, limit)


def finals(conn: sqlite3.Connection, run_id: int) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT * FROM finals WHERE run_id = ? ORDER BY id", run_id)


def final_steps(conn: sqlite3.Connection, final_id: int) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT * FROM final_steps WHERE final_id = ? ORDER BY epoch", final_id)


def get_arch(conn: sqlite3.Connection, arch_id: str) -> dict[str, Any] | None:
    """The arch with this id, or with this unique id prefix (at least 4 characters)."""
    rows = _rows(conn, "SELECT * FROM archs WHERE id = ?", arch_id)
    if not rows and len(arch_id) >= 4:
        sql = "SELECT * FROM archs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT 3"
        rows = _rows(conn, sql, len(arch_id), arch_id)
    if len(rows) > 1:
        ids = ", ".join(r["id"] for r in rows[:2])
        raise ResultsFileError(f"arch id {arch_id!r} is ambiguous ({ids}, ...): give more of it")
    return rows[0] if rows else None


def count_scores(conn: sqlite3.Connection, run_id: int, source: str) -> int:
    """Scores (ok or failed) a stage has recorded: where that stage resumes."""
    sql = "SELECT count(*) FROM scores WHERE run_id = ? AND source = ?"
    return int(conn.execute(sql, (run_id, source)).fetchone()[0])


def best_score(conn: sqlite3.Connection, run_id: int, sources: tuple[str, ...]) -> dict[str, Any] | None:
    """The lowest-error ok score among stages `sources`, the earliest winning a tie, with its spec_json.

    Over random + perturb + hillclimb this is exactly the greedy hill-climb's current architecture (a
    candidate replaces it only when strictly better), so the walk resumes from the file alone."""
    marks = ", ".join("?" * len(sources))
    sql = (
        "SELECT s.arch_id, s.smash_error, s.source, a.spec_json FROM scores s JOIN archs a ON a.id = s.arch_id"
        f" WHERE s.run_id = ? AND s.status = 'ok' AND s.source IN ({marks}) ORDER BY s.smash_error, s.id LIMIT 1"
    )
    rows = _rows(conn, sql, run_id, *sources)
    return rows[0] if rows else None


def next_queued_final(conn: sqlite3.Connection, run_id: int) -> dict[str, Any] | None:
    """The oldest queued final, with its architecture's spec_json."""
    sql = (
        "SELECT f.*, a.spec_json FROM finals f JOIN archs a ON a.id = f.arch_id"
        " WHERE f.run_id = ? AND f.status = 'queued' ORDER BY f.id LIMIT 1"
    )
    rows = _rows(conn, sql, run_id)
    return rows[0] if rows else None


def run_summary(conn: sqlite3.Connection, run_id: int | None = None) -> dict[str, Any] | None:
    """One line of `smash-tui ls`: the run with its engine state, scored count, best SMASH and test error."""
    run = get_run(conn, run_id)
    if run is None:
        return None
    sql = (
        "SELECT (SELECT count(*) FROM scores WHERE run_id = :r AND status = 'ok'),"
        " (SELECT min(smash_error) FROM scores WHERE run_id = :r AND status = 'ok'),"
        " (SELECT min(test_error) FROM finals WHERE run_id = :r AND status = 'done' AND dataset IS NULL)"
    )
    n, best_smash, best_test = conn.execute(sql, {"r": run["id"]}).fetchone()
    return {**run, "state": engine_state(run), "n_scored": n, "best_smash": best_smash, "best_test": best_test}


def insert_command(path: str | os.PathLike[str], run_id: int, kind: str, args: dict[str, Any] | None = None) -> int:
    """Queue a command for the engine: the one write a UI or CLI makes."""
    _choice("command", kind, COMMAND_KINDS, ConfigError)
    path = os.fspath(path)
    conn = _open_writable(path, create=False)
    try:
        with _immediate(conn, path) as c:
            if c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise ResultsFileError(f"no run {run_id} in {path}")
            sql = "INSERT INTO commands (run_id, kind, args_json, created_at) VALUES (?, ?, ?, ?)"
            cur = c.execute(sql, (run_id, kind, _json(args or {}), now_iso()))
            return int(cur.lastrowid or 0)
    finally:
        conn.close()


def engine_state(run: Mapping[str, Any] | sqlite3.Row, now: datetime | str | None = None) -> str:
    """The run's status, except 'crashed' for running/paused with a heartbeat older than
    STALE_AFTER, or whose engine process on this host is gone (known at once, without waiting)."""
    status = str(run["status"])
    if status in ("running", "paused"):
        if _age_s(run["heartbeat_at"], now) > STALE_AFTER:
            return "crashed"
        pid, host = run["pid"], run["host"]
        if pid is None or (host == socket.gethostname() and not _pid_alive(pid)):
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
        return _rows(conn, "SELECT * FROM studies WHERE run_id = ? ORDER BY id", run_id)
    return _rows(conn, "SELECT * FROM studies WHERE run_id = ? AND kind = ? ORDER BY id", run_id, kind)


def get_study(conn: sqlite3.Connection, study_id: int) -> dict[str, Any] | None:
    rows = _rows(conn, "SELECT * FROM studies WHERE id = ?", study_id)
    return rows[0] if rows else None


def study_archs(conn: sqlite3.Connection, study_id: int, variant: str | None = None) -> list[dict[str, Any]]:
    """A study's measurements in (variant, trial) order."""
    if variant is None:
        return _rows(conn, "SELECT * FROM study_archs WHERE study_id = ? ORDER BY variant, trial", study_id)
    sql = "SELECT * FROM study_archs WHERE study_id = ? AND variant = ? ORDER BY trial"
    return _rows(conn, sql, study_id, variant)


def study_stats(conn: sqlite3.Connection, study_id: int) -> list[dict[str, Any]]:
    return _rows(conn, "SELECT * FROM study_stats WHERE study_id = ? ORDER BY variant", study_id)


def transfer_final(conn: sqlite3.Connection, run_id: int, arch_id: str, dataset: str) -> dict[str, Any] | None:
    """The latest final of this (rebuilt) architecture on `dataset` (to resume or report it)."""
    sql = "SELECT * FROM finals WHERE run_id = ? AND arch_id = ? AND dataset = ? ORDER BY id DESC LIMIT 1"
    rows = _rows(conn, sql, run_id, arch_id, dataset)
    return rows[0] if rows else None


# ---------------------------------------------------------------------------- docs


def render_docs(text: str) -> str:
    """`text` with the DDL between the schema markers regenerated from a fresh database."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    _migrate(conn, ":memory:")
    ddl = schema_sql(conn)
    conn.close()
    head, sep, rest = text.partition(DOCS_START)
    _, sep2, tail = rest.partition(DOCS_END)
    if not (sep and sep2):
        raise ResultsFileError(f"the docs lack the {DOCS_START} ... {DOCS_END} markers")
    return f"{head}{DOCS_START}\n```sql\n{ddl}```\n{DOCS_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smash_engine.store")
    parser.add_argument("--write-docs", metavar="PATH", required=True, help="Markdown to update")
    doc = Path(parser.parse_args(argv).write_docs)
    doc.write_text(render_docs(doc.read_text()))
    print(f"wrote the schema into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
