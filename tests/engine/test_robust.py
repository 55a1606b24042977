"""Nothing lost: hard kills at random moments, readers hammering a live engine, a failing checkpoint write."""

import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from smash_engine import store
from smash_engine.engine import Engine
from smash_engine.errors import SmashError
from smash_engine.runs import create_run, save_atomic
from tests.conftest import tiny_config


def _engine(db):
    return subprocess.Popen([sys.executable, "-m", "smash_engine.engine", str(db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _counts(db):
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        return conn.execute("select (select count(*) from steps), (select count(*) from scores),"
                            " (select count(*) from final_steps)").fetchone()
    finally:
        conn.close()


def _kill_and_resume(tmp_path, kills, seed, **size):
    size = {"n_random": 4, "n_perturb": 1, "n_hillclimb": 1, "final_epochs": 2, **size}
    db = tmp_path / "kill.db"
    create_run(db, tiny_config(name="kill", **size))
    rnd, last = random.Random(seed), (0, 0, 0)
    for _ in range(kills):
        proc = _engine(db)
        time.sleep(rnd.uniform(4.0, 12.0))  # start-up is ~3 s: a kill lands in training, scoring or final
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts = _counts(db)
        assert all(a >= b for a, b in zip(counts, last, strict=True)), (counts, last)  # only ever grows
        last = counts
        run = store.get_run(store.connect_reader(db))
        if run["status"] == "done":
            break
        # "created": on a loaded machine the kill can land before the engine has even started
        assert store.engine_state(run) in ("crashed", "created")
        ckpt = db.with_suffix("") / "checkpoint.pt"
        if ckpt.exists():
            torch.load(ckpt, weights_only=True)  # never half-written
    assert Engine(db).run() == "done"
    conn = sqlite3.connect(db)
    by_stage = dict(conn.execute("select source, count(*) from scores group by source").fetchall())
    want = {"random": size["n_random"], "perturb": size["n_perturb"], "hillclimb": size["n_hillclimb"]}
    assert by_stage == want  # nothing duplicated by the resumes
    steps = conn.execute("select count(*), count(distinct step) from steps where phase = 'train'").fetchone()
    assert steps[0] == steps[1]
    assert conn.execute("select status, epoch from finals").fetchall() == [("done", size["final_epochs"])]


def test_sigkill_at_random_moments_then_resume(tmp_path):
    _kill_and_resume(tmp_path, kills=3, seed=1)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path):
    # a longer search, so that the kills spread over training, scoring, refinement and final training
    _kill_and_resume(tmp_path, kills=12, seed=2, epochs=6, n_random=30, n_perturb=8, n_hillclimb=8,
                     final_epochs=6)


def test_readers_never_break_the_writer(tmp_path):
    """A tiny search runs while sqlite3, sqlite-utils, `smash-tui query` and the store's readers poll it."""
    db = tmp_path / "soak.db"
    create_run(db, tiny_config(name="soak", epochs=2))
    engine = _engine(db)
    exe = [sys.executable, "-c", "from smash_tui.cli import main; main()"]
    sqlite_utils = [sys.executable, "-m", "sqlite_utils"]
    readers = [
        exe + ["query", str(db), "select count(*) from leaderboard"],
        sqlite_utils + ["query", str(db), "select * from loss_curve order by step desc limit 5"],
    ]
    if subprocess.run(["which", "sqlite3"], capture_output=True).returncode == 0:
        readers.append(["sqlite3", "-cmd", ".timeout 10000", str(db), "select count(*) from steps"])
    failures, polls, deadline = [], 0, time.time() + 60
    conn = store.connect_reader(db)
    while time.time() < deadline and engine.poll() is None:
        for cmd in readers:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                failures.append(r.stderr)
        store.leaderboard(conn, 1, limit=20)
        store.steps_since(conn, 1, 0)
        polls += 1
    engine.wait(timeout=600)
    assert engine.returncode == 0, engine.stderr.read()
    assert not failures, failures[:3]
    assert polls >= 3
    assert store.get_run(store.connect_reader(db))["status"] == "done"
    assert "locked" not in engine.stderr.read()


def test_a_failing_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1}, path)
    (tmp_path / "checkpoint.pt.tmp").mkdir()  # the temporary file cannot be written, as on a full disk
    with pytest.raises(SmashError, match="could not write .*checkpoint.pt .*the previous one is intact"):
        save_atomic({"step": 2, "big": torch.zeros(10)}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
