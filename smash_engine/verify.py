"""The verify phase as the engine runs it: successive halving (`halving.py`, the plan and the selection) over
the search's best (the first `verify_top` of `verify_order`), between refinement and final training, as `finals.py`
runs final training.

Each training is committed as it lands, and a rung's survivors are queued in one transaction once it is done: a
stop loses at most the training in progress, which runs again on resume.
"""

from __future__ import annotations

from . import halving, store
from .context import EngineView
from .space import Architecture


class Verify:
    def __init__(self, engine: EngineView):
        self.engine = engine
        self.ctx = engine.ctx

    def enter(self) -> None:
        """Fix the candidates and queue rung 0, and move the run into the phase, in one transaction."""
        e, ctx, t = self.engine, self.ctx, self.ctx.cfg.train
        cands = self.candidates() if ctx.world.main else []
        rungs = self.rungs(len(cands))
        if ctx.world.main and len(cands) > (rungs[0].candidates if rungs else 1):
            ctx.event("warning", f"verify: the budget ({t.verify_budget:g} x SMASH's training images) trains "
                                 f"{rungs[0].candidates if rungs else 0} of {len(cands)} candidates for "
                                 f"{halving.MIN_STEPS} steps or more; raise --verify-budget to verify more")
        with ctx.w.transaction():  # the candidates are fixed and the phase moves on together, or neither
            if rungs:
                n = len(e.train)
                ctx.w.queue_verifications(ctx.run_id, cands[:rungs[0].candidates], 0, rungs[0].epochs(n),
                                          rungs[0].subset(n), rungs[0].seeds)
            e.enter("verify")

    def candidates(self) -> list[tuple[str, int, str]]:
        """The verify_top first of verify_order (FLOPs', SMASH breaking near-ties, by default), and with
        verify_add the best verify_add_top of that baseline among the scored architectures (NASWOT: once per
        architecture, on a fixed batch of training images)."""
        t, conn = self.ctx.cfg.train, self.ctx.conn
        board = store.leaderboard(conn, self.ctx.run_id)

        def naswot(rows: list[dict]) -> list[float]:
            from .proxies import naswot as score
            from .proxies import naswot_batch

            x = naswot_batch(self.engine.train)
            return [score(Architecture.from_json(store.get_arch(conn, r["arch_id"])["spec_json"]), x) for r in rows]

        return halving.candidates(board, t.verify_top, t.verify_add, t.verify_add_top, naswot, t.verify_order)

    def rungs(self, n: int) -> list[halving.Rung]:
        """The phase's rungs for n candidates; its budget is verify_budget x the images SMASH training took, and
        no rung trains a candidate longer than final training will (final_epochs over the training split)."""
        e, t = self.engine, self.ctx.cfg.train
        smash_images = e.total_steps * t.batch_size * self.ctx.world.size
        final_images = t.final_epochs * len(e.train) if t.final_epochs else None
        return halving.plan(n, t.verify_eta, int(t.verify_budget * smash_images), halving.MIN_STEPS * t.final_batch,
                            final_images)

    def run(self) -> None:
        """Successive halving over the candidates queued at rung 0, by held-out loss; final training takes them
        in the order it leaves, then SMASH's next best up to final_top."""
        e, ctx, t = self.engine, self.ctx, self.ctx.cfg.train
        rows = ctx.agreed(lambda: store.verifications(ctx.conn, ctx.run_id))
        rungs = self.rungs(sum(r["rung"] == 0 for r in rows))
        total = halving.cost(rungs)
        while rows:
            r = max(row["rung"] for row in rows)
            here = [row for row in rows if row["rung"] == r]
            done = sum(row["images"] * row["epochs"] * row["seeds"] for row in rows if row["status"] == "done")
            for row in [row for row in here if row["status"] != "done"]:
                e.finals.verify_one(row["arch_id"], rungs[r], e.train, e.val, done, total, len(rungs))
                done += rungs[r].images * rungs[r].seeds
            rows = ctx.agreed(lambda: store.verifications(ctx.conn, ctx.run_id))
            here = [row for row in rows if row["rung"] == r]
            if r + 1 >= len(rungs):
                break
            keep = halving.survivors(here, rungs[r + 1].candidates)
            if ctx.world.main:
                ctx.event("info", f"verify rung {r + 1}/{len(rungs)} done: {len(keep)} of {len(here)} go on to "
                                  f"{rungs[r + 1].images:,} images each (best {keep[0]['arch_id']}, "
                                  f"{held_out(keep[0])})")
            n = len(e.train)
            ctx.w.queue_verifications(ctx.run_id, [(k["arch_id"], k["smash_rank"], k["via"]) for k in keep], r + 1,
                                      rungs[r + 1].epochs(n), rungs[r + 1].subset(n), rungs[r + 1].seeds)
            rows = ctx.agreed(lambda: store.verifications(ctx.conn, ctx.run_id))
        best = halving.order(rows)
        rest = [r["arch_id"] for r in e.top(t.final_top + len(best)) if r["arch_id"] not in best]
        if best and ctx.world.main:
            top = halving.latest(rows, done=True)[best[0]]
            ctx.event("info", f"verified {sum(r['rung'] == 0 for r in rows)} over {len(rungs)} rungs "
                              f"({halving.cost(rungs):,} training images): best {best[0]} (SMASH rank "
                              f"{top['smash_rank']}, a candidate by {top['via']}, {held_out(top)})")
        e.queue_finals_and_enter((best + rest)[:t.final_top])


def held_out(row: dict) -> str:
    loss = "" if row.get("val_loss") is None else f"loss {row['val_loss']:.4f}, "
    return f"held-out {loss}error {row['val_error']:.4f}"
