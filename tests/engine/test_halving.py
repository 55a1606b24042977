"""The verify phase's successive halving: the plan, the choices, and a tiny real run with a resume between rungs."""

import sqlite3

import pytest

from smash_engine import halving, store
from smash_engine.engine import Engine
from smash_engine.errors import ConfigError
from smash_engine.runs import create_run
from tests.conftest import tiny_config


def test_plan_keeps_one_in_eta_and_spends_the_budget_evenly_over_the_rungs():
    rungs = halving.plan(16, 4, 64_000, 50)
    assert [(r.candidates, r.images) for r in rungs] == [(16, 2000), (4, 8000)]
    assert halving.cost(rungs) == 64_000
    assert [(r.candidates, r.images) for r in halving.plan(20, 4, 80_000, 50)] == [(20, 2000), (5, 8000)]
    assert [r.candidates for r in halving.plan(6, 2, 10**6, 50)] == [6, 3]
    assert [r.candidates for r in halving.plan(9, 2, 10**6, 50)] == [9, 4, 2]
    assert halving.plan(1, 4, 10**6, 50) == []  # one candidate: nothing to choose
    # too small a budget for 16: fewer candidates (the first ones), each at least min_images; none below two
    assert [(r.candidates, r.images) for r in halving.plan(16, 4, 9000, 1000)] == [(7, 1285)]
    assert halving.plan(16, 4, 1999, 1000) == []
    # never longer than final training: a rung cut to it trains its candidates from more seeds instead
    cut = halving.plan(16, 4, 64_000, 50, 3000)
    assert [(r.candidates, r.images, r.seeds) for r in cut] == [(16, 2000, 1), (4, 3000, 2)]
    assert halving.cost(cut) == 16 * 2000 + 4 * 3000 * 2 <= 64_000
    assert [r.seeds for r in halving.plan(16, 4, 64_000, 50, 5000)] == [1, 1]  # 8,000 each cut to 5,000: one seed
    r = halving.Rung(2, 2, 2500)  # more images than the training split: whole epochs over part of it
    assert (r.epochs(1000), r.subset(1000)) == (3, 833)
    assert (halving.Rung(0, 4, 600).epochs(1000), halving.Rung(0, 4, 600).subset(1000)) == (1, 600)


def _board(n):
    return [dict(arch_id=f"a{i}", rank=i + 1, flops=1000 - 10 * i if i % 3 else 10 * i) for i in range(n)]


def test_candidates_are_smash_top_then_the_baselines_best_not_already_in():
    board = _board(10)
    assert halving.candidates(board, 3) == [("a0", 1, "smash"), ("a1", 2, "smash"), ("a2", 3, "smash")]
    # FLOPs: a1 (990), a2 (980), a4 (960), a5 (950) are the largest; a1 and a2 are in already
    assert halving.candidates(board, 3, "flops", 2)[3:] == [("a4", 5, "flops"), ("a5", 6, "flops")]
    nas = halving.candidates(board, 2, "naswot", 1, lambda rows: [float(r["rank"]) for r in rows])
    assert nas[2:] == [("a9", 10, "naswot")]
    with pytest.raises(ValueError, match="needs the NASWOT scorer"):
        halving.candidates(board, 2, "naswot", 1)


def test_survivors_and_order_break_ties_by_smash_rank_and_rank_higher_rungs_first():
    rows = [dict(arch_id="a", smash_rank=1, rung=0, status="done", val_error=0.5),
            dict(arch_id="b", smash_rank=2, rung=0, status="done", val_error=0.3),
            dict(arch_id="c", smash_rank=3, rung=0, status="done", val_error=0.3),
            dict(arch_id="d", smash_rank=4, rung=0, status="done", val_error=0.2)]
    assert [r["arch_id"] for r in halving.survivors(rows, 2)] == ["d", "b"]
    rows += [dict(arch_id="d", smash_rank=4, rung=1, status="done", val_error=0.25),
             dict(arch_id="b", smash_rank=2, rung=1, status="done", val_error=0.15)]
    assert halving.order(rows) == ["b", "d", "c", "a"]


