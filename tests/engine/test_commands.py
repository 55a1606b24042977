"""A command is done when its effect is in the results file: `sample` and `score` survive a stop in the same
transaction, a SIGKILL right after they are accepted, and (test_run_files.py) a full disk; `resume` scores exactly
the rest, the same seeded architectures, none twice. And each command has one answer in each state."""

import json
import signal
import sqlite3
import subprocess
import sys
import time

from smash_engine import store
from smash_engine.engine import Engine
from smash_engine.runs import create_run
from smash_engine.seeds import SAMPLE
from smash_engine.train import rank_arch
from tests.conftest import tiny_config
from tests.engine.test_engine import _q

SIZE = dict(n_random=4, n_perturb=1, n_hillclimb=1, final_epochs=1)


def _insert_together(db, *commands):
    """Commands inserted in one transaction: the engine reads them in one poll."""
    conn = sqlite3.connect(db)
    with conn:
        for kind, args in commands:
            conn.execute("INSERT INTO commands (run_id, kind, args_json, created_at) VALUES (1, ?, ?, 'x')",
                         (kind, json.dumps(args)))
    conn.close()


def sampled_exactly(db, cfg, n):
    """Every requested architecture scored exactly once, in the seeded order the uninterrupted run draws."""
    got = [r[0] for r in _q(db, "select arch_id from scores where source = 'sample' order by id")]
    assert got == [rank_arch(cfg, SAMPLE, i).id for i in range(n)]


def test_sample_and_stop_in_one_transaction_then_resume(tmp_path):
    db = tmp_path / "s.db"
    cfg = tiny_config(name="s", **SIZE)
    create_run(db, cfg)
    _insert_together(db, ("stop", {}), ("sample", {"n": 5}), ("stop", {}), ("pause", {}))
    assert Engine(db).run() == "stopped"
    rows = _q(db, "select kind, status, message, progress, total from commands order by id")
    assert rows[0][:3] == ("stop", "done", "stopping: checkpoint, then exit")
    assert rows[1] == ("sample", "running", "scored 0 of 5 random architectures; the engine is stopping: "
                       "`smash-tui resume` scores them", 0, 5)
    assert rows[2][:3] == ("stop", "done", "already stopping")
    assert rows[3][:2] == ("pause", "error") and "stopping" in rows[3][2]
    assert Engine(db).run() == "done"
    sampled_exactly(db, cfg, 5)
    assert _q(db, "select status, message, progress, total from commands where kind = 'sample'") == \
        [("done", "scored 5 random architectures", 5, 5)]


def test_sigkill_right_after_sample_is_accepted_then_resume(tmp_path):
    db = tmp_path / "k.db"
    cfg = tiny_config(name="k", epochs=4, **SIZE)
    create_run(db, cfg)
    proc = subprocess.Popen([sys.executable, "-m", "smash_engine.engine", str(db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _q(db, "select 1 from steps limit 1"):
        time.sleep(0.05)
    store.insert_command(db, 1, "sample", {"n": 30})
    while time.monotonic() < deadline and not _q(db, "select 1 from commands where status = 'running'"):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # accepted: what it owes is in the file, and nothing else marks it done
    proc.wait()
    (status, progress, total), = _q(db, "select status, progress, total from commands")
    assert status == "running" and total == 30 and progress < 30
    assert Engine(db).run() == "done"
    sampled_exactly(db, cfg, 30)
    assert _q(db, "select status, progress from commands") == [("done", 30)]
    assert _q(db, "select count(*) from events where message like 'resuming 1 accepted command%'") == [(1,)]


def test_score_is_done_only_once_scored_and_bad_arguments_are_errors(run_db):
    """On a finished run (as `resume` answers what was queued after it ended): a `score` ends with its score,
    arguments a person got wrong end in `error` with the reason, and nothing is scored for them."""
    spec = _q(run_db, "select spec_json from archs limit 1")[0][0]
    before = _q(run_db, "select count(*) from scores")[0][0]
    for kind, args in [("score", {"spec": spec}), ("sample", {"n": "many"}), ("sample", {"n": 1e300}),
                       ("sample", {"n": 0}), ("final", {"arch": "nope"}), ("score", {"spec": "[1, 2"}),
                       ("final", {"arch": _q(run_db, "select id from archs limit 1")[0][0], "epochs": -3})]:
        store.insert_command(run_db, 1, kind, args)
    assert Engine(run_db).run() == "done"
    rows = _q(run_db, "select kind, status, message, progress, total from commands order by id")
    assert rows[0][:2] == ("score", "done") and rows[0][2].startswith("scored architecture ") and \
        rows[0][3:] == (1, 1)
    assert [r[1] for r in rows[1:]] == ["error"] * 6
    assert all(r[2] and "\n" not in r[2] for r in rows)
    assert _q(run_db, "select count(*) from scores")[0][0] == before + 1
