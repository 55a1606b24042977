"""A user's own images (userdata.py): real folders of PNG and JPEG files and real .npz files, read, checked,
cached and read back; and property tests (Hypothesis) over npz contents and folder trees."""

import os
import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from smash_engine import imagefolder
from smash_engine.data import load_dataset
from smash_engine.errors import SmashError
from smash_engine.imagefolder import decode_one
from smash_engine.userdata import channel_stats, prepare, read
from tests.imagesets import CLASSES, TREE_FILES, build_tree, digits, image_folder, npz_file, write_image


def test_a_grey_png_folder_is_read_with_a_seeded_test_split_per_class(tmp_path):
    said = []
    spec = prepare("folder", image_folder(tmp_path / "png", 20), image_size=8, cache_dir=tmp_path / "runs",
                   say=said.append)
    assert (spec["channels"], spec["image_size"], spec["num_classes"]) == (1, 8, 10)
    assert spec["class_names"] == CLASSES
    assert (spec["n_train"], spec["n_test"]) == (160, 40)  # 20% of each class's 20
    tx, ty, vx, vy = read(spec)
    assert tx.shape == (160, 1, 8, 8) and tx.dtype == np.uint8 and vx.shape == (40, 1, 8, 8)
    assert np.bincount(vy).tolist() == [4] * 10 and np.bincount(ty).tolist() == [16] * 10
    # PNG is lossless and the images are 8 px already: the pixels are the digits' own
    x, y = digits(20)
    assert {bytes(a) for a in tx[:, 0]} | {bytes(a) for a in vx[:, 0]} == {bytes(a) for a in x}
    assert "held out 40 of 200 (20% of each class, seed 0)" in " ".join(said)
    # the statistics are the training split's, exactly
    assert spec["mean"][0] == pytest.approx(tx.mean() / 255, abs=1e-6)
    assert spec["std"][0] == pytest.approx(tx.std() / 255, abs=1e-6)
    # the split never moves: the same folder gives the same test images
    again = prepare("folder", tmp_path / "png", image_size=8, cache_dir=tmp_path / "other")
    assert np.array_equal(read(again)[2], vx)


def test_colour_jpeg_in_train_and_test_folders_resized(tmp_path):
    said = []
    root = image_folder(tmp_path / "jpg", 8, ext=".jpg", colour=True, split=True, scale=3)  # 24 px
    spec = prepare("folder", root, image_size=8, cache_dir=tmp_path, say=said.append)
    assert (spec["channels"], spec["image_size"], spec["n_train"], spec["n_test"]) == (3, 8, 60, 20)
    assert [s for s in said if "resized" in s] == ["images: of 24x24 px resized to 8x8 (shorter side scaled, then "
                                                   "center-cropped)"]
    tx = read(spec)[0]
    assert tx.shape == (60, 3, 8, 8)
    assert abs(float(tx[:, 2].mean()) - (255 - float(tx[:, 0].mean()))) < 8  # the blue channel is 255 - grey


def test_grey_and_colour_mixed_become_three_channels_and_val_joins_train(tmp_path):
    x, _ = digits(4)
    for i in range(4):
        write_image(tmp_path / "d" / "train" / "a" / f"{i}.png", x[i])
        write_image(tmp_path / "d" / "train" / "b" / f"{i}.bmp", x[i + 4], colour=True)
        write_image(tmp_path / "d" / "val" / "a" / f"{i}.webp", x[i])
        write_image(tmp_path / "d" / "val" / "b" / f"{i}.png", x[i])
    write_image(tmp_path / "d" / "test" / "a" / "t.png", x[0])
    write_image(tmp_path / "d" / "test" / "b" / "t.png", x[1])
    spec = prepare("folder", tmp_path / "d", image_size=8, cache_dir=tmp_path)
    assert (spec["channels"], spec["n_train"], spec["n_test"], spec["class_names"]) == (3, 16, 2, ["a", "b"])
    tx = read(spec)[0]
    grey = tx[(tx[:, 0] == tx[:, 1]).all((1, 2))]
    assert len(grey) == 12 and (grey[:, 0] == grey[:, 2]).all()  # a grey image is repeated over the three channels


def test_center_crop_keeps_the_middle(tmp_path):
    img = np.zeros((8, 16), np.uint8)  # 16 wide, 8 high: the middle 8 columns survive
    img[:, 4:12] = 200
    Image.fromarray(img).save(tmp_path / "wide.png")
    x, why, size = decode_one(str(tmp_path / "wide.png"), 8)
    assert why == "" and size == (16, 8) and (x == 200).all()


def test_the_process_pool_decodes_as_this_process_does(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "jpg", 3, ext=".jpg", colour=True, scale=2)
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    (tmp_path / "bad.png").write_bytes(b"nope")
    files.insert(5, str(tmp_path / "bad.png"))
    here = imagefolder.decode_all(files, 8, workers=1)
    monkeypatch.setattr(imagefolder, "POOL_FROM", 0)
    seen: list[tuple[int, int]] = []
    pooled = imagefolder.decode_all(files, 8, lambda done, total, rate: seen.append((done, total)), workers=2)
    assert [(x.tobytes(), why[:20], size) for x, why, size in pooled] == \
        [(x.tobytes(), why[:20], size) for x, why, size in here]
    assert here[5][1].startswith("UnidentifiedImageError") and seen[-1] == (31, 31)


