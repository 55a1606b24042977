"""The engine process: runs the phases of one search, the only writer of its results file.

Phases (runs.phase): smash -> rank -> refine -> verify (when `verify_top`) -> final -> done. Between steps
the engine answers commands and signals and beats its heart (`commands.py`). Checkpoints
(`<run dir>/checkpoint.pt`, loadable with `weights_only=True`) are written atomically at each epoch end, on
pause and on stop; rank and refine resume from what the results file already holds, since each of their
architectures is a pure function of (seed, stage, index) (`seeds.py`).

The engine is the conductor; each phase reads in one place: SMASH training here (its loop in `loops.py`), rank
and refine in `ranking.py`, verify in `verify.py` (its plan in `halving.py`), final training in `finals.py`;
commands and signals in `commands.py`, a run's files and inputs in `runs.py`, what the parts share in
`context.py`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import torch

from . import dist, probes, store
from .budget import Budget
from .commands import Commands, Stop
from .config import RunConfig
from .context import Context, NoWriter, Reporter
from .cost import arch_cost
from .cpu_share import CpuShare
from .encoding import FIELDS
from .errors import ResultsFileError, SmashError
from .finals import Finals
from .loops import smash_steps, steps_per_epoch
from .ranking import Ranking
from .report import no_pick_line, pick_line, plain_reporter
from .runs import disk_full, load_owned, load_splits, missing_folder, resolve_device, run_dir, save_atomic
from .scoring import Scorer
from .space import Architecture
from .train import Smash, bn_calibration, validation_archs, validation_error
from .verify import Verify


class Engine:
    def __init__(self, db_path: Path, reporter: Reporter | None = None, threads: int | None = None):
        self.db_path = Path(db_path)
        self.threads = threads  # torch threads; None: this process's share of the cores (cpu_share.py)
        world = dist.world_from_env()
        if world.active and torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank)
        dist.init(world)
        w = store.connect_writer(self.db_path, create=False) if world.main else NoWriter()
        run = dist.agree(world, store.get_run(w.conn) if world.main else None)
        if run is None:
            raise ResultsFileError(f"{db_path} holds no run; start one with `smash-tui run`")
        cfg = RunConfig.from_dict(json.loads(run["config_json"]))
        report = (reporter or (lambda info: None)) if world.main else (lambda info: None)
        self.ctx = Context(w, run["id"], run["uid"], cfg, run_dir(self.db_path),
                           resolve_device(cfg.device, world.local_rank), world, report)
        self.cfg, self.world, self.device, self.w = cfg, world, self.ctx.device, w
        self.budget = Budget.of(cfg.train)  # what every scored architecture must fit (budget.py)
        self._run_row = run
        self.phase = run["phase"]
        self.commands = Commands(self)
        self.finals = Finals(self.ctx, self.commands.between)
        self.scorer = Scorer(self)
        self.ranking, self.verify = Ranking(self), Verify(self)  # the rank and refine phases; the verify phase
        # set by `_prepare` once the run is underway (its errors then mark the run failed)
        self.train = self.val = self.test = None  # DeviceData
        self.calib: list[torch.Tensor] | None = None
        self.smash: Smash | None = None
        self.steps_per_epoch = 1
        self.step = 0
        self.total_steps = 0
        self.ips: float | None = None  # SMASH training images per second, over the last window
        self.skipped = 0  # SMASH steps skipped for non-finite gradients or out of memory
        self._fail_streak = 0
        self.no_hyper: str | None = None  # why the trained HyperNet is missing (runs without it can only train finals)

    def _found(self) -> str:
        """One line for the end of the search: the run's pick (README "What a search gives you")."""
        if not self.world.main:
            return ""
        conn, run_id = self.ctx.conn, self.ctx.run_id
        p = store.pick(conn, run_id)
        if p is not None:
            return pick_line(p, len(store.leaderboard(conn, run_id)))
        top = store.leaderboard(conn, run_id, limit=1)
        return no_pick_line(top[0] if top else None)

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> str:
        """Run to the end (or a stop); returns the final status. Unexpected errors mark the run failed
        and propagate with their traceback."""
        ctx = self.ctx
        if self.world.main:
            self.w.acquire_engine(ctx.run_id)
            self.finals.requeue()
            self.w.fail_stale(ctx.run_id)
            ctx.dir.mkdir(parents=True, exist_ok=True)
        old = {s: signal.signal(s, self.commands.on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        share = CpuShare(self.threads).__enter__()
        clean = False  # ended done or stopped: the ranks leave together (dist.shutdown)
        try:
            where = f"{self.device.type} x{self.world.size}" if self.world.active else str(self.device)
            ctx.set(status="running", message=None, device=where)
            ctx.event("info", f"engine started (pid {os.getpid()} on {socket.gethostname()}, {where})")
            self._prepare()
            if self.no_hyper and self.phase in ("smash", "rank", "refine", "verify"):
                raise ResultsFileError(self.no_hyper)
            if self.world.main:
                self.commands.take_over_work()
            phases = {"smash": self._smash, "rank": self.ranking.rank, "refine": self._refine,
                      "verify": self.verify.run, "final": self._final}
            while self.phase != "done":
                phases[self.phase]()
            self.commands.between()  # answer commands that arrived during the last step (or while stopped)
            while (final := self.finals.next()) is not None:
                self.finals.train_one(final, self.train, self.val, self.test)
                self.commands.between()
            found = self._found()
            ctx.set(status="done", phase="done", progress=1.0, message=found)
            ctx.event("info", f"search finished: {found}")
            clean = True
            return "done"
        except Stop:
            self.checkpoint()
            with self.w.transaction() as c:  # a final cut short continues from its last epoch on resume
                c.execute("UPDATE finals SET status = 'stopped' WHERE run_id = ? AND status = 'running'",
                          (ctx.run_id,))
            ctx.set(status="stopped", message="stopped; continue with smash-tui resume")
            ctx.event("info", "stopped on request; checkpoint written")
            clean = True
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
            share.__exit__()
            for s, h in old.items():
                signal.signal(s, h)
            self.w.close()
            dist.shutdown(clean)

    def _record_failure(self, message: str, event: str | None = None) -> None:
        """Mark the run failed, if the results file can still take it (not on a full disk: then the run
        shows as crashed once its heartbeat is stale, and resumes the same way)."""
        try:
            self.ctx.set(status="failed", message=message)
            self.ctx.event("error", event or message)
        except Exception as e:
            if not disk_full(e):
                raise

    def _prepare(self) -> None:
        ctx = self.ctx
        self.train, self.val, self.test = load_splits(self.cfg, self.device)
        self.calib = bn_calibration(self.cfg, self.train)
        self.steps_per_epoch = steps_per_epoch(self.cfg, self.train, self.world)
        self.total_steps = self.cfg.train.epochs * self.steps_per_epoch
        self.smash = Smash.create(self.cfg, self.device, self.world)
        sd = ctx.agreed(lambda: load_owned(ctx.dir / "checkpoint.pt", ctx.uid, self.cfg.to_dict()))
        if sd is not None:
            self.smash.load_state_dict(sd)
            self.step = int(sd["step"])
            ctx.event("info", f"resumed from checkpoint at step {self.step}")
        elif self.world.main and (self.phase != "smash" or self._run_row["epoch"] >= 2):
            # the trained HyperNet is not where it should be; final training can go on without it, nothing
            # that scores can (and no untrained HyperNet is ever checkpointed in its place)
            self.no_hyper = missing_folder(self.db_path, ctx.uid)
        ctx.set(total_steps=self.total_steps)

    # -- SMASH training ------------------------------------------------------------------------
    def _smash(self) -> None:
        t, window = self.cfg.train, []
        t0, n0 = time.perf_counter(), self.step
        for st in smash_steps(self.smash, self.cfg, self.train, self.step, self.world):
            self.step = st.step
            if st.out_of_memory:
                self.ctx.event("warning", f"step {st.step - 1}: architecture {st.arch.id} ran out of memory; "
                                          "step skipped")
            window.append(st.metrics)
            if len(window) == t.log_every or st.epoch_end:
                self.ips = (self.step - n0) * t.batch_size * self.world.size / (time.perf_counter() - t0)
                self._log_window(window, st.epoch, st.lr)
                window = []
            self.commands.between()
            if st.epoch_end:
                self._end_epoch(st.epoch)
                t0, n0 = time.perf_counter(), self.step
        self.checkpoint()
        self.enter("rank")

    def _log_window(self, window: list[torch.Tensor], epoch: int, lr: float) -> None:
        m = dist.mean(self.world, torch.stack(window)).cpu()  # (n, 3): loss, error, skipped; one sync per window
        ok = m[:, 2] == 0
        trailing = int((~ok).flip(0).cumprod(0).sum())  # failures at the end of the window
        self._fail_streak = self._fail_streak + trailing if trailing == len(ok) else trailing
        if not ok.all():
            self.skipped += int((~ok).sum())
            self.ctx.event("warning", f"steps {self.step - len(m) + 1}-{self.step}: {int((~ok).sum())} skipped "
                                      f"(non-finite gradients or out of memory), {self.skipped} in all")
        if self._fail_streak >= self.cfg.train.max_failures:
            raise SmashError(f"{self._fail_streak} SMASH steps in a row failed (non-finite gradients or out of "
                             "memory); lower --lr or --batch-size, then `smash-tui resume`")
        if not ok.any():
            return
        loss, err = m[ok, :2].mean(0).tolist()
        self.w.add_steps([dict(run_id=self.ctx.run_id, step=self.step, epoch=epoch, phase="train", loss=loss,
                               error=err, lr=lr, images_per_s=self.ips)])
        self.ctx.report(dict(phase="smash", done=self.step, total=self.total_steps, loss=loss, error=err,
                             images_per_s=self.ips))

    def _end_epoch(self, epoch: int) -> None:
        if not self.world.main:  # rank 0 validates and checkpoints; the others wait at the next step
            return
        t = self.cfg.train
        if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
            err, loss = validation_error(self.smash, self.cfg, self.val, self.calib)
            self.w.add_steps([dict(run_id=self.ctx.run_id, step=self.step, epoch=epoch, phase="val", loss=loss,
                                   error=err)])
            self.ctx.event("info", f"epoch {epoch + 1}: validation SMASH error {err:.4f} "
                                   f"(mean of {t.val_archs} fixed architectures)")
            plans = [self.smash.plan(a) for a in validation_archs(self.cfg)]
            self.ctx.event("info", f"epoch {epoch + 1}: " + probes.describe(
                probes.collapse(self.smash.hyper, plans, self.cfg.space, self.cfg.seed, FIELDS)))
        self.ctx.set(epoch=epoch + 1, step=self.step)
        self.checkpoint()

    # -- rank and refine (ranking.py), verify (verify.py), final (finals.py) ---------------------
    def count(self, source: str) -> int:
        return self.ctx.agreed(lambda: store.count_scores(self.ctx.conn, self.ctx.run_id, source))

    def budget_event(self, stage: str, what: str, rejected: int, archs: list[Architecture]) -> None:
        """Under a budget, in the log and on a headless run's terminal (rank, refine and `sample` commands):
        'budget: rank: 60 random architectures within the budget (max 100,000 params); 57 draws rejected (49% of
        117); the largest 99,962 params, 3.52 MFLOPs'."""
        if not self.budget or not self.world.main or not archs:
            return
        costs = [arch_cost(a) for a in archs]
        drawn = len(archs) + rejected
        note = (f"{what} within the budget ({self.budget.describe()}); {rejected:,} draws rejected "
                f"({rejected / drawn:.0%} of {drawn:,}); the largest {max(p for p, _ in costs):,} params, "
                f"{max(f for _, f in costs) / 1e6:.2f} MFLOPs")
        self.ctx.event("info", f"budget: {stage}: {note}")
        self.ctx.report(dict(phase=stage, note=note))

    def _refine(self) -> None:
        self.ranking.refine()
        if self.cfg.train.verify_top:
            self.verify.enter()
        else:
            self.queue_finals_and_enter([r["arch_id"] for r in self.top(self.cfg.train.final_top)])

    def _queues_finals(self) -> bool:
        return bool(self.cfg.train.final_top) and self.world.main

    def top(self, n: int) -> list[dict]:
        """SMASH's best n (rank 0, when the run final-trains any; else none)."""
        return store.leaderboard(self.ctx.conn, self.ctx.run_id, limit=n) if self._queues_finals() else []

    def queue_finals_and_enter(self, arch_ids: list[str]) -> None:
        with self.w.transaction():  # the top K are queued and the phase moves on together, or neither
            for arch_id in arch_ids if self._queues_finals() else []:
                self.finals.queue(arch_id, self.cfg.train.final_epochs)
            self.enter("final")

    def _final(self) -> None:
        self.finals.run_queued(self.train, self.val, self.test)
        self.enter("done")

    # -- bookkeeping ---------------------------------------------------------------------------
    def status_fields(self) -> dict:
        total = max(self.total_steps, 1)
        return dict(phase=self.phase, step=self.step, epoch=self.step // self.steps_per_epoch,
                    progress=min(self.step / total, 1.0) if self.phase == "smash" else 1.0, images_per_s=self.ips)

    def checkpoint(self) -> None:
        if self.smash is not None and self.world.main and not self.no_hyper:
            save_atomic({**self.smash.state_dict(), "step": self.step, "config": self.cfg.to_dict(),
                         "run_uid": self.ctx.uid}, self.ctx.dir / "checkpoint.pt")

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.ctx.set(phase=phase, **({"progress": 1.0} if phase != "smash" else {}))
        if phase != "done":
            self.ctx.event("info", f"phase {phase}")


def main(argv: list[str] | None = None) -> int:
    """`python -m smash_engine.engine DB [--progress]`: the engine process that `smash-tui run`/`resume`
    start detached, or that `torchrun ... -m smash_engine.engine DB` starts once per rank."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m smash_engine.engine")
    ap.add_argument("db", type=Path)
    ap.add_argument("--progress", action="store_true", help="plain progress lines on stderr (rank 0)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: a share of the cores)")
    a = ap.parse_args(argv)
    try:
        status = Engine(a.db, reporter=plain_reporter() if a.progress else None, threads=a.threads).run()
    except SmashError as e:
        print(f"smash-tui engine: {e}", file=sys.stderr)
        return e.exit_code
    if a.progress and dist.world_from_env().main:
        print(f"{status}: {a.db}", file=sys.stderr)
    return 0 if status in ("done", "stopped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
