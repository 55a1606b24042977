"""Searching a user's own images through the `smash-tui` entry point: real folders of PNG and JPEG files and real
.npz files (tests/imagesets.py), a tiny search end to end on each, the cache, transfer, `api.load_images`, and
every mistake in a folder or an npz file named in one line, with nothing half-made and no run changed."""

import contextlib
import io
import json
import os
import sqlite3

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smash_engine import api
from smash_engine.config import RunConfig
from smash_engine.runs import load_splits
from smash_tui import cli as smash_cli
from tests.cli.test_cli import cli, one_line_error
from tests.engine.test_userdata import FEW, arrays, base_arrays, bases, trees
from tests.imagesets import CLASSES, build_tree, digits, image_folder, npz_file, write_image

TINY = ["--epochs", "1", "--archs", "4", "--final-epochs", "1", "--headless", "--threads", "1"]


def config(db) -> RunConfig:
    return RunConfig.from_dict(json.loads(sqlite3.connect(db).execute("select config_json from runs").fetchone()[0]))


def test_a_png_folder_searched_end_to_end_cached_and_transferred(tmp_path):
    image_folder(tmp_path / "png", 20)
    proc = cli("run", "--dataset", "folder", "--data-dir", "png", *TINY, "--name", "f", cwd=tmp_path, check=0)
    db = tmp_path / "runs" / "f.db"
    assert "decode 200/200 images (" in proc.stderr and "images/s)" in proc.stderr
    assert "held out 40 of 200 (20% of each class, seed 0) as the test split" in proc.stderr
    assert "done: runs/f.db" in proc.stderr
    events = [r[0] for r in sqlite3.connect(db).execute("select message from events order by id")]
    assert events[0].startswith("decode 200 images (") and events[0].endswith(" images/s)")  # the UI's event log
    assert events[2].startswith("images: folder ") and events[3].startswith("engine started")
    cfg = config(db)
    data = cfg.extra["data"]
    assert (data["kind"], data["class_names"], data["n_train"], data["n_test"]) == ("folder", CLASSES, 160, 40)
    assert (cfg.space.image_channels, cfg.space.image_size, cfg.space.num_classes) == (1, 8, 10)
    assert cfg.train.val_size == 32  # the quick preset's 300, capped at a fifth of 160
    # the pick's test error is measured on the folder's 40 test images, and the weights give it again
    arch, test_images, test_error = sqlite3.connect(db).execute(
        "select p.arch_id, p.test_images, f.test_error from pick p join finals f on f.arch_id = p.arch_id"
    ).fetchone()
    assert test_images == 40
    x, y = api.load_images(db, "test")
    with torch.no_grad():
        wrong = (api.load_model(db)(x).argmax(1) != y).float().mean().item()
    assert close_enough(wrong, test_error)
    # api.load_images gives the very tensors the engine trained and tested on
    train, _, test = load_splits(cfg, torch.device("cpu"))
    assert torch.equal(x, test.normalize(test.x)) and torch.equal(y, test.y)
    assert api.class_names(db) == CLASSES
    assert "10 classes: digit0, digit1" in cli("show", db, check=0).stdout
    # a second search on the same folder decodes nothing
    again = cli("run", "--dataset", "folder", "--data-dir", "png", *TINY, "--final-top", "0", "--name", "g",
                cwd=tmp_path, check=0)
    assert "decode " not in again.stderr and "(decoded before)" in again.stderr
    # a changed file: the next search decodes again; the first run keeps reading the images it trained on
    changed = tmp_path / "png" / CLASSES[2] / sorted(os.listdir(tmp_path / "png" / CLASSES[2]))[0]
    write_image(changed, np.full((8, 8), 255, np.uint8))
    third = cli("run", "--dataset", "folder", "--data-dir", "png", *TINY, "--final-top", "0", "--name", "h",
                cwd=tmp_path, check=0)
    assert "decode 200/200 images" in third.stderr
    own = cli("final", db, "--arch", arch, "--epochs", "1", "--threads", "1", cwd=tmp_path, check=0)
    png_key = data["key"][:8]
    assert "decode " not in own.stderr and f"on folder:{tmp_path / 'png'}@{png_key}: test error" in own.stdout
    # transfer to a colour JPEG folder with train/ and test/ (24 px images, resized to the run's 8)
    image_folder(tmp_path / "jpg", 8, ext=".jpg", colour=True, split=True, scale=3)
    moved = cli("final", db, "--arch", arch, "--dataset", "folder", "--data-dir", "jpg", "--epochs", "1",
                "--threads", "1", cwd=tmp_path, check=0)
    assert "decode 80/80 images" in moved.stderr and "resized to 8x8" in moved.stderr
    row = sqlite3.connect(db).execute("select dataset, status, a.spec_json from finals f join archs a "
                                      "on a.id = f.arch_id where dataset is not null order by f.id desc").fetchone()
    assert row[0].startswith(f"folder:{tmp_path / 'jpg'}@") and row[1] == "done"
    assert json.loads(row[2])["image_channels"] == 3
    again = cli("final", db, "--arch", arch, "--dataset", "folder", "--data-dir", "jpg", "--epochs", "1",
                "--threads", "1", cwd=tmp_path, check=0)
    assert "decode " not in again.stderr and "already trained" in again.stderr
    # another folder of the same shape is another transfer, not the first one's
    image_folder(tmp_path / "jpg2", 4, ext=".jpg", colour=True, split=True, scale=3)
    other = cli("final", db, "--arch", arch, "--dataset", "folder", "--data-dir", "jpg2", "--epochs", "1",
                "--threads", "1", cwd=tmp_path, check=0)
    assert "already trained" not in other.stderr and "decode 40/40 images" in other.stderr


