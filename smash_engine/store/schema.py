"""The results file's schema: the migrations (append-only: never edit a shipped one, add one), the
status vocabularies the CHECK constraints use, and the DDL as text for the docs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

STALE_AFTER = 30.0  # seconds without a heartbeat after which an engine counts as dead
BUSY_TIMEOUT_S = 10.0  # how long any connection waits for a lock before giving up
SQLITE_HEADER = b"SQLite format 3\x00"
DOCS_START, DOCS_END = "<!-- schema:start -->", "<!-- schema:end -->"

RUN_STATUSES = ("created", "running", "paused", "stopped", "done", "crashed", "failed")
PHASES = ("smash", "rank", "refine", "verify", "final", "done")
VERIFY_STATUSES = ("queued", "running", "done")
FINAL_STATUSES = ("queued", "running", "done", "failed", "stopped")
COMMAND_KINDS = ("pause", "continue", "stop", "sample", "final", "score")
COMMAND_STATUSES = ("pending", "running", "done", "error")
EVENT_LEVELS = ("info", "warning", "error")

# ---------------------------------------------------------------------------- schema

# The leaderboard view's columns up to its final training; schema 3 recreates the view with one more
_LEADERBOARD_SELECT = """WITH latest AS (
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
    f.test_error AS final_test_error, f.best_val_error AS final_val_error"""

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
    "CREATE VIEW leaderboard AS\n" + _LEADERBOARD_SELECT + """
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


# Search quality beside its baselines: every correlation statistic gets its bootstrap interval, and a
# correlation study stores one row per predictor (SMASH and the free baselines) in study_stats.
# schema 3's leaderboard after its SELECT list: one more column, the verify phase's error
_LEADERBOARD_FROM_3 = """,
    v.val_error AS verify_error
FROM latest AS s
JOIN archs AS a ON a.id = s.arch_id
LEFT JOIN best_final AS f ON f.run_id = s.run_id AND f.arch_id = s.arch_id AND f.nth = 1
LEFT JOIN verifications AS v ON v.run_id = s.run_id AND v.arch_id = s.arch_id AND v.status = 'done'
WHERE s.nth = 1
ORDER BY s.run_id, rank"""

_M003 = (
    "ALTER TABLE study_stats ADD COLUMN kendall_lo REAL",  # bootstrap 95% interval over architectures
    "ALTER TABLE study_stats ADD COLUMN kendall_hi REAL",
    "ALTER TABLE study_stats ADD COLUMN spearman_lo REAL",
    "ALTER TABLE study_stats ADD COLUMN spearman_hi REAL",
    """CREATE VIEW ranking_quality AS
SELECT st.run_id, st.id AS study_id, st.kind, s.variant AS predictor, s.n,
    s.kendall_tau, s.kendall_lo, s.kendall_hi, s.spearman_rho, s.spearman_lo, s.spearman_hi,
    s.top_k, s.top_k_overlap, s.regret,
    s.kendall_tau - (SELECT max(b.kendall_tau) FROM study_stats AS b
                     WHERE b.study_id = s.study_id AND b.variant IN ('params', 'flops', 'synflow', 'naswot'))
        AS tau_over_best_baseline
FROM study_stats AS s JOIN studies AS st ON st.id = s.study_id
WHERE st.kind IN ('correlation', 'capacity')
ORDER BY st.id, s.kendall_tau DESC""",
    # The verify phase: SMASH's best few trained briefly, so final training gets the best of them and not
    # only the best SMASH score.
    """CREATE TABLE verifications (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_id TEXT NOT NULL REFERENCES archs(id),
    smash_rank INTEGER NOT NULL,            -- its leaderboard rank when the verify phase picked it
    status TEXT NOT NULL DEFAULT 'queued',  -- queued|running|done
    epochs INTEGER NOT NULL,                -- the short training: epochs over `images` training images
    images INTEGER NOT NULL,
    val_error REAL,                         -- 0..1 on the held-out split after it
    seconds REAL,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, arch_id)
)""",
    "DROP VIEW leaderboard",
    "CREATE VIEW leaderboard AS\n" + _LEADERBOARD_SELECT + _LEADERBOARD_FROM_3,
)


def m003_ranking_quality(conn: sqlite3.Connection) -> None:
    for statement in _M003:
        conn.execute(statement)


_M004 = (
    # The run's identity: every checkpoint and weights file in its folder records it, so a file of another
    # run (a folder left by a deleted results file, a renamed results file) is recognised and never loaded.
    # Runs from before get one now; their older files carry none and are checked by their config instead.
    "ALTER TABLE runs ADD COLUMN uid TEXT",
    "UPDATE runs SET uid = lower(hex(randomblob(16))) WHERE uid IS NULL",
)


def m004_run_identity(conn: sqlite3.Connection) -> None:
    for statement in _M004:
        conn.execute(statement)


# schema 5's leaderboard up to its SELECT list's end: its final is the finished own-dataset one with the lowest
# validation error (the pick's rule); schema 6 builds on it
_LEADERBOARD_SELECT_5 = _LEADERBOARD_SELECT.replace(
    "ORDER BY status = 'done' DESC, test_error IS NULL, test_error, id DESC",
    "ORDER BY status = 'done' DESC, best_val_error IS NULL, best_val_error, id").replace(
    "    FROM finals\n)", "    FROM finals WHERE dataset IS NULL\n)")

# What the search found, defined once (README "What a search gives you", docs/api.md): the run's *pick* is its
# finished final training on its own dataset with the lowest validation error; a tie goes to the better SMASH
# rank, then to the earlier final. The header, `ls`, `show`, `export`, `load_model` and the end-of-search summary
# all read this view. The split sizes say what an error of 1.01% means (3 of 297 test images, or 30 of 2,970).
_M005 = (
    "ALTER TABLE finals ADD COLUMN val_images INTEGER",  # held-out images behind best_val_error
    "ALTER TABLE finals ADD COLUMN test_images INTEGER",  # test images behind test_error
    # the leaderboard's final of an architecture was its lowest *test* error: choosing by the test split.
    # Now its finished final with the lowest validation error, as the pick.
    "DROP VIEW leaderboard",
    "CREATE VIEW leaderboard AS\n" + _LEADERBOARD_SELECT_5 + _LEADERBOARD_FROM_3,
    """CREATE VIEW pick AS
SELECT run_id, arch_id, final_id, val_error, test_error, val_images, test_images, params, flops, epochs,
    weights_path, smash_rank, smash_error
FROM (
    SELECT f.run_id, f.arch_id, f.id AS final_id, f.best_val_error AS val_error, f.test_error, f.val_images,
        f.test_images, f.params, f.flops, f.epochs, f.weights_path, l.rank AS smash_rank, l.smash_error,
        ROW_NUMBER() OVER (PARTITION BY f.run_id
                           ORDER BY f.best_val_error, l.rank IS NULL, l.rank, f.id) AS nth
    FROM finals AS f
    LEFT JOIN leaderboard AS l ON l.run_id = f.run_id AND l.arch_id = f.arch_id
    WHERE f.status = 'done' AND f.dataset IS NULL AND f.best_val_error IS NOT NULL
)
WHERE nth = 1""",
)


def m005_pick(conn: sqlite3.Connection) -> None:
    for statement in _M005:
        conn.execute(statement)


# Verification by successive halving (halving.py): a candidate has one row per rung it was trained at, and why it
# is a candidate (SMASH's top, or a baseline's top added by verify_add). SQLite cannot change a primary key, so the
# table is rebuilt; the views that read it are dropped first and made again on top (rows of schema 3-5 are rung 0).
_VERIFICATIONS_6 = """CREATE TABLE verifications (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    arch_id TEXT NOT NULL REFERENCES archs(id),
    rung INTEGER NOT NULL DEFAULT 0,        -- 0 trains every candidate; rung r + 1 the best 1/eta of rung r
    smash_rank INTEGER NOT NULL,            -- its leaderboard rank when the verify phase began
    via TEXT NOT NULL DEFAULT 'smash',      -- why it is a candidate: smash (SMASH's top)|flops|naswot
    status TEXT NOT NULL DEFAULT 'queued',  -- queued|running|done
    epochs INTEGER NOT NULL,                -- the rung's training: epochs over `images` seeded training images
    images INTEGER NOT NULL,
    seeds INTEGER NOT NULL DEFAULT 1,       -- trainings from different seeds; val_error and val_loss are their means
    val_error REAL,                         -- 0..1 on the held-out split after it
    val_loss REAL,                          -- held-out cross-entropy, nats: what the halving ranks by
    seconds REAL,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, arch_id, rung)
)"""

_LEADERBOARD_6 = _LEADERBOARD_SELECT_5.replace("    FROM finals WHERE dataset IS NULL\n)", """\
    FROM finals WHERE dataset IS NULL
), reached AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id, arch_id ORDER BY rung DESC) AS nth,
        max(rung) OVER (PARTITION BY run_id) AS top_rung
    FROM verifications
), verified AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id, arch_id ORDER BY rung DESC) AS nth
    FROM verifications WHERE status = 'done'
)""") + """,
    v.val_error AS verify_error, v.val_loss AS verify_loss, r.rung AS verify_rung, r.status AS verify_status,
    r.rung = r.top_rung AS verify_in, r.via AS verify_via
FROM latest AS s
JOIN archs AS a ON a.id = s.arch_id
LEFT JOIN best_final AS f ON f.run_id = s.run_id AND f.arch_id = s.arch_id AND f.nth = 1
LEFT JOIN verified AS v ON v.run_id = s.run_id AND v.arch_id = s.arch_id AND v.nth = 1
LEFT JOIN reached AS r ON r.run_id = s.run_id AND r.arch_id = s.arch_id AND r.nth = 1
WHERE s.nth = 1
ORDER BY s.run_id, rank"""

_M006 = (
    "DROP VIEW pick",
    "DROP VIEW leaderboard",
    "ALTER TABLE verifications RENAME TO verifications_5",
    _VERIFICATIONS_6,
    "INSERT INTO verifications (run_id, arch_id, rung, smash_rank, via, status, epochs, images, val_error, seconds, "
    "at) SELECT run_id, arch_id, 0, smash_rank, 'smash', status, epochs, images, val_error, seconds, at "
    "FROM verifications_5",
    "DROP TABLE verifications_5",
    # verify_error, verify_loss: held-out error and loss at the highest rung it finished; verify_rung and
    # verify_status: the highest rung it reached and how far that training is; verify_in: 1 while it is still in
    # (at the phase's highest rung so far)
    "CREATE VIEW leaderboard AS\n" + _LEADERBOARD_6,
    next(st for st in _M005 if st.startswith("CREATE VIEW pick")),
)


def m006_halving(conn: sqlite3.Connection) -> None:
    for statement in _M006:
        conn.execute(statement)


_M007 = (
    # A command is done when its effect is in the results file. `sample N` and `score` stay 'running' from the
    # moment the engine accepts them until every architecture they asked for is scored, across stops, kills and
    # full disks (`resume` finishes them): total is what was accepted (N, or 1), progress how many are scored,
    # each counted in the same transaction as its score. NULL for the other kinds.
    "ALTER TABLE commands ADD COLUMN progress INTEGER",
    "ALTER TABLE commands ADD COLUMN total INTEGER",
)


def m007_command_progress(conn: sqlite3.Connection) -> None:
    for statement in _M007:
        conn.execute(statement)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [m001_initial, m002_studies, m003_ranking_quality,
                                                          m004_run_identity, m005_pick, m006_halving,
                                                          m007_command_progress]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_sql(conn: sqlite3.Connection) -> str:
    """The DDL of every table, index and view, in creation order (as in `sqlite_master`)."""
    rows = conn.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    return "".join(f"{row[0]};\n\n" for row in rows).rstrip("\n") + "\n"
