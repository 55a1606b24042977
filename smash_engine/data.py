"""Datasets: the registry of static facts, reading each from disk, the held-out split, and batching.

Owns `DatasetInfo`/`DATASETS` (what a dataset is, known without loading it), `load_dataset` (uint8
(N, C, H, W) tensors read straight from the published file layouts: idx, CIFAR pickles, STL-10
binaries, ImageNet32 npz; torchvision is only used to download), `holdout_split`, and `DeviceData`:
the images stay on the device as uint8, batches are slices of a permutation, and random crop + flip
happen batched on the device, every random draw coming from one `torch.Generator`. ModelNet10's voxel
grids (3-D, for transfer only) are read and batched by `voxels.py` behind the same interface.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from smash_engine.batching import OnDevice
from smash_engine.errors import ConfigError, DatasetError, one_line
from smash_engine.userdata import KINDS as USER_KINDS  # a user's own images, described by a spec a run records
from smash_engine.voxels import VoxelData, read_modelnet10

Tensor = torch.Tensor
Array = np.ndarray
Batch = tuple[Tensor, Tensor]  # (x float32 (B, C, H, W) normalised, y int64 (B,))


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset, available without loading it."""

    name: str
    channels: int  # 1 or 3
    image_size: int  # side in pixels after our preprocessing (28 px idx images are padded to 32)
    num_classes: int
    flip: bool  # a horizontal mirror keeps the label (not for digits)
    pad: int  # zero padding per side for random-crop augmentation, pixels
    mean: tuple[float, ...]  # per channel, 0..1 scale, of the preprocessed training images
    std: tuple[float, ...]
    spatial_dims: int = 2  # 3: voxel grids (N, V, D, H, W), V orientations per object (voxels.py)


DATASETS: dict[str, DatasetInfo] = {
    i.name: i
    for i in (
        DatasetInfo("digits", 1, 8, 10, False, 1, (0.3053,), (0.3759,)),
        # mean/std of the 32 px zero-padded images, hence lower than the usual 28 px figures
        DatasetInfo("mnist", 1, 32, 10, False, 4, (0.1001,), (0.2752,)),
        DatasetInfo("fashion-mnist", 1, 32, 10, True, 4, (0.2190,), (0.3318,)),
        # the same images 2x2-averaged to 16 px: a real dataset a 2-core CPU can search and train on
        DatasetInfo("fashion-mnist16", 1, 16, 10, True, 2, (0.2192,), (0.3134,)),
        DatasetInfo("cifar10", 3, 32, 10, True, 4, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        DatasetInfo("cifar100", 3, 32, 100, True, 4, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        DatasetInfo("stl10", 3, 96, 10, True, 12, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713)),
        DatasetInfo("imagenet32", 3, 32, 1000, True, 4, (0.4811, 0.4575, 0.4078), (0.2605, 0.2533, 0.2683)),
        # occupancy 0/1; mean = std = 1/6 maps it to the authors' {-1, 5}; pad = the random shift in voxels
        DatasetInfo("modelnet10", 1, 32, 10, True, 2, (1 / 6,), (1 / 6,), spatial_dims=3),
    )
}

# Debian's dataset-fashion-mnist package installs the four .gz idx files here
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_TORCHVISION = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "fashion-mnist16": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "stl10": "STL10",
}
_CIFAR = {  # folder, train files, test file, label key, as in the python pickle releases
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}
_DIGITS_TEST = 297  # of sklearn's 1,797 digits, a fixed test split; the other 1,500 train
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass
class Dataset:
    """One dataset in host memory: uint8 (N, C, H, W) images, int64 (N,) labels."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def user_info(spec: dict) -> DatasetInfo:
    """A user's dataset (userdata.py) as recorded in a run: its shape, classes and training-split statistics;
    augmented as the built-in small-image datasets are (random crop of 1/8 the side, horizontal flip)."""
    return DatasetInfo(spec["kind"], spec["channels"], spec["image_size"], spec["num_classes"], spec["flip"],
                       spec["pad"], tuple(spec["mean"]), tuple(spec["std"]))


def dataset_info(name: str, spec: dict | None = None) -> DatasetInfo:
    if spec is not None:
        return user_info(spec)
    if name in USER_KINDS:
        raise ConfigError(f"--dataset {name} needs --data-dir PATH (see README, \"Your own images\")")
    if name not in DATASETS:
        known = ", ".join(DATASETS)
        raise ConfigError(f"unknown dataset {name!r}; pass one of: {known}")
    return DATASETS[name]


def default_data_dir() -> Path:
    """Where `--download` puts datasets, and where we look, when no `data_dir` is given."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "smash-tui" / "datasets"


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 spec: dict | None = None) -> Dataset:
    """`spec`: a user's dataset as a run recorded it (`userdata.prepare`), read from its cache."""
    info = dataset_info(name, spec)
    if spec is not None:
        from .userdata import read

        return _to_dataset(info, *read(spec))
    if name == "digits":
        return _to_dataset(info, *_read_digits())
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if download:
        _download(name, root)
    dirs = [root, DEBIAN_FASHION_MNIST] if name.startswith("fashion-mnist") else [root]
    if name in ("mnist", "fashion-mnist"):
        arrays = _read_idx_dataset(name, dirs, f"{_TORCHVISION[name]}/raw")
    elif name == "fashion-mnist16":
        tx, ty, vx, vy = _read_idx_dataset("fashion-mnist", dirs, "FashionMNIST/raw")
        arrays = _halve(tx), ty, _halve(vx), vy
    elif name in _CIFAR:
        arrays = _read_cifar(name, dirs)
    elif name == "stl10":
        arrays = _read_stl10(dirs)
    elif name == "modelnet10":
        arrays = read_modelnet10(root, default_data_dir)
    else:
        arrays = _read_imagenet32(root)
    return _to_dataset(info, *arrays)


