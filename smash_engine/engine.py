"""The engine process: runs the phases of one search, the only writer of its results file.

Phases (runs.phase): smash -> rank -> refine -> verify (when `verify_top`) -> final -> done. Between steps
the engine beats its heart, polls the `commands` table (pause, continue, stop, sample N, final ARCH [epochs])
and checks for SIGTERM or SIGINT. Checkpoints (`<run dir>/checkpoint.pt`, loadable with `weights_only=True`)
are written atomically at each epoch end, on pause and on stop; rank and refine resume from what the results
file already holds, since each of their architectures is a pure function of (seed, stage, index).

A run's files (checkpoint.pt, final-ID.pt, final-ID.safetensors) and inputs live in `runs.py`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import dist, store
from .config import RunConfig
from .encoding import check_in_space
from .errors import ConfigError, ResultsFileError, SmashError
from .network import arch_cost
from .report import plain_reporter
from .runs import (
    disk_full,
    find_run_folder,
    load_owned,
    load_splits,
    resolve_device,
    run_dir,
    save_atomic,
    save_weights,
)
from .space import Architecture
from .train import (
    FINAL,
    HILLCLIMB,
    PERTURB,
    RANK,
    SAMPLE,
    VERIFY,
    Final,
    Smash,
    bn_calibration,
    cosine_lr,
    perturbed,
    rank_arch,
    rng,
    smash_arch,
    smash_score,
    smash_step,
    torch_gen,
    validation_error,
)

HEARTBEAT_S = 2.0
POLL_S = 0.5
Reporter = Callable[[dict], None]


class _Stop(Exception):
    """Raised between steps to unwind to `run` for a checkpointed stop."""


class _NoWriter:
    """What ranks other than 0 write to: nothing (rank 0 is the results file's only writer)."""

    def transaction(self):
        return contextlib.nullcontext()

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Engine:
    def __init__(self, db_path: Path, reporter: Reporter | None = None):
        self.db_path = Path(db_path)
        self.world = dist.world_from_env()
        if self.world.active and torch.cuda.is_available():
            torch.cuda.set_device(self.world.local_rank)
        dist.init(self.world)
        self.w = store.connect_writer(self.db_path) if self.world.main else _NoWriter()
        run = self._agreed(lambda: store.get_run(self.w.conn))
        if run is None:
            raise ResultsFileError(f"{db_path} holds no run; start one with `smash-tui run`")
        self.run_id, self.uid, self._run_row = run["id"], run["uid"], run
        self.cfg = RunConfig.from_dict(json.loads(run["config_json"]))
        self.phase = run["phase"]
        self.dir = run_dir(self.db_path)
        self.report = (reporter or (lambda info: None)) if self.world.main else (lambda info: None)
        self.device = resolve_device(self.cfg.device, self.world.local_rank)
        self.step = 0
        self.total_steps = 0
        self._stop_signal = 0
        self._last_beat = self._last_poll = 0.0
        self._paused = self._stop_asked = False
        self._samples_wanted = 0
        self._user_specs: list[str] = []  # architectures sent with `score`, waiting (rank 0)
        self._sampling = False
        self._ips = None
        self.skipped = 0  # SMASH steps skipped for non-finite gradients or out of memory
        self._fail_streak = 0
        self._score_failures = 0
        self._no_hyper: str | None = None  # why the trained HyperNet is missing (runs without it can only train finals)

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> str:
        """Run to the end (or a stop); returns the final status. Unexpected errors mark the run failed
        and propagate with their traceback."""
        if self.world.main:
            self.w.acquire_engine(self.run_id)
            self._requeue_finals()
            self.w.fail_stale(self.run_id)
            self.dir.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            where = f"{self.device.type} x{self.world.size}" if self.world.active else str(self.device)
            self._set(status="running", message=None, device=where)
            self._event("info", f"engine started (pid {os.getpid()} on {socket.gethostname()}, {where})")
            self._prepare()
            if self._no_hyper and self.phase in ("smash", "rank", "refine", "verify"):
                raise ResultsFileError(self._no_hyper)
            phases = {"smash": self._smash, "rank": self._rank, "refine": self._refine, "verify": self._verify,
                      "final": self._final}
            while self.phase != "done":
                phases[self.phase]()
            self._between()  # answer commands that arrived during the last step (or while it was stopped)
            while (final := self._next_final()) is not None:
                self._train_final(final)
                self._between()
            self._set(status="done", phase="done", progress=1.0)
            self._event("info", "search finished")
            return "done"
        except _Stop:
            self._checkpoint()
            with self.w.transaction() as c:  # a final cut short continues from its last epoch on resume
                c.execute("UPDATE finals SET status = 'stopped' WHERE run_id = ? AND status = 'running'",
                          (self.run_id,))
            self._set(status="stopped", message="stopped; continue with smash-tui resume")
            self._event("info", "stopped on request; checkpoint written")
            return "stopped"
        except SmashError as e:
            self._record_failure(str(e))
            raise
        except BaseException as e:
            if disk_full(e):  # the previous checkpoint and every committed row are intact: resume once freed
                message = (f"the disk holding {self.db_path.parent}/ is full ({e}): free space, then "
                           f"`smash-tui resume {self.db_path}`; nothing already saved is lost")
                self._record_failure(message)
                raise SmashError(message) from e
            self._record_failure(f"{type(e).__name__}: {e}", f"engine failed: {type(e).__name__}: {e}")
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.w.close()
            dist.shutdown()

    def _record_failure(self, message: str, event: str | None = None) -> None:
        """Mark the run failed, if the results file can still take it (not on a full disk: then the run
        shows as crashed once its heartbeat is stale, and resumes the same way)."""
        try:
            self._set(status="failed", message=message)
            self._event("error", event or message)
        except Exception as e:
            if not disk_full(e):
                raise

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal += 1
        if self._stop_signal > 1:  # a second Ctrl-C: leave now, losing at most the current step
            raise KeyboardInterrupt

    def _prepare(self) -> None:
        t = self.cfg.train
        self.train, self.val, self.test = load_splits(self.cfg, self.device)
        self.calib = bn_calibration(self.cfg, self.train)
        self.steps_per_epoch = self.train.num_batches(t.batch_size * self.world.size)
        self.total_steps = t.epochs * self.steps_per_epoch
        self.smash = Smash.create(self.cfg, self.device, self.world)
        sd = self._agreed(lambda: load_owned(self.dir / "checkpoint.pt", self.uid, self.cfg.to_dict()))
        if sd is not None:
            self.smash.load_state_dict(sd)
            self.step = int(sd["step"])
            self._event("info", f"resumed from checkpoint at step {self.step}")
        elif self.world.main and (self.phase != "smash" or self._run_row["epoch"] >= 2):
            # the trained HyperNet is not where it should be; final training can go on without it, nothing
            # that scores can (and no untrained HyperNet is ever checkpointed in its place)
            self._no_hyper = self._missing_folder()
        self._set(total_steps=self.total_steps)

    # -- phases --------------------------------------------------------------------------------
    def _smash(self) -> None:
        t, T = self.cfg.train, self.total_steps
        window: list[torch.Tensor] = []
        t0, n0 = time.perf_counter(), self.step
        while self.step < T:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            for x, y in self._shards(t.batch_size, torch_gen(self.cfg.seed, 1, epoch), start):
                lr = cosine_lr(t.lr, self.step, T)
                window.append(self._guarded_step(smash_arch(self.cfg, self.step, T), x, y, lr))
                self.step += 1
                if len(window) == t.log_every or self.step % self.steps_per_epoch == 0:
                    images = (self.step - n0) * t.batch_size * self.world.size
                    self._ips = images / (time.perf_counter() - t0)
                    self._log_window(window, epoch, lr)
                    window = []
                self._between()
            self._end_epoch(epoch)
            t0, n0 = time.perf_counter(), self.step
        self._checkpoint()
        self._enter("rank")

    def _missing_folder(self) -> str:
        """The run trained past a checkpoint, but its folder holds none: the results file was moved or
        renamed away from its folder. Say where the folder is rather than silently score with (or train
        from) an untrained HyperNet."""
        where = self.dir
        found = find_run_folder(self.db_path, self.uid) if self.uid else None
        if found is not None:
            return (f"this run's files are in {found}/ but {self.db_path} looks for them in {where}/ (the results "
                    f"file was renamed): rename {found.name}/ to {where.name}/, or the results file back to "
                    f"{found.name}.db, then resume")
        return (f"{where}/checkpoint.pt is missing, but this run trained past it: put the run folder back beside "
                f"{self.db_path} as {where.name}/ to score or search again (final training works without it)")

    def _guarded_step(self, arch: Architecture, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        try:
            return smash_step(self.smash, arch, x, y, lr)
        except torch.OutOfMemoryError:
            self.smash.opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            self._event("warning", f"step {self.step}: architecture {arch.id} ran out of memory; step skipped")
            return torch.tensor([float("nan"), float("nan"), 1.0], device=self.device)

    def _log_window(self, window: list[torch.Tensor], epoch: int, lr: float) -> None:
        m = dist.mean(self.world, torch.stack(window)).cpu()  # (n, 3): loss, error, skipped; one sync per window
        ok = m[:, 2] == 0
        trailing = int((~ok).flip(0).cumprod(0).sum())  # failures at the end of the window
        self._fail_streak = self._fail_streak + trailing if trailing == len(ok) else trailing
        if not ok.all():
            self.skipped += int((~ok).sum())
            self._event("warning", f"steps {self.step - len(m) + 1}-{self.step}: {int((~ok).sum())} skipped "
                                   f"(non-finite gradients or out of memory), {self.skipped} in all")
        if self._fail_streak >= self.cfg.train.max_failures:
            raise SmashError(f"{self._fail_streak} SMASH steps in a row failed (non-finite gradients or out of "
                             "memory); lower --lr or --batch-size, then `smash-tui resume`")
        if not ok.any():
            return
        loss, err = m[ok, :2].mean(0).tolist()
        self.w.add_steps([dict(run_id=self.run_id, step=self.step, epoch=epoch, phase="train", loss=loss,
                               error=err, lr=lr, images_per_s=self._ips)])
        self.report(dict(phase="smash", done=self.step, total=self.total_steps, loss=loss, error=err,
                         images_per_s=self._ips))

    def _shards(self, batch: int, gen: torch.Generator, start: int = 0, data=None):
        """This rank's part of each global batch of `batch` x world images (every rank draws the same)."""
        r = self.world.rank
        for x, y in (data or self.train).epoch_batches(batch * self.world.size, gen, start=start):
            yield x[r * batch:(r + 1) * batch], y[r * batch:(r + 1) * batch]

    def _end_epoch(self, epoch: int) -> None:
        if not self.world.main:  # rank 0 validates and checkpoints; the others wait at the next step
            return
        t = self.cfg.train
        if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
            err, loss = validation_error(self.smash, self.cfg, self.val, self.calib)
            self.w.add_steps([dict(run_id=self.run_id, step=self.step, epoch=epoch, phase="val", loss=loss,
                                   error=err)])
            self._event("info", f"epoch {epoch + 1}: validation SMASH error {err:.4f} "
                                f"(mean of {t.val_archs} fixed architectures)")
        self._set(epoch=epoch + 1, step=self.step)
        self._checkpoint()

    def _count(self, source: str) -> int:
        return self._agreed(lambda: store.count_scores(self.w.conn, self.run_id, source))

    def _best(self, *sources: str) -> dict | None:
        return self._agreed(lambda: store.best_score(self.w.conn, self.run_id, sources))

    def _rank(self) -> None:
        self._rescore_provisional()
        n = self.cfg.train.n_random
        start = self._count("random")
        self._score_many([rank_arch(self.cfg, RANK, i) for i in range(start, n)], "random", None, start, n)
        self._enter("refine")

    def _rescore_provisional(self) -> None:
        """Score again, with the trained HyperNet, what `sample`/`score` commands scored during SMASH training.

        Scores from mid-schedule weights rank badly: on the truth panel, Kendall tau 0.01-0.15 against
        0.27-0.40 for the same runs' weights at the end of their schedules (README, search quality). A leaderboard
        mixing the two would judge those architectures by noise. The new score (source `rescore`) is their
        latest, so the leaderboard uses it; after a stop, only those still without one are scored."""
        rows = self._agreed(lambda: store.provisional_scores(self.w.conn, self.run_id, self.step))
        if rows and self.world.main:
            self._event("info", f"rescoring {len(rows)} architectures scored before SMASH training ended")
        self._score_many([Architecture.from_json(r["spec_json"]) for r in rows], "rescore", None, 0, len(rows))

    def _refine(self) -> None:
        t = self.cfg.train
        base = self._best("random")
        if base is not None:
            arch = Architecture.from_json(base["spec_json"])
            start = self._count("perturb")
            cands = [perturbed(self.cfg, arch, PERTURB, i) for i in range(start, t.n_perturb)]
            self._score_many(cands, "perturb", arch.id, start, t.n_perturb + t.n_hillclimb)
            self._hillclimb()
        if t.verify_top:
            with self.w.transaction():  # the candidates are fixed and the phase moves on together, or neither
                rows = store.leaderboard(self.w.conn, self.run_id, limit=t.verify_top) if self.world.main else []
                self.w.queue_verifications(self.run_id, [(r["arch_id"], r["rank"]) for r in rows],
                                           t.verify_epochs, self._verify_images())
                self._enter("verify")
            return
        self._queue_finals_and_enter([r["arch_id"] for r in self._top(t.final_top)])

    def _top(self, n: int) -> list[dict]:
        return store.leaderboard(self.w.conn, self.run_id, limit=n) if self._queues_finals() else []

    def _queue_finals_and_enter(self, arch_ids: list[str]) -> None:
        with self.w.transaction():  # the top K are queued and the phase moves on together, or neither
            for arch_id in arch_ids if self._queues_finals() else []:
                self._queue_final(arch_id, self.cfg.train.final_epochs)
            self._enter("final")

    def _verify_images(self) -> int:
        n = self.cfg.train.verify_images
        return len(self.train) if n == 0 else min(n, len(self.train))

    def _verify(self) -> None:
        """Train SMASH's best few briefly; final training gets the best of them by held-out error.

        A SMASH score ranks roughly; a short real training separates the top candidates far better than their
        SMASH scores do, at the cost of a few short trainings. Each result is committed as it lands; one cut
        short by a stop is trained again on resume (it is short).
        """
        t = self.cfg.train
        todo = self._agreed(lambda: [r for r in store.verifications(self.w.conn, self.run_id)
                                     if r["status"] != "done"])
        total = t.verify_top
        # the same seeded images for every candidate, so they differ by architecture, not by data
        n = self._verify_images()
        idx = torch.randperm(len(self.train), generator=torch_gen(self.cfg.seed, VERIFY, 0))[:n].sort().values
        idx = idx.to(self.device)
        data = type(self.train)(self.train.x[idx], self.train.y[idx], self.train.info, self.device)
        for row in todo:
            self._verify_one(row["arch_id"], data, total - len(todo) + todo.index(row), total)
        rows = self._agreed(lambda: store.verifications(self.w.conn, self.run_id))
        best = [r["arch_id"] for r in sorted(rows, key=lambda r: (r["val_error"], r["smash_rank"]))]
        rest = [r["arch_id"] for r in self._top(t.final_top + len(best)) if r["arch_id"] not in best]
        if best and self.world.main:
            self._event("info", f"verified {len(best)}: best {best[0]} (SMASH rank "
                                f"{next(r['smash_rank'] for r in rows if r['arch_id'] == best[0])}, held-out error "
                                f"{min(r['val_error'] for r in rows):.4f})")
        self._queue_finals_and_enter((best + rest)[:t.final_top])

    def _verify_one(self, arch_id: str, data, done: int, total: int) -> None:
        t = self.cfg.train
        arch = Architecture.from_json(self._agreed(lambda: store.get_arch(self.w.conn, arch_id))["spec_json"])
        self.w.set_verification(self.run_id, arch_id, "running")
        t0 = time.perf_counter()
        f = Final.create(arch, t, rng(self.cfg.seed, VERIFY, 1).getrandbits(31), self.device, self.world)
        spe = data.num_batches(min(t.final_batch, len(data)) * self.world.size)
        steps = t.verify_epochs * spe
        for epoch in range(t.verify_epochs):
            gen = torch_gen(self.cfg.seed, VERIFY, 2 + epoch)
            for b, (x, y) in enumerate(self._shards(min(t.final_batch, len(data)), gen, data=data)):
                f.step(x, y, cosine_lr(t.final_lr, epoch * spe + b, steps))
                self._between()
        if not self.world.main:
            return
        err, _ = f.evaluate(self.val, t.score_batch)
        self.w.set_verification(self.run_id, arch_id, "done", err, round(time.perf_counter() - t0, 2))
        self.report(dict(phase="verify", done=done + 1, total=total, error=err))

    def _hillclimb(self) -> None:
        """Greedy: perturb the current best; keep a candidate only if strictly better. The current
        architecture is always the best of (start, candidates so far), so it is re-derived on resume."""
        t = self.cfg.train
        for i in range(self._count("hillclimb"), t.n_hillclimb):
            arch = Architecture.from_json(self._best("random", "perturb", "hillclimb")["spec_json"])
            self._score_many([perturbed(self.cfg, arch, HILLCLIMB, i)], "hillclimb", arch.id, t.n_perturb + i,
                             t.n_perturb + t.n_hillclimb)

    def _queues_finals(self) -> bool:
        return bool(self.cfg.train.final_top) and self.world.main

    def _next_final(self) -> dict | None:
        return self._agreed(lambda: store.next_queued_final(self.w.conn, self.run_id))

    def _final(self) -> None:
        while (final := self._next_final()) is not None:
            self._train_final(final)
        self._enter("done")

    # -- scoring and final training ------------------------------------------------------------
    def _score_many(self, archs: list[Architecture], source: str, parent: str | None, done: int, total: int) -> None:
        """Score `archs` on the held-out split, arch j on rank j mod W, and commit each score (rank 0) as
        its group of W lands."""
        W, r = self.world.size, self.world.rank
        dist.sync_buffers(self.world, self.smash.model)  # every rank scores with rank 0's BN statistics
        for g in range(0, len(archs), W):
            group = archs[g:g + W]
            mine = self._score_one(group[r]) if r < len(group) else [0.0, 0.0, 0.0]
            rows = dist.gather_rows(self.world, mine, self.device)
            for j, (arch, (err, loss, status)) in enumerate(zip(group, rows, strict=False)):
                self._record(arch, source, parent, err, loss, int(status))
                self.report(dict(phase="sample" if self._sampling else self.phase, done=done + g + j + 1,
                                 total=total, error=err if status == 0 else None))
            self._between()

    def _score_one(self, arch: Architecture) -> list[float]:
        """[error, loss, status]: status 0 ok, 1 out of memory, 2 non-finite loss."""
        try:
            t = self.cfg.train
            err, loss = smash_score(self.smash, arch, self.val, t.score_batch, t.score_bn, self.calib)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return [float("nan"), float("nan"), 1.0]
        return [err, loss, 0.0 if math.isfinite(loss) else 2.0]

    def _record(self, arch: Architecture, source: str, parent: str | None, err: float, loss: float,
                status: int) -> None:
        params, flops = arch_cost(arch)
        with self.w.transaction():
            self.w.add_arch(self.run_id, arch.id, arch.to_json(), source, parent, params, flops, arch.n_ops,
                            len(arch.blocks))
            if status == 0:
                self.w.add_score(self.run_id, arch.id, err, loss, len(self.val), self.step, source=source)
            else:
                why = "out of memory" if status == 1 else f"non-finite loss ({loss})"
                self.w.add_score(self.run_id, arch.id, None, None, len(self.val), self.step, status="failed",
                                 reason=why, source=source)
                self._event("warning", f"architecture {arch.id} failed to score ({why}); recorded as failed")
        self._score_failures = 0 if status == 0 else self._score_failures + 1
        if self._score_failures >= self.cfg.train.max_failures:
            raise SmashError(f"{self._score_failures} architectures in a row failed to score; the HyperNet may "
                             "have diverged: check the loss curve, then resume from a checkpoint")

    def _queue_final(self, arch_id: str, epochs: int) -> int:
        row = store.get_arch(self.w.conn, arch_id)
        params, flops = row["params"], row["flops"]
        return self.w.create_final(self.run_id, row["id"], epochs, params, flops)

    def _train_final(self, final: dict) -> None:
        t, fid = self.cfg.train, final["id"]
        arch = Architecture.from_json(final["spec_json"])
        f = Final.create(arch, t, self.cfg.seed * 1000 + fid, self.device, self.world)
        ckpt, start, best = self.dir / f"final-{fid}.pt", 0, None
        sd = self._agreed(lambda: load_owned(ckpt, self.uid))
        if sd is not None:
            if sd.get("arch_id", arch.id) != arch.id:
                raise ResultsFileError(f"{ckpt} holds architecture {sd['arch_id']}, not final #{fid}'s {arch.id}: "
                                       f"move it out of {self.dir}/, then resume")
            try:
                f.net.load_state_dict(sd["net"])
                f.opt.load_state_dict(sd["opt"])
            except (RuntimeError, ValueError, KeyError) as e:  # a file from before identities, of another net
                raise ResultsFileError(f"{ckpt} does not fit final #{fid}'s architecture {arch.id}: move it out "
                                       f"of {self.dir}/, then resume") from e
            start, best = int(sd["epoch"]), sd["best_val_error"]
        self.w.update_final(fid, status="running")
        self._event("info", f"final training #{fid} of {arch.id} ({final['epochs']} epochs)")
        spe = self.train.num_batches(t.final_batch * self.world.size)
        total = final["epochs"] * spe
        for epoch in range(start, final["epochs"]):
            t0, sums = time.perf_counter(), []
            gen = torch_gen(self.cfg.seed, FINAL, fid * 100_000 + epoch)
            for b, (x, y) in enumerate(self._shards(t.final_batch, gen)):
                lr = cosine_lr(t.final_lr, epoch * spe + b, total)
                sums.append(f.step(x, y, lr))
                self._between()
            loss, err = dist.mean(self.world, torch.stack(sums).mean(0)).tolist()
            if not self.world.main:  # rank 0 evaluates, records and checkpoints
                continue
            val_err, _ = f.evaluate(self.val, t.score_batch)
            test_err, _ = f.evaluate(self.test, t.score_batch)
            best = val_err if best is None else min(best, val_err)
            ips = len(sums) * t.final_batch * self.world.size / (time.perf_counter() - t0)
            self.w.add_final_step(fid, epoch=epoch + 1, train_loss=loss, train_error=err, val_error=val_err,
                                  test_error=test_err, lr=lr, images_per_s=ips)
            self.w.update_final(fid, epoch=epoch + 1, best_val_error=best, test_error=test_err)
            save_atomic({"net": f.net.state_dict(), "opt": f.opt.state_dict(), "epoch": epoch + 1,
                         "best_val_error": best, "run_uid": self.uid, "arch_id": arch.id}, ckpt)
            self.report(dict(phase="final", done=epoch + 1, total=final["epochs"], loss=loss, error=test_err,
                             images_per_s=ips))
        if not self.world.main:
            return
        if start >= final["epochs"]:  # its checkpoint was already at the last epoch: record it, train nothing
            test_err, _ = f.evaluate(self.test, t.score_batch)
            self.w.update_final(fid, epoch=start, best_val_error=best, test_error=test_err)
        weights = self.dir / f"final-{fid}.safetensors"
        save_weights(f.net, arch, weights, self.uid)
        self.w.update_final(fid, status="done", weights_path=str(weights))
        self._event("info", f"final training #{fid} done: test error {test_err:.4f}")

    def _requeue_finals(self) -> None:
        """Finals a stop or a dead engine cut short continue from their last epoch checkpoint."""
        with self.w.transaction() as c:
            c.execute("UPDATE finals SET status = 'queued' WHERE run_id = ? AND status IN ('running', 'stopped')",
                      (self.run_id,))

    # -- between steps: heartbeat, commands, signals ----------------------------------------------
    def _between(self) -> None:
        """Between two steps: signals, commands (every POLL_S), heartbeat (every HEARTBEAT_S), queued
        sampling; while paused, stays here doing just that."""
        while True:
            now = time.monotonic()
            if self.world.main and now - self._last_poll >= POLL_S:
                self._last_poll = now
                for cmd in self.w.pending_commands(self.run_id):
                    self._command(cmd)
            if self.world.main and now - self._last_beat >= HEARTBEAT_S:
                self._last_beat = now
                self.w.heartbeat(self.run_id, **self._status_fields())
            # one small collective: a signal on any rank, and rank 0's commands, reach every rank
            mine = [int(self._paused), self._samples_wanted, len(self._user_specs)] if self.world.main else [0] * 3
            flags = [int(self._stop_signal > 0 or self._stop_asked), *mine]  # rank 0's word on all but stop
            stop, paused, self._samples_wanted, users = dist.combine_flags(self.world, flags)
            self._paused = bool(paused)
            if stop:
                raise _Stop
            if users and not self._sampling:
                self._score_user_archs()
            if self._samples_wanted and not self._sampling:
                self._run_samples()
            if not self._paused:
                return
            time.sleep(POLL_S / 2)

    def _status_fields(self) -> dict:
        total = max(self.total_steps, 1)
        return dict(phase=self.phase, step=self.step, epoch=self.step // max(getattr(self, "steps_per_epoch", 1), 1),
                    progress=min(self.step / total, 1.0) if self.phase == "smash" else 1.0,
                    images_per_s=self._ips)

    def _command(self, cmd) -> None:
        kind, args = cmd["kind"], json.loads(cmd["args_json"] or "{}")
        self.w.mark_command(cmd["id"], "running")
        try:
            message = self._do(kind, args)
        except SmashError as e:
            self.w.mark_command(cmd["id"], "error", str(e))
            self._event("warning", f"command {kind} failed: {e}")
            return
        self.w.mark_command(cmd["id"], "done", message)
        self._event("info", f"command {kind}: {message}")

    def _do(self, kind: str, args: dict) -> str:
        if kind in ("sample", "score") and self._no_hyper:
            raise ResultsFileError(self._no_hyper)
        if kind == "pause":
            if self._paused:
                return "already paused"
            self._checkpoint()
            self._paused = True
            self._set(status="paused")
            return "paused; checkpoint written"
        if kind == "continue":
            if not self._paused:
                return "was not paused"
            self._paused = False
            self._set(status="running")
            return "continuing"
        if kind == "stop":
            self._paused, self._stop_asked = False, True
            return "stopping: checkpoint, then exit"
        if kind == "sample":
            n = int(args.get("n", 100))
            if n <= 0:
                raise ConfigError(f"sample needs a positive count, got {n}")
            self._samples_wanted += n
            return f"scoring {n} more random architectures"
        if kind == "final":
            row = store.get_arch(self.w.conn, str(args.get("arch", "")))
            if row is None:
                raise ResultsFileError(f"no architecture {args.get('arch')!r} in this run; "
                                       "pick an id from the leaderboard")
            epochs = int(args.get("epochs") or self.cfg.train.final_epochs)
            if epochs <= 0:
                raise ConfigError(f"final training needs a positive number of epochs, got {epochs}")
            fid = self._queue_final(row["id"], epochs)
            when = "next" if self.phase in ("final", "done") else "after the search phases"
            return f"final training #{fid} of {row['id']} queued ({epochs} epochs), runs {when}"
        if kind == "score":
            arch = Architecture.from_json(str(args.get("spec", "")))
            check_in_space(arch, self.cfg.space)
            self._user_specs.append(arch.to_json())
            return f"scoring architecture {arch.id}"
        raise ConfigError(f"unknown command {kind!r}")

    def _score_user_archs(self) -> None:
        specs, self._user_specs = self._agreed(lambda: self._user_specs), []
        self._sampling = True
        try:
            self._score_many([Architecture.from_json(t) for t in specs], "user", None, 0, len(specs))
        finally:
            self._sampling = False

    def _run_samples(self) -> None:
        self._sampling = True
        try:
            while self._samples_wanted:  # more may be asked for while these are scored
                n, self._samples_wanted = self._samples_wanted, 0
                start = self._count("sample")
                archs = [rank_arch(self.cfg, SAMPLE, i) for i in range(start, start + n)]
                self._score_many(archs, "sample", None, 0, n)
        finally:
            self._sampling = False

    # -- bookkeeping ---------------------------------------------------------------------------
    def _agreed(self, read):
        """`read()` on rank 0 (the only one with the results file and checkpoints), its value on every rank."""
        return dist.agree(self.world, read() if self.world.main else None)

    def _checkpoint(self) -> None:
        if hasattr(self, "smash") and self.world.main and not self._no_hyper:
            save_atomic({**self.smash.state_dict(), "step": self.step, "config": self.cfg.to_dict(),
                         "run_uid": self.uid}, self.dir / "checkpoint.pt")

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._set(phase=phase, **({"progress": 1.0} if phase != "smash" else {}))
        if phase != "done":
            self._event("info", f"phase {phase}")

    def _set(self, **fields) -> None:
        self.w.heartbeat(self.run_id, **fields)

    def _event(self, level: str, message: str) -> None:
        self.w.add_event(self.run_id, level, message)


def main(argv: list[str] | None = None) -> int:
    """`python -m smash_engine.engine DB [--progress]`: the engine process that `smash-tui run`/`resume`
    start detached, or that `torchrun ... -m smash_engine.engine DB` starts once per rank."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m smash_engine.engine")
    ap.add_argument("db", type=Path)
    ap.add_argument("--progress", action="store_true", help="plain progress lines on stderr (rank 0)")
    a = ap.parse_args(argv)
    try:
        status = Engine(a.db, reporter=plain_reporter() if a.progress else None).run()
    except SmashError as e:
        print(f"smash-tui engine: {e}", file=sys.stderr)
        return e.exit_code
    if a.progress and dist.world_from_env().main:
        print(f"{status}: {a.db}", file=sys.stderr)
    return 0 if status in ("done", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
