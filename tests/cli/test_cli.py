"""The `smash-tui` entry point as a user runs it: real processes, real results files."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smash_engine import store

EXE = shutil.which("smash-tui", path=str(Path(sys.executable).parent)) or shutil.which("smash-tui")


def cli(*args, cwd=None, check=None):
    proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "COLUMNS": "100"})
    if check is not None:
        assert proc.returncode == check, (proc.stdout, proc.stderr)
    return proc


def one_line_error(proc, *fragments):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smash-tui: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_headless_search_through_the_entry_point(tmp_path):
    proc = cli("run", "--preset", "quick", "--epochs", "1", "--archs", "4", "--final-epochs", "1", "--headless",
               "--name", "e2e", cwd=tmp_path, check=0)
    db = tmp_path / "runs" / "e2e.db"
    assert "done: runs/e2e.db" in proc.stderr
    assert "smash 24/24" in proc.stderr and "final 1/1" in proc.stderr  # plain lines off a terminal
    picked = sqlite3.connect(db).execute("select arch_id, smash_rank, val_images, test_images from pick").fetchone()
    # the search ends by saying what it found: the pick, both errors out of their split sizes, where it is
    found = proc.stderr[proc.stderr.index("done: runs/e2e.db"):]
    assert f"pick {picked[0]}: validation " in found and f"/{picked[2]:,}), test " in found
    assert f"/{picked[3]:,}); SMASH rank {picked[1]}/" in found
    assert f"export:  smash-tui export runs/e2e.db --arch best -o {picked[0]}.json --weights" in found
    assert "weights: " in found and "final-1.safetensors" in found
    conn = sqlite3.connect(db)
    assert conn.execute("select status, phase from runs").fetchone() == ("done", "done")
    assert conn.execute("select count(*) from scores").fetchone()[0] == 4 + 10 + 10
    assert conn.execute("select status from finals").fetchone() == ("done",)
    # a second run with the same preset gets its own file
    cli("run", "--preset", "quick", "--epochs", "1", "--archs", "1", "--final-top", "0", "--headless",
        cwd=tmp_path, check=0)
    assert (tmp_path / "runs" / "quick.db").exists()
    listing = cli("ls", cwd=tmp_path, check=0).stdout
    assert "e2e" in listing and "quick" in listing and "done" in listing


def test_show_query_export(run_copy, tmp_path):
    top = sqlite3.connect(run_copy).execute("select arch_id, smash_error from leaderboard limit 1").fetchone()
    out = cli("show", run_copy, "--top", "3", check=0).stdout
    lines = out.splitlines()
    assert lines[0].startswith("run tiny: done, phase done")
    picked = sqlite3.connect(run_copy).execute("select arch_id, final_id from pick").fetchone()
    assert any(line.startswith(f"pick {picked[0]}: validation ") for line in lines[:4])
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("rank"))
    assert "final (val / test error)" in lines[head]
    assert lines[head + 1].split()[:2] == ["1", top[0]] and len(lines) == head + 4
    best = cli("show", run_copy, "--arch", "best", check=0).stdout
    assert best.startswith(f"best = the pick: {picked[0]}") and f"architecture {picked[0]}" in best
    arch = cli("show", run_copy, "--arch", top[0][:6], check=0).stdout
    assert f"architecture {top[0]}" in arch and "block 0:" in arch and "block 2:" in arch
    table = arch[arch.index("part "):].splitlines()  # the model summary under the diagram
    assert [line.split()[0] for line in table[1:]] == ["stem", "block", "transition", "block", "transition",
                                                        "block", "head", "total"]
    total = int(table[-1].split()[2].replace(",", ""))
    assert total == sqlite3.connect(run_copy).execute("select params from archs where id = ?", top[:1]).fetchone()[0]
    summary = json.loads(cli("show", run_copy, "--arch", top[0], "--json", check=0).stdout)["summary"]
    assert summary[-1]["name"] == "head" and summary[-1]["out_shape"] == [10]
    data = json.loads(cli("show", run_copy, "--json", check=0).stdout)
    assert data["leaderboard"][0]["arch_id"] == top[0] and data["run"]["config"]["preset"] == "quick"
    csv = cli("query", run_copy, "select arch_id, smash_error from leaderboard limit 1", "--csv", check=0).stdout
    assert csv == f"arch_id,smash_error\n{top[0]},{top[1]}\n"
    rows = json.loads(cli("query", run_copy, "select count(*) as n from scores", "--json", check=0).stdout)
    assert rows == [{"n": 10}]
    dest = tmp_path / "best.json"
    said = cli("export", run_copy, "--arch", "best", "-o", dest, check=0).stderr
    assert said.startswith(f"wrote {dest} ({picked[0]}: best = the pick, final #{picked[1]}, validation error ")
    cli("export", run_copy, "--arch", top[0], "-o", dest, "--weights", check=0)
    from smash_engine.space import Architecture

    assert Architecture.from_json(dest.read_text()).id == top[0]
    assert dest.with_suffix(".safetensors").stat().st_size > 1000


def test_control_on_a_stopped_engine_queues_the_command(run_copy):
    top = sqlite3.connect(run_copy).execute("select arch_id from leaderboard limit 1").fetchone()[0]
    out = cli("control", run_copy, "final", top, "2", check=0).stdout
    assert "queued; the engine is done: it runs when you `smash-tui resume" in out
    row = sqlite3.connect(run_copy).execute("select kind, args_json, status from commands").fetchone()
    assert row[0] == "final" and json.loads(row[1]) == {"arch": top, "epochs": 2} and row[2] == "pending"


def test_resume_with_its_output_redirected_runs_headless(run_copy):
    """No terminal, no UI: resume answers the queued command and ends with what the search found."""
    top = sqlite3.connect(run_copy).execute("select arch_id from leaderboard limit 1").fetchone()[0]
    cli("control", run_copy, "sample", "1", check=0)
    proc = cli("resume", run_copy, check=0)
    assert f"done: {run_copy}" in proc.stderr and "pick " in proc.stderr and top
    assert sqlite3.connect(run_copy).execute("select status from commands").fetchone() == ("done",)


def test_query_cannot_write(run_copy):
    before = run_copy.read_bytes()
    for sql in ["delete from scores", "drop table runs", "update runs set status = 'x'",
                "select 1; delete from scores"]:
        one_line_error(cli("query", run_copy, sql), "read-only")
    assert run_copy.read_bytes() == before


@pytest.mark.parametrize("args, fragments", [
    (["run", "--preset", "huge", "--headless"], ["unknown preset 'huge'", "quick"]),
    (["run", "--dataset", "imagenet9", "--headless"], ["unknown dataset 'imagenet9'"]),
    (["run", "--epochs", "0", "--headless"], ["--epochs must be positive"]),
    (["run", "--archs", "-3", "--headless"], ["--n-random must be positive"]),
    (["run", "--device", "tpu", "--headless"], ["unknown device 'tpu'"]),
    (["run", "--score-bn", "running", "--headless"], ["unknown --score-bn 'running'", "recal"]),
    (["run", "--verify-top", "-1", "--headless"], ["--verify-top must be 0 or more"]),
    (["run", "--max-mflops", "-1", "--headless"], ["--max-mflops must be 0 or more, got -1"]),
    (["run", "--max-params", "1000", "--headless"], ["no architecture of the quick preset's search space fits the "
                                                     "budget (max 1,000 params): the smallest of 2,000 drawn has ",
                                                     "raise --max-params"]),
    (["run", "--threads", "0", "--headless"], ["--threads must be 1 or more, got 0"]),
    (["run", "--hyper", "huge", "--headless"], ["unknown HyperNet preset 'huge'", "graph"]),
    (["study", "corrupt", "RUN", "--threads", "-2"], ["--threads must be 1 or more, got -2"]),
    (["run", "--val-size", "1500", "--headless"], ["--val-size 1500 leaves no training images (1500 in all)"]),
    (["run", "--dataset", "modelnet10", "--headless"], ["3-D voxel grids", "--dataset modelnet10"]),
    (["final", "RUN", "--arch", "ffffffffff", "--dataset", "modelnet10"], ["no architecture 'ffffffffff'"]),
    (["run", "--dataset", "cifar10", "--data-dir", "EMPTY", "--headless"], ["cifar10", "--data-dir"]),
    (["show", "NOTADB"], ["NOTADB"]),
    (["resume", "missing.db"], ["missing.db does not exist"]),
    (["control", "RUN", "sample", "zero"], ["whole number"]),
    (["control", "RUN", "jump"], ["usage: control DB"]),
    (["control", "RUN", "final", "nope"], ["no architecture 'nope'"]),
    (["show", "RUN", "--arch", "ffffffffff"], ["no architecture 'ffffffffff'"]),
    (["control", "RUN", "score", "BROKEN.json"], ["architecture is not valid JSON"]),
    (["control", "RUN", "score", "INVALID.json"], ["reads bank 99, which nothing has written yet"]),
    (["control", "RUN", "score", "MISSING.json"], ["no architecture file MISSING.json"]),
    (["export", "RUN", "--arch", "ffffffffff"], ["no architecture"]),
    (["control", "RUN", "pause"], ["is done, so there is nothing to pause", "sample N"]),
    (["ls", "NOFOLDER"], ["no folder NOFOLDER/", "smash-tui run"]),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, run_copy, args, fragments):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOTADB").write_text("hello, not sqlite")
    (tmp_path / "BROKEN.json").write_text('{"blocks": [')
    spec = json.loads(sqlite3.connect(run_copy).execute("select spec_json from archs limit 1").fetchone()[0])
    spec["blocks"][0]["ops"][0]["reads"] = [99]
    (tmp_path / "INVALID.json").write_text(json.dumps(spec))
    args = [str(run_copy) if a == "RUN" else a for a in args]
    before = run_copy.read_bytes()
    one_line_error(cli(*args, cwd=tmp_path), *fragments)
    assert run_copy.read_bytes() == before
    assert not (tmp_path / "runs" / "quick.db").exists()  # nothing half-written


def test_a_budget_is_shown_and_score_or_final_outside_it_refused_before_queueing(run_copy, tmp_path):
    """The finished tiny run given a budget that its first place exceeds (a budgeted run would never have scored
    it: the test's shortcut to an architecture outside the budget in the file)."""
    conn = sqlite3.connect(run_copy)
    top, params, flops, spec = conn.execute("select l.arch_id, a.params, a.flops, a.spec_json from leaderboard l "
                                            "join archs a on a.id = l.arch_id order by l.rank limit 1").fetchone()
    config = json.loads(conn.execute("select config_json from runs").fetchone()[0])
    config["train"].update(max_params=params - 1, max_mflops=100.0)
    conn.execute("update runs set config_json = ?", (json.dumps(config),))
    conn.commit()
    conn.close()
    (tmp_path / "top.json").write_text(spec)
    why = f"architecture {top} has {params:,} params and {flops / 1e6:.2f} MFLOPs, outside this run's budget " \
          f"(max {params - 1:,} params, 100 MFLOPs)"
    one_line_error(cli("control", run_copy, "final", top[:8], "1"), why)
    one_line_error(cli("control", run_copy, "score", tmp_path / "top.json"), why)
    assert sqlite3.connect(run_copy).execute("select count(*) from commands").fetchone() == (0,)  # nothing queued
    out = cli("show", run_copy, check=0).stdout.splitlines()
    assert out[1].startswith(f"  budget: max {params - 1:,} params, 100 MFLOPs (FLOPs 2 per multiply-add); scored: ")


def test_device_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    one_line_error(cli("run", "--device", "cuda", "--headless", cwd=tmp_path), "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.db"))


def test_ctrl_c_stops_with_a_checkpoint_and_resume_finishes(tmp_path):
    proc = subprocess.Popen([EXE, "run", "--preset", "quick", "--epochs", "2", "--archs", "2", "--final-top", "0",
                             "--headless", "--name", "int"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "runs" / "int.db"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training is under way
        time.sleep(0.5)
        if db.exists() and sqlite3.connect(db).execute("select count(*) from steps").fetchone()[0] >= 2:
            break
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0 and "stopped: runs/int.db" in err and "smash-tui resume runs/int.db" in err
    assert store.get_run(store.connect_reader(db))["status"] == "stopped"
    assert (tmp_path / "runs" / "int" / "checkpoint.pt").exists()
    cli("resume", "runs/int.db", "--headless", cwd=tmp_path, check=0)
    assert store.get_run(store.connect_reader(db))["status"] == "done"
