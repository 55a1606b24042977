"""ModelNet10 voxel grids: reading them from disk, and batching them on the device.

Two on-disk layouts are read, both into uint8 occupancy (N, V, 32, 32, 32), V orientations per object:
- the voxelised release used by the paper's authors (VRN, Brock et al. 2016):
  `modelnet10_rot24_{train,test}.npz`, each with `data` (N, 24, 32, 32, 32) and `labels` (N,); any array
  of (N, R, 32, 32, 32) or (N, 32, 32, 32) under those keys is taken;
- Princeton's own release of meshes, `ModelNet10/CLASS/{train,test}/*.off` (z up), voxelised here once
  (12 rotations about z) and cached beside it as `modelnet10_voxels_{train,test}.npz` in the layout above,
  so later runs read that.

Like the authors' code, training sees one of 12 orientations per object (every second of 24) chosen at
random, mirrored with probability 0.2 on each of the two horizontal axes and shifted by up to 2 voxels;
evaluation averages the logits over all 12. Where we differ: the shift pads with empty space instead
of wrapping around (`np.roll` moved one side of an object to the other), and it is symmetric, [-2, 2]
rather than [-2, 1]; the training set is not truncated to a multiple of the batch.
"""

from __future__ import annotations

import math
import os
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from smash_engine.batching import OnDevice
from smash_engine.errors import ConfigError, DatasetError, one_line

GRID = 32  # voxels per side, as in every ModelNet voxel release
VIEWS = 12  # orientations trained on and averaged over at test time
FLIP_P = 0.2  # the authors' probability of mirroring each horizontal axis
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
                      "toilet")
_FIT = 24  # an object's longest side after voxelising, in voxels: a margin of 4 each side, as in VoxNet
_POINTS_PER_VOXEL = 8  # surface samples per voxel face of area, so thin parts still mark their voxels

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_modelnet10(root: Path, cache_home: Callable[[], Path]) -> Arrays:
    """(train_x, train_y, test_x, test_y), x uint8 0/1 (N, V, 32, 32, 32), from `root` or a folder under it.

    Meshes in a read-only folder are voxelised into `cache_home()`/modelnet10 (`data.default_data_dir`).
    """
    found = _find_npz(root)
    if found is None:
        meshes = _find_meshes(root)
        if meshes is None:
            raise DatasetError(
                f"dataset 'modelnet10' not found in {root} or its subfolders (looked for "
                "modelnet10_rot24_{train,test}.npz, or the ModelNet10/CLASS/{train,test}/*.off meshes); "
                "pass --data-dir DIR holding them")
        found = _voxelise_release(meshes, cache_home)
    (tx, ty), (vx, vy) = (_read_npz(p) for p in found)
    return tx, ty, vx, vy


