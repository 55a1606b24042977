"""The Python API (`smash_engine.api`) and the exports, through their public names only."""

import contextlib
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from smash_engine import api
from smash_engine.errors import SmashError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def quick(finished_run, tmp_path, monkeypatch):
    """The finished tiny run as `runs/quick.db` in a fresh working directory (as after the README's command)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(finished_run, runs / "quick.db")
    shutil.copytree(finished_run.with_suffix(""), runs / "quick")
    monkeypatch.chdir(tmp_path)
    return runs / "quick.db"


def test_the_readme_example_runs_as_written(quick):
    text = (ROOT / "README.md").read_text()
    code = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", out.getvalue()).group(1))
    final = api.finals(quick)[0]
    assert accuracy == pytest.approx(100 * (1 - final["test_error"]), abs=0.01)


def test_best_is_the_finished_final_else_the_leaderboard_first(quick):
    board = api.leaderboard(quick)
    assert [r["rank"] for r in board] == list(range(1, len(board) + 1))
    done = [f for f in api.finals(quick) if f["status"] == "done"]
    assert api.load_architecture(quick).id == done[0]["arch_id"]
    assert api.load_architecture(quick, 2).id == board[1]["arch_id"]
    assert api.load_architecture(quick, board[2]["arch_id"][:6]).id == board[2]["arch_id"]


def test_a_loaded_model_is_a_plain_trained_module(quick):
    model = api.load_model(quick)
    assert isinstance(model, torch.nn.Module) and not model.training
    arch = api.load_architecture(quick)
    fresh = api.build_model(arch)
    x, _ = api.load_images(quick, "test")
    with torch.no_grad():
        assert not torch.equal(model(x[:8]), fresh.eval()(x[:8]))  # the weights are the trained ones
    parts = api.model_summary(arch)
    assert sum(p.params for p in parts) == sum(p.numel() for p in model.parameters())
    assert parts[-1].out_shape == (10,) and model(x[:2]).shape == (2, 10)


def test_exported_json_and_weights_load_back(quick, tmp_path):
    from tests.cli.test_cli import EXE

    out = tmp_path / "found.json"
    r = subprocess.run([EXE, "export", str(quick), "--arch", "best", "-o", str(out), "--weights"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x, _ = api.load_images(quick)
    with torch.no_grad():
        want = api.load_model(quick)(x[:16])
        assert torch.equal(api.load_model(out)(x[:16]), want)
        assert torch.equal(api.load_model(out.with_suffix(".safetensors"))(x[:16]), want)
    # the CLI copies exactly the file the API loads
    assert out.with_suffix(".safetensors").read_bytes() == api.weights_path(quick).read_bytes()
    assert api.weights_path(out) == out.with_suffix(".safetensors")
    # an architecture with no trained weights: one line, and no JSON left without its weights
    second = api.load_architecture(quick, 2)
    lone = tmp_path / "second.json"
    r = subprocess.run([EXE, "export", str(quick), "--arch", second.id, "-o", str(lone), "--weights"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "has no finished final training" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not lone.exists()


def test_a_model_for_other_images(quick):
    arch = api.load_architecture(quick)
    model = api.build_model(arch, channels=3, size=32, classes=100).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(SmashError, match="pretrained=False"):
        api.load_model(quick, channels=3)
    assert api.load_model(quick, pretrained=False, classes=5)(torch.zeros(1, 1, 8, 8)).shape == (1, 5)


def test_user_mistakes_are_one_line_errors(quick, tmp_path):
    for call, match in [(lambda: api.load_model(tmp_path / "nope.db"), "does not exist"),
                        (lambda: api.load_architecture(quick, 10_000), "no leaderboard rank 10000"),
                        (lambda: api.load_architecture(quick, "zzzz"), "no architecture 'zzzz'"),
                        (lambda: api.load_model(quick, 2), "has no finished final training"),
                        (lambda: api.load_images(quick, "val"), "split must be")]:
        with pytest.raises(SmashError, match=match) as e:
            call()
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_exports_load_back_and_agree_with_the_module(quick, tmp_path, fmt):
    from tests.cli.test_cli import EXE

    out = tmp_path / f"best.{fmt}"
    r = subprocess.run([EXE, "export", str(quick), "--arch", "best", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    arch, model = api.load_architecture(quick), api.load_model(quick)
    x, _ = api.load_images(quick)
    x = x[:37]  # not the batch size it was traced with
    with torch.no_grad():
        want = model(x).numpy()
    if fmt == "onnx":
        import onnx
        import onnxruntime

        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        session = onnxruntime.InferenceSession(str(out))
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    else:
        extra = {"architecture.json": ""}
        program = torch.export.load(str(out), extra_files=extra)
        meta = {"architecture": extra["architecture.json"]}
        got = program.module()(x).detach().numpy()
    assert api.Architecture.from_json(meta["architecture"]).id == arch.id
    assert abs(got - want).max() < 1e-4
