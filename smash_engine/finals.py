"""Final training: a chosen architecture trained with freely learned weights (paper Section 4).

Each final is a `finals` row, its per-epoch `final_steps`, a resumable checkpoint `<run dir>/final-ID.pt`
(network, optimizer, epoch, best held-out error, the run's identity and the architecture's id) and, once
done, the weights `final-ID.safetensors`. `FinalRecord` keeps those records, for the engine's finals
(`Finals`: queued by the refine or verify phase or by a `final` command, trained one at a time after the
search phases) and for transfer's (`transfer.py`) alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store
from .context import Context
from .data import DeviceData
from .errors import ResultsFileError
from .halving import Rung, train_rung
from .loops import EpochEnd, fit
from .runs import load_owned, save_atomic, save_weights
from .seeds import FINAL, torch_gen
from .space import Architecture
from .train import Final


@dataclass
class FinalRecord:
    """One final training's records (written by rank 0)."""

    w: Any  # store.Writer
    fid: int
    arch: Architecture
    f: Final
    folder: Path
    uid: str | None
    best: float | None = None  # lowest held-out error so far
    last: dict = field(default_factory=dict)  # the last epoch's figures
    sizes: dict = field(default_factory=dict)  # val_images, test_images: what the errors are out of

    @property
    def checkpoint(self) -> Path:
        return self.folder / f"final-{self.fid}.pt"

    def resume(self, sd: dict | None, whose: str, then: str) -> int:
        """Load `sd` (this final's checkpoint, or None for none) into the network and optimizer; returns the
        epoch to go on from. A checkpoint of another architecture is refused: `whose` names this final in
        the message, `then` says how to go on once it is moved aside."""
        if sd is None:
            return 0
        if sd.get("arch_id", self.arch.id) != self.arch.id:
            raise ResultsFileError(f"{self.checkpoint} holds architecture {sd['arch_id']}, not {whose}{self.arch.id}: "
                                   f"move it out of {self.folder}/, then {then}")
        try:
            self.f.net.load_state_dict(sd["net"])
            self.f.opt.load_state_dict(sd["opt"])
        except (RuntimeError, ValueError, KeyError) as e:  # a file from before identities, of another net
            raise ResultsFileError(f"{self.checkpoint} does not fit {whose}architecture {self.arch.id}: move it out "
                                   f"of {self.folder}/, then {then}") from e
        self.best = sd["best_val_error"]
        return int(sd["epoch"])

    def evaluate(self, e: EpochEnd, val: DeviceData, test: DeviceData, batch: int) -> dict:
        """The epoch's figures: training loss and error, held-out and test error."""
        val_err, _ = self.f.evaluate(val, batch)
        test_err, _ = self.f.evaluate(test, batch)
        self.sizes = dict(val_images=len(val), test_images=len(test))
        self.best = val_err if self.best is None else min(self.best, val_err)
        return dict(epoch=e.epoch, train_loss=e.loss, train_error=e.error, lr=e.lr, val_error=val_err,
                    test_error=test_err)

    def commit(self, m: dict) -> None:
        """Record an epoch's figures and checkpoint it: a stop loses at most the epoch in progress."""
        self.last = m
        self.w.add_final_step(self.fid, **m)
        self.w.update_final(self.fid, epoch=m["epoch"], best_val_error=self.best, test_error=m["test_error"],
                            **self.sizes)
        save_atomic({"net": self.f.net.state_dict(), "opt": self.f.opt.state_dict(), "epoch": m["epoch"],
                     "best_val_error": self.best, "run_uid": self.uid, "arch_id": self.arch.id}, self.checkpoint)

    def finish(self) -> Path:
        weights = self.folder / f"final-{self.fid}.safetensors"
        save_weights(self.f.net, self.arch, weights, self.uid)
        self.w.update_final(self.fid, status="done", weights_path=str(weights))
        return weights


