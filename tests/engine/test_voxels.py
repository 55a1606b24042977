"""ModelNet10 voxel grids (smash_engine/voxels.py): both on-disk layouts, batching, and the 3-D transfer."""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from smash_engine import store, studies
from smash_engine.config import make_config
from smash_engine.data import dataset_info, load_dataset
from smash_engine.encoding import check_in_space
from smash_engine.errors import ConfigError, DatasetError, InvalidArchitecture
from smash_engine.space import Architecture, space_preset
from smash_engine.transfer import transfer_final
from smash_engine.voxels import MODELNET10_CLASSES, VoxelData, read_off, shift_flip, voxelise
from smash_tui.cli import app

CPU = torch.device("cpu")
INFO = dataset_info("modelnet10")
CUBE = """OFF
8 6 0
0 0 0
2 0 0
2 2 0
0 2 0
0 0 2
2 0 2
2 2 2
0 2 2
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 3 0 4 7
"""


def write_rot24(root: Path, n_train: int, n_test: int, rotations: int = 24) -> None:
    """The authors' layout: modelnet10_rot24_{train,test}.npz with data (N, R, 32, 32, 32) and labels."""
    g = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        shape = (n, rotations, 32, 32, 32) if rotations else (n, 32, 32, 32)
        np.savez_compressed(root / f"modelnet10_rot24_{split}.npz", data=g.random(shape) < 0.05,
                            labels=np.arange(n) % 10)


def test_off_reader_fans_polygons_and_accepts_a_header_run_into_the_counts(tmp_path: Path) -> None:
    (tmp_path / "a.off").write_text(CUBE)
    (tmp_path / "b.off").write_text(CUBE.replace("OFF\n8 6 0", "OFF8 6 0"))
    for name in ("a.off", "b.off"):
        verts, tris = read_off(tmp_path / name)
        assert verts.shape == (8, 3) and tris.shape == (12, 3)  # six quads -> twelve triangles
        assert tris.min() == 0 and tris.max() == 7
    (tmp_path / "bad.off").write_text("OFF\n8 6 0\n0 0")
    with pytest.raises(DatasetError, match="bad.off is corrupt"):
        read_off(tmp_path / "bad.off")


def test_voxelise_marks_the_surface_and_turns_it_about_the_vertical_axis(tmp_path: Path) -> None:
    (tmp_path / "cube.off").write_text(CUBE)
    grids = voxelise(read_off(tmp_path / "cube.off"))
    assert grids.shape == (12, 32, 32, 32) and grids.dtype == np.uint8 and set(np.unique(grids)) == {0, 1}
    g0 = grids[0]
    assert g0[16, 16, 16] == 0  # hollow: only the surface is marked
    zs = np.nonzero(g0.any((0, 1)))[0]
    assert zs.max() - zs.min() + 1 == pytest.approx(24 / 2**0.5, abs=1.5)  # side = 24 / diagonal-to-side
    # a quarter turn (view 3 of 12) maps the cube onto itself: the same voxels, up to boundary rounding
    quarter = np.rot90(g0, 1, axes=(0, 1))
    iou = (grids[3] & quarter).sum() / (grids[3] | quarter).sum()
    assert iou > 0.85
    # an eighth of a turn differs (the corners stick out diagonally)
    assert (grids[1] != g0).sum() > 100


def test_reads_the_authors_npz_keeping_every_second_rotation(tmp_path: Path) -> None:
    write_rot24(tmp_path / "mn", 6, 3)
    ds = load_dataset("modelnet10", tmp_path / "mn")
    assert ds.train_x.shape == (6, 12, 32, 32, 32) and ds.test_x.shape == (3, 12, 32, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and set(ds.train_x.unique().tolist()) == {0, 1}
    with np.load(tmp_path / "mn" / "modelnet10_rot24_train.npz") as z:
        assert np.array_equal(ds.train_x.numpy(), z["data"][:, ::2].astype(np.uint8))
        assert np.array_equal(ds.train_y.numpy(), z["labels"])
    write_rot24(tmp_path / "one", 4, 2, rotations=0)  # a single orientation, (N, 32, 32, 32)
    assert load_dataset("modelnet10", tmp_path / "one").train_x.shape == (4, 1, 32, 32, 32)


def test_missing_or_corrupt_modelnet_gives_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="modelnet10_rot24_.*pass --data-dir"):
        load_dataset("modelnet10", tmp_path)
    write_rot24(tmp_path, 2, 2)
    (tmp_path / "modelnet10_rot24_test.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="modelnet10_rot24_test.npz is corrupt"):
        load_dataset("modelnet10", tmp_path)
    np.savez(tmp_path / "modelnet10_rot24_test.npz", data=np.zeros((2, 24, 16, 16, 16)), labels=[0, 1])
    with pytest.raises(DatasetError, match=r"expected \(N, R, 32, 32, 32\)"):
        load_dataset("modelnet10", tmp_path)


def test_princeton_meshes_are_voxelised_once_and_cached(tmp_path: Path) -> None:
    root = tmp_path / "ModelNet10"
    for label, cls in enumerate(MODELNET10_CLASSES):
        for split, n in (("train", 2), ("test", 1)):
            (root / cls / split).mkdir(parents=True)
            for k in range(n):  # boxes of a different height per class
                (root / cls / split / f"{cls}_{k:04d}.off").write_text(CUBE.replace(" 2\n", f" {label + 1}\n"))
    ds = load_dataset("modelnet10", tmp_path)
    assert ds.train_x.shape == (20, 12, 32, 32, 32) and ds.test_x.shape == (10, 12, 32, 32, 32)
    assert ds.train_y.tolist() == [c for c in range(10) for _ in range(2)]
    cache = root / "modelnet10_voxels_train.npz"
    assert cache.exists() and (root / "modelnet10_voxels_test.npz").exists()
    shutil.rmtree(root / "chair")  # the cache is what is read from now on
    again = load_dataset("modelnet10", tmp_path)
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)


