"""The UI's plain-Python parts: the filter language, the leaderboard model against the results file's own
`leaderboard` view, plot downsampling, and that the UI never loads torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smash_engine import store
from smash_engine.errors import ConfigError
from smash_tui.widgets.board_model import BoardModel, parse_filter, verify_line
from smash_tui.widgets.loss_plot import Curve


def test_filter_parses_fields_operators_and_units():
    assert [(f, op.__name__, v) for f, op, v in parse_filter("params < 2e6 and smash <= 30% AND source = Sample")] \
        == [("params", "lt", 2e6), ("smash_error", "le", 0.3), ("source", "eq", "sample")]
    assert parse_filter("flops>=1.5M")[0][2] == 1.5e6
    assert parse_filter("test != 12")[0][2] == pytest.approx(0.12)  # errors typed as percent
    assert parse_filter("  ") == []


@pytest.mark.parametrize("text", ["params <", "params ~ 3", "name = x", "params < 1; drop table runs",
                                  "source < random", "params < 2e6 or 1=1", "params < abc"])
def test_filter_refuses_anything_else(text):
    with pytest.raises(ConfigError):
        parse_filter(text)


def test_board_model_ranks_like_the_leaderboard_view(tiny_run, tmp_path):
    from conftest import copy_run

    db = copy_run(tiny_run, tmp_path)
    conn = store.connect_reader(db)
    run = store.get_run(conn)
    rows = store.scores_since(conn, run["id"], 0)
    archs = [r["arch_id"] for r in store.leaderboard(conn, run["id"])]
    conn.close()
    model = BoardModel()
    model.add_scores(rows[:5])
    model.add_scores(rows[5:])  # in two polls, as the UI gets them
    assert [e.arch_id for e in model.top(1000, [])] == archs
    assert [e.rank for e in model.top(3, [])] == [1, 2, 3]
    # a re-score of the best arch moves it to where its new error ranks, as the view does
    with store.connect_writer(db) as w:
        w.add_score(run["id"], archs[0], 0.999, 3.0, 300, 0, source="sample")
    conn = store.connect_reader(db)
    model.add_scores(store.scores_since(conn, run["id"], rows[-1]["id"]))
    assert [e.arch_id for e in model.top(1000, [])] == [r["arch_id"] for r in store.leaderboard(conn, run["id"])]
    conn.close()
    assert len(model) == len(archs)


def test_board_model_verify_standing_matches_the_leaderboard_view(tiny_run, tmp_path):
    """Each candidate's rung, status, via, still-in and error, as the model takes them from the verifications
    rows, agree with the view's verify_* columns, mid-phase too (rung 2 queued, one of it trained)."""
    from conftest import copy_run

    db = copy_run(tiny_run, tmp_path)
    conn = store.connect_reader(db)
    run_id = store.get_run(conn)["id"]
    first = next(r["arch_id"] for r in store.verifications(conn, run_id) if r["rung"] == 1)
    conn.close()
    with store.connect_writer(db) as w:
        with w.transaction() as c:
            c.execute("UPDATE verifications SET status = 'queued', val_error = NULL WHERE rung = 1")
            c.execute("UPDATE verifications SET via = 'flops' WHERE rung = 0 AND smash_rank = 4")
        w.set_verification(run_id, first, 1, "done", 0.25, 1.0)

    def standing() -> BoardModel:
        conn = store.connect_reader(db)
        model = BoardModel()
        model.add_scores(store.scores_since(conn, run_id, 0))
        assert model.set_verifications(store.verifications(conn, run_id))
        view = store.leaderboard(conn, run_id)
        conn.close()
        for r in view:
            e = model.entries[r["arch_id"]]
            assert (e.verify_rung, e.verify_status, e.verify_via, e.verify_error) == \
                (r["verify_rung"], r["verify_status"], r["verify_via"], r["verify_error"]), r["arch_id"]
            assert e.verify_in == bool(r["verify_in"])
        assert sum(e.verify_in for e in model.entries.values()) == 2
        assert sum(e.verify_rung == 0 for e in model.entries.values()) == 2
        return model

    model = standing()
    assert model.top(1, [], "verify_error")[0].arch_id == first  # trained at rung 2: ahead of the one queued