def test_channel_stats_are_exact():
    x = np.random.RandomState(1).randint(0, 256, (7, 3, 5, 5)).astype(np.uint8)
    mean, std = channel_stats(x)
    assert mean == pytest.approx((x / 255).mean((0, 2, 3)), abs=1e-6)
    assert std == pytest.approx((x / 255).std((0, 2, 3)), abs=1e-6)
    assert channel_stats(np.full((2, 1, 8, 8), 7, np.uint8))[1] == [1.0]  # constant: never divided by 0


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts(tmp_path, layout):
    spec = prepare("npz", npz_file(tmp_path / "d.npz", 8, layout), image_size=32)
    assert (spec["channels"], spec["image_size"], spec["num_classes"], spec["n_train"], spec["n_test"]) == \
        (1, 8, 10, 60, 20)
    x, _ = digits(8)
    assert np.array_equal(read(spec)[0][:, 0], x[np.arange(80) % 4 != 0])


def test_npz_float_images_keras_labels_and_class_names(tmp_path):
    x, y = digits(8)
    tr, te = np.arange(80) % 2 == 0, np.arange(80) % 2 == 1
    f = npz_file(tmp_path / "d.npz", 8, x_train=(x[tr] / 255).astype(np.float32)[..., None].repeat(3, 3),
                 y_train=y[tr, None], x_test=x[te, ..., None].repeat(3, 3), y_test=y[te],
                 class_names=np.array([f"c{i}" for i in range(10)]))
    spec = prepare("npz", f, image_size=8)
    assert (spec["channels"], spec["class_names"][:2]) == (3, ["c0", "c1"])
    assert np.array_equal(read(spec)[0][:, 1], x[tr])
    # a folder holding exactly one .npz works too
    assert prepare("npz", tmp_path, image_size=8)["path"] == str(f.resolve())


def test_the_cache_is_reused_without_decoding_and_rebuilt_when_stale(tmp_path, monkeypatch):
    root = image_folder(tmp_path / "png", 6)
    first = prepare("folder", root, image_size=8, cache_dir=tmp_path)
    calls = []
    real = imagefolder.decode_all
    monkeypatch.setattr(imagefolder, "decode_all", lambda *a, **k: calls.append(1) or real(*a, **k))
    said: list[str] = []
    second = prepare("folder", root, image_size=8, cache_dir=tmp_path, say=said.append)
    assert calls == [] and second == first and "decoded before" in said[0]
    assert all(np.array_equal(a, b) for a, b in zip(read(first), read(second), strict=True))
    # another option is another key
    assert prepare("folder", root, image_size=16, cache_dir=tmp_path)["key"] != first["key"]
    assert len(calls) == 1
    # a changed file is another key: decoded again, into another cache
    f = next((root / CLASSES[3]).iterdir())
    write_image(f, np.full((8, 8), 255, np.uint8))
    os.utime(f, ns=(1, 1))
    changed = prepare("folder", root, image_size=8, cache_dir=tmp_path)
    assert len(calls) == 2 and changed["key"] != first["key"] and changed["cache"] != first["cache"]
    # the first run reads its own cache still: the images it trained on, not the changed ones
    assert np.array_equal(read(first)[0], read(second)[0]) and len(calls) == 2
    # ...and refuses to decode the changed folder as if it were its own once that cache is gone
    os.remove(first["cache"])
    with pytest.raises(SmashError, match="changed since this run began"):
        read(first)
    # with the folder gone as well, the message says what would do
    os.rename(root, tmp_path / "elsewhere")
    with pytest.raises(SmashError, match=r"decoded images \(.*\) and its folder .* are both gone: put either back"):
        read(first)


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_a_truncated_or_foreign_cache_is_rebuilt_and_said(tmp_path, damage):
    root = image_folder(tmp_path / "png", 4)
    spec = prepare("folder", root, image_size=8, cache_dir=tmp_path)
    cache = tmp_path / os.path.basename(spec["cache"])
    if damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:300])
    else:
        other = prepare("folder", image_folder(tmp_path / "other", 5), image_size=8, cache_dir=tmp_path / "o")
        cache.write_bytes(open(other["cache"], "rb").read())
    said: list[str] = []
    again = prepare("folder", root, image_size=8, cache_dir=tmp_path, say=said.append)
    assert again["key"] == spec["key"]
    assert ("unreadable" if damage == "truncate" else "another folder or other options") in said[0]
    assert "decoding again" in said[0]
    assert len(read(again)[1]) == spec["n_train"]


