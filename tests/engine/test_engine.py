"""The engine on real (bundled digits) data: a whole search, stop + resume, commands."""

import json
import sqlite3
import threading
import time

import pytest
import torch
from safetensors.torch import load_file

from smash_engine import store
from smash_engine.commands import POLL_S
from smash_engine.engine import Engine
from smash_engine.errors import ResultsFileError
from smash_engine.network import FixedNet
from smash_engine.runs import create_run
from smash_engine.space import Architecture
from tests.conftest import TINY, tiny_config


def _q(db, sql, *args):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_a_whole_search_leaves_a_complete_results_file(finished_run):
    db = finished_run
    run = store.get_run(store.connect_reader(db))
    assert (run["status"], run["phase"], run["pid"]) == ("done", "done", None)
    steps_per_epoch = (1500 - 300) // 50
    assert run["total_steps"] == TINY["epochs"] * steps_per_epoch
    train = _q(db, "select step, loss from steps where phase = 'train' order by step")
    assert [s for s, _ in train][-1] == run["total_steps"] and all(loss > 0 for _, loss in train)
    assert len(_q(db, "select * from steps where phase = 'val'")) == TINY["epochs"]
    counts = dict(_q(db, "select source, count(*) from scores where status = 'ok' group by source"))
    assert counts == {"random": 6, "perturb": 2, "hillclimb": 2}
    # perturbations descend from the best random architecture
    best_random = _q(db, "select arch_id from scores where source = 'random' order by smash_error, id limit 1")[0][0]
    assert {p for (p,) in _q(db, "select parent_id from archs where source = 'perturb'")} == {best_random}
    (final,) = store.finals(store.connect_reader(db), run["id"])
    top = _q(db, "select arch_id from leaderboard limit 1")[0][0]
    assert final["arch_id"] == top and final["status"] == "done" and 0 <= final["test_error"] <= 1
    assert len(store.final_steps(store.connect_reader(db), final["id"])) == 1


def test_weights_and_checkpoint_load_without_unpickling_code(finished_run):
    conn = store.connect_reader(finished_run)
    final = store.finals(conn, 1)[0]
    arch = Architecture.from_json(store.get_arch(conn, final["arch_id"])["spec_json"])
    net = FixedNet(arch)
    net.load_state_dict(load_file(final["weights_path"]))
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    ckpt = torch.load(finished_run.with_suffix("") / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == store.get_run(conn)["total_steps"]


def _scores(db):
    return _q(db, "select source, arch_id, smash_error, round(smash_loss, 5) from scores order by id")


def _curve(db):
    return _q(db, "select phase, step, round(loss, 5), round(error, 6) from steps order by phase, step")


def _finals(db):
    return _q(db, "select arch_id, status, round(test_error, 6), round(best_val_error, 6) from finals order by id")


def test_stop_and_resume_ends_exactly_like_an_uninterrupted_run(tmp_path, finished_run):
    db = tmp_path / "stopped.db"
    create_run(db, tiny_config(name="tiny"))
    stops = iter([("smash", 13), ("rank", 3), ("refine", 1)])
    want = next(stops)

    def reporter(info):
        nonlocal want
        if want and info["phase"] == want[0] and info.get("done", 0) >= want[1]:
            engine.commands.stop_signal = 1  # what SIGINT / SIGTERM do
            want = next(stops, None)

    statuses = []
    while True:
        engine = Engine(db, reporter=reporter)
        statuses.append(engine.run())
        if statuses[-1] == "done":
            break
        assert store.get_run(store.connect_reader(db))["status"] == "stopped"
    assert statuses == ["stopped"] * 3 + ["done"]
    assert _scores(db) == _scores(finished_run)
    assert _curve(db) == _curve(finished_run)
    assert _finals(db) == _finals(finished_run)


def test_commands_round_trip(tmp_path):
    db = tmp_path / "cmd.db"
    create_run(db, tiny_config(name="cmd", epochs=1, n_random=3))
    sent = {}

    def send(kind, args=None):
        sent[kind if kind not in sent else kind + "2"] = store.insert_command(db, 1, kind, args or {})

    def reporter(info):
        if info["phase"] == "smash" and info.get("done", 0) >= 4 and "pause" not in sent:
            send("pause")
            threading.Timer(1.5, send, ("continue",)).start()
        if info["phase"] == "rank" and info.get("done", 0) >= 2 and "sample" not in sent:
            send("sample", {"n": 2})
            arch = _q(db, "select id from archs order by created_at limit 1")[0][0]
            # 2 epochs, not the pick's 1: were this arch the pick, its final would otherwise be "already queued"
            send("final", {"arch": arch[:8], "epochs": 2})
            send("final", {"arch": "nope-not-an-arch"})
            send("continue")
            # Commands are read every POLL_S; wait one out so these are read in the rank phase, not after the
            # engine has queued its pick (a tiny rank phase can end within one poll)
            time.sleep(POLL_S + 0.1)

    assert Engine(db, reporter=reporter).run() == "done"
    rows = {r["id"]: r for r in store.commands(store.connect_reader(db), 1)}
    assert rows[sent["pause"]]["status"] == "done" and "paused" in rows[sent["pause"]]["message"]
    assert rows[sent["continue"]]["message"] == "continuing"
    assert rows[sent["continue2"]]["message"] == "was not paused"
    sample = rows[sent["sample"]]  # done once both are scored, not when read
    assert (sample["status"], sample["message"], sample["progress"], sample["total"]) == \
        ("done", "scored 2 random architectures", 2, 2)
    assert rows[sent["final"]]["status"] == "done" and "queued (2 epochs)" in rows[sent["final"]]["message"]
    bad = rows[sent["final2"]]
    assert bad["status"] == "error" and "no architecture 'nope-not-an-arch'" in bad["message"]
    assert _q(db, "select count(*) from scores where source = 'sample'") == [(2,)]
    assert [s for (s,) in _q(db, "select status from finals order by id")] == ["done", "done"]
    assert any("paused" in m for (m,) in _q(db, "select message from events"))


def test_scores_taken_during_smash_training_are_taken_again_with_the_trained_hypernet(tmp_path):
    db = tmp_path / "early.db"
    create_run(db, tiny_config(name="early", epochs=2, n_random=2))
    sent = {}

    def reporter(info):
        if info["phase"] == "smash" and info.get("done", 0) >= 2 and "sample" not in sent:
            sent["sample"] = store.insert_command(db, 1, "sample", {"n": 2})

    assert Engine(db, reporter=reporter).run() == "done"
    trained = _q(db, "select step from runs")[0][0]
    early = _q(db, "select arch_id, hypernet_step from scores where source = 'sample' order by id")
    assert len(early) == 2 and all(step < trained for _, step in early)
    again = dict(_q(db, "select arch_id, smash_error from scores where source = 'rescore' and hypernet_step = ?",
                    trained))
    assert sorted(again) == sorted(a for a, _ in early)
    board = dict(_q(db, "select arch_id, smash_error from leaderboard"))
    assert all(board[a] == again[a] for a in again)  # the leaderboard ranks them by the trained HyperNet's score
    # nothing scored with the trained HyperNet is scored twice
    assert _q(db, "select count(*) from scores where hypernet_step = ? group by arch_id having count(*) > 1",
              trained) == []
    assert any("rescoring 2 architectures" in m for (m,) in _q(db, "select message from events"))


def test_commands_queued_on_a_finished_run_run_on_resume(tmp_path, finished_run):
    db = tmp_path / "again.db"
    db.write_bytes(finished_run.read_bytes())
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "checkpoint.pt").write_bytes((finished_run.with_suffix("") / "checkpoint.pt").read_bytes())
    top = _q(db, "select arch_id from leaderboard limit 1")[0][0]
    store.insert_command(db, 1, "sample", {"n": 3})
    store.insert_command(db, 1, "final", {"arch": top, "epochs": 1})
    assert Engine(db).run() == "done"
    assert _q(db, "select count(*) from scores where source = 'sample'") == [(3,)]
    assert _q(db, "select count(*), min(status), max(status) from finals") == [(2, "done", "done")]