def device_data(x_uint8: torch.Tensor, y: torch.Tensor, info: DatasetInfo, device: torch.device):
    """DeviceData for images, voxels.VoxelData for voxel grids: the same batching interface."""
    if info.spatial_dims == 3:
        return VoxelData(x_uint8, y, info, device)
    return DeviceData(x_uint8, y, info, device)


def holdout_split(n_train: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train_idx, val_idx): disjoint, together 0..n_train-1, each sorted."""
    if not 0 <= n_val < n_train:
        raise ConfigError(f"cannot hold out {n_val} of {n_train} training images; pass a count in 0..{n_train - 1}")
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class DeviceData(OnDevice):
    """Images on the device as uint8; batches are slices of an on-device permutation.

    Augmentation (random crop of the zero-padded image, horizontal flip) runs batched on the device.
    """

    info: DatasetInfo

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, info: DatasetInfo, device: torch.device) -> None:
        assert x_uint8.dim() == 4
        super().__init__(x_uint8, y, info, device)
        std = torch.tensor(info.std, device=self.device).view(1, -1, 1, 1)
        mean = torch.tensor(info.mean, device=self.device).view(1, -1, 1, 1)
        self._scale, self._shift = 1 / (255 * std), -mean / std  # (x/255 - mean)/std in one op

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, x_uint8.float(), self._scale)

    def epoch_batches(
        self,
        batch_size: int,
        generator: torch.Generator,
        start: int = 0,
        augment: bool = True,
        drop_last: bool = True,
    ) -> Iterator[Batch]:
        """One epoch of (x, y) from batch index `start` on.

        Every random draw of the epoch (permutation, crop offsets, flips) is made from the CPU
        `generator` here, before the first batch, so the batches and the generator's state after
        are the same on every device and whatever `start` is: a resumed epoch continues exactly.
        """
        n_batches = self.num_batches(batch_size, drop_last)
        if start < 0:
            raise ConfigError(f"start batch must be >= 0, got {start}")
        n, pad = len(self), self.info.pad
        perm = torch.randperm(n, generator=generator)
        offsets = torch.full((n, 2), pad)  # centre crop: the image unchanged
        flips = torch.zeros(n, dtype=torch.bool)
        if augment and pad > 0:
            offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
        if augment and self.info.flip:
            flips = torch.randint(0, 2, (n,), generator=generator).bool()
        perm, offsets, flips = (t.to(self.device) for t in (perm, offsets, flips))

        def batches() -> Iterator[Batch]:
            for i in range(start, n_batches):
                part = slice(i * batch_size, (i + 1) * batch_size)
                x = self.x[perm[part]]
                if augment:
                    x = crop_flip(x, pad, offsets[part], flips[part])
                yield self.normalize(x), self.y[perm[part]]

        return batches()

    def eval_batches(self, batch_size: int) -> Iterator[Batch]:
        """In order, no augmentation, the last partial batch included."""
        n_batches = self.num_batches(batch_size, drop_last=False)  # also checks batch_size now
        parts = (slice(i * batch_size, (i + 1) * batch_size) for i in range(n_batches))
        return ((self.normalize(self.x[p]), self.y[p]) for p in parts)


def crop_flip(x: torch.Tensor, pad: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """Crop each image at `offsets` (B, 2) (row, col) of its zero-padded self; mirror where `flips`.

    One gather for the whole batch: output pixel (i, j) reads padded row oy+i and padded column
    ox+j, or ox+W-1-j when mirrored.
    """
    b, c, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = offsets[:, :1] + ar_h  # (B, H)
    cols = offsets[:, 1:] + torch.where(flips[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return x[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


# -- readers: each returns numpy (train_x, train_y, test_x, test_y), x uint8 (N, C, H, W)

Arrays = tuple[Array, Array, Array, Array]


def _read_digits() -> Arrays:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: works offline

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    # numpy's legacy RandomState stream is frozen across versions, so the test split never moves
    perm = np.random.RandomState(0).permutation(len(y))
    test, train = np.sort(perm[:_DIGITS_TEST]), np.sort(perm[_DIGITS_TEST:])
    return x[train], y[train], x[test], y[test]


def _find(name: str, dirs: Sequence[Path], sub: str, files: Sequence[str], wanted: str) -> Path:
    """The first of each dir and dir/sub that holds every file (plain or .gz)."""
    for d in dirs:
        for cand in (d, d / sub):
            if all(_pick(cand, f) for f in files):
                return cand
    remedy = "pass --data-dir DIR holding it"
    remedy += ", or --download to fetch it" if name in _TORCHVISION else ""
    where = ", ".join(str(d) for d in dirs)
    raise DatasetError(f"dataset {name!r} not found in {where} (looked for {wanted}); {remedy}")


def _first_file(d: Path, *names: str) -> Path | None:
    return next((d / n for n in names if (d / n).is_file()), None)


def _pick(d: Path, file: str) -> Path | None:
    return _first_file(d, file, f"{file}.gz")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (magic 0x0000 0x08 ndim, big-endian int32 dims, uint8 data), gzipped or not."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError.corrupt(path, one_line(e)) from e
    if len(raw) < 4 + 4 * ndim or raw[:4] != bytes((0, 0, 8, ndim)):
        raise DatasetError.corrupt(path, f"not an idx file of {ndim}-d uint8: bad header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    body = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if body.size != np.prod(dims):
        raise DatasetError.corrupt(path, f"{body.size} data bytes, header says {int(np.prod(dims))}")
    return body.reshape(dims)


def _read_idx_dataset(name: str, dirs: Sequence[Path], sub: str) -> Arrays:
    wanted = f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz], also under {sub}"
    d = _find(name, dirs, sub, _IDX_FILES, wanted)
    tx, ty, vx, vy = (_read_idx(_pick(d, f), 3 if "images" in f else 1) for f in _IDX_FILES)
    for x in (tx, vx):
        if x.shape[1:] != (28, 28):
            raise DatasetError(f"{d} holds {x.shape[1:]} px images, expected 28x28 for {name!r}")
    pad = ((0, 0), (2, 2), (2, 2))  # 28 -> 32 so the same networks fit every 32 px dataset
    return np.pad(tx, pad)[:, None], ty, np.pad(vx, pad)[:, None], vy


def _halve(x: np.ndarray) -> np.ndarray:
    """(N, C, 2H, 2W) uint8 -> (N, C, H, W): the mean of each 2x2 patch, rounded."""
    n, c, h, w = x.shape
    s = x.reshape(n, c, h // 2, 2, w // 2, 2).astype(np.uint16).sum((3, 5))
    return ((s + 2) // 4).astype(np.uint8)


def _unpickle(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[label_key], np.int64)
    except Exception as e:  # a damaged pickle can raise almost any exception type
        raise DatasetError.corrupt(path, one_line(e)) from e
    return x, y


def _read_cifar(name: str, dirs: Sequence[Path]) -> Arrays:
    sub, train_files, test_file, key = _CIFAR[name]
    wanted = f"{sub}/{train_files[0]}" + ("..5" if len(train_files) > 1 else "") + f", {test_file}"
    d = _find(name, dirs, sub, [*train_files, test_file], wanted)
    train = [_unpickle(d / f, key) for f in train_files]
    return np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), *_unpickle(d / test_file, key)


def _stl10_images(path: Path) -> Array:
    raw = np.fromfile(path, np.uint8)
    if raw.size % (3 * 96 * 96):
        raise DatasetError.corrupt(path, f"{raw.size} bytes is not a whole number of 3x96x96 images")
    return raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major


def _read_stl10(dirs: Sequence[Path]) -> Arrays:
    files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    d = _find("stl10", dirs, "stl10_binary", files, "stl10_binary/{train,test}_{X,y}.bin")
    tx, vx = _stl10_images(d / files[0]), _stl10_images(d / files[2])
    ty, vy = (np.fromfile(d / f, np.uint8).astype(np.int64) - 1 for f in files[1::2])  # 1-based
    return tx, ty, vx, vy


def _npz(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path) as z:
            return np.asarray(z[key])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError.corrupt(path, one_line(e)) from e


def _read_npz_batches(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    # labels first to size one array: concatenating the 3.7 GiB of train images would need double
    labels = [_npz(p, "labels").astype(np.int64) - 1 for p in paths]  # stored 1-based
    x = np.empty((sum(len(y) for y in labels), 3, 32, 32), np.uint8)
    at = 0
    for path, y in zip(paths, labels, strict=True):
        data = _npz(path, "data")
        if data.shape != (len(y), 3 * 32 * 32):
            raise DatasetError.corrupt(path, f"data is {data.shape}, expected ({len(y)}, 3072)")
        x[at : at + len(y)] = data.reshape(-1, 3, 32, 32)
        at += len(y)
    return x, np.concatenate(labels)


def _read_imagenet32(root: Path) -> Arrays:
    """Train batches and the val file, from root or any folder directly under it."""
    train: list[Path] = []
    val: Path | None = None
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []:
        batches = sorted(d.glob("train_data_batch_*.npz"), key=lambda p: int(p.stem.split("_")[-1]))
        single = _first_file(d, "imagenet32_train.npz")
        train = train or batches or ([single] if single else [])
        val = val or _first_file(d, "val_data.npz", "imagenet32_val.npz")
    if not train or val is None:
        raise DatasetError(
            f"dataset 'imagenet32' not found in {root} or its subfolders (looked for train_data_batch_N.npz or "
            "imagenet32_train.npz, and val_data.npz or imagenet32_val.npz); pass --data-dir DIR holding them"
        )
    return (*_read_npz_batches(train), *_read_npz_batches([val]))


def _to_dataset(info: DatasetInfo, tx: Array, ty: Array, vx: Array, vy: Array) -> Dataset:
    shape = (info.channels, info.image_size, info.image_size)
    if info.spatial_dims == 3:  # (N, V, D, H, W): any number V of orientations
        shape = (tx.shape[1] if tx.ndim == 5 else 1,) + (info.image_size,) * 3
    for split, x, y in (("train", tx, ty), ("test", vx, vy)):
        if x.shape[1:] != shape or len(x) != len(y):
            got = f"images {x.shape} and {len(y)} labels, expected (N, {', '.join(map(str, shape))}) and N labels"
            raise DatasetError(f"{info.name!r} {split} split has {got}; replace the files")
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            got = f"labels span {y.min()}..{y.max()}, expected 0..{info.num_classes - 1}"
            raise DatasetError(f"{info.name!r} {split} {got}; replace the files")
    # np.require copies only what is read-only or strided, not an already usable array
    tx, vx = (torch.from_numpy(np.require(x, np.uint8, ["C", "W"])) for x in (tx, vx))
    ty, vy = (torch.from_numpy(np.require(y, np.int64, ["C", "W"])) for y in (ty, vy))
    return Dataset(info, tx, ty, vx, vy)


def _download(name: str, root: Path) -> None:
    if name not in _TORCHVISION:
        raise DatasetError(f"dataset {name!r} cannot be downloaded automatically; fetch it and pass --data-dir DIR")
    import torchvision.datasets  # only here: it is slow to import and only needed to download

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    kwargs = {"split": "train"} if name == "stl10" else {"train": True}  # fetches every split
    try:
        cls(root=str(root), download=True, **kwargs)
    except (OSError, RuntimeError) as e:
        why = one_line(e)
        raise DatasetError(f"could not download {name!r} into {root} ({why}); fetch it and pass --data-dir DIR") from e
