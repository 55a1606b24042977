"""What a user takes home from a search, in Python: the found network as a plain PyTorch module.

    from smash_engine import api

    model = api.load_model("runs/quick.db")                 # the best network, trained weights, eval mode
    arch = api.load_architecture("runs/quick.db", 3)        # the leaderboard's third
    fresh = api.build_model(arch, channels=3, size=32, classes=100)   # rebuilt for other images

Nothing here needs the UI, and results files are opened read-only (a running search is not disturbed).
The names in `__all__` are the stable API (docs/api.md); everything else in `smash_engine` may change.

`which` picks an architecture of a results file:
- `"best"`: the run's *pick* (the `pick` view, README "What a search gives you"): the finished final training
  on the run's own dataset with the lowest *validation* error, a tie going to the better SMASH rank (the test
  error is never used to choose); with no finished final, the leaderboard's first;
- an int `n`: the leaderboard's n-th (1 = best SMASH score);
- a string: an architecture id, or a unique prefix of one (at least 4 characters).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import TypedDict

import torch

from . import store
from .cost import Part, summary
from .errors import ConfigError, ResultsFileError
from .network import FixedNet
from .space import Architecture, reshaped

__all__ = [
    "Architecture", "FinalRow", "LeaderboardRow", "LossPoint", "Part", "build_model", "class_names", "finals",
    "leaderboard", "load_architecture", "load_images", "load_model", "loss_curve", "model_summary",
    "weights_path",
]


class LeaderboardRow(TypedDict):
    """One scored architecture (the `leaderboard` view, docs/schema.md)."""

    rank: int  # 1 = lowest SMASH error
    arch_id: str
    smash_error: float  # 0..1, on the held-out split, with generated weights
    smash_loss: float
    params: int
    flops: int  # forward FLOPs per image
    n_ops: int
    source: str  # random | perturb | hillclimb | sample | user | transfer
    final_status: str | None  # queued | running | done | failed | stopped, or None: never final-trained
    final_test_error: float | None
    final_val_error: float | None
    verify_error: float | None  # held-out error at the highest verify rung it finished, or None
    verify_rung: int | None  # the highest verify rung it reached (0-based), or None: not a candidate
    verify_in: int | None  # 1 while still in the verify phase's halving, 0 once out


class LossPoint(TypedDict):
    """One logged window of SMASH training (the `loss_curve` view)."""

    step: int
    epoch: int
    train_loss: float | None
    train_error: float | None
    val_loss: float | None  # the per-epoch validation SMASH error's rows; None on other steps
    val_error: float | None
    lr: float | None
    images_per_s: float | None


class FinalRow(TypedDict):
    """One final training (the `finals` table)."""

    id: int
    arch_id: str
    status: str  # queued | running | done | failed | stopped
    epochs: int  # planned
    epoch: int  # completed
    best_val_error: float | None
    test_error: float | None
    params: int
    flops: int
    weights_path: str | None  # the .safetensors file once done
    dataset: str | None  # None: the run's own dataset; else a transfer (`smash-tui final --dataset`)


def load_architecture(source: str | Path, which: str | int = "best") -> Architecture:
    """An architecture from a results file (`which` as in the module's docstring), from an architecture
    JSON (`smash-tui export --format json`) or from a weights file (`.safetensors`, whose metadata holds it)."""
    path = _existing(source)
    if path.suffix == ".safetensors":
        return _arch_of_weights(path)
    if path.suffix == ".json":
        try:
            return Architecture.from_json(path.read_text())
        except (ValueError, KeyError, TypeError) as e:
            raise ResultsFileError(f"{path} is not an architecture JSON ({e}): write one with "
                                   "`smash-tui export`") from e
    with _reader(path) as conn:
        return Architecture.from_json(_pick(conn, path, which)["spec_json"])


def build_model(arch: Architecture, *, channels: int | None = None, size: int | None = None,
                classes: int | None = None) -> FixedNet:
    """A freshly initialised network of `arch`, rebuilt for other images when asked (same blocks and ops:
    the stem takes `channels`, the classifier `classes`, and the global average pool makes `size` free)."""
    return FixedNet(reshaped(arch, channels, size, classes))


def load_model(source: str | Path, which: str | int = "best", *, pretrained: bool = True,
               channels: int | None = None, size: int | None = None, classes: int | None = None) -> FixedNet:
    """The network, ready for `model(images)`: in eval mode, on the CPU (move it with `.to(device)`).

    With `pretrained`, its final-trained weights: from the results file's finished final of that
    architecture, or from `X.safetensors` itself, or from the weights file beside an exported `X.json`
    (`smash-tui export --weights`). Weights fit the search's own image shape; for other images use
    `pretrained=False` with `channels`/`size`/`classes` (and train it, e.g. `smash-tui final --dataset`).
    """
    path = _existing(source)
    arch = load_architecture(path, which)
    if not pretrained:
        return build_model(arch, channels=channels, size=size, classes=classes).eval()
    if (channels, size, classes) != (None, None, None):
        raise ConfigError("trained weights fit the search's own image shape: pass pretrained=False to rebuild the "
                          "network for other images")
    weights = _weights_of(path, arch)
    from safetensors.torch import load_file

    model = FixedNet(arch)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def weights_path(source: str | Path, which: str | int = "best") -> Path:
    """The trained weights file (`.safetensors`) that `load_model(source, which)` loads: for a results file,
    that architecture's finished final on the run's own dataset with the lowest validation error (found beside
    the results file when the run was copied); for an architecture JSON, the `.safetensors` beside it."""
    path = _existing(source)
    return _weights_of(path, load_architecture(path, which))


def load_images(db: str | Path, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The run's dataset, `split` "test" or "train" (all of it: the held-out images are carved from it), as
    the networks take it: float32 (N, C, H, W) normalised with the dataset's mean and std, and int64 labels."""
    from .config import RunConfig
    from .data import device_data
    from .runs import load_run_dataset

    if split not in ("test", "train"):
        raise ConfigError(f"split must be 'test' or 'train', not {split!r}")
    with _reader(db) as conn:
        run = store.get_run(conn)
    if run is None:
        raise ResultsFileError(f"{db} holds no run")
    cfg = RunConfig.from_dict(json.loads(run["config_json"]))
    ds = load_run_dataset(dataclasses.replace(cfg, download=False))
    x, y = (ds.test_x, ds.test_y) if split == "test" else (ds.train_x, ds.train_y)
    data = device_data(x, y, ds.info, torch.device("cpu"))
    return data.normalize(data.x), data.y


def class_names(db: str | Path) -> list[str]:
    """The name of each class, by label: a folder of images' class folders (sorted, as torchvision's ImageFolder),
    an npz file's `class_names` (else "0", "1", ...), for a built-in dataset its labels as text."""
    from .config import RunConfig

    with _reader(db) as conn:
        run = store.get_run(conn)
    if run is None:
        raise ResultsFileError(f"{db} holds no run")
    cfg = RunConfig.from_dict(json.loads(run["config_json"]))
    data = cfg.extra.get("data")
    return list(data["class_names"]) if data else [str(i) for i in range(cfg.space.num_classes)]


def model_summary(arch: Architecture) -> list[Part]:
    """Per part (stem, each block, each transition, head): parameters, FLOPs per image, output shape."""
    return summary(arch)


def leaderboard(db: str | Path, limit: int | None = None) -> list[LeaderboardRow]:
    """The scored architectures, best SMASH score first."""
    with _reader(db) as conn:
        return store.leaderboard(conn, _run_id(conn, db), limit=limit)  # type: ignore[return-value]


def loss_curve(db: str | Path) -> list[LossPoint]:
    """The SMASH training curve, oldest first."""
    with _reader(db) as conn:
        rows = store.loss_curve(conn, _run_id(conn, db))
    return [{k: r[k] for k in LossPoint.__annotations__} for r in rows]  # type: ignore[misc]


def finals(db: str | Path) -> list[FinalRow]:
    """Every final training of the run, oldest first."""
    with _reader(db) as conn:
        rows = store.finals(conn, _run_id(conn, db))
    return [{k: r[k] for k in FinalRow.__annotations__} for r in rows]  # type: ignore[misc]


# -- internals ------------------------------------------------------------------------------------
def _existing(source: str | Path) -> Path:
    path = Path(source)
    if not path.is_file():
        raise ResultsFileError(f"{path} does not exist: give a results file (runs/NAME.db), an architecture JSON "
                               "or a .safetensors weights file")
    return path


def _reader(db: str | Path):
    """A read-only connection, closed after use (sqlite3's own `with` only ends a transaction)."""
    return contextlib.closing(store.connect_reader(_existing(db)))


def _run_id(conn, db) -> int:
    run = store.get_run(conn)
    if run is None:
        raise ResultsFileError(f"{db} holds no run")
    return int(run["id"])


def _done_finals(conn, run_id: int) -> list[dict]:
    """Finished final trainings on the run's own dataset (transfers have other image shapes)."""
    return [f for f in store.finals(conn, run_id) if f["status"] == "done" and f["dataset"] is None]


def _pick(conn, db: Path, which: str | int) -> dict:
    run_id = _run_id(conn, db)
    if isinstance(which, bool) or not isinstance(which, (int, str)):
        raise ConfigError(f"which must be 'best', a leaderboard rank or an architecture id, not {which!r}")
    if which == "best":
        found = store.pick(conn, run_id)
        if found is not None:
            return store.get_arch(conn, found["arch_id"])  # type: ignore[return-value]
        which = 1
    if isinstance(which, int):
        rows = store.leaderboard(conn, run_id, rank=which)
        if not rows:
            raise ResultsFileError(f"{db} has no leaderboard rank {which}: see `smash-tui show {db}`")
        which = rows[0]["arch_id"]
    row = store.get_arch(conn, str(which))
    if row is None:
        raise ResultsFileError(f"no architecture {which!r} in {db}: see `smash-tui show {db}` for ids")
    return row


def _weights_of(path: Path, arch: Architecture) -> Path:
    if path.suffix == ".safetensors":
        return path
    if path.suffix == ".json":
        beside = path.with_suffix(".safetensors")
        if not beside.exists():
            raise ResultsFileError(f"no trained weights beside {path} ({beside.name}): export them with "
                                   "`smash-tui export DB --arch ID -o FILE.json --weights`, or pass pretrained=False")
        if _arch_of_weights(beside).id != arch.id:
            raise ResultsFileError(f"{beside} holds another architecture than {path}")
        return beside
    from .runs import run_dir, weights_file

    with _reader(path) as conn:
        done = [f for f in _done_finals(conn, _run_id(conn, path)) if f["arch_id"] == arch.id]
    if not done:
        raise ResultsFileError(f"architecture {arch.id} of {path} has no finished final training: start one with "
                               f"`smash-tui control {path} final {arch.id}` (the API's pretrained=False gives it "
                               "untrained)")
    best = min(done, key=lambda f: f["best_val_error"] if f["best_val_error"] is not None else 1.0)
    found = weights_file(path, best["weights_path"])
    if found is None:
        raise ResultsFileError(f"the weights of final #{best['id']} are missing ({best['weights_path']}, and not "
                               f"in {run_dir(path)}/): train it again with `smash-tui control {path} final "
                               f"{arch.id}`")
    return found


def _arch_of_weights(path: Path) -> Architecture:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise ResultsFileError(f"{path} is not a safetensors file ({e})") from e
    if "architecture" not in meta:
        raise ResultsFileError(f"{path} records no architecture: it was not written by smash-tui")
    return Architecture.from_json(meta["architecture"])
