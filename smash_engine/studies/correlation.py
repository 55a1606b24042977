"""1. correlation (paper Section 4.1) and 2. capacity: the same study with a low-capacity HyperNet."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .. import store
from ..config import RunConfig
from ..data import DeviceData
from ..encoding import encode
from ..errors import ConfigError, ResultsFileError
from ..hypernet import HYPER_PRESETS, hyper_preset
from ..loops import fit, smash_steps
from ..runs import RunContext, arch_of, load_owned, save_atomic
from ..seeds import NORMAL, rng, torch_gen
from ..train import Final, Smash
from .common import Report, done_trials, finish, headline, picks, study_row
from .stats import rank_stats


# -- 1. correlation ---------------------------------------------------------------------------------
def correlation(ctx: RunContext, every: int = 5, count: int = 50, epochs: int = 10, top_k: int = 5,
                new: bool = False, report: Report = print, train_size: int | None = None,
                source: str = "random") -> int:
    archs = picks(ctx.w.conn, ctx.run_id, every, count, source)
    train = ctx.train if train_size is None else subset(ctx.train, train_size, ctx.cfg.seed)
    sid, opts = study_row(ctx, "correlation", dict(every=every, count=count, epochs=epochs, top_k=top_k, archs=archs,
                                                train_size=train_size, source=source), new)
    done, t = done_trials(ctx, sid), ctx.cfg.train
    board = {r["arch_id"]: r for r in store.leaderboard(ctx.w.conn, ctx.run_id)}
    for i, arch_id in enumerate(opts["archs"]):
        if ("trained", i) in done:
            continue
        seed = rng(ctx.cfg.seed, NORMAL, i).getrandbits(31)
        f = Final.create(arch_of(ctx.w.conn, arch_id), t, seed, ctx.device)
        fit(f, train, epochs, min(t.final_batch, len(train)), t.final_lr,
            lambda e, seed=seed: torch_gen(seed, NORMAL, e))
        m = dict(val_error=f.evaluate(ctx.val, t.score_batch)[0], test_error=f.evaluate(ctx.test, t.score_batch)[0])
        row = board.get(arch_id, {})
        ctx.w.add_study_arch(sid, variant="trained", trial=i, arch_id=arch_id, smash_error=row.get("smash_error"),
                             smash_loss=row.get("smash_loss"), val_error=m["val_error"], test_error=m["test_error"],
                             epochs=epochs)
        report(f"trained {i + 1}/{len(opts['archs'])} {arch_id}: SMASH {row.get('smash_error', float('nan')):.3f}"
               f"  true val {m['val_error']:.3f}  test {m['test_error']:.3f}")
    stats = correlation_stats(ctx.w.conn, sid, "trained", "run", top_k)
    base = baseline_stats(ctx.w.conn, sid, top_k, ctx.train)
    return finish(ctx, sid, [stats, *base], f"{headline(stats)}; {_versus(stats, base)}")


def subset(data: DeviceData, n: int, seed: int) -> DeviceData:
    """A seeded random `n` of the training images (the same for every architecture of the study)."""
    if not 1 <= n <= len(data):
        raise ConfigError(f"--train-size must be between 1 and the {len(data)} training images, got {n}")
    return data.subset(n, torch_gen(seed, NORMAL, 1_000_000))


def correlation_stats(conn, sid: int, variant: str, name: str, top_k: int,
                      smash_of: dict[int, float] | None = None) -> dict:
    """rank_stats against true val error (test-error figures in extra_json), over the trained rows."""
    rows = [r for r in store.study_archs(conn, sid, variant) if r["val_error"] is not None]
    smash = [smash_of[r["trial"]] if smash_of else r["smash_error"] for r in rows]
    stats = rank_stats(smash, [r["val_error"] for r in rows], top_k)
    test = rank_stats(smash, [r["test_error"] for r in rows], top_k)
    return {**stats, "variant": name, "extra_json": {"against_test_error": test}}


def baseline_stats(conn, sid: int, top_k: int, train: DeviceData | None = None) -> list[dict]:
    """The same statistics for what a user gets without SMASH, over the same trained architectures:
    parameter count, FLOPs, synflow at initialisation and, given the training images, NASWOT (`proxies`),
    each as a predicted error."""
    from ..proxies import naswot_batch, predicted_errors

    rows = [r for r in store.study_archs(conn, sid, "trained") if r["val_error"] is not None]
    archs = [arch_of(conn, r["arch_id"]) for r in rows]
    out = []
    which = ("params", "flops", "synflow", *(("naswot",) if train is not None else ()))
    x = naswot_batch(train) if train is not None else None
    for name, pred in predicted_errors(archs, x, which).items():
        stats = rank_stats(pred, [r["val_error"] for r in rows], top_k)
        test = rank_stats(pred, [r["test_error"] for r in rows], top_k, ci=False)
        out.append({**stats, "variant": name, "extra_json": {"against_test_error": test,
                                                              "predicted_error": dict(zip([r["arch_id"] for r in rows],
                                                                                          pred, strict=True))}})
    return out


def _versus(smash: dict, base: list[dict]) -> str:
    """One phrase: did SMASH beat the best free baseline, judged by Kendall tau and its interval."""
    scored = [b for b in base if b.get("kendall_tau") is not None]
    if smash.get("kendall_tau") is None or not scored:
        return "baselines: n/a"
    best = max(scored, key=lambda b: b["kendall_tau"])
    gap = smash["kendall_tau"] - best["kendall_tau"]
    ci = "" if smash.get("kendall_lo") is None else f" [{smash['kendall_lo']:+.2f}, {smash['kendall_hi']:+.2f}]"
    verdict = "SMASH beats" if gap > 0 else "SMASH does not beat"
    return (f"{verdict} the best baseline ({best['variant']}, tau {best['kendall_tau']:+.3f}) by {gap:+.3f}; "
            f"SMASH tau 95% interval{ci}")


# -- 2. capacity ----------------------------------------------------------------------------------------
def capacity(ctx: RunContext, hyper: str | None = None, epochs: int | None = None, new: bool = False,
             report: Report = print) -> int:
    """Train SMASH again with a low-capacity HyperNet; score the latest correlation study's archs with it."""
    corr = [s for s in store.studies(ctx.w.conn, ctx.run_id, "correlation")
            if store.study_archs(ctx.w.conn, s["id"], "trained")]
    if not corr:
        raise ResultsFileError("a capacity study scores the architectures of a correlation study: run "
                               "`smash-tui study correlation DB` first")
    hyper = hyper or ("tiny" if ctx.cfg.hyper == HYPER_PRESETS["small"] else "small")
    if hyper_preset(hyper) == ctx.cfg.hyper:
        raise ConfigError(f"the run already uses the {hyper!r} HyperNet; pick a smaller one (e.g. tiny)")
    epochs = epochs or ctx.cfg.train.epochs
    cfg = dataclasses.replace(ctx.cfg, hyper=HYPER_PRESETS[hyper], train=dataclasses.replace(ctx.cfg.train,
                                                                                           epochs=epochs))
    source = corr[-1]
    sid, opts = study_row(ctx, "capacity", dict(hyper=hyper, epochs=epochs, correlation_study=source["id"]), new)
    s = smash_train(ctx, cfg, ctx.dir / f"capacity-{hyper}-e{epochs}.pt", report)
    trained = store.study_archs(ctx.w.conn, source["id"], "trained")
    done, batch = done_trials(ctx, sid), cfg.train.score_batch
    for r in trained:
        if (hyper, r["trial"]) not in done:
            err, loss = ctx.score(s, encode(arch_of(ctx.w.conn, r["arch_id"]), cfg.space).to(ctx.device), batch)
            ctx.w.add_study_arch(sid, variant=hyper, trial=r["trial"], arch_id=r["arch_id"], smash_error=err,
                                 smash_loss=loss, val_error=r["val_error"], test_error=r["test_error"],
                                 epochs=r["epochs"])
    top_k = json.loads(source["options_json"])["top_k"]
    small = {r["trial"]: r["smash_error"] for r in store.study_archs(ctx.w.conn, sid, hyper)}
    stats = [correlation_stats(ctx.w.conn, source["id"], "trained", "run", top_k),
             correlation_stats(ctx.w.conn, source["id"], "trained", hyper, top_k, small)]
    return finish(ctx, sid, stats, f"run's HyperNet {headline(stats[0])}; {hyper}: {headline(stats[1])}")


def smash_train(ctx: RunContext, cfg: RunConfig, ckpt: Path, report: Report) -> Smash:
    """SMASH training with the engine's loop (`loops.smash_steps`), checkpointed at each epoch's end."""
    s, t, step = Smash.create(cfg, ctx.device), cfg.train, 0
    sd = load_owned(ckpt, ctx.uid, cfg.to_dict())
    if sd is not None:
        s.load_state_dict(sd)
        step = int(sd["step"])
    window = []
    for st in smash_steps(s, cfg, ctx.train, step):
        window.append(st.metrics)
        if st.epoch_end:
            ctx.dir.mkdir(parents=True, exist_ok=True)
            save_atomic({**s.state_dict(), "step": st.step, "config": cfg.to_dict(), "run_uid": ctx.uid}, ckpt)
            loss, err, _ = torch.stack(window).mean(0).tolist()
            report(f"capacity SMASH epoch {st.epoch + 1}/{t.epochs}: loss {loss:.3f}, error {err:.3f}")
            window = []
    return s
