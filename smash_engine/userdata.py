"""Datasets a user brings: a folder of images (torchvision's ImageFolder layout) or a NumPy `.npz` file.

`prepare` reads one, checks it, and returns its *spec*: the plain dict a run records in
`RunConfig.extra["data"]` (so in the results file): kind, path, channels, image size, classes and their names,
the training split's per-channel mean and std (0..1 scale), the content key, and where the decoded images are
cached. `read(spec)` gives the arrays of a recorded spec back, from the cache (no decode), checked against the
key. Arrays are numpy: x uint8 (N, C, H, W), y int64 (N,). No torch here.

A folder is decoded once with Pillow into a cache beside the results file (imagefolder.py: the layout, the
resize rule, the content key); an npz file is read as it is, checked here.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError, one_line
from .imagefolder import ARRAY_KEYS as NPZ_KEYS
from .imagefolder import CACHE_VERSION, Arrays, Progress, Say, read_folder, read_recorded

KINDS = ("folder", "npz")
MIN_SIZE, MAX_SIZE = 8, 96  # what the search space takes (space.SpaceConfig)


def _quiet(_: str) -> None:
    pass


def prepare(kind: str, path: str | Path | None, *, image_size: int, test_fraction: float = 0.2,
            skip_bad: bool = False, cache_dir: Path | None = None, say: Say = _quiet,
            progress: Progress | None = None, workers: int | None = None) -> dict:
    """Read and check a user's dataset; its spec (module docstring). Raises only `SmashError`. `workers`:
    decoding processes (default: one per core, up to 8)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown user dataset {kind!r}; choose folder or npz")
    if path is None:
        raise ConfigError(f"--dataset {kind} needs --data-dir PATH: the " +
                          ("folder of class folders" if kind == "folder" else ".npz file (or a folder holding one)"))
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction is a fraction in (0, 1), got {test_fraction:g}")
    if not MIN_SIZE <= image_size <= MAX_SIZE:
        raise ConfigError(f"--image-size must be {MIN_SIZE} to {MAX_SIZE} px, got {image_size}")
    root = Path(path).expanduser().resolve()
    if kind == "npz":
        file = _npz_file(root)
        arrays, names = read_npz(file)
        spec = dict(kind="npz", path=str(file), key=_file_key(file), cache=None)
    else:
        spec = dict(kind="folder", path=str(root), image_size=image_size, test_fraction=test_fraction,
                    skip_bad=skip_bad)
        arrays, names, spec["key"], spec["cache"] = read_folder(root, spec, cache_dir, say, progress, workers)
    tx, ty, vx, vy = arrays
    mean, std = channel_stats(tx)
    return {**spec, "channels": int(tx.shape[1]), "image_size": int(tx.shape[2]), "num_classes": len(names),
            "class_names": names, "mean": mean, "std": std, "flip": True, "pad": int(tx.shape[2]) // 8,
            "n_train": len(ty), "n_test": len(vy)}