def close_enough(a: float, b: float) -> bool:
    return abs(a - b) < 1e-6


def test_an_npz_file_searched_end_to_end(tmp_path):
    npz_file(tmp_path / "d.npz", 20, "NHWC")
    proc = cli("run", "--dataset", "npz", "--data-dir", "d.npz", *TINY, "--name", "n", cwd=tmp_path, check=0)
    db = tmp_path / "runs" / "n.db"
    assert "images: npz " in proc.stderr and "150 train and 50 test, 1x8x8, 10 classes" in proc.stderr
    assert sqlite3.connect(db).execute("select test_images from pick").fetchone() == (50,)
    x, y = api.load_images(db, "train")
    assert x.shape == (150, 1, 8, 8) and abs(float(x.mean())) < 1e-3  # the training split's own mean
    assert torch.equal(y, torch.from_numpy(digits(20)[1][np.arange(200) % 4 != 0]))


# -- bad input ----------------------------------------------------------------------------------------------
def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["smash-tui", *args])
        try:
            smash_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue()


def make(tmp_path, what: str) -> None:
    """The bad inputs, each in tmp_path/bad (a folder) or tmp_path/bad.npz."""
    bad, x, y = tmp_path / "bad", *digits(10)
    if what == "empty":
        bad.mkdir()
    elif what == "one-class":
        image_folder(bad, 10, classes=1)
    elif what == "no-images":
        image_folder(bad, 10, classes=2)
        (bad / "zebra").mkdir()
        (bad / "zebra" / "notes.txt").write_text("todo")
    elif what == "corrupt":
        image_folder(bad, 10, classes=3)
        (bad / CLASSES[1] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        (bad / CLASSES[2] / "empty.jpg").write_bytes(b"")
    elif what in ("differ", "no-test"):
        image_folder(bad, 10, classes=3, split=True)
        if what == "differ":
            os.rename(bad / "test" / CLASSES[2], bad / "test" / "cat")
        else:
            for f in (bad / "test").rglob("*.png"):
                f.unlink()
            for d in sorted((bad / "test").iterdir()):
                d.rmdir()
            (bad / "test").rmdir()
    elif what == "tiny-class":
        image_folder(bad, 10, classes=2)
        write_image(bad / "lonely" / "0.png", x[0])
    elif what == "too-few":
        image_folder(bad, 10, classes=2)
    elif what.startswith("npz-"):
        kind = what[4:]
        arrays = {
            "missing": dict(y_test=None), "dtype": dict(x_train=np.zeros((10, 8, 8), bool)),
            "lengths": dict(y_train=y[:7]), "negative": dict(y_train=np.r_[-1, y[1:75]]),
            "range": dict(y_test=np.full(25, 12)), "nan": dict(x_test=np.full((25, 8, 8), np.nan)),
            "shape": dict(x_train=np.zeros((75, 64), np.uint8)), "float-range": dict(x_test=np.full((25, 8, 8), 3.0)),
            "labels-float": dict(y_train=y[np.arange(100) % 4 != 0].astype(float)), "small": dict(
                x_train=np.zeros((75, 4, 4), np.uint8), x_test=np.zeros((25, 4, 4), np.uint8)),
        }[kind]
        npz_file(tmp_path / "bad.npz", 10, **arrays)
    elif what == "not-npz":
        (tmp_path / "bad.npz").write_text("hello")
    elif what == "two-npz":
        bad.mkdir()
        npz_file(bad / "a.npz", 2)
        npz_file(bad / "b.npz", 2)


FOLDER = ["run", "--dataset", "folder", "--data-dir", "bad", "--headless"]
NPZ = ["run", "--dataset", "npz", "--data-dir", "bad.npz", "--headless"]


@pytest.mark.parametrize("what, args, fragments", [
    ("", FOLDER, ["bad is not a folder", "one folder of images per class"]),
    ("empty", FOLDER, ["bad holds no class folders"]),
    ("one-class", FOLDER, ["holds one class folder (digit0)", "two or more"]),
    ("no-images", FOLDER, ["class folder", "zebra holds no images (1 other files)"]),
    ("corrupt", FOLDER, ["2 of 32 images in", "cannot be read: digit1/broken.png (", "digit2/empty.jpg (",
                         "--skip-bad"]),
    ("differ", FOLDER, ["test/ has other classes than train/: lacks digit2; has cat that train/ lacks"]),
    ("no-test", FOLDER, ["holds train/ but not test/"]),
    ("tiny-class", FOLDER, ["class lonely has 1 readable image(s), too few to hold out 20% for the test split"]),
    ("too-few", FOLDER, ["16 training images are too few to hold out 3 for SMASH scores (--val-size) and train "
                         "on batches of 50"]),
    ("too-few", [*FOLDER, "--test-fraction", "1.5"], ["--test-fraction is a fraction in (0, 1), got 1.5"]),
    ("too-few", [*FOLDER, "--image-size", "4"], ["--image-size must be 8 to 96 px, got 4"]),
    ("", ["run", "--dataset", "folder", "--headless"], ["--dataset folder needs --data-dir PATH"]),
    ("", ["run", "--image-size", "16", "--headless"], ["--image-size, --test-fraction and --skip-bad apply to"]),
    ("npz-missing", NPZ, ["bad.npz lacks y_test", "x_train, y_train, x_test and y_test"]),
    ("npz-dtype", NPZ, ["x_train is of type bool"]),
    ("npz-lengths", NPZ, ["x_train holds 75 images but y_train 7 labels"]),
    ("npz-negative", NPZ, ["y_train holds negative label -1"]),
    ("npz-range", NPZ, ["y_test holds label 12 but y_train's labels are 0..9"]),
    ("npz-nan", NPZ, ["x_test holds NaN or infinite values"]),
    ("npz-shape", NPZ, ["x_train has shape (75, 64): not images"]),
    ("npz-float-range", NPZ, ["x_test holds floats from 3 to 3; float images must lie in 0..1"]),
    ("npz-labels-float", NPZ, ["y_train is float64 of shape (75,); labels are whole numbers"]),
    ("npz-small", NPZ, ["holds 4x4 px images; the search takes square images of 8 to 96 px"]),
    ("npz-missing", [*NPZ, "--skip-bad"], ["--test-fraction and --skip-bad apply to --dataset folder"]),
    ("not-npz", NPZ, ["bad.npz is not a readable .npz file"]),
    ("two-npz", ["run", "--dataset", "npz", "--data-dir", "bad", "--headless"], ["holds 2 .npz files"]),
])
def test_bad_images_are_one_line_and_nothing_is_made(tmp_path, monkeypatch, what, args, fragments):
    make(tmp_path, what)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(*args)
    assert code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("smash-tui: error: ") and not any(x.startswith("smash-tui") for x in lines[:-1])
    for f in fragments:
        assert f in lines[-1], lines[-1]
    assert not list(tmp_path.glob("runs/*.db")) and not [p for p in tmp_path.glob("runs/*") if p.is_dir()]


@pytest.mark.parametrize("args, fragment", [(["--epochs", "0"], "--epochs must be positive"),
                                            (["--device", "tpu"], "unknown device 'tpu'"),
                                            (["--db", "runs/taken.db"], "runs/taken.db already exists")])
def test_other_options_are_checked_before_any_image_is_decoded(tmp_path, monkeypatch, args, fragment):
    image_folder(tmp_path / "png", 4)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "taken.db").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli("run", "--dataset", "folder", "--data-dir", "png", "--headless", *args)
    assert code != 0 and err.count("\n") == 1 and fragment in err  # the one line: nothing decoded before it
    assert not list((tmp_path / "runs").glob("images-*.npz"))


