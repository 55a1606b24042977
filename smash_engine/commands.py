"""Between two steps of the engine: signals, the `commands` table, the heartbeat, and the sampling that
commands ask for.

Commands (`smash-tui control`, the UI): pause, continue, stop, sample N, final ARCH [epochs], score SPEC.
Rank 0 polls the table every POLL_S and beats the run's heart every HEARTBEAT_S; one small collective per
step carries a signal on any rank, and rank 0's decisions, to every rank.

`sample` and `score` are work, not switches: accepted, they stay `running` with `progress` of `total` until every
architecture they asked for is scored, each count committed with its score, so a stop, a kill or a full disk
loses none of it and `resume` scores exactly the rest (sample i is always the seeded draw (SAMPLE, i)). What each
command does in each state of the engine is in docs/schema.md's commands section.
"""

from __future__ import annotations

import json
import time

from . import dist, store
from .budget import BudgetError
from .context import EngineView
from .cost import arch_cost
from .encoding import check_in_space
from .errors import ConfigError, ResultsFileError, SmashError, whole_count
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
        self.owed: list[dict] = []  # accepted sample/score commands not yet finished, oldest first (rank 0)
        self.sampling = False  # scoring what a command asked for (progress reports say "sample")
        self._last_beat = self._last_poll = 0.0

    def take_over_work(self) -> None:
        """At start (rank 0): the sample and score commands an earlier engine accepted and did not finish."""
        ctx, e = self.ctx, self.engine
        for cmd in store.accepted_work(ctx.conn, ctx.run_id):
            if e.no_hyper:
                ctx.w.mark_command(cmd["id"], "error", f"not scored: {e.no_hyper}")
                continue
            item = dict(id=cmd["id"], kind=cmd["kind"], total=cmd["total"], progress=cmd["progress"] or 0)
            if cmd["kind"] == "sample":
                self.samples_wanted += item["total"] - item["progress"]
            else:
                arch = Architecture.from_json(str(json.loads(cmd["args_json"]).get("spec", "")))
                item["arch"] = arch.id
                self.user_specs.append(arch.to_json())
            self.owed.append(item)
        if self.owed:
            ctx.event("info", f"resuming {len(self.owed)} accepted command(s): "
                              f"{self.samples_wanted} random and {len(self.user_specs)} given architecture(s) to score")

    def on_scored(self, source: str, arch_id: str, err: float | None) -> None:
        """Rank 0, inside the transaction that records the score: count it to the command that asked for it."""
        kind = {"sample": "sample", "user": "score"}.get(source)
        item = next((o for o in self.owed if o["kind"] == kind and o.get("arch", arch_id) == arch_id), None)
        if item is None:
            return
        item["progress"] += 1
        done = item["progress"] >= item["total"]
        if kind == "sample":
            what = f"{item['total']} random architectures"
            message = f"scored {what}" if done else f"scored {item['progress']} of {what}"
        else:
            result = "failed to score" if err is None else f"SMASH error {err * 100:.2f}%"
            message = f"scored architecture {arch_id}: {result}"
        self.ctx.w.mark_command(item["id"], "done" if done else "running", message, progress=item["progress"])
        if done:
            self.owed.remove(item)
            self.ctx.event("info", f"command {kind} done: {message}")

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
        kind = cmd["kind"]
        ctx.w.mark_command(cmd["id"], "running")
        try:
            args = _args(cmd["args_json"])
            message = self._do(kind, args, cmd["id"])
        except SmashError as e:
            ctx.w.mark_command(cmd["id"], "error", str(e))
            ctx.event("warning", f"command {kind} failed: {e}")
            return
        if kind not in ("sample", "score"):  # those stay running until their architectures are scored
            ctx.w.mark_command(cmd["id"], "done", message)
        ctx.event("info", f"command {kind}: {message}")

    def _accept(self, cmd_id: int, kind: str, total: int, message: str, arch: str | None = None) -> str:
        """Work the engine now owes: one committed row says so before anything is scored."""
        self.ctx.w.mark_command(cmd_id, "running", message, progress=0, total=total)
        self.owed.append(dict(id=cmd_id, kind=kind, total=total, progress=0, **({"arch": arch} if arch else {})))
        return message

    def _do(self, kind: str, args: dict, cmd_id: int) -> str:
        e = self.engine
        if kind in ("sample", "score") and e.no_hyper:
            raise ResultsFileError(e.no_hyper)
        if kind == "pause":
            if self.stop_asked:
                raise ConfigError("not paused: the engine is stopping; `smash-tui resume` it, then pause")
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
            if self.stop_asked:
                return "already stopping"
            self.paused, self.stop_asked = False, True
            return "stopping: checkpoint, then exit"
        if kind == "sample":
            n = whole_count(args.get("n", 100), "sample's count")
            later = "; the engine is stopping: `smash-tui resume` scores them" if self.stop_asked else ""
            self.samples_wanted += n
            return self._accept(cmd_id, "sample", n, f"scored 0 of {n} random architectures{later}")
        if kind == "final":
            return self._final(args)
        if kind == "score":
            arch = Architecture.from_json(str(args.get("spec", "")))
            check_in_space(arch, self.ctx.cfg.space)
            self._check_budget(arch.id, *arch_cost(arch))
            self.user_specs.append(arch.to_json())
            return self._accept(cmd_id, "score", 1, f"scoring architecture {arch.id}", arch.id)
        raise ConfigError(f"unknown command {kind!r}")

    def _final(self, args: dict) -> str:
        row = store.get_arch(self.ctx.conn, str(args.get("arch", "")))
        if row is None:
            raise ResultsFileError(f"no architecture {args.get('arch')!r} in this run; pick an id from the leaderboard")
        self._check_budget(row["id"], *arch_cost(Architecture.from_json(row["spec_json"])))
        epochs = whole_count(args.get("epochs") or self.ctx.cfg.train.final_epochs, "final training's epochs")
        waiting = [f for f in store.finals(self.ctx.conn, self.ctx.run_id)
                   if f["arch_id"] == row["id"] and f["status"] in ("queued", "running") and f["epochs"] == epochs]
        if waiting:
            return f"already queued: final training #{waiting[0]['id']} of {row['id']} ({epochs} epochs)"
        fid = self.engine.finals.queue(row["id"], epochs)
        phase = self.engine.phase
        when = "next" if phase in ("final", "done") else \
            "after the verify phase, beside its pick" if phase == "verify" else "after the search phases"
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


def _args(text: str | None) -> dict:
    """A command's arguments: a JSON object, or a one-line error (the commands table is open to anyone)."""
    try:
        args = json.loads(text or "{}")
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"the command's args_json is not JSON ({e}); send it again with smash-tui control") from e
    if not isinstance(args, dict):
        raise ConfigError("the command's args_json is not a JSON object; send it again with smash-tui control")
    return args

