"""smash_engine.data on real data: bundled digits, tiny files written in each real on-disk format."""

import gzip
import pickle
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from smash_engine.data import (
    DATASETS,
    DEBIAN_FASHION_MNIST,
    DeviceData,
    dataset_info,
    holdout_split,
    load_dataset,
)
from smash_engine.errors import ConfigError, DatasetError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tagged(info, n: int = 50) -> DeviceData:
    """Random images (1..255, so zero padding shows) whose label is their own index."""
    size = info.image_size
    x = torch.randint(1, 256, (n, info.channels, size, size), generator=seeded(99), dtype=torch.uint8)
    return DeviceData(x, torch.arange(n), info, CPU)


def epoch(data: DeviceData, seed: int, **kwargs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(data.epoch_batches(8, seeded(seed), **kwargs))


# -- registry and digits


NAMES = "digits mnist fashion-mnist fashion-mnist16 cifar10 cifar100 stl10 imagenet32 modelnet10".split()


def test_registry_is_consistent():
    assert list(DATASETS) == NAMES
    for name, info in DATASETS.items():
        assert info.name == name and dataset_info(name) is info
        assert len(info.mean) == len(info.std) == info.channels
        assert info.flip == (name not in ("digits", "mnist"))


@pytest.mark.parametrize("call", [dataset_info, load_dataset])
def test_unknown_dataset_name_is_a_config_error(call):
    with pytest.raises(ConfigError, match="unknown dataset 'cifar11'.*cifar10, cifar100"):
        call("cifar11")


def test_digits_loads(digits):
    assert digits.train_x.shape == (1500, 1, 8, 8) and digits.test_x.shape == (297, 1, 8, 8)
    assert digits.train_x.dtype == digits.test_x.dtype == torch.uint8
    assert digits.train_y.dtype == digits.test_y.dtype == torch.int64
    assert digits.train_x.is_contiguous() and digits.train_x.device == CPU
    assert set(digits.train_y.tolist()) == set(digits.test_y.tolist()) == set(range(10))
    assert digits.train_x.max() == 255 and digits.train_x.min() == 0
    again = load_dataset("digits")
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)


def test_digits_statistics_match_info(digits):
    x = torch.cat([digits.train_x, digits.test_x])
    z = DeviceData(x, torch.zeros(len(x)), digits.info, CPU).normalize(x)
    assert z.dtype == torch.float32
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3


# -- held-out split


def test_holdout_split_is_disjoint_covering_and_seeded():
    train, val = holdout_split(100, 20, seed=1)
    assert len(train) == 80 and len(val) == 20
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(100))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    same = holdout_split(100, 20, seed=1)
    assert torch.equal(same[0], train) and torch.equal(same[1], val)
    assert not torch.equal(holdout_split(100, 20, seed=2)[1], val)


@pytest.mark.parametrize("n_val", [100, 101, -1])
def test_holdout_split_rejects_impossible_sizes(n_val):
    with pytest.raises(ConfigError, match="hold out"):
        holdout_split(100, n_val, seed=0)


# -- DeviceData


def test_epoch_covers_the_generator_permutation_once():
    data = tagged(DATASETS["digits"])
    batches = epoch(data, 5, drop_last=False)
    assert [len(y) for _, y in batches] == [8] * 6 + [2]
    order = torch.cat([y for _, y in batches])
    assert torch.equal(order, torch.randperm(50, generator=seeded(5)))
    dropped = epoch(data, 5)
    assert len(dropped) == 6 and torch.equal(torch.cat([y for _, y in dropped]), order[:48])


def test_same_seed_same_batches_other_seed_other_batches():
    data = tagged(DATASETS["cifar10"])
    first, again, other = epoch(data, 7), epoch(data, 7), epoch(data, 8)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(torch.cat([y for _, y in first]), torch.cat([y for _, y in other]))


