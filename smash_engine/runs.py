"""A run's files and inputs: creating its results file, its directory, atomic checkpoints and weights,
the device it runs on, and its data splits. The engine, the studies and transfer share these.

Files of a run `runs/NAME.db`: the run directory `runs/NAME/` holds checkpoint.pt, final-ID.pt (final
training checkpoints), final-ID.safetensors (trained weights) and engine.log (detached engines).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from . import store
from .config import RunConfig
from .data import DeviceData, device_data, holdout_split, load_dataset
from .errors import ConfigError, ResultsFileError, SmashError
from .space import Architecture


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Under torchrun, "cuda" and "auto" mean this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA GPU is visible here; use --device cpu")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" and torch.cuda.is_available() else name)


def run_dir(db_path: Path) -> Path:
    return db_path.with_suffix("")


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, fsync, rename: a reader never sees a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp.is_file():
            tmp.unlink()
        raise SmashError(f"could not write {path.name} ({e.strerror or e}); the previous one is intact: "
                         f"free space or fix permissions in {path.parent}, then `smash-tui resume`") from e


def create_run(db_path: Path, cfg: RunConfig) -> int:
    """Create the results file with one run in it; refuse to reuse an existing one."""
    if db_path.exists():
        raise ResultsFileError(f"{db_path} already exists: resume it with `smash-tui resume {db_path}`, "
                               "or pick another --name or --db")
    resolve_device(cfg.device)  # fail before anything is written: device, then data
    _check_val_size(cfg.train.val_size, len(load_dataset(cfg.dataset, cfg.data_dir, cfg.download).train_y))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    w = store.connect_writer(db_path)
    try:
        return w.create_run(cfg.name, cfg.to_dict(), cfg.dataset, cfg.preset, cfg.device, cfg.seed, None)
    finally:
        w.close()


def _check_val_size(n_val: int, n_train: int) -> None:
    if n_val >= n_train:
        raise ConfigError(f"--val-size {n_val} leaves no training images ({n_train} in all)")


def load_splits(cfg: RunConfig, device: torch.device, dataset: str | None = None,
                data_dir: str | None = None) -> tuple[DeviceData, DeviceData, DeviceData]:
    """(train, val, test) on `device`, the held-out split carved (seeded) from the training set. Another
    `dataset` (transfer) holds out at most 10% of its training set. The engine and the studies use this."""
    ds = load_dataset(dataset or cfg.dataset, data_dir if dataset else cfg.data_dir, cfg.download and not dataset)
    n_val = cfg.train.val_size if dataset is None else min(cfg.train.val_size, len(ds.train_y) // 10)
    _check_val_size(n_val, len(ds.train_y))
    tr, va = holdout_split(len(ds.train_y), n_val, cfg.seed)
    return tuple(device_data(x, y, ds.info, device) for x, y in  # type: ignore[return-value]
                 ((ds.train_x[tr], ds.train_y[tr]), (ds.train_x[va], ds.train_y[va]), (ds.test_x, ds.test_y)))


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def save_weights(net: torch.nn.Module, arch: Architecture, path: Path) -> None:
    """safetensors: loads without unpickling code; the architecture travels in the metadata."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"architecture": arch.to_json(), "format": "smash-tui FixedNet"})
    os.replace(tmp, path)
