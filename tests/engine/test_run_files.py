"""A run's files belong to it: stale folders, foreign checkpoints, renamed or copied runs, a full disk."""

import shutil
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

from smash_engine import store
from smash_engine.engine import Engine
from smash_engine.errors import ResultsFileError
from smash_engine.runs import create_run, load_owned, weights_file
from tests.conftest import tiny_config


def _q(db, sql, *args):
    conn = sqlite3.connect(db)
    try:
        with conn:
            return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_every_run_gets_an_identity_that_its_files_record(run_db):
    uid = _q(run_db, "select uid from runs")[0][0]
    assert len(uid) == 32
    folder = run_db.with_suffix("")
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["run_uid"] == uid
    final = torch.load(folder / "final-1.pt", weights_only=True)
    assert final["run_uid"] == uid and final["arch_id"] == _q(run_db, "select arch_id from finals")[0][0]
    from safetensors import safe_open

    with safe_open(str(folder / "final-1.safetensors"), "pt") as f:
        assert f.metadata()["run_uid"] == uid


def test_a_new_run_over_a_stale_folder_is_refused_and_writes_nothing(run_db):
    """The issue's report: results file deleted, same path, another seed: the old checkpoint was adopted."""
    run_db.unlink()
    before = sorted(p.name for p in run_db.with_suffix("").iterdir())
    with pytest.raises(ResultsFileError, match=r"already holds another run's files .*move that folder aside"):
        create_run(run_db, tiny_config(name="tiny", seed=5))
    assert not run_db.exists()
    assert sorted(p.name for p in run_db.with_suffix("").iterdir()) == before


def test_the_cli_refuses_a_stale_folder_in_one_line(run_db):
    run_db.unlink()
    from tests.cli.test_cli import EXE

    r = subprocess.run([EXE, "run", "--headless", "--db", str(run_db), "--seed", "5", "--epochs", "1"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smash-tui: error: "), r.stderr
    assert "already holds another run's files" in lines[0]
    assert not run_db.exists()


def test_an_automatic_name_skips_a_left_over_folder(tmp_path, monkeypatch):
    from smash_tui import cli

    monkeypatch.setattr(cli, "RUNS_DIR", tmp_path)
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "checkpoint.pt").write_bytes(b"old")
    assert cli._unique_db("quick") == tmp_path / "quick-2.db"


def test_same_name_in_two_folders_are_two_runs(tmp_path):
    a, b = tmp_path / "a" / "q.db", tmp_path / "b" / "q.db"
    create_run(a, tiny_config(name="q"))
    create_run(b, tiny_config(name="q"))
    assert _q(a, "select uid from runs") != _q(b, "select uid from runs")


def test_a_checkpoint_of_another_run_is_never_loaded(run_db):
    ckpt = run_db.with_suffix("") / "checkpoint.pt"
    sd = torch.load(ckpt, weights_only=True)
    torch.save({**sd, "run_uid": "f" * 32}, ckpt)
    data = ckpt.read_bytes()
    with pytest.raises(ResultsFileError, match=r"checkpoint.pt belongs to another run .*move it out"):
        Engine(run_db).run()
    assert ckpt.read_bytes() == data


def test_a_final_checkpoint_of_another_architecture_is_refused(run_db):
    ckpt = run_db.with_suffix("") / "final-1.pt"
    sd = torch.load(ckpt, weights_only=True)
    torch.save({**sd, "arch_id": "0123456789abcdef"}, ckpt)
    _q(run_db, "update finals set status = 'queued'")
    with pytest.raises(ResultsFileError, match="final-1.pt holds architecture 0123456789abcdef"):
        Engine(run_db).run()


def test_files_from_before_identities_load_when_their_config_matches(tmp_path):
    cfg = tiny_config().to_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "config": cfg}, path)
    assert load_owned(path, "a" * 32, cfg)["step"] == 3
    other = {**cfg, "seed": 7}
    with pytest.raises(ResultsFileError, match="made with another configuration"):
        load_owned(path, "a" * 32, other)


def test_a_final_already_at_its_last_epoch_finishes_without_training(run_db):
    before = _q(run_db, "select count(*) from final_steps")[0][0]
    test_error = _q(run_db, "select test_error from finals")[0][0]
    _q(run_db, "update finals set status = 'queued'")
    assert Engine(run_db).run() == "done"
    assert _q(run_db, "select status, test_error from finals") == [("done", test_error)]
    assert _q(run_db, "select count(*) from final_steps")[0][0] == before


