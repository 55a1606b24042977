"""What every study shares: the leaderboard picks, the encoding's fields, and the study rows that make a rerun
continue where it stopped. A finished run is opened with `runs.open_run`; statistics are in `stats.py`."""

from __future__ import annotations

import json
from collections.abc import Callable

from .. import store
from ..encoding import FIELDS
from ..errors import ConfigError, ResultsFileError
from ..runs import RunContext

__all__ = ["FIELDS", "Report", "SOURCES", "done_trials", "finish", "headline", "picks", "study_row"]
Report = Callable[[str], None]

SOURCES = ("random", "all")


def picks(conn, run_id: int, every: int, count: int, source: str = "all") -> list[str]:
    """Arch ids at leaderboard ranks 1, 1+every, 1+2*every, ... (at most `count`).

    `source="random"` ranks only the rank phase's random architectures: refine-phase perturbations are near
    copies of the best one, and a study crowded with near copies measures how SMASH tells twins apart, not
    how it ranks the space.
    """
    if every < 1 or count < 1:
        raise ConfigError(f"--every and --count must be positive, got {every} and {count}")
    if source not in SOURCES:
        raise ConfigError(f"unknown --source {source!r}; choose one of {', '.join(SOURCES)}")
    board = store.leaderboard(conn, run_id)
    if source == "random":
        board = [r for r in board if r["source"] == "random"]
    if len(board) < 2:
        what = "random architectures" if source == "random" else "architectures"
        raise ResultsFileError(f"the run has fewer than 2 scored {what}: let its rank phase finish first")
    return [r["arch_id"] for r in board[::every][:count]]


def study_row(ctx: RunContext, kind: str, options: dict, new: bool) -> tuple[int, dict]:
    """The latest study of this kind with the same options (continued), or a new one."""
    for row in reversed(store.studies(ctx.w.conn, ctx.run_id, kind)):
        opts = json.loads(row["options_json"])
        if not new and {k: opts.get(k) for k in options if k != "archs"} == \
                {k: v for k, v in options.items() if k != "archs"}:
            return row["id"], opts
    return ctx.w.create_study(ctx.run_id, kind, options), options


def done_trials(ctx: RunContext, sid: int) -> set[tuple[str, int]]:
    return {(r["variant"], r["trial"]) for r in store.study_archs(ctx.w.conn, sid)}


def finish(ctx: RunContext, sid: int, stats: list[dict], message: str) -> int:
    ctx.w.set_study_stats(sid, stats)
    ctx.w.update_study(sid, status="done", message=message)
    return sid


def headline(s: dict) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    return (f"n={s['n']}: Kendall tau {f(s.get('kendall_tau'))} (p={s.get('kendall_p') or float('nan'):.3g}), "
            f"Spearman rho {f(s.get('spearman_rho'))}, top-{s.get('top_k')} overlap {s.get('top_k_overlap', 0):.2f}, "
            f"regret {s.get('regret', 0) * 100:.1f} pts")