def _q(db, sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    """A tiny real search whose verify phase halves 8 candidates to 4, then 2 (eta 2): SMASH's top 7 and the
    largest architecture by FLOPs that SMASH did not put there."""
    db = tmp_path_factory.mktemp("halving") / "halving.db"
    create_run(db, tiny_config(name="halving", verify_top=7, verify_eta=2, verify_budget=10.0, verify_add="flops",
                               verify_add_top=1, final_top=1, final_epochs=4,  # rungs up to 4,000 images: uncut
                               verify_order="smash"))
    assert Engine(db).run() == "done"
    return db


def test_a_tiny_search_halves_its_candidates_and_final_trains_the_last_one_standing(halved):
    conn = store.connect_reader(halved)
    rows = store.verifications(conn, 1)
    board = store.leaderboard(conn, 1)
    run = store.get_run(conn)
    (final,) = store.finals(conn, 1)
    conn.close()
    rung0 = [r for r in rows if r["rung"] == 0]
    assert [(r["arch_id"], r["via"]) for r in rung0[:7]] == [(b["arch_id"], "smash") for b in board[:7]]
    assert len(rung0) == 8 and rung0[7]["via"] == "flops"
    largest = max(board[7:], key=lambda b: (b["flops"], -b["rank"]))
    assert rung0[7]["arch_id"] == largest["arch_id"]
    assert all(r["status"] == "done" and 0 <= r["val_error"] <= 1 for r in rows)
    assert [sum(r["rung"] == k for r in rows) for k in range(4)] == [8, 4, 2, 0]
    for k in (1, 2):  # each rung's candidates are the best of the rung before, on 2x the images
        before = [r for r in rows if r["rung"] == k - 1]
        here = {r["arch_id"] for r in rows if r["rung"] == k}
        assert here == {r["arch_id"] for r in halving.survivors(before, len(here))}
        assert {r["images"] * r["epochs"] for r in rows if r["rung"] == k} == \
            {2 * r["images"] * r["epochs"] for r in before}
    assert final["arch_id"] == halving.order(rows)[0]
    spent = sum(r["images"] * r["epochs"] for r in rows)
    cfg = tiny_config()
    smash_images = run["total_steps"] * cfg.train.batch_size
    assert spent <= smash_images * 10.0  # within the budget
    shown = {b["arch_id"]: (b["verify_rung"], b["verify_in"]) for b in board if b["verify_rung"] is not None}
    assert sorted(shown.values()).count((2, 1)) == 2 and len(shown) == 8


def test_a_stop_between_rungs_resumes_where_it_was_and_picks_the_same(halved, tmp_path):
    import shutil

    db = tmp_path / halved.name
    shutil.copy(halved, db)
    shutil.copytree(halved.with_suffix(""), db.with_suffix(""))
    before = {(a, r): e for a, r, e in _q(db, "select arch_id, rung, val_error from verifications")}
    final = _q(db, "select arch_id from finals")[0][0]
    # as a stop during rung 1 leaves it: rung 0 done, rung 1 queued with one training cut short, no rung 2
    w = store.connect_writer(db)
    w.conn.execute("DELETE FROM verifications WHERE rung = 2")
    w.conn.execute("UPDATE verifications SET status = 'queued', val_error = NULL WHERE rung = 1")
    w.conn.execute("UPDATE verifications SET status = 'running' WHERE rung = 1 AND smash_rank = "
                   "(SELECT min(smash_rank) FROM verifications WHERE rung = 1)")
    w.conn.execute("DELETE FROM finals")
    for path in db.with_suffix("").glob("final-*"):
        path.unlink()
    w.conn.execute("UPDATE runs SET phase = 'verify', status = 'stopped'")
    kept = {a: at for a, at in w.conn.execute("select arch_id, at from verifications where rung = 0")}
    w.close()
    assert Engine(db).run() == "done"
    assert {(a, r): e for a, r, e in _q(db, "select arch_id, rung, val_error from verifications")} == before
    assert dict(_q(db, "select arch_id, at from verifications where rung = 0")) == kept  # not trained again
    assert _q(db, "select arch_id from finals")[0][0] == final


def test_bad_verify_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="--verify-top must be 0 or more"):
        tiny_config(verify_top=-1)
    with pytest.raises(ConfigError, match="--verify-eta must be 2 or more"):
        tiny_config(verify_eta=1)
    with pytest.raises(ConfigError, match="--verify-budget is a fraction"):
        tiny_config(verify_budget=0.0)
    with pytest.raises(ConfigError, match="unknown --verify-add 'synflow'"):
        tiny_config(verify_add="synflow")


def test_show_prints_each_candidates_rung_and_whether_it_is_still_in(halved):
    from tests.cli.test_cli import cli

    proc = cli("show", str(halved), "--top", "50", check=0)
    rows = store.leaderboard(store.connect_reader(halved), 1)
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if line[:4].strip().isdigit()}
    for r in rows:
        line = lines[r["arch_id"]]
        if r["verify_rung"] is None:
            assert " - " in line
        elif r["verify_in"]:
            assert f"{100 * r['verify_error']:.2f}% r3 " in line and "out" not in line
        else:
            assert f"{100 * r['verify_error']:.2f}% r{r['verify_rung'] + 1} out" in line
    assert sum("r3 " in line for line in lines.values()) == 2