def test_load_dataset_of_a_spec_normalises_with_its_own_statistics(tmp_path):
    from smash_engine.data import device_data

    spec = prepare("npz", npz_file(tmp_path / "d.npz", 8), image_size=8)
    ds = load_dataset("npz", None, False, spec)
    assert (ds.info.channels, ds.info.image_size, ds.info.num_classes, ds.info.pad, ds.info.flip) == (1, 8, 10, 1, True)
    x = device_data(ds.train_x, ds.train_y, ds.info, torch.device("cpu"))
    z = x.normalize(x.x)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-2


# -- property tests ------------------------------------------------------------------------------------------
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

dtypes = st.sampled_from([np.uint8, np.int64, np.int8, np.float32, np.float64, np.bool_, np.uint16])
shapes = st.lists(st.integers(0, 12), min_size=0, max_size=5).map(tuple)


@st.composite
def arrays(draw):
    dtype, shape = draw(dtypes), draw(shapes)
    n = int(np.prod(shape)) if shape else 1
    if n > 5000:
        shape, n = (2, 8, 8), 128
    values = draw(st.sampled_from(["small", "byte", "wide", "nan", "unit"]))
    rs = np.random.RandomState(draw(st.integers(0, 2**16)))
    x = {"small": rs.randint(0, 3, n), "byte": rs.randint(0, 256, n), "wide": rs.randint(-300, 300, n),
         "unit": rs.rand(n), "nan": np.where(rs.rand(n) < 0.5, np.nan, 0.5)}[values]
    with np.errstate(invalid="ignore"):
        return np.asarray(x).astype(dtype).reshape(shape)


# a valid npz to start from (images per class, layout, float or uint8), or none
bases = st.none() | st.tuples(st.integers(2, 6), st.sampled_from(["NHW", "NHWC", "NCHW"]), st.booleans())


def base_arrays(folder, base) -> dict:
    if base is None:
        return {}
    n, layout, floats = base
    with np.load(npz_file(folder / "base.npz", n, layout)) as z:
        arrays = {k: z[k] for k in z.files}
    if floats:
        arrays["x_train"] = (arrays["x_train"] / 255).astype(np.float32)
    return arrays


@FEW
@given(st.just({}) | st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "class_names",
                                                      "other"]), arrays(), max_size=3), bases)
def test_npz_contents_give_a_spec_or_one_smash_error(tmp_path, contents, base):
    f = tmp_path / "p.npz"
    np.savez(f, **{**base_arrays(tmp_path, base), **contents})
    try:
        spec = prepare("npz", f, image_size=8)
    except SmashError as e:
        assert "\n" not in str(e) and str(e)
        event("refused")
        return
    event("read")
    tx, ty, vx, vy = read(spec)
    assert tx.dtype == np.uint8 and tx.ndim == 4 and tx.shape[1] in (1, 3) and len(tx) == len(ty) == spec["n_train"]
    assert len(vx) == len(vy) == spec["n_test"] and 0 <= vy.min() and vy.max() < spec["num_classes"]
    assert spec["num_classes"] >= 2 and len(spec["class_names"]) == spec["num_classes"]


file_kinds = st.one_of(st.just("png"), st.sampled_from(TREE_FILES))  # half of them readable, so some trees are
trees = st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=3), st.lists(file_kinds, max_size=7),
                        max_size=4)


@FEW
@given(trees, st.booleans(), st.booleans(), st.floats(0.1, 0.6))
def test_folder_trees_give_a_spec_or_one_smash_error(tmp_path_factory, tree, split, skip_bad, fraction):
    root = tmp_path_factory.mktemp("tree")
    good = build_tree(root, tree, split)
    try:
        spec = prepare("folder", root, image_size=8, test_fraction=fraction, skip_bad=skip_bad,
                       cache_dir=root.parent / (root.name + "-cache"))
    except SmashError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("read")
    assert spec["n_train"] + spec["n_test"] == good
    assert spec["num_classes"] == len(spec["class_names"]) >= 2
    tx, ty, vx, vy = read(spec)
    assert tx.shape[1:] == vx.shape[1:] == (spec["channels"], 8, 8)
    assert np.bincount(ty, minlength=spec["num_classes"]).min() >= 1


def test_a_search_runs_from_its_cache_alone(tmp_path):
    """The engine, its final training and api.load_images read the run's decoded images, not the folder: a
    search finishes (and its images load) with the folder gone."""
    import shutil

    from smash_engine import api
    from smash_engine.config import make_config
    from smash_engine.engine import Engine
    from smash_engine.runs import create_run
    from tests.conftest import TINY

    root = image_folder(tmp_path / "png", 12)
    spec = prepare("folder", root, image_size=8, cache_dir=tmp_path / "runs")
    cfg = make_config("quick", dataset="folder", data_dir=str(root), data=spec, device="cpu", name="c", **TINY)
    assert (cfg.train.val_size, spec["n_train"], spec["n_test"]) == (20, 100, 20)
    db = tmp_path / "runs" / "c.db"
    create_run(db, cfg)
    shutil.rmtree(root)
    assert Engine(db).run() == "done"
    x, y = api.load_images(db, "test")
    assert x.shape == (20, 1, 8, 8) and torch.equal(y, torch.from_numpy(read(spec)[3]))
    assert api.finals(db)[0]["status"] == "done"
