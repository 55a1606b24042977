"""Datasets a user brings: a folder of images (torchvision's ImageFolder layout) or a NumPy `.npz` file.

`prepare` reads one, checks it, and returns its *spec*: the plain dict a run records in
`RunConfig.extra["data"]` (so in the results file): kind, path, channels, image size, classes and their names,
the training split's per-channel mean and std (0..1 scale), the content key, and where the decoded images are
cached. `read(spec)` gives the arrays of a recorded spec back, from the cache (no decode), checked against the
key. Arrays are numpy: x uint8 (N, C, H, W), y int64 (N,). No torch here: decoding workers import only this.

A folder is decoded once with Pillow (PNG, JPEG, BMP, WebP), each image's shorter side scaled to `image_size`
and the longer center-cropped, grey or colour detected (one colour image makes every image 3-channel). The cache
`images-KEY.npz` sits beside the results file; KEY hashes the folder's file names, sizes and mtimes and the
options, so a changed file or option gives another key: a cache is never read for other contents, and one that is
truncated or holds another key is rebuilt (and said).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .errors import ConfigError, DatasetError, one_line

KINDS = ("folder", "npz")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MIN_SIZE, MAX_SIZE = 8, 96  # what the search space takes (space.SpaceConfig)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
CACHE_VERSION = 1  # part of every key: a new decode rule makes every old cache another key's
POOL_FROM = 2000  # images: below this, decoding in this process beats starting workers

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Say = Callable[[str], None]
Progress = Callable[[int, int, float], None]  # (done, total, images per second)


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
        arrays, names, spec["key"], spec["cache"] = _folder(root, spec, cache_dir, say, progress, workers)
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
    cache = Path(spec["cache"]) if spec.get("cache") else None
    if cache is not None:
        got = _load_cache(cache, spec["key"], say)
        if got is not None:
            return got[0]
    root = Path(spec["path"])
    tree = _tree(root)
    if _folder_key(root, tree, spec) != spec["key"]:
        raise DatasetError(f"{root} changed since this run began and its decoded images ({cache}) are gone: put "
                           "the folder back as it was, or start a new search on it")
    arrays, _, _, _ = _folder(root, spec, cache.parent if cache else None, say, None)
    return arrays


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


# -- folders -------------------------------------------------------------------------------------------
Tree = dict[str, list[tuple[str, list[Path]]]]  # split -> [(class name, image files)], sorted


def _tree(root: Path) -> Tree:
    """The splits found (train and test, with val folded into train; or one unsplit "all") and, per split,
    each class's image files, sorted. Non-image files are counted in `_tree.ignored`."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: pass --data-dir FOLDER holding one folder of images per class")
    subs = {p.name for p in _visible(root) if p.is_dir()}
    if "train" in subs or "test" in subs:
        if not {"train", "test"} <= subs:
            raise DatasetError(f"{root} holds {'train' if 'train' in subs else 'test'}/ but not "
                               f"{'test' if 'train' in subs else 'train'}/: give both (and optionally val/), or "
                               "put the class folders directly in it")
        splits = {"train": _classes(root / "train"), "test": _classes(root / "test")}
        if "val" in subs:
            splits["val"] = _classes(root / "val")
        names = [c for c, _ in splits["train"]]
        for split, classes in splits.items():
            other = [c for c, _ in classes]
            if other != names:
                lacks, extra = sorted(set(names) - set(other)), sorted(set(other) - set(names))
                raise DatasetError(f"{root / split}/ has other classes than train/: " + "; ".join(
                    ([f"lacks {', '.join(lacks[:5])}"] if lacks else []) +
                    ([f"has {', '.join(extra[:5])} that train/ lacks"] if extra else [])))
        return splits
    return {"all": _classes(root)}


def _visible(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith("."))


def _classes(d: Path) -> list[tuple[str, list[Path]]]:
    out = []
    for c in (p for p in _visible(d) if p.is_dir()):
        files = [p for p in _visible(c) if p.is_file()]
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTS]
        if not images:
            raise DatasetError(f"class folder {c} holds no images ({len(files)} other files); PNG, JPEG, BMP and "
                               "WebP are read: add images or remove the folder")
        out.append((c.name, images))
    if not out:
        raise DatasetError(f"{d} holds no class folders: put one folder of images per class in it")
    if len(out) == 1:
        raise DatasetError(f"{d} holds one class folder ({out[0][0]}): a classifier needs two or more")
    return out