def test_npz_image_size_is_the_files_own(tmp_path, monkeypatch):
    npz_file(tmp_path / "d.npz", 10)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli("run", "--dataset", "npz", "--data-dir", "d.npz", "--image-size", "16", "--headless")
    assert code != 0 and "holds 8 px images, used as they are: leave out --image-size 16" in err.splitlines()[-1]


def test_bad_images_for_final_leave_the_run_unchanged(tmp_path, run_copy):
    make(tmp_path, "corrupt")
    before = run_copy.read_bytes()
    arch = sqlite3.connect(run_copy).execute("select arch_id from leaderboard limit 1").fetchone()[0]
    proc = cli("final", run_copy, "--arch", arch, "--dataset", "folder", "--data-dir", tmp_path / "bad", cwd=tmp_path)
    assert proc.returncode != 0 and proc.stderr.startswith("decode 32/32 images (")  # progress, then the one line
    proc.stderr = proc.stderr.split("\n", 1)[1]
    one_line_error(proc, "2 of 32 images in", "--skip-bad")
    assert run_copy.read_bytes() == before
    assert api.class_names(run_copy) == [str(d) for d in range(10)]  # a built-in dataset's labels, as text


def said_before_the_search(folder, *args: str) -> list[str]:
    """stderr of `run --dataset folder` on `folder`, stopped right after the images were read by a held-out split
    larger than any folder here (the test's way to see what reading said, without a search)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder.parent)
        code, err = run_cli("run", "--dataset", "folder", "--data-dir", folder.name, "--val-size", "100000",
                            "--headless", *args)
    lines = err.strip().splitlines()
    assert code != 0 and "too few to hold out 100,000" in lines[-1] and "Traceback" not in err
    assert not list(folder.parent.glob("runs/*.db"))
    return lines[:-1]


def test_skip_bad_leaves_unreadable_images_out_and_non_images_are_counted(tmp_path):
    make(tmp_path, "corrupt")
    (tmp_path / "bad" / "README.txt").write_text("about these images")
    (tmp_path / "bad" / CLASSES[0] / "labels.csv").write_text("a,b")
    lines = said_before_the_search(tmp_path / "bad", "--skip-bad")
    assert "images: ignored 2 files that are not PNG, JPEG, BMP or WebP" in lines
    assert any(s.startswith("images: left out 2 unreadable images (--skip-bad): digit1/broken.png (") for s in lines)
    assert any(s.startswith("images: folder ") and ": 24 train and 6 test, 1x8x8, 3 classes" in s for s in lines)


def test_mixed_sizes_are_said_once(tmp_path):
    x, _ = digits(4)
    for i in range(4):
        write_image(tmp_path / "d" / "a" / f"{i}.png", x[i], scale=1 + i % 2)
        write_image(tmp_path / "d" / "b" / f"{i}.png", x[i + 4], scale=3)
    lines = said_before_the_search(tmp_path / "d")
    assert [s for s in lines if "resized" in s] == ["images: of 3 sizes (8x8, 16x16, 24x24) resized to 8x8 (shorter "
                                                    "side scaled, then center-cropped)"]


def test_a_truncated_or_foreign_cache_is_decoded_again_and_said(tmp_path):
    image_folder(tmp_path / "png", 4)
    image_folder(tmp_path / "other", 5)
    first = said_before_the_search(tmp_path / "png")
    assert first[0].startswith("decode 40/40 images (")
    assert any("decoded before" in s for s in said_before_the_search(tmp_path / "png"))
    cache = next((tmp_path / "runs").glob("images-*.npz"))
    cache.write_bytes(cache.read_bytes()[:200])
    lines = said_before_the_search(tmp_path / "png")
    assert lines[0].startswith(f"images: {cache.name} is unreadable (") and lines[0].endswith("): decoding again")
    assert lines[1].startswith("decode 40/40 images (")
    said_before_the_search(tmp_path / "other")
    foreign = [p for p in (tmp_path / "runs").glob("images-*.npz") if p != cache][0]
    cache.write_bytes(foreign.read_bytes())
    lines = said_before_the_search(tmp_path / "png")
    assert lines[0] == f"images: {cache.name} was made from another folder or other options: decoding again"
    assert lines[1].startswith("decode 40/40 images (")


@settings(FEW, max_examples=25)
@given(st.just({}) | st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "class_names"]),
                                     arrays(), max_size=3), bases)
def test_any_npz_through_the_entry_point_is_one_line_and_makes_nothing(tmp_path_factory, contents, base):
    """A held-out split larger than any file here ends the valid ones after their images were read: every example
    ends in one line, and none leaves a results file."""
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "d.npz", **{**base_arrays(folder, base), **contents})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        code, err = run_cli("run", "--dataset", "npz", "--data-dir", "d.npz", "--val-size", "100000", "--headless")
    assert code != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("smash-tui: error: ")
    assert not list(folder.glob("runs/*.db"))


@settings(FEW, max_examples=25)
@given(trees, st.booleans(), st.booleans())
def test_any_folder_tree_through_the_entry_point_is_one_line_and_makes_nothing(tmp_path_factory, tree, split,
                                                                               skip_bad):
    """As for npz files: every tree ends in one line (its mistake, or the held-out split too large for it) and
    leaves no results file."""
    folder = tmp_path_factory.mktemp("tree")
    build_tree(folder / "images", tree, split)
    (folder / "images").mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        code, err = run_cli("run", "--dataset", "folder", "--data-dir", "images", "--val-size", "100000",
                            "--headless", *(["--skip-bad"] if skip_bad else []))
    assert code != 0 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("smash-tui: error: ")
    assert not list(folder.glob("runs/*.db"))