def test_a_renamed_results_file_names_its_folder(run_db):
    moved = run_db.with_name("renamed.db")
    run_db.rename(moved)
    # mid-search: scoring needs the trained HyperNet, so the engine refuses and says where it is
    _q(moved, "update runs set phase = 'refine'")
    with pytest.raises(ResultsFileError, match=r"files are in .*tiny/ .*rename tiny/ to renamed/"):
        Engine(moved).run()
    assert not moved.with_suffix("").joinpath("checkpoint.pt").exists()  # no untrained HyperNet saved
    # a finished search: final training needs no HyperNet and goes on; scoring commands say why they cannot
    _q(moved, "update runs set phase = 'done'")
    store.insert_command(moved, 1, "sample", {"n": 1})
    _q(moved, "update finals set status = 'queued'")
    assert Engine(moved).run() == "done"
    (status, message), = _q(moved, "select status, message from commands")
    assert status == "error" and "rename tiny/ to renamed/" in message
    assert not moved.with_suffix("").joinpath("checkpoint.pt").exists()
    shutil.rmtree(moved.with_suffix(""))  # what the finished engine wrote there (its final's files)
    run_db.with_suffix("").rename(moved.with_suffix(""))  # the fix the message gives
    _q(moved, "update runs set phase = 'refine'")
    assert Engine(moved).run() == "done"


def test_a_run_folder_copied_elsewhere_resumes_and_finds_its_weights(run_db, tmp_path):
    # run_db is itself a copy of the finished run in another folder; its finals still record the original path
    stored = _q(run_db, "select weights_path from finals")[0][0]
    assert weights_file(run_db, "/gone/elsewhere/" + stored.rsplit("/", 1)[-1]) == \
        run_db.with_suffix("") / "final-1.safetensors"
    _q(run_db, "update finals set status = 'queued'")
    assert Engine(run_db).run() == "done"


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs mounted for the test (needs root and a kernel that lets us; skips otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small filesystem here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt, name="ballast"):
    try:  # the engine may have filled the disk already (a second checkpoint being written): full is the point
        with open(mnt / name, "wb") as f:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
    except OSError:
        pass


def test_a_full_disk_stops_the_engine_in_one_line_and_resume_finishes(small_disk):
    db = small_disk / "full.db"
    create_run(db, tiny_config(name="full", epochs=4, n_random=4, n_perturb=1, n_hillclimb=1))
    proc = subprocess.Popen([sys.executable, "-m", "smash_engine.engine", str(db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    ckpt = db.with_suffix("") / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "the engine wrote no first checkpoint"
    _fill(small_disk)  # from now on every new byte fails, whoever writes it
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "space" in lines[0] or "full" in lines[0], err
    assert "resume" in lines[0]
    conn = sqlite3.connect(db)
    assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
    conn.close()
    step = torch.load(ckpt, weights_only=True)["step"]
    assert step > 0
    (small_disk / "ballast").unlink(missing_ok=True)
    assert Engine(db).run() == "done"
    assert _q(db, "select count(*), count(distinct step) from steps where phase = 'train'")[0] == \
        _q(db, "select count(*), count(*) from steps where phase = 'train'")[0]
    by_stage = dict(_q(db, "select source, count(*) from scores group by source"))
    assert by_stage == {"random": 4, "perturb": 1, "hillclimb": 1}
    assert _q(db, "select status from finals") == [("done",)]
    assert store.get_run(store.connect_reader(db))["status"] == "done"


def test_a_full_disk_during_sampling_loses_no_accepted_architecture(small_disk):
    """`sample 40` is accepted, the disk fills while they are scored: the engine stops in one line, the command
    stays running with what was scored, and `resume` scores exactly the rest, in the seeded order."""
    from smash_engine.seeds import SAMPLE
    from smash_engine.train import rank_arch

    db = small_disk / "fullsample.db"
    cfg = tiny_config(name="fullsample", epochs=6, n_random=4, n_perturb=1, n_hillclimb=1)
    create_run(db, cfg)
    proc = subprocess.Popen([sys.executable, "-m", "smash_engine.engine", str(db)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (db.with_suffix("") / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    store.insert_command(db, 1, "sample", {"n": 40})
    while time.monotonic() < deadline and not _q(db, "select 1 from commands where progress > 0"):
        time.sleep(0.01)
    _fill(small_disk)  # mid-sampling: the next score, or the checkpoint after it, finds the disk full
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode != 0 and "Traceback" not in err, err
    (status, progress), = _q(db, "select status, progress from commands")
    assert status == "running" and progress < 40
    assert _q(db, "select count(*) from scores where source = 'sample'") == [(progress,)]  # counted with each
    (small_disk / "ballast").unlink(missing_ok=True)
    assert Engine(db).run() == "done"
    got = [r[0] for r in _q(db, "select arch_id from scores where source = 'sample' order by id")]
    assert got == [rank_arch(cfg, SAMPLE, i).id for i in range(40)]
    assert _q(db, "select status, progress from commands") == [("done", 40)]
