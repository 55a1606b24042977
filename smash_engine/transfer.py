"""Transfer (paper Section 4.2): final training of an architecture found on one dataset on another.

The architecture is rebuilt for the new images: same blocks and ops, the stem takes the new image
channels and the classifier the new classes (the global average pool makes the image size free; only
the skeleton's transitions halve it). For voxel grids (ModelNet10) it becomes the 3-D variant: the
same program with 3-D convolutions (`cost.per_axis`). The result is a `finals` row with `dataset`
set, an `archs` row for the rebuilt architecture (source `transfer`, parent the original), per-epoch
`final_steps`, a resumable checkpoint `runs/NAME/final-ID.pt` and the weights `final-ID.safetensors`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import store
from .cost import arch_cost
from .data import dataset_info
from .errors import ConfigError
from .finals import FinalRecord
from .loops import EpochEnd, fit
from .runs import RunContext, arch_of, load_owned, load_splits
from .seeds import NORMAL, rng, torch_gen
from .space import Architecture, reshaped
from .train import Final


def rebuild(arch: Architecture, dataset: str, data: dict | None = None) -> Architecture:
    """`arch` for `dataset`'s image channels, size and classes (`data`: a user's dataset); same blocks and ops."""
    info = dataset_info(dataset, data)
    return reshaped(arch, info.channels, info.image_size, info.num_classes, info.spatial_dims, f"{dataset}'s ")


def transfer_final(ctx: RunContext, db_dir: Path, arch_id: str, dataset: str, data_dir: str | None = None,
                   epochs: int | None = None, report=print, batch: int | None = None, data: dict | None = None) -> int:
    """Train `arch_id` rebuilt for `dataset` (`data`: a user's, `userdata.prepare`); continue an unfinished transfer
    of the same pair."""
    epochs = epochs or ctx.cfg.train.final_epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be positive, got {epochs}")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be positive, got {batch}")
    t = dataclasses.replace(ctx.cfg.train, final_batch=batch or ctx.cfg.train.final_batch)
    orig = arch_of(ctx.w.conn, arch_id)
    arch = rebuild(orig, dataset, data)
    train, val, test = load_splits(ctx.cfg, ctx.device, dataset, data_dir, data)
    # a user's images are named by where and what they are: another folder of the same shape is another transfer
    dataset = dataset if data is None else f"{dataset}:{data['path']}@{data['key'][:8]}"
    params, flops = arch_cost(arch)
    ctx.w.add_arch(ctx.run_id, arch.id, arch.to_json(), "transfer", orig.id, params, flops, arch.n_ops, arch.n_ops)
    row = store.transfer_final(ctx.w.conn, ctx.run_id, arch.id, dataset)
    if row is not None and row["status"] == "done" and row["epochs"] == epochs:
        report(f"already trained: final #{row['id']}, test error {row['test_error']:.4f}")
        return row["id"]
    resume = row is not None and row["status"] != "done" and row["epochs"] == epochs
    fid = row["id"] if resume else ctx.w.create_transfer_final(ctx.run_id, arch.id, epochs, params, flops, dataset)
    ctx.w.update_final(fid, status="running", message=f"transfer of {orig.id} to {dataset}")
    seed = rng(ctx.cfg.seed, NORMAL, 10_000 + fid).getrandbits(31)
    f = Final.create(arch, t, seed, ctx.device)
    rec = FinalRecord(ctx.w, fid, arch, f, db_dir, ctx.uid)
    start = rec.resume(load_owned(rec.checkpoint, ctx.uid) if resume else None, "",
                       "run the same `smash-tui final` again")
    db_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch(e: EpochEnd) -> None:
        m = rec.evaluate(e, val, test, t.score_batch)
        rec.commit(m)
        report(f"{dataset} epoch {e.epoch}/{epochs}: train loss {e.loss:.3f}, val error "
               f"{m['val_error']:.4f}, test error {m['test_error']:.4f}")

    try:
        fit(f, train, epochs, min(t.final_batch, len(train)), t.final_lr, lambda e: torch_gen(seed, NORMAL, e), start,
            on_epoch=on_epoch)
    except BaseException as e:  # a `smash-tui final` run again continues from the last epoch
        ctx.w.update_final(fid, status="failed", message=f"interrupted ({type(e).__name__}); run the same "
                                                         "`smash-tui final` again to continue")
        raise
    rec.finish()
    return fid
