"""The engine's `Writer`: the only code that writes a results file (short BEGIN IMMEDIATE transactions)."""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from smash_engine.errors import EngineBusy, ResultsFileError
from smash_engine.store.files import check_choice, dumps_json, engine_alive, immediate, migrate, now_iso, open_writable
from smash_engine.store.schema import (
    COMMAND_STATUSES,
    EVENT_LEVELS,
    FINAL_STATUSES,
    PHASES,
    RUN_STATUSES,
    STALE_AFTER,
    VERIFY_STATUSES,
)

_RUN_COLUMNS = frozenset(
    "name status phase epoch step total_steps progress config_json dataset preset device seed "
    "pid host heartbeat_at images_per_s message updated_at".split()
)
_FINAL_COLUMNS = frozenset(
    ("status epochs epoch best_val_error test_error params flops weights_path started_at finished_at message"
     " val_images test_images").split()
)
STUDY_KINDS = ("correlation", "capacity", "corrupt", "archgrad")
STUDY_STATUSES = ("running", "done", "failed")
_STUDY_COLUMNS = frozenset("status options_json message updated_at".split())
_STUDY_ARCH_COLUMNS = tuple(
    "study_id variant trial arch_id smash_error smash_loss val_error test_error epochs at".split()
)
_STUDY_STAT_COLUMNS = tuple(
    "study_id variant n kendall_tau kendall_p spearman_rho spearman_p top_k top_k_overlap regret win_rate "
    "mean_gap mean_error best_error extra_json at kendall_lo kendall_hi spearman_lo spearman_hi".split()
)
_STEP_COLUMNS = ("run_id", "step", "epoch", "phase", "loss", "error", "lr", "images_per_s", "at")
_FINAL_STEP_COLUMNS = tuple("final_id epoch train_loss train_error val_error test_error lr images_per_s at".split())


