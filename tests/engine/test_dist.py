"""Two processes on the CPU with gloo, as under torchrun: identical parameters after DDP steps, sharded
scoring equal to single-process scoring, a whole search, and a stop + resume."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import torch
import torch.multiprocessing as mp

from smash_engine import dist, store
from smash_engine.runs import create_run, load_splits
from smash_engine.seeds import RANK
from smash_engine.train import Smash, rank_arch, smash_arch, smash_score, smash_step
from tests.conftest import tiny_config

CFG = dict(epochs=1, n_random=5, n_perturb=2, n_hillclimb=1, final_epochs=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_steps(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    world = dist.world_from_env()
    dist.init(world)
    cfg = tiny_config()
    s = Smash.create(cfg, torch.device("cpu"), world)
    gen = torch.Generator().manual_seed(rank)  # different data on each rank
    for step in range(3):
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        # the last step also trains two more architectures in the same DDP forward (the sandwich rule's path)
        also = [smash_arch(cfg, 100 + k, 10) for k in range(2)] if step == 2 else []
        smash_step(s, smash_arch(cfg, step, 10), x, y, 1e-3, also=also)
    torch.save([p.detach() for p in s.params()], f"{out}/rank{rank}.pt")
    dist.shutdown()


def test_ddp_steps_leave_identical_parameters_on_both_ranks(tmp_path):
    mp.spawn(_ddp_steps, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    fresh = [p.detach() for p in Smash.create(tiny_config(), torch.device("cpu")).params()]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, fresh, strict=True))  # and they did train


def _torchrun(db, *extra):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "smash_engine.engine", str(db), "--progress", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_process_search_and_sharded_scoring_equals_single_process(tmp_path):
    db = tmp_path / "ddp.db"
    create_run(db, tiny_config(name="ddp", **CFG))
    proc = _torchrun(db)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    conn = sqlite3.connect(db)
    assert conn.execute("select status, phase, device from runs").fetchone() == ("done", "done", "cpu x2")
    assert dict(conn.execute("select source, count(*) from scores group by source").fetchall()) == \
        {"random": 5, "perturb": 2, "hillclimb": 1}
    assert conn.execute("select status from finals").fetchall() == [("done",)]
    # one process, the same weights, the same architectures: the same scores
    cfg = tiny_config(**CFG)
    s = Smash.create(cfg, torch.device("cpu"))
    s.load_state_dict(torch.load(db.with_suffix("") / "checkpoint.pt", weights_only=True))
    _, val, _ = load_splits(cfg, torch.device("cpu"))
    stored = conn.execute("select arch_id, smash_error from scores where source = 'random' order by id").fetchall()
    for i, (arch_id, err) in enumerate(stored):
        arch = rank_arch(cfg, RANK, i)
        assert arch.id == arch_id
        assert smash_score(s, arch, val, cfg.train.score_batch)[0] == err


def test_two_process_stop_and_resume(tmp_path):
    db = tmp_path / "ddpstop.db"
    create_run(db, tiny_config(name="ddpstop", **{**CFG, "epochs": 2}))
    proc = _torchrun(db)
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.5)
        if db.exists() and sqlite3.connect(db).execute("select count(*) from steps").fetchone()[0] >= 2:
            break
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to every rank
    out = proc.communicate(timeout=300)[0]
    run = store.get_run(store.connect_reader(db))
    assert run["status"] == "stopped", out
    assert (db.with_suffix("") / "checkpoint.pt").exists()
    proc = _torchrun(db)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    assert store.get_run(store.connect_reader(db))["status"] == "done"


# every phase the default search runs, cut small: SMASH, rank, refine, a 2-rung verify phase, final training; a
# parameter budget (budget events), and a sample and a final sent mid-run
PHASES_ARGS = ["--preset", "quick", "--headless", "--device", "cpu", "--epochs", "3", "--archs", "12",
               "--verify-top", "4", "--verify-eta", "2", "--verify-budget", "3", "--final-epochs", "2",
               "--max-params", "150000"]


def _search_with_commands(db, nproc):
    """`smash-tui run` through its entry point, with `sample 3` sent during SMASH training and `final` of the
    first scored architecture once one is scored."""
    cli = [sys.executable, "-c", "from smash_tui.cli import main; main()"]
    proc = subprocess.Popen([*cli, "run", *PHASES_ARGS, "--nproc-per-node", str(nproc), "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def first(sql):
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    row = sqlite3.connect(db).execute(sql).fetchone()
                except sqlite3.OperationalError:  # not created yet
                    row = None
                if row:
                    return row[0]
            time.sleep(0.1)
        raise AssertionError(f"never saw {sql}: {proc.communicate()[0]}")

    first("select step from steps limit 1")
    store.insert_command(db, 1, "sample", {"n": 3})
    arch = first("select arch_id from scores where source = 'random' order by id limit 1")
    store.insert_command(db, 1, "final", {"arch": arch, "epochs": 1})
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out
    conn = sqlite3.connect(db)
    got = dict(
        status=conn.execute("select status, phase from runs").fetchone(),
        phases=[r[0] for r in conn.execute("select message from events where message like 'phase %' order by id")],
        board=conn.execute("select count(*) from leaderboard").fetchone()[0],
        rungs=conn.execute("select count(distinct rung) from verifications where status = 'done'").fetchone()[0],
        finals=conn.execute("select status from finals order by id").fetchall(),
        commands=conn.execute("select kind, status from commands order by id").fetchall(),
        budget=conn.execute("select count(*) from events where message like 'budget%'").fetchone()[0] > 0,
        pick=conn.execute("select arch_id from pick").fetchone() is not None,
        sampled=conn.execute("select count(*) from scores where source = 'sample'").fetchone()[0],
    )
    conn.close()
    return got, out


def test_the_default_phases_under_torchrun_match_one_process(tmp_path):
    two, out = _search_with_commands(tmp_path / "two.db", 2)
    assert "cpu x2" in sqlite3.connect(tmp_path / "two.db").execute("select device from runs").fetchone()[0]
    assert two["phases"] == ["phase rank", "phase refine", "phase verify", "phase final"], out
    assert two["rungs"] == 2 and two["budget"] and two["pick"] and two["sampled"] == 3
    assert two["finals"] == [("done",), ("done",)]  # the one sent mid-run, and the verify phase's pick
    assert two["commands"] == [("sample", "done"), ("final", "done")]
    one, _ = _search_with_commands(tmp_path / "one.db", 1)
    assert one == two
