"""The rank and refine phases as the engine runs them: score seeded random architectures with the trained
HyperNet, then perturbations of the best and a greedy hill-climb from it.

Each architecture is a pure function of (seed, stage, index) (`seeds.py`) and each score is committed as it lands,
so both phases resume from what the results file already holds.
"""

from __future__ import annotations

from . import store
from .context import EngineView
from .seeds import HILLCLIMB, PERTURB, RANK
from .space import Architecture
from .train import perturbed_draw, rank_draw


class Ranking:
    def __init__(self, engine: EngineView):
        self.engine = engine
        self.ctx = engine.ctx

    def best(self, *sources: str) -> dict | None:
        return self.ctx.agreed(lambda: store.best_score(self.ctx.conn, self.ctx.run_id, sources))

    def rank(self) -> None:
        e, cfg = self.engine, self.ctx.cfg
        self.rescore_provisional()
        n = cfg.train.n_random
        start = e.count("random")
        archs = self.drawn("rank", "random architectures", lambda i: rank_draw(cfg, RANK, i), start, n)
        e.scorer.score_many(archs, "random", None, start, n)
        e.enter("refine")

    def drawn(self, stage: str, what: str, draw, start: int, n: int) -> list[Architecture]:
        """Architectures `start`..`n - 1` of a stage (`draw(i)` -> (architecture, draws rejected)). Under a
        budget all `n` are drawn (pure Python, well under a second per thousand draws), so the event that says how
        many draws the budget rejected covers the whole stage, resumed or not."""
        if not self.engine.budget:
            return [draw(i)[0] for i in range(start, n)]
        draws = [draw(i) for i in range(n)]
        self.engine.budget_event(stage, f"{n} {what}", sum(r for _, r in draws), [a for a, _ in draws])
        return [a for a, _ in draws[start:]]

    def rescore_provisional(self) -> None:
        """Score again, with the trained HyperNet, what `sample`/`score` commands scored during SMASH training.

        Scores from mid-schedule weights rank far worse than the same run's weights at the end of its schedule
        (docs/search-quality.md); a leaderboard mixing the two would judge those architectures by noise. The new
        score (source `rescore`) is their latest, so the leaderboard uses it; after a stop, only those still
        without one are scored."""
        ctx = self.ctx
        rows = ctx.agreed(lambda: store.provisional_scores(ctx.conn, ctx.run_id, self.engine.step))
        if rows and ctx.world.main:
            ctx.event("info", f"rescoring {len(rows)} architectures scored before SMASH training ended")
        self.engine.scorer.score_many([Architecture.from_json(r["spec_json"]) for r in rows], "rescore", None, 0,
                                      len(rows))

    def refine(self) -> None:
        """Perturbations of the best random architecture, then the hill-climb."""
        e, cfg = self.engine, self.ctx.cfg
        base = self.best("random")
        if base is None:
            return
        arch = Architecture.from_json(base["spec_json"])
        start = e.count("perturb")
        cands = self.drawn("refine", f"perturbations of {arch.id}", lambda i: perturbed_draw(cfg, arch, PERTURB, i),
                           start, cfg.train.n_perturb)
        e.scorer.score_many(cands, "perturb", arch.id, start, cfg.train.n_perturb + cfg.train.n_hillclimb)
        self.hillclimb()

    def hillclimb(self) -> None:
        """Greedy: perturb the current best; keep a candidate only if strictly better. The current
        architecture is always the best of (start, candidates so far), so it is re-derived on resume."""
        e, cfg, t = self.engine, self.ctx.cfg, self.ctx.cfg.train
        start = e.count("hillclimb")
        rejected, cands = 0, []
        for i in range(start, t.n_hillclimb):
            arch = Architecture.from_json(self.best("random", "perturb", "hillclimb")["spec_json"])
            cand, r = perturbed_draw(cfg, arch, HILLCLIMB, i)
            rejected += r
            cands.append(cand)
            e.scorer.score_many([cand], "hillclimb", arch.id, t.n_perturb + i, t.n_perturb + t.n_hillclimb)
        if e.budget:  # each candidate hangs on the scores before it: a resumed run counts its own candidates
            what = f"hill-climbing candidates {start}-{t.n_hillclimb - 1}" if start else \
                f"{t.n_hillclimb} hill-climbing candidates"
            e.budget_event("refine", what, rejected, cands)