def connect_writer(path: str | os.PathLike[str], create: bool = True) -> Writer:
    """Open the results file for the one engine that writes it, creating (unless `create` is False: an engine
    resuming a run) and migrating it."""
    path = os.fspath(path)
    conn = open_writable(path, create=create)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, path)
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
        return immediate(self.conn, self.path)

    def _insert(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...]) -> int:
        with self.transaction() as c:
            return int(c.execute(sql, params).lastrowid or 0)

    def _update(self, table: str, key: int, fields: dict[str, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise ValueError(f"{table} has no writable column(s) {', '.join(unknown)}")
        fields = {k: dumps_json(v) if k.endswith("_json") else v for k, v in fields.items()}
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
            " seed, total_steps, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (name, now, now, dumps_json(config), dataset, preset, device, seed, total_steps, uuid.uuid4().hex),
        )

    def update_run(self, run_id: int, **fields: Any) -> None:
        if "status" in fields:
            check_choice("run status", fields["status"], RUN_STATUSES, ValueError)
        if "phase" in fields:
            check_choice("run phase", fields["phase"], PHASES, ValueError)
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
                if engine_alive(run["pid"], run["host"], run["heartbeat_at"]):
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
        spec, now = dumps_json(spec_json), now_iso()
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
        check_choice("score status", status, ("ok", "failed"), ValueError)
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
        check_choice("final status", status, FINAL_STATUSES, ValueError)
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
            check_choice("final status", status, FINAL_STATUSES, ValueError)
        if status == "running":
            fields.setdefault("started_at", now_iso())
        elif status in ("done", "failed", "stopped"):
            fields.setdefault("finished_at", now_iso())
        self._update("finals", final_id, fields, _FINAL_COLUMNS)

    def queue_verifications(self, run_id: int, rows: list[tuple[str, int, str]], rung: int, epochs: int,
                            images: int, seeds: int = 1) -> None:
        """A rung's candidates, (arch id, leaderboard rank, why) each, queued in one transaction."""
        now = now_iso()
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO verifications (run_id, arch_id, rung, smash_rank, via, epochs, images, seeds, "
                "at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, a, rung, r, via, epochs, images, seeds, now) for a, r, via in rows])

    def set_verification(self, run_id: int, arch_id: str, rung: int, status: str, val_error: float | None = None,
                         val_loss: float | None = None, seconds: float | None = None) -> None:
        check_choice("verification status", status, VERIFY_STATUSES, ValueError)
        with self.transaction() as c:
            c.execute("UPDATE verifications SET status = ?, val_error = ?, val_loss = ?, seconds = ?, at = ? "
                      "WHERE run_id = ? AND arch_id = ? AND rung = ?",
                      (status, val_error, val_loss, seconds, now_iso(), run_id, arch_id, rung))

    def add_final_step(self, final_id: int, **row: Any) -> None:
        self._replace("final_steps", _FINAL_STEP_COLUMNS, [{**row, "final_id": final_id}])

    def add_event(self, run_id: int, level: str, message: str) -> int:
        check_choice("event level", level, EVENT_LEVELS, ValueError)
        return self._insert(
            "INSERT INTO events (run_id, at, level, message) VALUES (?, ?, ?, ?)",
            (run_id, now_iso(), level, message),
        )

    def pending_commands(self, run_id: int) -> list[sqlite3.Row]:
        return self.conn.execute(
            "SELECT * FROM commands WHERE run_id = ? AND status = 'pending' ORDER BY id", (run_id,)
        ).fetchall()

    def mark_command(self, command_id: int, status: str, message: str | None = None, progress: int | None = None,
                     total: int | None = None) -> None:
        """The engine's answer; `progress` of `total` for the commands whose work outlives the poll (sample,
        score), which keep the values they have when not given."""
        check_choice("command status", status, COMMAND_STATUSES[1:], ValueError)
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE commands SET status = ?, message = ?, handled_at = ?, progress = coalesce(?, progress), "
                "total = coalesce(?, total) WHERE id = ?",
                (status, message, now_iso(), progress, total, command_id),
            )
        if cur.rowcount == 0:
            raise ResultsFileError(f"no command {command_id} in {self.path}")

    def fail_stale(self, run_id: int) -> int:
        """Fail the finals and commands a dead engine left 'running' (but accepted sample and score work, which
        `resume` finishes); returns how many."""
        now, why = now_iso(), "the engine stopped while this was running (crash or kill)"
        with self.transaction() as c:
            n = (
                c.execute(
                    "UPDATE finals SET status = 'failed', finished_at = ?, message = ? "
                    "WHERE run_id = ? AND status = 'running'",
                    (now, why, run_id),
                ).rowcount
                # accepted sample/score work (a total) is the engine's to finish on resume, not a failure
                + c.execute(
                    "UPDATE commands SET status = 'error', handled_at = ?, message = ? "
                    "WHERE run_id = ? AND status = 'running' AND NOT (kind IN ('sample', 'score') AND total IS NOT "
                    "NULL)",
                    (now, why, run_id),
                ).rowcount
            )
            if n:
                self.add_event(run_id, "warning", f"marked {n} row(s) left running as failed")
        return n

    # -- studies and transfer finals (smash_engine.studies) --------------------------------------
    def create_study(self, run_id: int, kind: str, options: dict[str, Any]) -> int:
        check_choice("study kind", kind, STUDY_KINDS, ValueError)
        now = now_iso()
        return self._insert(
            "INSERT INTO studies (run_id, kind, options_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, kind, dumps_json(options), now, now),
        )

    def update_study(self, study_id: int, **fields: Any) -> None:
        if fields.get("status") is not None:
            check_choice("study status", fields["status"], STUDY_STATUSES, ValueError)
        self._update("studies", study_id, {**fields, "updated_at": now_iso()}, _STUDY_COLUMNS)

    def add_study_arch(self, study_id: int, **row: Any) -> None:
        """One measurement (INSERT OR REPLACE on study, variant, trial), committed at once."""
        self._replace("study_archs", _STUDY_ARCH_COLUMNS, [{**row, "study_id": study_id}])

    def set_study_stats(self, study_id: int, rows: list[dict[str, Any]]) -> None:
        """Replace the statistics rows of a study (one per variant) in one transaction."""
        rows = [{**r, "study_id": study_id, "extra_json": dumps_json(r.get("extra_json") or {})} for r in rows]
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
        try:
            for run_id in list(self._held):
                self.release_engine(run_id)
        except sqlite3.OperationalError:
            pass  # a full disk or a lock: the run stays marked with our pid, which reads as dead once we exit
        finally:
            self.conn.close()