def _ignored(root: Path) -> int:
    """Files that are not images, anywhere in the folder (hidden files and folders aside)."""
    n = 0
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        n += sum(1 for f in files if not f.startswith(".") and Path(f).suffix.lower() not in IMAGE_EXTS)
    return n


def _folder_key(root: Path, tree: Tree, spec: dict) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, spec["image_size"], spec["test_fraction"],
                                   spec["skip_bad"]]).encode())
    for split, classes in tree.items():
        for name, files in classes:
            for f in files:
                st = f.stat()
                h.update(f"{split}/{name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _folder(root: Path, spec: dict, cache_dir: Path | None, say: Say, progress: Progress | None,
            workers: int | None = None) -> tuple[Arrays, list[str], str, str | None]:
    tree = _tree(root)
    key = _folder_key(root, tree, spec)
    cache = cache_dir / f"images-{key[:16]}.npz" if cache_dir is not None else None
    if cache is not None:
        got = _load_cache(cache, key, say)
        if got is not None:
            say(f"images: {len(got[0][1]):,} train and {len(got[0][3]):,} test from {cache.name} (decoded before)")
            return got[0], got[1], key, str(cache)
    ignored = _ignored(root)
    if ignored:
        say(f"images: ignored {ignored:,} files that are not PNG, JPEG, BMP or WebP")
    arrays, names = _decode_tree(root, tree, spec, say, progress, workers)
    if cache is not None:
        _save_cache(cache, key, arrays, names)
    return arrays, names, key, str(cache) if cache is not None else None


def _decode_tree(root: Path, tree: Tree, spec: dict, say: Say, progress: Progress | None,
                 workers: int | None) -> tuple[Arrays, list[str]]:
    size = spec["image_size"]
    names = [c for c, _ in next(iter(tree.values()))]
    items = [(split, label, f) for split, classes in tree.items()
             for label, (_, files) in enumerate(classes) for f in files]
    decoded = decode_all([str(f) for _, _, f in items], size, progress, workers)
    bad = [(f, why) for (_, _, f), (_, why, _) in zip(items, decoded, strict=True) if why]
    if bad:
        shown = "; ".join(f"{f.relative_to(root)} ({why})" for f, why in bad[:3])
        if not spec["skip_bad"]:
            raise DatasetError(f"{len(bad)} of {len(items)} images in {root} cannot be read: {shown}"
                               f"{'; ...' if len(bad) > 3 else ''}; fix or remove them, or pass --skip-bad to "
                               "leave them out")
        say(f"images: left out {len(bad)} unreadable images (--skip-bad): {shown}")
    sizes = {s for _, why, s in decoded if not why}
    if len(sizes) > 1 or sizes != {(size, size)}:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4]) + (", ..." if len(sizes) > 4 else "")
        what = f"of {len(sizes)} sizes ({shown})" if len(sizes) > 1 else f"of {shown} px"
        say(f"images: {what} resized to {size}x{size} (shorter side scaled, then center-cropped)")
    colour = any(x.ndim == 3 for x, why, _ in decoded if not why)
    by_split: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    for (split, label, _), (x, why, _) in zip(items, decoded, strict=True):
        if why:
            continue
        x = (np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x) if colour else x[..., None]
        xs, ys = by_split.setdefault("train" if split == "val" else split, ([], []))
        xs.append(x)
        ys.append(label)
    stacked = {s: (np.stack(xs).transpose(0, 3, 1, 2).copy(), np.array(ys, np.int64))
               for s, (xs, ys) in by_split.items()}  # (N, C, H, W)
    for s in ("train", "test", "all"):
        if s in tree and s not in stacked:
            raise DatasetError(f"no readable images left in {root / s if s != 'all' else root}")
    if "all" in stacked:
        return _split_off_test(root, *stacked["all"], names, spec["test_fraction"], say), names
    _check_every_class(root, stacked["train"][1], names, "train/")
    return (*stacked["train"], *stacked["test"]), names


