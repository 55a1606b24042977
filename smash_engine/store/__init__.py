"""The results file: the one package that knows its SQL.

Owns the SQLite schema (`schema.py`: `MIGRATIONS`, an append-only list: never edit a shipped migration,
add one), opening files (`files.py`: version checks, WAL, write transactions, engine liveness), the
engine's `Writer` (`writer.py`: short `BEGIN IMMEDIATE` transactions, one engine per file held by pid,
host and heartbeat) and the read helpers the CLI and the Textual UI poll incrementally (`readers.py`:
`WHERE id > :last_seen`). Readers open the file read-only and never hold a transaction open. Times are
ISO-8601 UTC text ("2026-11-27T17:43:32.123Z"). Standard library only, plus `smash_engine.errors`.
`python -m smash_engine.store --write-docs docs/schema.md` regenerates the DDL section of the schema
docs from a freshly migrated database. Callers use the names below as `store.NAME`.
"""

from smash_engine.store.files import now_iso
from smash_engine.store.readers import (
    accepted_work,
    best_score,
    commands,
    connect_reader,
    count_scores,
    engine_state,
    events_since,
    final_steps,
    finals,
    get_arch,
    get_run,
    get_study,
    insert_command,
    leaderboard,
    loss_curve,
    next_queued_final,
    pick,
    provisional_scores,
    run_readonly_query,
    run_summary,
    scores_since,
    steps_since,
    studies,
    study_archs,
    study_stats,
    transfer_final,
    verifications,
)
from smash_engine.store.schema import (
    COMMAND_KINDS,
    COMMAND_STATUSES,
    DOCS_END,
    DOCS_START,
    EVENT_LEVELS,
    FINAL_STATUSES,
    MIGRATIONS,
    PHASES,
    RUN_STATUSES,
    SCHEMA_VERSION,
    STALE_AFTER,
    VERIFY_STATUSES,
    schema_sql,
)
from smash_engine.store.writer import STUDY_KINDS, STUDY_STATUSES, Writer, connect_writer

__all__ = [
    "COMMAND_KINDS", "COMMAND_STATUSES", "DOCS_END", "DOCS_START", "EVENT_LEVELS", "FINAL_STATUSES", "MIGRATIONS",
    "PHASES", "RUN_STATUSES", "SCHEMA_VERSION", "STALE_AFTER", "STUDY_KINDS", "STUDY_STATUSES", "VERIFY_STATUSES",
    "Writer",
    "accepted_work", "best_score", "commands", "connect_reader", "connect_writer", "count_scores", "engine_state",
    "events_since", "final_steps", "finals", "get_arch", "get_run", "get_study", "insert_command", "leaderboard",
    "loss_curve", "next_queued_final", "now_iso", "pick", "provisional_scores", "run_readonly_query", "run_summary",
    "schema_sql", "scores_since", "steps_since", "studies", "study_archs", "study_stats", "transfer_final",
    "verifications",
]
