"""Real small image datasets for the tests of a user's own images (userdata.py): folders of PNG and JPEG files
written with Pillow, and .npz files, all from scikit-learn's bundled digits (8x8, 10 classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = [f"digit{d}" for d in range(10)]


def digits(n_per_class: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` digits of each class: uint8 (N, 8, 8) images, int64 (N,) labels, sorted by class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)
    idx = np.concatenate([np.flatnonzero(d.target == c)[:n_per_class] for c in range(10)])
    return x[idx], d.target[idx].astype(np.int64)


def write_image(path: Path, img: np.ndarray, colour: bool = False, scale: int = 1) -> Path:
    """One digit as a file: grey (mode L) or colour (tinted RGB), `scale` times larger; the format from the suffix."""
    im = Image.fromarray(img, "L")
    if colour:
        im = Image.merge("RGB", (im, im.point(lambda v: v // 2), im.point(lambda v: 255 - v)))
    if scale != 1:
        im = im.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **{".jpg": dict(quality=95), ".webp": dict(lossless=True)}.get(path.suffix, {}))
    return path


def image_folder(root: Path, n_per_class: int = 20, ext: str = ".png", colour: bool = False, classes: int = 10,
                 split: bool = False, scale: int = 1) -> Path:
    """ImageFolder layout: root/CLASS/NNN.ext; with `split`, root/train/CLASS and root/test/CLASS (a quarter)."""
    x, y = digits(n_per_class)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        if label >= classes:
            continue
        where = root / ("test" if i % 4 == 0 else "train") if split else root
        write_image(where / CLASSES[label] / f"{i:04d}{ext}", img, colour, scale)
    return root


def npz_file(path: Path, n_per_class: int = 20, layout: str = "NHW", **replace) -> Path:
    """x_train/y_train (three quarters) and x_test/y_test as numpy.savez writes them; `replace` swaps arrays."""
    x, y = digits(n_per_class)
    if layout == "NHWC":
        x = x[..., None]
    elif layout == "NCHW":
        x = x[:, None]
    test = np.arange(len(y)) % 4 == 0
    arrays = dict(x_train=x[~test], y_train=y[~test], x_test=x[test], y_test=y[test])
    arrays.update(replace)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


TREE_FILES = ("png", "jpg", "colour", "big", "corrupt", "empty", "txt")


def build_tree(root: Path, tree: dict[str, list[str]], split: bool) -> int:
    """Class folders of `tree` (class -> kinds of file, from TREE_FILES), every third file under test/ with
    `split`; the number of readable images written."""
    x, _ = digits(2)
    good = 0
    for name, files in tree.items():
        for i, kind in enumerate(files):
            d = root / (("test" if i % 3 == 2 else "train") if split else "") / name
            d.mkdir(parents=True, exist_ok=True)
            if kind in ("png", "jpg", "colour", "big"):
                write_image(d / f"{i}.{'jpg' if kind == 'jpg' else 'png'}", x[i % len(x)], kind == "colour",
                            3 if kind == "big" else 1)
                good += 1
            elif kind == "corrupt":
                (d / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
            elif kind == "empty":
                (d / f"{i}.jpg").write_bytes(b"")
            else:
                (d / f"{i}.txt").write_text("notes")
    return good
