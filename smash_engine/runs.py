"""A run's files and inputs: creating its results file, its directory, atomic checkpoints and weights,
the device it runs on, its data splits, and a finished run opened for a study or a transfer (`open_run`). The
engine, the studies and transfer share these.

Files of a run `runs/NAME.db`: the run directory `runs/NAME/` holds checkpoint.pt, final-ID.pt (final
training checkpoints), final-ID.safetensors (trained weights), study checkpoints and engine.log (detached
engines). Every checkpoint and weights file records the run's identity (`runs.uid`, made when the run is
created), and a file of another run is never loaded: a folder left behind by a deleted results file, or a
results file renamed away from its folder, ends in one line that says which file and what to do.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import store
from .config import RunConfig
from .data import Dataset, DeviceData, device_data, holdout_split, load_dataset
from .encoding import ArchPlan
from .errors import ConfigError, EngineBusy, ResultsFileError, SmashError
from .space import Architecture
from .train import Smash, bn_calibration, score_plan


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Under torchrun, "cuda" and "auto" mean this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA GPU is visible here; use --device cpu")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" and torch.cuda.is_available() else name)


def run_dir(db_path: Path) -> Path:
    return db_path.with_suffix("")


def disk_full(e: BaseException) -> bool:
    """Whether `e` is the disk (or a quota) filling up, from the OS or from SQLite."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        return True
    return isinstance(e.__cause__, BaseException) and disk_full(e.__cause__)


def check_folder_free(db_path: Path) -> None:
    """A new run's folder must not hold another run's files: they would be resumed from (the old
    checkpoint's HyperNet ranked as if trained now) or loaded into other architectures."""
    folder = run_dir(db_path)
    if folder.is_dir():
        files = sorted(p.name for p in folder.iterdir())
        if files:
            shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
            raise ResultsFileError(f"{folder}/ already holds another run's files ({shown}) but {db_path} does not "
                                   f"exist: move that folder aside (or delete it), or pick another --name or --db")


def load_owned(path: Path, uid: str | None, config: dict | None = None) -> dict | None:
    """A checkpoint of this run, or None when there is none; a file of another run is refused.

    Files from before run identities (no `run_uid`) are accepted when the config they record (if any)
    matches: they come from the run's own earlier versions.
    """
    sd = load_checkpoint(path)
    if sd is None:
        return None
    owner = sd.get("run_uid")
    if owner is not None and uid is not None and owner != uid:
        raise ResultsFileError(f"{path} belongs to another run (identity {owner[:8]}, this run is {uid[:8]}): "
                               f"move it out of {path.parent}/, then resume")
    if owner is None and config is not None and sd.get("config") is not None and \
            _shape(sd["config"]) != _shape(config):
        raise ResultsFileError(f"{path} was made with another configuration than this run's: move it out of "
                               f"{path.parent}/, then resume")
    return sd


def _shape(cfg: dict) -> dict:
    """What decides a checkpoint's tensors and schedule (not the run's name, device or scoring options)."""
    return {k: cfg.get(k) for k in ("dataset", "space", "hyper", "seed")} | {
        "train": {k: cfg.get("train", {}).get(k) for k in ("epochs", "batch_size", "lr")}}


def find_run_folder(db_path: Path, uid: str) -> Path | None:
    """The folder beside `db_path` whose checkpoint is this run's (after the results file was renamed)."""
    for ckpt in sorted(db_path.parent.glob("*/checkpoint.pt")):
        if ckpt.parent == run_dir(db_path):
            continue
        try:
            sd = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception:  # an unreadable file is not this run's
            continue
        if sd.get("run_uid") == uid:
            return ckpt.parent
    return None


def missing_folder(db_path: Path, uid: str | None) -> str:
    """Why a run that trained past a checkpoint has none in its folder (the results file was moved or renamed
    away from it), and what to do: said rather than silently scoring with (or training from) an untrained
    HyperNet."""
    where = run_dir(db_path)
    found = find_run_folder(db_path, uid) if uid else None
    if found is not None:
        return (f"this run's files are in {found}/ but {db_path} looks for them in {where}/ (the results "
                f"file was renamed): rename {found.name}/ to {where.name}/, or the results file back to "
                f"{found.name}.db, then resume")
    return (f"{where}/checkpoint.pt is missing, but this run trained past it: put the run folder back beside "
            f"{db_path} as {where.name}/ to score or search again (final training works without it)")


def weights_file(db_path: Path, stored: str | None) -> Path | None:
    """A final's weights: where the results file recorded them, else in the run folder beside it (a run
    folder copied to another machine, or renamed together with its results file)."""
    if not stored:
        return None
    here = Path(stored)
    if here.exists():
        return here
    local = run_dir(db_path) / here.name
    return local if local.exists() else None


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, fsync, rename: a reader never sees a half-written checkpoint."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())

    _replace(path, write)