def test_start_resumes_the_same_epoch():
    data = tagged(DATASETS["cifar10"])
    full_gen, resumed_gen = seeded(3), seeded(3)
    full = list(data.epoch_batches(8, full_gen, drop_last=False))
    resumed = list(data.epoch_batches(8, resumed_gen, start=4, drop_last=False))
    assert len(resumed) == len(full) - 4
    for (x1, y1), (x2, y2) in zip(full[4:], resumed, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(full_gen.get_state(), resumed_gen.get_state())


def crops(data: DeviceData, i: int, flipped: bool) -> dict[tuple[int, int], torch.Tensor]:
    """Image i normalised, cropped at each (row, col) of its zero-padded self, maybe mirrored."""
    img, pad = data.x[i], data.info.pad
    size, span = img.shape[-1], range(2 * pad + 1)
    padded = F.pad(img, (pad,) * 4)
    cut = {(r, c): padded[:, r : r + size, c : c + size] for r in span for c in span}
    return {k: data.normalize((v.flip(-1) if flipped else v)[None])[0] for k, v in cut.items()}


def match(x: torch.Tensor, candidates: dict) -> tuple[int, int] | None:
    return next((k for k, c in candidates.items() if torch.equal(x, c)), None)


def test_augmentation_crops_without_flipping_when_flip_is_false():
    data = tagged(DATASETS["digits"])  # pad 1, flip False
    x, y = torch.cat([x for x, _ in epoch(data, 0)]), torch.cat([y for _, y in epoch(data, 0)])
    assert x.dtype == torch.float32 and x.shape == (48, 1, 8, 8)
    plain = data.normalize(data.x[y])
    assert (x != plain).flatten(1).any(1).sum() > 10  # pad 1 leaves 1 in 9 crops unshifted
    offsets = [match(xi, crops(data, i, flipped=False)) for xi, i in zip(x, y.tolist(), strict=True)]
    assert None not in offsets
    assert {r for r, _ in offsets} == {c for _, c in offsets} == {0, 1, 2}  # shifts both ways


def test_augmentation_flips_some_when_flip_is_true():
    data = tagged(replace(DATASETS["digits"], flip=True))
    x, y = torch.cat([x for x, _ in epoch(data, 0)]), torch.cat([y for _, y in epoch(data, 0)])
    n_flipped = 0
    for xi, i in zip(x, y.tolist(), strict=True):
        straight = match(xi, crops(data, i, False)) is not None
        mirrored = match(xi, crops(data, i, True)) is not None
        assert straight or mirrored
        n_flipped += mirrored and not straight
    assert 10 < n_flipped < 38


def test_no_augmentation_and_zero_pad_leave_images_alone():
    for info, kwargs in [
        (DATASETS["cifar10"], {"augment": False}),
        (replace(DATASETS["cifar10"], pad=0, flip=False), {}),
    ]:
        data = tagged(info)
        for x, y in epoch(data, 1, **kwargs):
            assert torch.equal(x, data.normalize(data.x[y]))


def test_eval_batches_in_order_with_partial_last(digits):
    data = DeviceData(digits.test_x, digits.test_y, digits.info, CPU)
    batches = list(data.eval_batches(100))
    assert [len(y) for _, y in batches] == [100, 100, 97]
    assert torch.equal(torch.cat([y for _, y in batches]), digits.test_y)
    assert torch.equal(torch.cat([x for x, _ in batches]), data.normalize(digits.test_x))


def test_normalize_uses_info_mean_and_std():
    data = tagged(DATASETS["cifar10"], n=4)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (data.info.mean, data.info.std))
    assert torch.allclose(data.normalize(data.x), (data.x / 255 - mean) / std, atol=1e-5)


def test_bad_batch_arguments_are_config_errors():
    data = tagged(DATASETS["digits"])
    with pytest.raises(ConfigError, match="batch size"):
        data.epoch_batches(0, seeded(0))
    with pytest.raises(ConfigError, match="batch size"):
        data.eval_batches(-1)
    with pytest.raises(ConfigError, match="start"):
        data.epoch_batches(8, seeded(0), start=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches():
    cpu = tagged(DATASETS["cifar10"], n=200)
    cuda = DeviceData(cpu.x, cpu.y, cpu.info, torch.device("cuda"))
    for (x1, y1), (x2, y2) in zip(epoch(cpu, 4), epoch(cuda, 4), strict=True):
        assert x2.device.type == "cuda"
        assert torch.allclose(x1, x2.cpu(), atol=1e-6) and torch.equal(y1, y2.cpu())


# -- idx (MNIST, Fashion-MNIST)


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes((0, 0, 8, a.ndim)) + struct.pack(f">{a.ndim}i", *a.shape) + a.tobytes()


def write_idx(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(a)))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return arrays