def test_shift_flip_equals_pad_slice_and_mirror() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 2, (3, 6, 6, 6), generator=g, dtype=torch.uint8)
    offsets = torch.tensor([[0, 4, 2], [2, 2, 2], [4, 0, 1]])
    flips = torch.tensor([[True, False], [False, False], [True, True]])
    out = shift_flip(x, 2, offsets, flips)
    for b in range(3):
        ref = np.pad(x[b].numpy(), 2)
        for axis in (0, 1):
            if flips[b, axis]:
                ref = np.flip(ref, axis)
        # a mirror of the padded grid is a mirror of the grid (the padding is symmetric), then the window
        i, j, k = offsets[b].tolist()
        i = 4 - i if flips[b, 0] else i
        j = 4 - j if flips[b, 1] else j
        assert np.array_equal(out[b].numpy(), ref[i:i + 6, j:j + 6, k:k + 6]), b
    assert torch.equal(shift_flip(x, 2, torch.full((3, 3), 2), torch.zeros(3, 2, dtype=torch.bool)), x)


def test_voxel_batches_are_seeded_one_view_each_and_eval_sees_every_view() -> None:
    n, views = 10, 4
    x = torch.zeros(n, views, 32, 32, 32, dtype=torch.uint8)
    for i in range(n):
        for v in range(views):
            x[i, v, 10:22, 10:22, 10:22] = 1 if (i + v) % 2 else 0
            x[i, v, 0, 0, v] = 1  # marks the view (a corner the shift may move off the grid)
    data = VoxelData(x, torch.arange(n), INFO, CPU)
    a = list(data.epoch_batches(4, torch.Generator().manual_seed(1)))
    b = list(data.epoch_batches(4, torch.Generator().manual_seed(1)))
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b, strict=True))
    xb, yb = a[0]
    assert xb.shape == (4, 1, 32, 32, 32) and set(xb.unique().tolist()) <= {-1.0, 5.0}  # the authors' 6x - 1
    plain = next(data.epoch_batches(4, torch.Generator().manual_seed(1), augment=False))
    for img, label in zip(*plain, strict=True):
        matches = [v for v in range(views) if torch.equal(data.normalize(x[label, v]), img[0])]
        assert matches, "each training grid is one of its object's stored views"
    batches = list(data.eval_batches(8 * views * 3))  # 3 objects per batch
    assert [len(y) for _, y in batches] == [3, 3, 3, 1]
    assert batches[0][0].shape == (3, views, 1, 32, 32, 32)
    assert torch.equal(batches[0][0][1, 2, 0], data.normalize(x[1, 2]))


def test_3d_architectures_round_trip_and_keep_2d_ids_unchanged() -> None:
    from smash_engine.sampler import sample_architecture

    space = space_preset("quick")
    arch = sample_architecture(space, __import__("random").Random(1))
    assert "spatial_dims" not in arch.to_dict()
    vox = dataclasses.replace(arch, spatial_dims=3)
    assert vox.id != arch.id and Architecture.from_json(vox.to_json()) == vox
    with pytest.raises(InvalidArchitecture, match="SMASH networks are 2-D"):
        check_in_space(vox, space)
    with pytest.raises(InvalidArchitecture, match="spatial_dims 4"):
        Architecture.from_json(arch.to_json().replace('"blocks"', '"spatial_dims":4,"blocks"'))


def test_search_on_modelnet10_is_refused_with_the_way_to_use_it() -> None:
    with pytest.raises(ConfigError, match="smash-tui final DB --arch ID --dataset modelnet10"):
        make_config("quick", dataset="modelnet10")


def test_transfer_to_modelnet10_trains_the_3d_variant_through_the_cli(run_db: Path, tmp_path: Path) -> None:
    write_rot24(tmp_path / "mn", 12, 4, rotations=2)  # 2 stored rotations: one view each, kept small
    with store.connect_reader(run_db) as conn:
        arch_id = store.leaderboard(conn, 1)[0]["arch_id"]
    args = ["final", str(run_db), "--arch", arch_id, "--dataset", "modelnet10", "--data-dir", str(tmp_path / "mn"),
            "--epochs", "1", "--batch", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "modelnet10 epoch 1/1" in result.output and "on modelnet10: test error" in result.output
    with store.connect_reader(run_db) as conn:
        (row,) = [r for r in store.finals(conn, 1) if r["dataset"] == "modelnet10"]
        rebuilt = Architecture.from_json(store.get_arch(conn, row["arch_id"])["spec_json"])
        orig = Architecture.from_json(store.get_arch(conn, arch_id)["spec_json"])
    assert row["status"] == "done" and 0 <= row["test_error"] <= 1 and Path(row["weights_path"]).exists()
    assert rebuilt.spatial_dims == 3 and rebuilt.blocks == orig.blocks and rebuilt.image_size == 32
    exe = shutil.which("smash-tui", path=str(Path(sys.executable).parent)) or shutil.which("smash-tui")
    bad = subprocess.run([exe, *args[:-2], "--batch", "0"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "smash-tui: error: --batch must be positive, got 0"]
    ctx = studies.open_run(run_db, "cpu")
    try:  # the same transfer again is already done: nothing retrained
        assert transfer_final(ctx, run_db.with_suffix(""), arch_id, "modelnet10", str(tmp_path / "mn"), 1,
                              report=lambda _: None, batch=4) == row["id"]
    finally:
        ctx.close()