def test_a_second_engine_on_the_same_file_is_refused(tmp_path, finished_run):
    db = tmp_path / "busy.db"
    db.write_bytes(finished_run.read_bytes())
    w = store.connect_writer(db)
    w.acquire_engine(1, pid=1, host="elsewhere")  # a live engine on another host
    w.heartbeat(1)
    w.conn.close()
    with pytest.raises(Exception, match="pid 1 on host elsewhere"):
        Engine(db).run()


def test_creating_over_an_existing_file_is_refused(finished_run):
    before = finished_run.read_bytes()
    with pytest.raises(ResultsFileError, match="already exists"):
        create_run(finished_run, tiny_config())
    assert finished_run.read_bytes() == before
    assert json.loads(store.get_run(store.connect_reader(finished_run))["config_json"])["preset"] == "quick"


def test_score_command_scores_a_user_architecture_and_refuses_one_outside_the_space(tmp_path, finished_run):
    from smash_engine.blocks import resnet_block
    from smash_engine.sampler import perturb
    from tests.conftest import tiny_config as cfg

    db = tmp_path / "user.db"
    db.write_bytes(finished_run.read_bytes())
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "checkpoint.pt").write_bytes((finished_run.with_suffix("") / "checkpoint.pt").read_bytes())
    top = Architecture.from_json(_q(db, "select a.spec_json from leaderboard l join archs a on a.id = l.arch_id")[0][0])
    import random

    mine = perturb(top, cfg().space, random.Random(5), p=0.5)
    ok = store.insert_command(db, 1, "score", {"spec": mine.to_json()})
    bad = store.insert_command(db, 1, "score", {"spec": resnet_block().to_json()})
    assert Engine(db).run() == "done"
    rows = {r["id"]: r for r in store.commands(store.connect_reader(db), 1)}
    assert rows[ok]["status"] == "done" and rows[ok]["message"].startswith(f"scored architecture {mine.id}: SMASH ")
    assert rows[bad]["status"] == "error" and "outside this run's search space" in rows[bad]["message"]
    assert _q(db, "select arch_id, status from scores where source = 'user'") == [(mine.id, "ok")]
