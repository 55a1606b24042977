"""3. corrupted encoding: SMASH error with the true `c` and with one field shuffled across ops."""

from __future__ import annotations

import numpy as np

from .. import store
from ..encoding import ArchPlan, corrupt_plan, encode
from ..errors import ConfigError
from ..runs import RunContext, arch_of, load_smash
from ..seeds import CORRUPT, rng
from .common import FIELDS, Report, done_trials, finish, picks, study_row
from .stats import num


# -- 3. corrupted encoding --------------------------------------------------------------------------
def variant_plan(plan: ArchPlan, space, variant: str, seed: int, trial: int) -> ArchPlan | None:
    """The plan scored as `variant` of trial `trial`: the true one, or with that field of c shuffled by the
    seed `study corrupt` derives for it (None if no shuffle changes c); shared with the benchmark's panel run."""
    if variant == "true":
        return plan
    return corrupt_plan(plan, space, variant, rng(seed, CORRUPT, 16 * trial + FIELDS.index(variant)))


def corrupt(ctx: RunContext, every: int = 5, count: int = 20, fields: tuple[str, ...] = FIELDS,
            new: bool = False, report: Report = print) -> int:
    bad = sorted(set(fields) - set(FIELDS))
    if bad:
        raise ConfigError(f"unknown field(s) {', '.join(bad)}; choose from {', '.join(FIELDS)}")
    archs = picks(ctx.w.conn, ctx.run_id, every, count)
    sid, opts = study_row(ctx, "corrupt", dict(every=every, count=count, fields=list(fields), archs=archs), new)
    s, done, batch, space = load_smash(ctx), done_trials(ctx, sid), ctx.cfg.train.score_batch, ctx.cfg.space
    for i, arch_id in enumerate(opts["archs"]):
        plan = encode(arch_of(ctx.w.conn, arch_id), space)
        for variant in ("true", *opts["fields"]):
            if (variant, i) in done:
                continue
            p = variant_plan(plan, space, variant, ctx.cfg.seed, i)
            err, loss = (None, None) if p is None else ctx.score(s, p.to(ctx.device), batch)
            ctx.w.add_study_arch(sid, variant=variant, trial=i, arch_id=arch_id, smash_error=err, smash_loss=loss)
        report(f"scored {i + 1}/{len(opts['archs'])} {arch_id} with its true and {len(opts['fields'])} corrupted "
               "encodings")
    stats = corrupt_stats(ctx.w.conn, sid, opts["fields"])
    msg = "; ".join(f"{r['variant']}: true wins {r['win_rate']:.0%}, gap {r['mean_gap'] * 100:+.1f} pts"
                    for r in stats if r["n"])
    return finish(ctx, sid, stats, msg)


def corrupt_stats(conn, sid: int, fields: list[str]) -> list[dict]:
    """Per field: share of archs where the true c scores strictly better, mean gap, Wilcoxon p (scipy)."""
    true = {r["trial"]: r["smash_error"] for r in store.study_archs(conn, sid, "true")}
    return corrupt_summary(true, {field: [(r["trial"], r["smash_error"]) for r in store.study_archs(conn, sid, field)]
                                  for field in fields})


def corrupt_summary(true: dict[int, float], shuffled: dict[str, list[tuple[int, float | None]]]) -> list[dict]:
    """`corrupt_stats` on plain values: `true[trial]` is the error with the true c, `shuffled[field]` the
    (trial, error) pairs with that field shuffled (None where no shuffle changed c)."""
    from scipy import stats

    out = []
    for field, pairs in shuffled.items():
        rows = [(t, e) for t, e in pairs if e is not None and t in true]
        gaps = np.array([e - true[t] for t, e in rows])
        extra = dict(unchanged=len(pairs) - len(rows), ties=int((gaps == 0).sum()))
        if len(gaps) and np.any(gaps != 0):
            extra["wilcoxon_p"] = num(stats.wilcoxon(gaps).pvalue)
        out.append(dict(variant=field, n=len(rows), win_rate=float((gaps > 0).mean()) if len(rows) else None,
                        mean_gap=float(gaps.mean()) if len(rows) else None, extra_json=extra))
    return out