def test_verify_add_naswot_adds_the_best_naswot_score_not_already_in(tmp_path):
    import torch

    from smash_engine.proxies import naswot, naswot_batch
    from smash_engine.runs import load_splits
    from smash_engine.space import Architecture

    db = tmp_path / "naswot.db"
    cfg = tiny_config(name="naswot", verify_top=3, verify_add="naswot", verify_add_top=1, verify_budget=10.0,
                      final_top=0, verify_order="smash")
    create_run(db, cfg)
    assert Engine(db).run() == "done"
    conn = store.connect_reader(db)
    rung0 = [r for r in store.verifications(conn, 1) if r["rung"] == 0]
    board = store.leaderboard(conn, 1)
    x = naswot_batch(load_splits(cfg, torch.device("cpu"))[0])
    rest = {r["arch_id"]: naswot(Architecture.from_json(store.get_arch(conn, r["arch_id"])["spec_json"]), x)
            for r in board[3:]}
    conn.close()
    assert [r["via"] for r in rung0] == ["smash", "smash", "smash", "naswot"]
    # one rung of 4, 6,000 images each, cut to final training's 1,200 (1 epoch): 5 seeds each instead
    assert {(r["images"] * r["epochs"], r["seeds"]) for r in rung0} == {(1200, 5)}
    assert rung0[3]["arch_id"] == max(rest, key=rest.get)


def test_verify_orders_mix_smash_with_flops():
    """`flopsres`: bigger FLOPs first, SMASH's error less its line on log FLOPs breaking near-ties (within a
    quarter octave); `rankavg`: the mean of SMASH's, FLOPs' and NASWOT's ranks. The engine's config takes the
    orders halving knows and no other (the orders are defined in config, which imports nothing of halving)."""
    from smash_engine.config import ORDER_CHOICES, make_config

    assert ORDER_CHOICES == ("smash", "flopsres", "rankavg") and not hasattr(halving, "ORDERS")
    # c and d are a near-tie in FLOPs (within 2^0.25); d's SMASH error is lower: it goes first of the two
    board = [dict(arch_id="a", rank=1, smash_error=0.10, flops=1000), dict(arch_id="b", rank=2, smash_error=0.20,
                                                                          flops=64000),
             dict(arch_id="c", rank=3, smash_error=0.30, flops=8000), dict(arch_id="d", rank=4, smash_error=0.25,
                                                                          flops=8100)]
    got = halving.candidates(board, 3, order="flopsres")
    assert got == [("b", 2, "flopsres"), ("d", 4, "flopsres"), ("c", 3, "flopsres")]
    assert halving.candidates(board, 2) == [("a", 1, "smash"), ("b", 2, "smash")]
    naswot = {"a": 0.0, "b": 1.0, "c": 3.0, "d": 2.0}  # higher better: c, d, b, a
    # rank sums (SMASH + FLOPs + NASWOT): a 0 + 3 + 3, b 1 + 0 + 2, c 3 + 2 + 0, d 2 + 1 + 1
    got = halving.candidates(board, 4, naswot=lambda rows: [naswot[r["arch_id"]] for r in rows], order="rankavg")
    assert [g[0] for g in got] == ["b", "d", "c", "a"]
    with pytest.raises(ValueError, match="needs the NASWOT scorer"):
        halving.candidates(board, 2, order="rankavg")
    with pytest.raises(ValueError, match="unknown verify_order 'flops'; choose smash, flopsres, rankavg"):
        halving.candidates(board, 2, order="flops")
    with pytest.raises(ConfigError, match="unknown --verify-order 'flops'"):
        make_config("quick", verify_order="flops")


def test_a_search_verifies_the_top_of_its_verify_order(tmp_path):
    db = tmp_path / "order.db"
    assert tiny_config().train.verify_order == "flopsres"  # the default, by measurement
    create_run(db, tiny_config(name="order", verify_top=3, verify_budget=2.0, final_top=1,
                               final_epochs=1))
    assert Engine(db).run() == "done"
    conn = store.connect_reader(db)
    rung0 = [r for r in store.verifications(conn, 1) if r["rung"] == 0]
    board = store.leaderboard(conn, 1)
    conn.close()
    want = halving.candidates(board, 3, order="flopsres")
    assert sorted((r["arch_id"], r["via"]) for r in rung0) == sorted((a, "flopsres") for a, _, _ in want)
    assert {a for a, _, _ in want} != {b["arch_id"] for b in board[:3]}  # not SMASH's own top 3
    assert "a candidate by flopsres" in " ".join(m for (m,) in _q(db, "select message from events"))