class Finals:
    """The engine's queue of finals, trained one at a time between commands."""

    def __init__(self, ctx: Context, between):
        self.ctx = ctx
        self.between = between  # the engine's between-steps hook: commands, heartbeat, signals

    def requeue(self) -> None:
        """Finals a stop or a dead engine cut short continue from their last epoch checkpoint."""
        with self.ctx.w.transaction() as c:
            c.execute("UPDATE finals SET status = 'queued' WHERE run_id = ? AND status IN ('running', 'stopped')",
                      (self.ctx.run_id,))

    def queue(self, arch_id: str, epochs: int) -> int:
        row = store.get_arch(self.ctx.conn, arch_id)
        return self.ctx.w.create_final(self.ctx.run_id, row["id"], epochs, row["params"], row["flops"])

    def next(self) -> dict | None:
        return self.ctx.agreed(lambda: store.next_queued_final(self.ctx.conn, self.ctx.run_id))

    def run_queued(self, train: DeviceData, val: DeviceData, test: DeviceData) -> None:
        while (final := self.next()) is not None:
            self.train_one(final, train, val, test)

    def train_one(self, final: dict, train: DeviceData, val: DeviceData, test: DeviceData) -> None:
        ctx, t, fid = self.ctx, self.ctx.cfg.train, final["id"]
        arch = Architecture.from_json(final["spec_json"])
        f = Final.create(arch, t, ctx.cfg.seed * 1000 + fid, ctx.device, ctx.world)
        rec = FinalRecord(ctx.w, fid, arch, f, ctx.dir, ctx.uid)
        start = rec.resume(ctx.agreed(lambda: load_owned(rec.checkpoint, ctx.uid)), f"final #{fid}'s ", "resume")
        ctx.w.update_final(fid, status="running")
        ctx.event("info", f"final training #{fid} of {arch.id} ({final['epochs']} epochs)")

        def on_epoch(e: EpochEnd) -> None:
            if not ctx.world.main:  # rank 0 evaluates, records and checkpoints
                return
            m = rec.evaluate(e, val, test, t.score_batch)
            m["images_per_s"] = e.steps * t.final_batch * ctx.world.size / (time.perf_counter() - e.started)
            rec.commit(m)
            ctx.report(dict(phase="final", done=e.epoch, total=final["epochs"], loss=e.loss, error=m["test_error"],
                            images_per_s=m["images_per_s"], arch=arch.id, final=fid, error_name="test"))

        fit(f, train, final["epochs"], t.final_batch, t.final_lr,
            lambda epoch: torch_gen(ctx.cfg.seed, FINAL, fid * 100_000 + epoch), start, ctx.world, self.between,
            on_epoch)
        if not ctx.world.main:
            return
        test_err = rec.last.get("test_error")
        if start >= final["epochs"]:  # its checkpoint was already at the last epoch: record it, train nothing
            test_err, _ = f.evaluate(test, t.score_batch)
            ctx.w.update_final(fid, epoch=start, best_val_error=rec.best, test_error=test_err,
                               val_images=len(val), test_images=len(test))
        rec.finish()
        ctx.event("info", f"final training #{fid} done: test error {test_err:.4f}")

    def verify_one(self, arch_id: str, rung: Rung, train: DeviceData, val: DeviceData, done: int, total: int,
                   rungs: int) -> None:
        """One candidate's trainings at a verify rung (`halving.train_rung`, `rung.seeds` of them); the mean of
        their held-out error and loss is committed once the last lands (a stop trains them again: they are
        short). `done` and `total` count the phase's training images, for the progress line."""
        ctx, t = self.ctx, self.ctx.cfg.train
        arch = Architecture.from_json(ctx.agreed(lambda: store.get_arch(ctx.conn, arch_id))["spec_json"])
        ctx.w.set_verification(ctx.run_id, arch_id, rung.index, "running")
        t0, errs, losses = time.perf_counter(), [], []
        for trial in range(rung.seeds):
            f = train_rung(arch, t, train, rung, ctx.cfg.seed, ctx.device, ctx.world, self.between, trial)
            if not ctx.world.main:
                continue
            err, loss = f.evaluate(val, t.score_batch)
            errs.append(err)
            losses.append(loss)
            seed = f" seed {trial + 1}/{rung.seeds}" if rung.seeds > 1 else ""
            ctx.report(dict(phase="verify", done=done + rung.images * (trial + 1), total=total, loss=loss, error=err,
                            error_name="held-out err", stage=f"rung {rung.index + 1}/{rungs}{seed} {arch_id[:8]}"))
        if not ctx.world.main:
            return
        ctx.w.set_verification(ctx.run_id, arch_id, rung.index, "done", sum(errs) / len(errs),
                               sum(losses) / len(losses), round(time.perf_counter() - t0, 2))
