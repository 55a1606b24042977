"""Plain progress lines and the end-of-search summary say what each figure is."""

import io

from smash_engine import report


def test_plain_lines_name_the_final_the_refine_stage_and_give_elapsed_and_eta(monkeypatch):
    clock = iter([0.0, 0.0, 10.0, 20.0, 20.0, 30.0, 31.0, 40.0])
    monkeypatch.setattr(report.time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    r = report.plain_reporter(out)
    r(dict(phase="refine", done=1, total=20, error=0.25, stage="perturb", arch="ab" * 8))
    r(dict(phase="refine", done=11, total=20, error=0.2, stage="hillclimb", arch="cd" * 8))
    r(dict(phase="refine", note="paused; checkpoint written"))
    r(dict(phase="final", done=1, total=15, loss=0.5, error=0.02, arch="3f2a9c1e" * 2, final=2, error_name="test"))
    r(dict(phase="final", done=15, total=15, loss=0.1, error=0.01, arch="3f2a9c1e" * 2, final=2, error_name="test"))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("refine 1/20 perturb  SMASH err 25.0%  0:00")
    # 10 of the remaining 19 done in 10 s: 9 more take 9 s
    assert lines[1].startswith("refine 11/20 hillclimb  SMASH err 20.0%  0:10 ETA 0:09")
    assert lines[2] == "refine: paused; checkpoint written"
    assert lines[3].startswith("final 1/15 #2 3f2a9c1e  loss 0.500  test 2.0%")
    assert lines[4].startswith("final 15/15 #2 3f2a9c1e") and "ETA" not in lines[4]


def test_pick_summary_names_every_figure_and_the_split_sizes():
    p = dict(arch_id="1e673d0c2b9a4f11", final_id=1, val_error=0.0101, test_error=3 / 297, val_images=297,
             test_images=297, params=41234, flops=3_100_000, epochs=15, weights_path="runs/q/final-1.safetensors",
             smash_rank=2, smash_error=0.3)
    lines = report.pick_summary("runs/q.db", p, None, 90)
    assert lines[0].startswith("pick 1e673d0c2b9a4f11: validation 1.01% (3/297), test 1.01% (3/297); "
                               "SMASH rank 2/90; 41,234 params; 3.10 MFLOPs; final training #1, 15 epochs")
    assert lines[2].endswith("smash-tui export runs/q.db --arch best -o 1e673d0c2b9a4f11.json --weights")
    none = report.pick_summary("runs/q.db", None, dict(arch_id="ab12", smash_error=0.3), 90)
    assert "no final training has finished" in none[0] and none[1].endswith("smash-tui control runs/q.db final ab12")


def test_the_hypernet_a_run_uses_is_named_from_its_stored_config():
    import json

    from smash_tui.widgets.status import Progress, status_text

    run = dict(name="q", epoch=1, device="cpu", images_per_s=None, message=None,
               config_json=json.dumps({"hyper": {"kind": "graph", "gains": True}}))
    assert report.hyper_label(run) == "graph"
    assert "[cpu, graph HyperNet]" in status_text(run, "running", Progress(), colorless=True).plain
    assert report.hyper_label(dict(config_json=json.dumps({"hyper": {"gains": True}}))) == "conv+gains"
    assert report.hyper_label(dict(config_json=json.dumps({"hyper": {"kind": "conv"}}))) == "conv"
