"""The UI's plain-Python parts: the filter language, the leaderboard model against the results file's own
`leaderboard` view, plot downsampling, and that the UI never loads torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from smash_engine import store
from smash_engine.errors import ConfigError
from smash_tui.widgets.board_model import BoardModel, parse_filter
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