def test_mnist_idx_gz_in_torchvision_layout(tmp_path):
    arrays = write_idx(tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_x.shape == (20, 1, 32, 32) and ds.test_x.shape == (10, 1, 32, 32)
    assert np.array_equal(ds.train_x[:, 0, 2:30, 2:30].numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.train_x[:, :, :2].sum() == 0 and ds.train_x[:, :, :, 30:].sum() == 0
    assert np.array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.train_y.dtype == torch.int64 and ds.info.flip is False


def test_fashion_mnist_plain_idx_in_data_dir(tmp_path):
    arrays = write_idx(tmp_path, gz=False)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert np.array_equal(ds.test_x[:, 0, 2:30, 2:30].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert ds.info.flip is True and ds.info.pad == 4


def test_fashion_mnist16_averages_2x2_patches_of_the_padded_images(tmp_path):
    arrays = write_idx(tmp_path / "FashionMNIST" / "raw")
    ds = load_dataset("fashion-mnist16", tmp_path)
    assert ds.train_x.shape == (20, 1, 16, 16) and ds.info.image_size == 16 and ds.info.flip
    padded = np.pad(arrays["train-images-idx3-ubyte"], ((0, 0), (2, 2), (2, 2))).astype(float)
    patches = padded.reshape(20, 16, 2, 16, 2).mean((2, 4))
    assert np.abs(ds.train_x[:, 0].numpy() - patches).max() <= 0.5  # rounded to the nearest level
    assert np.array_equal(ds.train_y.numpy(), arrays["train-labels-idx1-ubyte"])


def test_truncated_idx_is_a_dataset_error(tmp_path):
    arrays = write_idx(tmp_path)
    images = idx_bytes(arrays["train-images-idx3-ubyte"])
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images[:-100]))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz is corrupt.*header says"):
        load_dataset("mnist", tmp_path)
    cut = gzip.compress(images)[:-50]  # the gzip stream itself ends early
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(cut)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz is corrupt"):
        load_dataset("mnist", tmp_path)


def test_idx_with_bad_magic_or_labels_is_a_dataset_error(tmp_path):
    arrays = write_idx(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 20)
    with pytest.raises(DatasetError, match="bad header"):
        load_dataset("mnist", tmp_path)
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[0] = 10
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DatasetError, match="labels span 0..10, expected 0..9"):
        load_dataset("mnist", tmp_path)


def test_missing_mnist_names_the_directory_and_the_options(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "--data-dir" in message and "--download" in message
    assert "\n" not in message


def test_no_data_dir_looks_in_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="--data-dir") as err:
        load_dataset("cifar10")
    assert str(tmp_path / "smash-tui" / "datasets") in str(err.value)
    write_idx(tmp_path / "smash-tui" / "datasets" / "MNIST" / "raw")
    assert len(load_dataset("mnist").train_x) == 20


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt package dataset-fashion-mnist")
@pytest.mark.parametrize("name,size", [("fashion-mnist", 32), ("fashion-mnist16", 16)])
def test_fashion_mnist_from_the_debian_package(tmp_path, name, size):
    ds = load_dataset(name, tmp_path)  # empty data_dir: falls back to Debian's copy
    assert ds.train_x.shape == (60000, 1, size, size) and ds.test_x.shape == (10000, 1, size, size)
    pixels = ds.train_x.double() / 255
    assert abs(pixels.mean().item() - ds.info.mean[0]) < 1e-3
    assert abs(pixels.std().item() - ds.info.std[0]) < 1e-3


# -- CIFAR pickles, STL-10 binaries, ImageNet32 npz


