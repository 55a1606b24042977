"""A folder of images in torchvision's ImageFolder layout, for `--dataset folder` (userdata.py describes the spec).

Owns the folder's tree (class folders, optional train/ test/ val/ splits), its content key, decoding with Pillow
(in a process pool for many files), the seeded test split, and the cache `images-KEY.npz`: KEY hashes every
image's split, class, name, size and mtime and the options, so a changed file or option is another key, and a
cache holding another key or unreadable is decoded again (said). No torch here: spawned workers import only this.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .errors import DatasetError, one_line

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")  # the cache's arrays, named as an npz dataset's
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
CACHE_VERSION = 1  # part of every key: a new decode rule makes every old cache another key's
POOL_FROM = 2000  # images: below this, decoding in this process beats starting workers

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Say = Callable[[str], None]
Progress = Callable[[int, int, float], None]  # (done, total, images per second)
Tree = dict[str, list[tuple[str, list[Path]]]]  # split -> [(class name, image files)], sorted


def read_recorded(spec: dict, say: Say) -> Arrays:
    """The arrays of a folder a run recorded: its cache when that holds the recorded key, else decoded again
    if the folder still gives that key; refused when it changed."""
    cache = Path(spec["cache"]) if spec.get("cache") else None
    if cache is not None:
        got = _load_cache(cache, spec["key"], say)
        if got is not None:
            return got[0]
    root = Path(spec["path"])
    if not root.is_dir():
        raise DatasetError(f"this run's decoded images ({cache}) and its folder {root} are both gone: put either "
                           "back where it was (the decoded images are enough) to continue")
    if _folder_key(_tree(root), spec) != spec["key"]:
        raise DatasetError(f"{root} changed since this run began and its decoded images ({cache}) are gone: put "
                           "the folder back as it was, or start a new search on it")
    return read_folder(root, spec, cache.parent if cache else None, say, None)[0]


def _tree(root: Path) -> Tree:
    """The splits found (train and test, with val folded into train; or one unsplit "all") and, per split,
    each class's image files, sorted (non-image files are left out; `_ignored` counts them)."""
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


def _folder_key(tree: Tree, spec: dict) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, spec["image_size"], spec["test_fraction"],
                                   spec["skip_bad"]]).encode())
    for split, classes in tree.items():
        for name, files in classes:
            for f in files:
                st = f.stat()
                h.update(f"{split}/{name}/{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def read_folder(root: Path, spec: dict, cache_dir: Path | None, say: Say, progress: Progress | None,
            workers: int | None = None) -> tuple[Arrays, list[str], str, str | None]:
    """(arrays, class names, key, cache path) of the folder at `root` with `spec`'s options (image_size,
    test_fraction, skip_bad): from the cache in `cache_dir` when it holds the key, else decoded (and cached)."""
    tree = _tree(root)
    key = _folder_key(tree, spec)
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
            arrays = tuple(np.asarray(z[k]) for k in ARRAY_KEYS)
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
            np.savez(f, key=np.array(key), class_names=np.array(names), **dict(zip(ARRAY_KEYS, arrays, strict=True)))
        os.replace(tmp, cache)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"could not write the decoded images to {cache} ({e.strerror or e}): free space or fix "
                           f"permissions in {cache.parent}/") from e
