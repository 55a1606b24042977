"""Between two steps of the engine: signals, the `commands` table, the heartbeat, and the sampling that
commands ask for.

Commands (`smash-tui control`, the UI): pause, continue, stop, sample N, final ARCH [epochs], score SPEC.
Rank 0 polls the table every POLL_S and beats the run's heart every HEARTBEAT_S; one small collective per
step carries a signal on any rank, and rank 0's decisions, to every rank.
"""

from __future__ import annotations

import json
import time

from . import dist, store
from .budget import BudgetError
from .context import EngineView
from .cost import arch_cost
from .encoding import check_in_space
from .errors import ConfigError, ResultsFileError, SmashError
from .seeds import SAMPLE
from .space import Architecture
from .train import rank_draw

HEARTBEAT_S = 2.0
POLL_S = 0.5


class Stop(Exception):
    """Raised between steps to unwind to `Engine.run` for a checkpointed stop."""


class Commands:
    def __init__(self, engine: EngineView):
        self.engine = engine
        self.ctx = engine.ctx
        self.stop_signal = 0  # SIGTERM/SIGINT received
        self.paused = self.stop_asked = False
        self.samples_wanted = 0
        self.user_specs: list[str] = []  # architectures sent with `score`, waiting (rank 0)
        self.sampling = False  # scoring what a command asked for (progress reports say "sample")
        self._last_beat = self._last_poll = 0.0

    def on_signal(self, signum, frame) -> None:
        self.stop_signal += 1
        if self.stop_signal > 1:  # a second Ctrl-C: leave now, losing at most the current step
            raise KeyboardInterrupt

    def between(self) -> None:
        """Between two steps: signals, commands (every POLL_S), heartbeat (every HEARTBEAT_S), queued
        sampling; while paused, stays here doing just that."""
        ctx = self.ctx
        while True:
            now = time.monotonic()
            if ctx.world.main and now - self._last_poll >= POLL_S:
                self._last_poll = now
                for cmd in ctx.w.pending_commands(ctx.run_id):
                    self._command(cmd)
            if ctx.world.main and now - self._last_beat >= HEARTBEAT_S:
                self._last_beat = now
                ctx.set(**self.engine.status_fields())
            # one small collective: a signal on any rank, and rank 0's commands, reach every rank
            mine = [int(self.paused), self.samples_wanted, len(self.user_specs)] if ctx.world.main else [0] * 3
            flags = [int(self.stop_signal > 0 or self.stop_asked), *mine]  # rank 0's word on all but stop
            stop, paused, self.samples_wanted, users = dist.combine_flags(ctx.world, flags)
            self.paused = bool(paused)
            if stop:
                raise Stop
            if users and not self.sampling:
                self._score_user_archs()
            if self.samples_wanted and not self.sampling:
                self._run_samples()
            if not self.paused:
                return
            time.sleep(POLL_S / 2)

    def _command(self, cmd) -> None:
        ctx = self.ctx
        kind, args = cmd["kind"], json.loads(cmd["args_json"] or "{}")
        ctx.w.mark_command(cmd["id"], "running")
        try:
            message = self._do(kind, args)
        except SmashError as e:
            ctx.w.mark_command(cmd["id"], "error", str(e))
            ctx.event("warning", f"command {kind} failed: {e}")
            return
        ctx.w.mark_command(cmd["id"], "done", message)
        ctx.event("info", f"command {kind}: {message}")

    def _do(self, kind: str, args: dict) -> str:
        e = self.engine
        if kind in ("sample", "score") and e.no_hyper:
            raise ResultsFileError(e.no_hyper)
        if kind == "pause":
            if self.paused:
                return "already paused"
            e.checkpoint()
            self.paused = True
            self.ctx.set(status="paused")
            self.ctx.report(dict(phase=e.phase, note="paused; checkpoint written (continue: smash-tui control DB "
                                                     "continue)"))
            return "paused; checkpoint written"
        if kind == "continue":
            if not self.paused:
                return "was not paused"
            self.paused = False
            self.ctx.set(status="running")
            self.ctx.report(dict(phase=e.phase, note="continuing"))
            return "continuing"
        if kind == "stop":
            self.paused, self.stop_asked = False, True
            return "stopping: checkpoint, then exit"
        if kind == "sample":
            n = int(args.get("n", 100))
            if n <= 0:
                raise ConfigError(f"sample needs a positive count, got {n}")
            self.samples_wanted += n
            return f"scoring {n} more random architectures"
        if kind == "final":
            return self._final(args)
        if kind == "score":
            arch = Architecture.from_json(str(args.get("spec", "")))
            check_in_space(arch, self.ctx.cfg.space)
            self._check_budget(arch.id, *arch_cost(arch))
            self.user_specs.append(arch.to_json())
            return f"scoring architecture {arch.id}"
        raise ConfigError(f"unknown command {kind!r}")

    def _final(self, args: dict) -> str:
        row = store.get_arch(self.ctx.conn, str(args.get("arch", "")))
        if row is None:
            raise ResultsFileError(f"no architecture {args.get('arch')!r} in this run; pick an id from the leaderboard")
        self._check_budget(row["id"], *arch_cost(Architecture.from_json(row["spec_json"])))
        epochs = int(args.get("epochs") or self.ctx.cfg.train.final_epochs)
        if epochs <= 0:
            raise ConfigError(f"final training needs a positive number of epochs, got {epochs}")
        fid = self.engine.finals.queue(row["id"], epochs)
        when = "next" if self.engine.phase in ("final", "done") else "after the search phases"
        return f"final training #{fid} of {row['id']} queued ({epochs} epochs), runs {when}"

    def _check_budget(self, arch_id: str, params: int, flops: int) -> None:
        why = self.engine.budget.refusal(arch_id, params, flops)
        if why:
            raise BudgetError(why)

    def _score_user_archs(self) -> None:
        specs, self.user_specs = self.ctx.agreed(lambda: self.user_specs), []
        self.sampling = True
        try:
            self.engine.scorer.score_many([Architecture.from_json(t) for t in specs], "user", None, 0, len(specs))
        finally:
            self.sampling = False

    def _run_samples(self) -> None:
        self.sampling = True
        try:
            while self.samples_wanted:  # more may be asked for while these are scored
                n, self.samples_wanted = self.samples_wanted, 0
                start = self.engine.count("sample")
                draws = [rank_draw(self.ctx.cfg, SAMPLE, i) for i in range(start, start + n)]
                archs = [a for a, _ in draws]
                self.engine.budget_event("sample", f"{n} random architectures", sum(r for _, r in draws), archs)
                self.engine.scorer.score_many(archs, "sample", None, 0, n)
        finally:
            self.sampling = False
