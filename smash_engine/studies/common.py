"""What every study shares: opening a finished run, normal training (`fit`), the rank statistics, the
leaderboard picks, and the study rows that make a rerun continue where it stopped."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import store
from ..config import RunConfig, TrainConfig
from ..data import DeviceData
from ..encoding import ArchPlan
from ..errors import ConfigError, EngineBusy, ResultsFileError
from ..hypernet import HYPER_PRESETS, HyperConfig
from ..runs import load_splits
from ..space import Architecture
from ..train import Final, Smash, bn_calibration, cosine_lr, score_plan, torch_gen

# derived-seed purposes, clear of train.py's 0..9
CORRUPT, WALK, NORMAL, CAPACITY = 101, 102, 103, 104
# HyperNets smaller than the presets, for runs already on the "small" one
LOW_CAPACITY = {**HYPER_PRESETS, "tiny": HyperConfig(stem=2, growth=2, dense=(1, 1), compression=0.5)}
FIELDS = ("dilation", "kernel", "out", "groups", "read", "write")
Report = Callable[[str], None]


@dataclass
class RunContext:
    """A finished run opened for a study: its writer, config, directory, device and data splits."""

    w: store.Writer
    run_id: int
    cfg: RunConfig
    dir: Path
    device: torch.device
    train: DeviceData
    val: DeviceData
    test: DeviceData
    calib: list[torch.Tensor] | None = None  # the run's BatchNorm calibration batches (train.bn_calibration)
    uid: str | None = None  # the run's identity: checkpoints of other runs are refused (runs.load_owned)

    def close(self) -> None:
        self.w.close()

    def score(self, s: Smash, plan: ArchPlan, batch: int | None = None) -> tuple[float, float]:
        """SMASH (error, loss) on the held-out split, scored as the run's rank phase scores."""
        t = self.cfg.train
        return score_plan(s, plan, self.val, batch or t.score_batch, t.score_bn, self.calib)


def open_run(db: Path, device: str | None = None) -> RunContext:
    """Open (and migrate) the results file; refuse while its engine still runs."""
    from ..runs import resolve_device, run_dir

    w = store.connect_writer(db)
    try:
        run = store.get_run(w.conn)
        if run is None:
            raise ResultsFileError(f"{db} holds no run; start one with `smash-tui run`")
        if store.engine_state(run) in ("running", "paused"):
            raise EngineBusy(f"the search in {db} is still running: wait for it or stop it "
                             f"(`smash-tui control {db} stop`), then run the study")
        cfg = RunConfig.from_dict(json.loads(run["config_json"]))
        dev = resolve_device(device or cfg.device)
        train, val, test = load_splits(cfg, dev)
    except BaseException:
        w.close()
        raise
    return RunContext(w, run["id"], cfg, run_dir(Path(db)), dev, train, val, test, bn_calibration(cfg, train),
                      run["uid"])


def load_smash(ctx: RunContext, cfg: RunConfig | None = None, path: Path | None = None) -> Smash:
    cfg, path = cfg or ctx.cfg, path or ctx.dir / "checkpoint.pt"
    from ..runs import load_owned

    sd = load_owned(path, ctx.uid, cfg.to_dict())
    if sd is None:
        raise ResultsFileError(f"no SMASH checkpoint at {path}: the study needs the run's trained HyperNet")
    s = Smash.create(cfg, ctx.device)
    s.load_state_dict(sd)
    return s


def arch_of(conn, arch_id: str) -> Architecture:
    row = store.get_arch(conn, arch_id)
    if row is None:
        raise ResultsFileError(f"no architecture {arch_id!r} in this run; pick an id from the leaderboard")
    return Architecture.from_json(row["spec_json"])


# -- scoring and normal training ------------------------------------------------------------------
def fit(f: Final, t: TrainConfig, epochs: int, seed: int, train: DeviceData, val: DeviceData, test: DeviceData,
        start: int = 0, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train a FixedNet (SGD, cosine per step) for `epochs`; returns the last epoch's metrics."""
    spe = train.num_batches(min(t.final_batch, len(train)))
    batch, total, m = min(t.final_batch, len(train)), epochs * spe, {}
    for epoch in range(start, epochs):
        sums = []
        for b, (x, y) in enumerate(train.epoch_batches(batch, torch_gen(seed, NORMAL, epoch))):
            lr = cosine_lr(t.final_lr, epoch * spe + b, total)
            sums.append(f.step(x, y, lr))
        loss, err = torch.stack(sums).mean(0).tolist()
        m = dict(epoch=epoch + 1, train_loss=loss, train_error=err, lr=lr,
                 val_error=f.evaluate(val, t.score_batch)[0], test_error=f.evaluate(test, t.score_batch)[0])
        if on_epoch:
            on_epoch(epoch + 1, m)
    return m


def subset(data: DeviceData, n: int, seed: int) -> DeviceData:
    """A seeded random `n` of `data` (the same images for every architecture of a study)."""
    if not 1 <= n <= len(data):
        raise ConfigError(f"--train-size must be between 1 and the {len(data)} training images, got {n}")
    idx = torch.randperm(len(data), generator=torch_gen(seed, NORMAL, 1_000_000))[:n].sort().values.to(data.device)
    return type(data)(data.x[idx], data.y[idx], data.info, data.device)


# -- statistics -------------------------------------------------------------------------------------
def _num(x) -> float | None:
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
    return dict(tau=_num(part(np.arange(len(a_)))), lo=lo, hi=hi)


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
    out = dict(n=n, kendall_tau=_num(tau.statistic), kendall_p=_num(tau.pvalue), spearman_rho=_num(rho.statistic),
               spearman_p=_num(rho.pvalue), top_k=k, top_k_overlap=overlap,
               regret=float(true[int(by_smash[0])] - min(true)))
    if ci:
        a, b = np.asarray(smash, dtype=float), np.asarray(true, dtype=float)
        out["kendall_lo"], out["kendall_hi"] = bootstrap_ci(lambda i: stats.kendalltau(a[i], b[i]).statistic, n)
        out["spearman_lo"], out["spearman_hi"] = bootstrap_ci(lambda i: stats.spearmanr(a[i], b[i]).statistic, n)
    return out


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


def _study(ctx: RunContext, kind: str, options: dict, new: bool) -> tuple[int, dict]:
    """The latest study of this kind with the same options (continued), or a new one."""
    for row in reversed(store.studies(ctx.w.conn, ctx.run_id, kind)):
        opts = json.loads(row["options_json"])
        if not new and {k: opts.get(k) for k in options if k != "archs"} == \
                {k: v for k, v in options.items() if k != "archs"}:
            return row["id"], opts
    return ctx.w.create_study(ctx.run_id, kind, options), options


def _done(ctx: RunContext, sid: int) -> set[tuple[str, int]]:
    return {(r["variant"], r["trial"]) for r in store.study_archs(ctx.w.conn, sid)}


def _finish(ctx: RunContext, sid: int, stats: list[dict], message: str) -> int:
    ctx.w.set_study_stats(sid, stats)
    ctx.w.update_study(sid, status="done", message=message)
    return sid


def _headline(s: dict) -> str:
    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    return (f"n={s['n']}: Kendall tau {f(s.get('kendall_tau'))} (p={s.get('kendall_p') or float('nan'):.3g}), "
            f"Spearman rho {f(s.get('spearman_rho'))}, top-{s.get('top_k')} overlap {s.get('top_k_overlap', 0):.2f}, "
            f"regret {s.get('regret', 0) * 100:.1f} pts")