def _find_npz(root: Path) -> tuple[Path, Path] | None:
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        for stem in ("modelnet10_rot24", "modelnet10_voxels"):
            train, test = d / f"{stem}_train.npz", d / f"{stem}_test.npz"
            if train.is_file() and test.is_file():
                return train, test
    return None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path) as z:
            x, y = z["data"], np.asarray(z["labels"]).astype(np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError.corrupt(path, one_line(e)) from e
    if x.ndim == 6 and x.shape[2] == 1:  # (N, R, 1, D, H, W): a channel axis of one
        x = x[:, :, 0]
    if x.ndim == 4:
        x = x[:, None]
    if x.ndim != 5 or x.shape[2:] != (GRID,) * 3 or len(x) != len(y):
        raise DatasetError.corrupt(path, f"data is {x.shape} with {len(y)} labels, expected "
                                         f"(N, R, {GRID}, {GRID}, {GRID}) and N labels")
    step = max(1, x.shape[1] // VIEWS)  # the authors' files hold 24 rotations, of which they use every 2nd
    return np.ascontiguousarray(x[:, ::step] != 0).view(np.uint8), y


# -- Princeton's mesh release --------------------------------------------------------------------------
def _find_meshes(root: Path) -> Path | None:
    for d in (root, root / "ModelNet10"):
        if all((d / c / "train").is_dir() and (d / c / "test").is_dir() for c in MODELNET10_CLASSES):
            return d
    return None


def _voxelise_release(d: Path, cache_home: Callable[[], Path]) -> tuple[Path, Path]:
    """Voxelise every mesh once; the cache goes beside the meshes, or in the user cache if that is read-only."""
    out_dir = d if os.access(d, os.W_OK) else cache_home() / "modelnet10"
    out_dir.mkdir(parents=True, exist_ok=True)
    # minutes of silence would look like a hang; this happens once per copy of the meshes
    print(f"voxelising the ModelNet10 meshes in {d} once (a few minutes); the grids go to {out_dir}",
          file=sys.stderr)
    paths = []
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(MODELNET10_CLASSES):
            for f in sorted((d / cls / split).glob("*.off")):
                xs.append(voxelise(read_off(f)))
                ys.append(label)
        if not xs:
            raise DatasetError(f"{d} holds no {split} meshes (*.off) under CLASS/{split}/; replace the files")
        path = out_dir / f"modelnet10_voxels_{split}.npz"
        tmp = path.with_name(path.stem + ".tmp.npz")  # written whole, then renamed: never a half cache
        np.savez_compressed(tmp, data=np.stack(xs), labels=np.asarray(ys, np.int64))
        os.replace(tmp, path)
        paths.append(path)
    return paths[0], paths[1]


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, triangles (T, 3) int64) of an OFF mesh; polygons are fanned into triangles.

    ModelNet's files sometimes run the header into the counts ("OFF490 518 0"), which is accepted.
    """
    try:
        tokens = path.read_text().split()
        head = tokens[0]
        if not head.startswith("OFF"):
            raise ValueError("no OFF header")
        rest = tokens[1:] if head == "OFF" else [head[3:], *tokens[1:]]
        n_v, n_f = int(rest[0]), int(rest[1])
        body = np.asarray(rest[3:], dtype=np.float64)
        verts = body[: 3 * n_v].reshape(n_v, 3)
        at = 3 * n_v
        flat = body[at:at + 4 * n_f]
        if len(flat) == 4 * n_f and (flat[::4] == 3).all():  # all triangles, as in nearly every ModelNet file
            tris, at = flat.reshape(n_f, 4)[:, 1:].astype(np.int64), at + 4 * n_f
        else:
            faces = []
            for _ in range(n_f):
                k = int(body[at])
                poly = body[at + 1:at + 1 + k].astype(np.int64)
                faces += [(poly[0], poly[i], poly[i + 1]) for i in range(1, k - 1)]
                at += 1 + k
            tris = np.asarray(faces, np.int64).reshape(-1, 3)
        if len(verts) != n_v or at > len(body) or (tris.size and (tris.min() < 0 or tris.max() >= n_v)):
            raise ValueError("counts do not match the body")
    except (OSError, UnicodeDecodeError, ValueError, IndexError) as e:
        raise DatasetError.corrupt(path, f"not a readable OFF mesh: {e}") from e
    return verts, tris


def voxelise(mesh: tuple[np.ndarray, np.ndarray], views: int = VIEWS) -> np.ndarray:
    """uint8 0/1 (views, 32, 32, 32): the mesh's surface, turned 360/views degrees about z between views.

    The mesh is centred and scaled so that its longest side spans `_FIT` voxels whatever the turn (the
    horizontal extent is measured as a diameter about the centre). Deterministic: the surface samples come
    from a generator seeded by the mesh's size.
    """
    verts, tris = mesh
    out = np.zeros((views, GRID, GRID, GRID), np.uint8)
    if not len(verts):
        return out
    lo, hi = verts.min(0), verts.max(0)
    centre = (lo + hi) / 2
    v = verts - centre
    extent = max(2 * float(np.sqrt((v[:, :2] ** 2).sum(1)).max()), float(hi[2] - lo[2]), 1e-12)
    v = v * (_FIT / extent)
    points = [v]
    if len(tris):
        a, b, c = v[tris[:, 0]], v[tris[:, 1]], v[tris[:, 2]]
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        n = int(min(2_000_000, max(1000, area.sum() * _POINTS_PER_VOXEL)))
        gen = np.random.default_rng([len(verts), len(tris)])
        pick = gen.choice(len(tris), n, p=area / area.sum()) if area.sum() > 0 else gen.integers(0, len(tris), n)
        r1, r2 = np.sqrt(gen.random(n))[:, None], gen.random(n)[:, None]
        points.append((1 - r1) * a[pick] + r1 * (1 - r2) * b[pick] + r1 * r2 * c[pick])
    p = np.concatenate(points)
    for k in range(views):
        t = 2 * math.pi * k / views
        cos, sin = math.cos(t), math.sin(t)
        q = np.stack([cos * p[:, 0] - sin * p[:, 1], sin * p[:, 0] + cos * p[:, 1], p[:, 2]], 1)
        idx = np.clip(np.floor(q + GRID / 2), 0, GRID - 1).astype(np.int64)
        out[k, idx[:, 0], idx[:, 1], idx[:, 2]] = 1
    return out


# -- on the device ---------------------------------------------------------------------------------------
class VoxelData(OnDevice):
    """Occupancy grids (N, V, D, H, W) uint8 on the device; the same interface as `data.DeviceData`.

    Training batches are (B, 1, D, H, W), one random orientation per object; evaluation batches are
    (B, V, 1, D, H, W), every orientation, for the caller to average (`train._evaluate` does).
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, info, device: torch.device) -> None:
        assert x_uint8.dim() == 5
        super().__init__(x_uint8, y, info, device)
        self.views = self.x.shape[1]
        # occupancy is 0/1, not 0..255: (x - mean) / std; with the default 1/6, 1/6 that is the authors' 6x - 1
        self._scale, self._shift = 1 / info.std[0], -info.mean[0] / info.std[0]

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return x_uint8.float() * self._scale + self._shift

    def epoch_batches(self, batch_size: int, generator: torch.Generator, start: int = 0, augment: bool = True,
                      drop_last: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch from batch `start` on; every random draw made up front from `generator` (see DeviceData)."""
        n_batches = self.num_batches(batch_size, drop_last)
        if start < 0:
            raise ConfigError(f"start batch must be >= 0, got {start}")
        n, pad = len(self), self.info.pad
        perm = torch.randperm(n, generator=generator)
        view = torch.randint(0, self.views, (n,), generator=generator)
        offsets = torch.full((n, 3), pad)
        flips = torch.zeros((n, 2), dtype=torch.bool)
        if augment:
            offsets = torch.randint(0, 2 * pad + 1, (n, 3), generator=generator)
            flips = torch.rand((n, 2), generator=generator) < FLIP_P
        perm, view, offsets, flips = (t.to(self.device) for t in (perm, view, offsets, flips))

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(start, n_batches):
                part = slice(i * batch_size, (i + 1) * batch_size)
                x = self.x[perm[part], view[part]]  # (B, D, H, W)
                if augment:
                    x = shift_flip(x, pad, offsets[part], flips[part])
                yield self.normalize(x[:, None]), self.y[perm[part]]

        return batches()

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """In order, every orientation. A 32^3 grid holds 32 times the cells of a 32x32 image, so a batch
        takes `batch_size` / 8 grids in all (at least one object): a score batch sized for images fits."""
        per = max(1, batch_size // (8 * self.views))
        n_batches = self.num_batches(per, drop_last=False)
        parts = (slice(i * per, (i + 1) * per) for i in range(n_batches))
        return ((self.normalize(self.x[p][:, :, None]), self.y[p]) for p in parts)


def shift_flip(x: torch.Tensor, pad: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Each grid of x (B, D, H, W) shifted by `offsets` (B, 3) - pad, empty space filling in, and mirrored
    on D and H where `flips` (B, 2); one gather for the whole batch, as `data.crop_flip` does for images."""
    b, d, h, w = x.shape
    if pad:
        x = F.pad(x, (pad,) * 6)
    dev = x.device
    ar_d, ar_h, ar_w = (torch.arange(s, device=dev) for s in (d, h, w))
    i = offsets[:, 0:1] + torch.where(flips[:, 0:1], d - 1 - ar_d, ar_d)  # (B, D)
    j = offsets[:, 1:2] + torch.where(flips[:, 1:2], h - 1 - ar_h, ar_h)  # (B, H)
    k = offsets[:, 2:3] + ar_w  # (B, W)
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    return x[batch, i[:, :, None, None], j[:, None, :, None], k[:, None, None, :]]
