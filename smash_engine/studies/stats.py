"""Rank statistics of a predictor against a truth, with bootstrap intervals over architectures: Kendall tau
and Spearman rho (scipy.stats), top-k overlap, regret, paired differences and partial tau. The studies and the
benchmarks (`search_quality.py`, `truth_panel.py`) judge every predictor with these."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np


def num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, reps: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of `stat(indices)` over `n` items resampled with replacement.

    Resampling architectures (not images) is what answers "would another panel of the same size rank as
    well"; seeded, so a report is reproducible. Resamples where the statistic is undefined (all ties) are
    dropped.
    """
    if n < 3:
        return None, None
    gen = np.random.default_rng(seed)
    with warnings.catch_warnings():  # resamples of all-equal values: the statistic is NaN, dropped below
        warnings.simplefilter("ignore")
        values = [stat(gen.integers(0, n, n)) for _ in range(reps)]
    values = np.asarray([v for v in values if v is not None and not math.isnan(v)])
    if len(values) < reps // 2:
        return None, None
    q = (1 - level) / 2
    return float(np.quantile(values, q)), float(np.quantile(values, 1 - q))


def tau_difference(a: list[float], b: list[float], true: list[float]) -> dict:
    """Kendall tau of predictor `a` minus that of `b` (both against `true`), with a paired bootstrap 95%
    interval: the same resampled architectures for both, so "a ranks better than b" is judged on the
    difference, which is far less noisy than comparing two separate intervals."""
    from scipy import stats

    a_, b_, t_ = np.asarray(a), np.asarray(b), np.asarray(true)

    def diff(idx: np.ndarray) -> float:
        return float(stats.kendalltau(a_[idx], t_[idx]).statistic - stats.kendalltau(b_[idx], t_[idx]).statistic)

    lo, hi = bootstrap_ci(diff, len(a_))
    return dict(diff=diff(np.arange(len(a_))) if len(a_) >= 2 else None, lo=lo, hi=hi)


def partial_tau(a: list[float], true: list[float], control: list[float]) -> dict:
    """Kendall's partial tau of predictor `a` against `true` with `control` held fixed (Kendall 1942:
    (t_at - t_ac t_tc) / sqrt((1 - t_ac^2)(1 - t_tc^2))), with a bootstrap 95% interval over architectures.

    On a panel where size explains most of the trained error, a proxy can rank well only by tracking size;
    the partial tau given FLOPs asks whether it knows anything FLOPs does not, which is what a user gains
    from paying for it. Undefined (None) where `a` or `true` is a function of `control`."""
    from scipy import stats

    a_, t_, c_ = (np.asarray(v, dtype=float) for v in (a, true, control))

    def part(idx: np.ndarray) -> float:
        at, ac, tc = (stats.kendalltau(x[idx], y[idx]).statistic for x, y in ((a_, t_), (a_, c_), (t_, c_)))
        den = (1 - ac * ac) * (1 - tc * tc)
        return float("nan") if not den > 1e-12 else float((at - ac * tc) / math.sqrt(den))

    if len(a_) < 3:
        return dict(tau=None, lo=None, hi=None)
    lo, hi = bootstrap_ci(part, len(a_))
    return dict(tau=num(part(np.arange(len(a_)))), lo=lo, hi=hi)


def rank_stats(smash: list[float], true: list[float], top_k: int, ci: bool = True) -> dict:
    """Kendall tau-b and Spearman rho (scipy.stats) of SMASH (or any predicted) error vs true error, each
    with a bootstrap 95% interval over architectures (`kendall_lo`..`kendall_hi`), top-k overlap, regret."""
    from scipy import stats

    n, k = len(smash), max(1, min(top_k, len(smash)))
    if n < 2:
        return dict(n=n)
    tau, rho = stats.kendalltau(smash, true), stats.spearmanr(smash, true)
    by_smash, by_true = np.argsort(smash, kind="stable"), np.argsort(true, kind="stable")
    overlap = len(set(by_smash[:k].tolist()) & set(by_true[:k].tolist())) / k
    out = dict(n=n, kendall_tau=num(tau.statistic), kendall_p=num(tau.pvalue), spearman_rho=num(rho.statistic),
               spearman_p=num(rho.pvalue), top_k=k, top_k_overlap=overlap,
               regret=float(true[int(by_smash[0])] - min(true)))
    if ci:
        a, b = np.asarray(smash, dtype=float), np.asarray(true, dtype=float)
        out["kendall_lo"], out["kendall_hi"] = bootstrap_ci(lambda i: stats.kendalltau(a[i], b[i]).statistic, n)
        out["spearman_lo"], out["spearman_hi"] = bootstrap_ci(lambda i: stats.spearmanr(a[i], b[i]).statistic, n)
    return out