def read(spec: dict, say: Say = _quiet) -> Arrays:
    """The arrays a run recorded, from the cache when it holds the recorded key; otherwise read again, refused
    when the folder or file no longer gives the recorded key (it changed since the run began)."""
    if spec["kind"] == "npz":
        file = Path(spec["path"])
        if not file.is_file():
            raise DatasetError(f"{file} (this run's dataset) is gone: put it back to continue")
        if _file_key(file) != spec["key"]:
            raise DatasetError(f"{file} changed since this run began (its size or time differs): put the original "
                               "back, or start a new search on it")
        return read_npz(file)[0]
    return read_recorded(spec, say)


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images on the 0..1 scale, exact, from a histogram."""
    levels = np.arange(256) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].ravel(), minlength=256) / x[:, c].size
        m = float(hist @ levels)
        s = float(np.sqrt(max(hist @ levels**2 - m * m, 0.0)))
        mean.append(round(m, 6))
        std.append(round(s, 6) if s > 1e-6 else 1.0)  # a constant channel: only shifted
    return mean, std


# -- npz -----------------------------------------------------------------------------------------------
def _npz_file(root: Path) -> Path:
    if root.is_dir():
        found = sorted(root.glob("*.npz"))
        if len(found) != 1:
            raise DatasetError(f"{root} holds {len(found)} .npz files ({', '.join(p.name for p in found[:3])}); "
                               "pass --data-dir FILE.npz")
        return found[0]
    if not root.is_file():
        raise DatasetError(f"{root} does not exist: pass --data-dir FILE.npz (x_train, y_train, x_test, y_test)")
    return root


def _file_key(file: Path) -> str:
    st = file.stat()
    return hashlib.sha256(f"{CACHE_VERSION} {st.st_size} {st.st_mtime_ns}".encode()).hexdigest()


def read_npz(file: Path) -> tuple[Arrays, list[str]]:
    """x_train, y_train, x_test, y_test checked and as uint8 (N, C, H, W) and int64 (N,); the class names."""
    try:
        with np.load(file, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DatasetError(f"{file} lacks {', '.join(missing)}: an npz dataset holds x_train, y_train, "
                                   f"x_test and y_test (the Keras convention); it has {', '.join(z.files) or 'none'}")
            raw = {k: np.asarray(z[k]) for k in (*NPZ_KEYS, *(["class_names"] if "class_names" in z.files else []))}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"{file} is not a readable .npz file ({one_line(e)}); write it with numpy.savez") from e
    tx, vx = _npz_images(raw["x_train"], "x_train", file), _npz_images(raw["x_test"], "x_test", file)
    ty, vy = _npz_labels(raw["y_train"], "y_train", file), _npz_labels(raw["y_test"], "y_test", file)
    for x, y, split in ((tx, ty, "train"), (vx, vy, "test")):
        if len(x) != len(y):
            raise DatasetError(f"{file}: x_{split} holds {len(x)} images but y_{split} {len(y)} labels")
    if tx.shape[1:] != vx.shape[1:]:
        raise DatasetError(f"{file}: x_train's images are {_shape(tx)} but x_test's {_shape(vx)}")
    k = int(ty.max()) + 1
    if k < 2:
        raise DatasetError(f"{file}: y_train holds one class (label 0): a classifier needs two or more")
    if vy.max() >= k:
        raise DatasetError(f"{file}: y_test holds label {int(vy.max())} but y_train's labels are 0..{k - 1}")
    names = [str(i) for i in range(k)]
    if "class_names" in raw:
        given = raw["class_names"]
        if given.ndim != 1 or len(given) != k or given.dtype.kind not in "US":
            raise DatasetError(f"{file}: class_names must be {k} strings (one per label 0..{k - 1}), got "
                               f"{given.dtype} {given.shape}")
        names = [str(n) for n in given]
    return (tx, ty, vx, vy), names


def _shape(x: np.ndarray) -> str:
    return f"{x.shape[1]}x{x.shape[2]}x{x.shape[3]} (CxHxW)"


def _npz_images(x: np.ndarray, key: str, file: Path) -> np.ndarray:
    where = f"{file}: {key}"
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise DatasetError(f"{where} holds NaN or infinite values; images are uint8 0..255 or floats 0..1")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DatasetError(f"{where} holds floats from {x.min():g} to {x.max():g}; float images must lie in "
                               "0..1 (or save them as uint8 0..255)")
        x = np.round(x * 255).astype(np.uint8)
    elif x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(f"{where} holds values {x.min()}..{x.max()}; images are 0..255 (uint8)")
        x = x.astype(np.uint8)
    else:
        raise DatasetError(f"{where} is of type {x.dtype}; images are uint8 0..255 (or floats 0..1)")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        last, first = x.shape[3] in (1, 3), x.shape[1] in (1, 3)
        if last:  # NHWC, the Keras convention; also when both would fit (ambiguous)
            x = x.transpose(0, 3, 1, 2)
        elif not first:
            raise DatasetError(f"{where} has shape {x.shape}: not images; expected (N, H, W), (N, H, W, C) or "
                               "(N, C, H, W) with C = 1 or 3")
    else:
        raise DatasetError(f"{where} has shape {x.shape}: not images; expected (N, H, W), (N, H, W, C) or "
                           "(N, C, H, W) with C = 1 or 3")
    h, w = x.shape[2:]
    if len(x) == 0:
        raise DatasetError(f"{where} holds no images")
    if h != w or not MIN_SIZE <= h <= MAX_SIZE:
        raise DatasetError(f"{where} holds {h}x{w} px images; the search takes square images of {MIN_SIZE} to "
                           f"{MAX_SIZE} px (a folder of images, --dataset folder, is resized)")
    return np.ascontiguousarray(x)


def _npz_labels(y: np.ndarray, key: str, file: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:  # Keras' CIFAR labels are (N, 1)
        y = y[:, 0]
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise DatasetError(f"{file}: {key} is {y.dtype} of shape {y.shape}; labels are whole numbers from 0, "
                           "one per image")
    if len(y) == 0:
        raise DatasetError(f"{file}: {key} holds no labels")
    if y.min() < 0:
        raise DatasetError(f"{file}: {key} holds negative label {int(y.min())}; labels are whole numbers from 0")
    return y.astype(np.int64)
