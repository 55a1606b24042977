"""Scoring architectures with the trained HyperNet: SMASH error and loss on the held-out split, recorded as
each lands (rank phase, refinement, `sample` and `score` commands).

Under torchrun, architecture j of a batch is scored on rank j mod W and the scores gathered to rank 0, the
only writer. A score that fails (out of memory, non-finite loss) is recorded as failed; `max_failures` in a row
end the run, since the HyperNet has most likely diverged.
"""

from __future__ import annotations

import math

import torch

from . import dist
from .context import EngineView
from .cost import arch_cost
from .errors import SmashError
from .space import Architecture
from .train import smash_score


class Scorer:
    def __init__(self, engine: EngineView):
        self.engine = engine
        self.ctx = engine.ctx
        self.failures = 0  # architectures in a row that failed to score

    def score_many(self, archs: list[Architecture], source: str, parent: str | None, done: int, total: int) -> None:
        """Score `archs` on the held-out split, arch j on rank j mod W, and commit each score (rank 0) as
        its group of W lands."""
        e, world = self.engine, self.ctx.world
        W, r = world.size, world.rank
        dist.sync_buffers(world, e.smash.model)  # every rank scores with rank 0's BN statistics
        for g in range(0, len(archs), W):
            group = archs[g:g + W]
            mine = self._score_one(group[r]) if r < len(group) else [0.0, 0.0, 0.0]
            rows = dist.gather_rows(world, mine, self.ctx.device)
            for j, (arch, (err, loss, status)) in enumerate(zip(group, rows, strict=False)):
                self._record(arch, source, parent, err, loss, int(status))
                self.ctx.report(dict(phase="sample" if e.commands.sampling else e.phase, done=done + g + j + 1,
                                     total=total, error=err if status == 0 else None, stage=source, arch=arch.id))
            e.commands.between()

    def _score_one(self, arch: Architecture) -> list[float]:
        """[error, loss, status]: status 0 ok, 1 out of memory, 2 non-finite loss."""
        e, t = self.engine, self.ctx.cfg.train
        try:
            err, loss = smash_score(e.smash, arch, e.val, t.score_batch, t.score_bn, e.calib)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return [float("nan"), float("nan"), 1.0]
        return [err, loss, 0.0 if math.isfinite(loss) else 2.0]

    def _record(self, arch: Architecture, source: str, parent: str | None, err: float, loss: float,
                status: int) -> None:
        params, flops = arch_cost(arch)
        w, run_id, n_val, step = self.ctx.w, self.ctx.run_id, len(self.engine.val), self.engine.step
        with w.transaction():
            w.add_arch(run_id, arch.id, arch.to_json(), source, parent, params, flops, arch.n_ops,
                            len(arch.blocks))
            if status == 0:
                w.add_score(run_id, arch.id, err, loss, n_val, step, source=source)
            else:
                why = "out of memory" if status == 1 else f"non-finite loss ({loss})"
                w.add_score(run_id, arch.id, None, None, n_val, step, status="failed",
                                 reason=why, source=source)
                self.ctx.event("warning", f"architecture {arch.id} failed to score ({why}); recorded as failed")
            if self.ctx.world.main:  # the command that asked for it counts it in the same transaction
                self.engine.commands.on_scored(source, arch.id, err if status == 0 else None)
        self.failures = 0 if status == 0 else self.failures + 1
        if self.failures >= self.ctx.cfg.train.max_failures:
            raise SmashError(f"{self.failures} architectures in a row failed to score; the HyperNet may "
                             "have diverged: check the loss curve, then resume from a checkpoint")