def _replace(path: Path, write) -> None:
    """`write` a temporary file beside `path`, then rename it over `path`; on failure (a full disk) the
    temporary file goes and `path` stays as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if tmp.is_file():
            tmp.unlink()
        raise SmashError(f"could not write {path} ({e.strerror or e}); the previous one is intact: "
                         f"free space or fix permissions in {path.parent}/, then `smash-tui resume`") from e


def create_run(db_path: Path, cfg: RunConfig, notes: Sequence[str] = ()) -> int:
    """Create the results file with one run in it; refuse to reuse an existing one. `notes`: info events to
    start its log with (how a user's images were read)."""
    if db_path.exists():
        raise ResultsFileError(f"{db_path} already exists: resume it with `smash-tui resume {db_path}`, "
                               "or pick another --name or --db")
    check_folder_free(db_path)
    resolve_device(cfg.device)  # fail before anything is written: device, then data
    _check_val_size(cfg.train.val_size, len(load_run_dataset(cfg).train_y))
    db_path.parent.mkdir(parents=True, exist_ok=True)
    w = store.connect_writer(db_path)
    try:
        run_id = w.create_run(cfg.name, cfg.to_dict(), cfg.dataset, cfg.preset, cfg.device, cfg.seed, None)
        for note in notes:
            w.add_event(run_id, "info", note)
        return run_id
    finally:
        w.close()


def _check_val_size(n_val: int, n_train: int) -> None:
    if n_val >= n_train:
        raise ConfigError(f"--val-size {n_val} leaves no training images ({n_train} in all)")


def load_run_dataset(cfg: RunConfig) -> Dataset:
    """The run's dataset: a built-in one from its files, or a user's as the run recorded it (`extra["data"]`)."""
    return load_dataset(cfg.dataset, cfg.data_dir, cfg.download, cfg.extra.get("data"))


def load_splits(cfg: RunConfig, device: torch.device, dataset: str | None = None,
                data_dir: str | None = None, data: dict | None = None) -> tuple[DeviceData, DeviceData, DeviceData]:
    """(train, val, test) on `device`, the held-out split carved (seeded) from the training set. Another
    `dataset` (transfer; `data` for a user's, `userdata.prepare`) holds out at most 10% of its training set. The
    engine and the studies use this."""
    ds = load_dataset(dataset, data_dir, False, data) if dataset else load_run_dataset(cfg)
    n_val = cfg.train.val_size if dataset is None else min(cfg.train.val_size, len(ds.train_y) // 10)
    _check_val_size(n_val, len(ds.train_y))
    tr, va = holdout_split(len(ds.train_y), n_val, cfg.seed)
    return tuple(device_data(x, y, ds.info, device) for x, y in  # type: ignore[return-value]
                 ((ds.train_x[tr], ds.train_y[tr]), (ds.train_x[va], ds.train_y[va]), (ds.test_x, ds.test_y)))


def load_checkpoint(path: Path) -> dict | None:
    return torch.load(path, map_location="cpu", weights_only=True) if path.exists() else None


def save_weights(net: torch.nn.Module, arch: Architecture, path: Path, uid: str | None = None) -> None:
    """safetensors: loads without unpickling code; the architecture and the run travel in the metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    meta = {"architecture": arch.to_json(), "format": "smash-tui FixedNet", **({"run_uid": uid} if uid else {})}
    _replace(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


# -- a finished run, opened for a study or a transfer ---------------------------------------------------
@dataclass
class RunContext:
    """A finished run opened for a study or a transfer: its writer, config, directory, device and data splits."""

    w: store.Writer
    run_id: int
    cfg: RunConfig
    dir: Path
    device: torch.device
    train: DeviceData
    val: DeviceData
    test: DeviceData
    calib: list[torch.Tensor] | None = None  # the run's BatchNorm calibration batches (train.bn_calibration)
    uid: str | None = None  # the run's identity: checkpoints of other runs are refused (runs.load_owned)

    def close(self) -> None:
        self.w.close()

    def score(self, s: Smash, plan: ArchPlan, batch: int | None = None) -> tuple[float, float]:
        """SMASH (error, loss) on the held-out split, scored as the run's rank phase scores."""
        t = self.cfg.train
        return score_plan(s, plan, self.val, batch or t.score_batch, t.score_bn, self.calib)


def open_run(db: Path, device: str | None = None) -> RunContext:
    """Open (and migrate) the results file; refuse while its engine still runs."""
    w = store.connect_writer(db)
    try:
        run = store.get_run(w.conn)
        if run is None:
            raise ResultsFileError(f"{db} holds no run; start one with `smash-tui run`")
        if store.engine_state(run) in ("running", "paused"):
            raise EngineBusy(f"the search in {db} is still running: wait for it or stop it "
                             f"(`smash-tui control {db} stop`), then run the study")
        cfg = RunConfig.from_dict(json.loads(run["config_json"]))
        dev = resolve_device(device or cfg.device)
        train, val, test = load_splits(cfg, dev)
    except BaseException:
        w.close()
        raise
    return RunContext(w, run["id"], cfg, run_dir(Path(db)), dev, train, val, test, bn_calibration(cfg, train),
                      run["uid"])


def load_smash(ctx: RunContext, cfg: RunConfig | None = None, path: Path | None = None) -> Smash:
    """The run's trained SMASH (HyperNet and SmashNet), or the one at `path` trained with `cfg`."""
    cfg, path = cfg or ctx.cfg, path or ctx.dir / "checkpoint.pt"
    sd = load_owned(path, ctx.uid, cfg.to_dict())
    if sd is None:
        raise ResultsFileError(f"no SMASH checkpoint at {path}: the study needs the run's trained HyperNet")
    s = Smash.create(cfg, ctx.device)
    s.load_state_dict(sd)
    return s


def arch_of(conn, arch_id: str) -> Architecture:
    row = store.get_arch(conn, arch_id)
    if row is None:
        raise ResultsFileError(f"no architecture {arch_id!r} in this run; pick an id from the leaderboard")
    return Architecture.from_json(row["spec_json"])