def _check_every_class(root: Path, y: np.ndarray, names: list[str], where: str) -> None:
    counts = np.bincount(y, minlength=len(names))
    if (counts == 0).any():
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        raise DatasetError(f"{root}: {where} has no readable images of class {', '.join(empty[:5])}")


def _split_off_test(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], fraction: float,
                    say: Say) -> Arrays:
    """A seeded test split, `fraction` of each class (at least one), the rest train; the legacy RandomState
    stream is frozen across numpy versions, so the split never moves."""
    rs = np.random.RandomState(0)
    test = []
    for c in range(len(names)):
        idx = np.flatnonzero(y == c)
        n_test = max(1, int(round(fraction * len(idx))))
        if len(idx) < 2 or not 1 <= n_test < len(idx):
            raise DatasetError(f"{root}: class {names[c]} has {len(idx)} readable image(s), too few to hold out "
                               f"{fraction:.0%} for the test split ({n_test}) and train on the rest; add images or "
                               "change --test-fraction")
        test.append(rs.permutation(idx)[:n_test])
    is_test = np.zeros(len(y), bool)
    is_test[np.concatenate(test)] = True
    say(f"images: held out {is_test.sum():,} of {len(y):,} ({fraction:.0%} of each class, seed 0) as the test "
        "split (--test-fraction)")
    return x[~is_test], y[~is_test], x[is_test], y[is_test]


def decode_all(files: list[str], size: int, progress: Progress | None = None,
               workers: int | None = None) -> list[tuple[np.ndarray, str, tuple[int, int]]]:
    """Each file decoded (`decode_one`), in order; a process pool for many files."""
    if workers is None:
        workers = min(len(os.sched_getaffinity(0)), 8) if hasattr(os, "sched_getaffinity") else 1
    chunk = 256
    parts = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    out: list[tuple[np.ndarray, str, tuple[int, int]]] = []
    start = time.perf_counter()

    def tick() -> None:
        if progress is not None:
            progress(len(out), len(files), len(out) / max(time.perf_counter() - start, 1e-9))

    if workers < 2 or len(files) < POOL_FROM:
        for part in parts:
            out.extend(_decode_many(part, size))
            tick()
        return out
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for got in pool.map(_decode_many, parts, [size] * len(parts)):
            out.extend(got)
            tick()
    return out


def _decode_many(files: list[str], size: int) -> list[tuple[np.ndarray, str, tuple[int, int]]]:
    return [decode_one(f, size) for f in files]


_EMPTY = np.zeros((0, 0), np.uint8)


def decode_one(file: str, size: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """(uint8 (size, size) grey or (size, size, 3) colour, "", the original (w, h)), or (empty, why, (0, 0))."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            im.load()
            grey = im.mode in GREY_MODES
            im = im.convert("L" if grey else "RGB")
    except Exception as e:  # Pillow raises many types for a damaged file (OSError, SyntaxError, ValueError, ...)
        return _EMPTY, one_line(e), (0, 0)
    w, h = im.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, np.uint8), "", (w, h)


def _load_cache(cache: Path, key: str, say: Say) -> tuple[Arrays, list[str]] | None:
    if not cache.exists():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if str(z["key"]) != key:
                say(f"images: {cache.name} was made from another folder or other options: decoding again")
                return None
            arrays = tuple(np.asarray(z[k]) for k in NPZ_KEYS)
            names = [str(n) for n in z["class_names"]]
    except Exception as e:  # truncated or not an npz: zipfile, zlib, numpy and OS errors alike
        say(f"images: {cache.name} is unreadable ({one_line(e)}): decoding again")
        return None
    return arrays, names  # type: ignore[return-value]


def _save_cache(cache: Path, key: str, arrays: Arrays, names: list[str]) -> None:
    """Written beside, then renamed over: a reader never sees half a cache."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), class_names=np.array(names), **dict(zip(NPZ_KEYS, arrays, strict=True)))
        os.replace(tmp, cache)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"could not write the decoded images to {cache} ({e.strerror or e}): free space or fix "
                           f"permissions in {cache.parent}/") from e