def test_set_verifications_returns_what_changed():
    model = BoardModel()
    model.add_scores([dict(id=i + 1, arch_id=a, status="ok", smash_error=0.5 + i / 100) for i, a in enumerate("abcd")])

    def row(arch_id, rung, status="queued", err=None, via="smash"):
        return dict(arch_id=arch_id, rung=rung, status=status, val_error=err, via=via)

    rung0 = [row("a", 0, "done", 0.3), row("b", 0, "done", 0.2), row("c", 0, "running")]
    assert sorted(model.set_verifications(rung0)) == ["a", "b", "c"]
    assert model.set_verifications(rung0) == []  # nothing moved: no cell to rewrite
    assert model.entries["a"].verify_in and model.entries["d"].verify_rung is None
    rung0[2] = row("c", 0, "done", 0.4)
    # rung 2 queued: a, whose rows did not change, is out now; b is in at a higher rung with rung 1's error
    assert sorted(model.set_verifications([*rung0, row("b", 1), row("c", 1)])) == ["a", "b", "c"]
    a, b = model.entries["a"], model.entries["b"]
    assert (a.verify_in, a.verify_rung, a.verify_error) == (False, 0, 0.3)
    assert (b.verify_in, b.verify_rung, b.verify_status, b.verify_error) == (True, 1, "queued", 0.2)
    # sorted by verify: the survivors first, then the rest by error; without a verification last either way
    assert [e.arch_id for e in model.top(4, [], "verify_error")] == ["b", "c", "a", "d"]
    assert [e.arch_id for e in model.top(4, [], "verify_error", reverse=True)] == ["a", "c", "b", "d"]
    assert sorted(model.set_verifications([])) == ["a", "b", "c"]  # a file replaced under the UI: no stale standing
    assert all(e.verify_rung is None and not e.verify_in for e in model.entries.values())


def test_verify_line_says_where_a_candidate_got():
    rank = dict(a=1, b=2, c=9, d=3)
    rows = [dict(arch_id=a, rung=0, status="done", val_error=err, via=via, images=50, epochs=2, smash_rank=rank[a])
            for a, err, via in (("a", 0.3, "smash"), ("b", 0.2, "smash"), ("c", 0.4, "naswot"), ("d", 0.5, "smash"))]
    rows += [dict(arch_id=a, rung=1, status=st, val_error=err, via="smash", images=100, epochs=2, smash_rank=rank[a])
             for a, st, err in (("b", "done", 0.15), ("a", "running", None))]
    assert verify_line("b", rows, 2, False) == \
        "verify: rung 2/2 (still in), held-out 15.00% on 200 images; rung 1 20.00%"
    assert verify_line("a", rows, 2, False) == "verify: rung 2/2 (still in), training on 200 images; rung 1 30.00%"
    assert verify_line("c", rows, 2, False) == "verify: out at rung 1/2 (via naswot), held-out 40.00% on 100 images"
    assert verify_line("e", rows, 2, False) is None
    # no verify_eta (a file from before halving): the total is not known, so not shown
    assert verify_line("c", rows, None, False) == "verify: out at rung 1 (via naswot), held-out 40.00% on 100 images"
    # eta 4 plans 1 rung for 4 candidates, which the rows contradict: no total rather than a wrong one
    assert verify_line("b", rows, 4, False).startswith("verify: rung 2 (still in)")
    rows[-1].update(status="done", val_error=0.1)
    # the run left the phase: the last rung is ranked as final training takes it
    assert verify_line("a", rows, 2, True).startswith("verify: rung 2/2 (best of 2), held-out 10.00%")
    assert verify_line("b", rows, 2, True).startswith("verify: rung 2/2 (2nd of 2), held-out 15.00%")


def test_curve_downsamples_to_bucket_means_and_keeps_small_series_whole():
    c = Curve()
    c.extend([(i, float(i)) for i in range(1, 1001)])
    xs, ys = c.view(10)
    assert xs == [100.0 * b for b in range(1, 11)]
    assert ys == [sum(range(100 * b - 99, 100 * b + 1)) / 100 for b in range(1, 11)]
    small = Curve()
    small.extend([(1, 2.0), (2, float("nan")), (3, 4.0)])  # NaN losses are skipped, not drawn
    assert small.view(10) == ([1, 3], [2.0, 4.0])
    assert small.view(10, smooth=True)[1][0] == 2.0


def test_importing_the_ui_does_not_import_torch():
    code = "import sys, smash_tui.app, smash_tui.cli; print(sorted(m for m in ('torch', 'smash_engine.engine', " \
           "'smash_engine.train') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_diagram_headline_names_the_input_shape_and_the_3d_variant():
    import dataclasses

    from smash_engine.blocks import resnet_block
    from smash_tui.diagram import diagram

    arch = resnet_block(image_size=32)
    assert "1x32x32 in, 10 classes" in diagram(arch)[0]
    vox = diagram(dataclasses.replace(arch, spatial_dims=3))[0]
    assert "1x32x32x32 in (3-D), 10 classes" in vox and len(vox) <= 80
