"""Transfer (paper Section 4.2): final training of an architecture found on one dataset on another.

The architecture is rebuilt for the new images: same blocks and ops, the stem takes the new image
channels and the classifier the new classes (the global average pool makes the image size free; only
the skeleton's transitions halve it). For voxel grids (ModelNet10) it becomes the 3-D variant: the
same program with 3-D convolutions (`network.per_axis`). The result is a `finals` row with `dataset`
set, an `archs` row for the rebuilt architecture (source `transfer`, parent the original), per-epoch
`final_steps`, a resumable checkpoint `runs/NAME/final-ID.pt` and the weights `final-ID.safetensors`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import store
from .data import dataset_info
from .errors import ConfigError, ResultsFileError
from .network import arch_cost
from .runs import load_splits
from .space import Architecture, reshaped
from .studies import NORMAL, RunContext, arch_of, fit
from .train import Final, rng


def rebuild(arch: Architecture, dataset: str) -> Architecture:
    """`arch` for `dataset`'s image channels, size and classes; same blocks and ops."""
    info = dataset_info(dataset)
    return reshaped(arch, info.channels, info.image_size, info.num_classes, info.spatial_dims, f"{dataset}'s ")


def transfer_final(ctx: RunContext, db_dir: Path, arch_id: str, dataset: str, data_dir: str | None = None,
                   epochs: int | None = None, report=print, batch: int | None = None) -> int:
    """Train `arch_id` rebuilt for `dataset`; continue an unfinished transfer of the same pair."""
    from .runs import load_owned, save_atomic, save_weights

    epochs = epochs or ctx.cfg.train.final_epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be positive, got {epochs}")
    if batch is not None and batch < 1:
        raise ConfigError(f"--batch must be positive, got {batch}")
    t = dataclasses.replace(ctx.cfg.train, final_batch=batch or ctx.cfg.train.final_batch)
    orig = arch_of(ctx.w.conn, arch_id)
    arch = rebuild(orig, dataset)
    train, val, test = load_splits(ctx.cfg, ctx.device, dataset, data_dir)
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
    ckpt, start, best = db_dir / f"final-{fid}.pt", 0, None
    sd = load_owned(ckpt, ctx.uid) if resume else None
    if sd is not None:
        if sd.get("arch_id", arch.id) != arch.id:
            raise ResultsFileError(f"{ckpt} holds architecture {sd['arch_id']}, not {arch.id}: move it out of "
                                   f"{db_dir}/, then run the same `smash-tui final` again")
        f.net.load_state_dict(sd["net"])
        f.opt.load_state_dict(sd["opt"])
        start, best = int(sd["epoch"]), sd["best_val_error"]
    db_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch(epoch: int, m: dict) -> None:
        nonlocal best
        best = m["val_error"] if best is None else min(best, m["val_error"])
        ctx.w.add_final_step(fid, **m)
        ctx.w.update_final(fid, epoch=epoch, best_val_error=best, test_error=m["test_error"])
        save_atomic({"net": f.net.state_dict(), "opt": f.opt.state_dict(), "epoch": epoch, "best_val_error": best,
                     "run_uid": ctx.uid, "arch_id": arch.id}, ckpt)
        report(f"{dataset} epoch {epoch}/{epochs}: train loss {m['train_loss']:.3f}, val error "
               f"{m['val_error']:.4f}, test error {m['test_error']:.4f}")

    try:
        fit(f, t, epochs, seed, train, val, test, start, on_epoch)
    except BaseException as e:  # a `smash-tui final` run again continues from the last epoch
        ctx.w.update_final(fid, status="failed", message=f"interrupted ({type(e).__name__}); run the same "
                                                         "`smash-tui final` again to continue")
        raise
    weights = db_dir / f"final-{fid}.safetensors"
    save_weights(f.net, arch, weights, ctx.uid)
    ctx.w.update_final(fid, status="done", weights_path=str(weights))
    return fid