def write_pickle(path: Path, n: int, label_key: bytes, rng: np.random.Generator, classes: int):
    batch = {
        b"batch_label": b"testing batch",
        label_key: rng.integers(0, classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def test_cifar10_pickle_layout(tmp_path):
    folder, rng = tmp_path / "cifar-10-batches-py", np.random.default_rng(1)
    folder.mkdir()
    train = [write_pickle(folder / f"data_batch_{i}", 4, b"labels", rng, 10) for i in range(1, 6)]
    test = write_pickle(folder / "test_batch", 3, b"labels", rng, 10)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    expected = np.concatenate([b[b"data"] for b in train]).reshape(20, 3, 32, 32)
    assert np.array_equal(ds.train_x.numpy(), expected)
    assert ds.train_y.tolist() == sum((b[b"labels"] for b in train), [])
    assert ds.test_y.tolist() == test[b"labels"]
    (folder / "data_batch_3").write_bytes((folder / "data_batch_3").read_bytes()[:500])
    with pytest.raises(DatasetError, match="data_batch_3 is corrupt"):
        load_dataset("cifar10", tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError, match="cifar-10-batches-py/data_batch_1..5, test_batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_pickle_layout(tmp_path):
    folder, rng = tmp_path / "cifar-100-python", np.random.default_rng(2)
    folder.mkdir()
    train = write_pickle(folder / "train", 6, b"fine_labels", rng, 100)
    write_pickle(folder / "test", 2, b"fine_labels", rng, 100)
    ds = load_dataset("cifar100", folder)  # the folder itself works as data_dir too
    assert ds.train_y.tolist() == train[b"fine_labels"] and ds.info.num_classes == 100


def test_stl10_binary_layout(tmp_path):
    folder, rng = tmp_path / "stl10_binary", np.random.default_rng(3)
    folder.mkdir()
    images = {s: rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8) for s, n in [("train", 2), ("test", 1)]}
    for split, x in images.items():
        (folder / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())  # column-major
        (folder / f"{split}_y.bin").write_bytes(bytes(range(1, len(x) + 1)))  # labels 1..10
    ds = load_dataset("stl10", tmp_path)
    assert np.array_equal(ds.train_x.numpy(), images["train"]) and ds.train_x.is_contiguous()
    assert ds.train_y.tolist() == [0, 1] and ds.test_y.tolist() == [0]
    (folder / "test_X.bin").write_bytes(b"\x00" * 1000)
    with pytest.raises(DatasetError, match="test_X.bin is corrupt"):
        load_dataset("stl10", tmp_path)


def write_npz(path: Path, n: int, rng: np.random.Generator) -> dict:
    arrays = {
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": rng.integers(1, 1001, n).tolist(),  # 1-based, as published
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def test_imagenet32_npz_batches(tmp_path):
    rng = np.random.default_rng(4)
    # batch 10 after 2: the order is numeric, not by name
    train = [write_npz(tmp_path / "Imagenet32_train" / f"train_data_batch_{i}.npz", 3, rng) for i in (1, 2, 10)]
    val = write_npz(tmp_path / "Imagenet32_val" / "val_data.npz", 2, rng)
    ds = load_dataset("imagenet32", tmp_path)
    assert ds.train_x.shape == (9, 3, 32, 32) and ds.test_x.shape == (2, 3, 32, 32)
    expected = np.concatenate([b["data"] for b in train]).reshape(9, 3, 32, 32)
    assert np.array_equal(ds.train_x.numpy(), expected)
    assert ds.train_y.tolist() == [v - 1 for b in train for v in b["labels"]]
    assert ds.test_y.tolist() == [v - 1 for v in val["labels"]]


def test_imagenet32_single_files_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    with pytest.raises(DatasetError, match=f"not found in {tmp_path}.*--data-dir"):
        load_dataset("imagenet32", tmp_path)
    with pytest.raises(DatasetError, match="cannot be downloaded"):
        load_dataset("imagenet32", tmp_path, download=True)
    train = write_npz(tmp_path / "imagenet32_train.npz", 4, rng)
    write_npz(tmp_path / "imagenet32_val.npz", 1, rng)
    ds = load_dataset("imagenet32", tmp_path)
    assert ds.train_y.tolist() == [v - 1 for v in train["labels"]]
    (tmp_path / "imagenet32_val.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DatasetError, match="imagenet32_val.npz is corrupt"):
        load_dataset("imagenet32", tmp_path)
