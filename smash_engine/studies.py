"""The paper's experiments on a finished run (Section 4.1), stored in its results file.

- `correlation`: every k-th architecture of the leaderboard trained normally (FixedNet, short schedule);
  Kendall tau, Spearman rho (scipy.stats), top-k overlap and the regret of SMASH's pick.
- `capacity`: a second SMASH training with a low-capacity HyperNet (same data, space, schedule), scoring
  the architectures of the latest correlation study: both HyperNets' correlations side by side.
- `corrupt`: SMASH error with the true encoding `c` and with one field of `c` shuffled across ops; the
  network still runs the true architecture (only `ArchPlan.packed`, hence `c`, changes).
- `archgrad`: dE/dc, the gradient of the validation loss with respect to the encoding, turned into
  valid edits of the architecture; a greedy walk with those edits against one with random perturbations.

Every measurement is committed as it lands (`study_archs`), so re-running a study continues it. Statistics
(`study_stats`) are recomputed from the stored rows. Symbols as in the paper: `c` the encoding, `E` the
validation error. Transfer final training lives in `transfer.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import store
from .config import RunConfig, TrainConfig
from .data import DeviceData
from .encoding import ArchPlan, Layout, encode
from .errors import ConfigError, EngineBusy, ResultsFileError
from .hypernet import HYPER_PRESETS, HyperConfig
from .runs import load_splits
from .space import Architecture
from .train import Final, Smash, cosine_lr, rng, smash_arch, smash_step, torch_gen

# derived-seed purposes, clear of train.py's 0..6
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

    def close(self) -> None:
        self.w.close()


def open_run(db: Path, device: str | None = None) -> RunContext:
    """Open (and migrate) the results file; refuse while its engine still runs."""
    from .runs import resolve_device, run_dir

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
    return RunContext(w, run["id"], cfg, run_dir(Path(db)), dev, train, val, test)


def load_smash(ctx: RunContext, cfg: RunConfig | None = None, path: Path | None = None) -> Smash:
    cfg, path = cfg or ctx.cfg, path or ctx.dir / "checkpoint.pt"
    if not path.exists():
        raise ResultsFileError(f"no SMASH checkpoint at {path}: the study needs the run's trained HyperNet")
    s = Smash.create(cfg, ctx.device)
    s.load_state_dict(torch.load(path, map_location=ctx.device, weights_only=True))
    return s


def arch_of(conn, arch_id: str) -> Architecture:
    row = store.get_arch(conn, arch_id)
    if row is None:
        raise ResultsFileError(f"no architecture {arch_id!r} in this run; pick an id from the leaderboard")
    return Architecture.from_json(row["spec_json"])


# -- scoring and normal training ------------------------------------------------------------------
def score_plan(s: Smash, plan: ArchPlan, data: DeviceData, batch: int) -> tuple[float, float]:
    """SMASH (error, loss) of `plan.arch` with the weights the HyperNet generates from `plan.c`."""
    s.hyper.eval()
    s.net.eval()
    wrong = loss = 0.0
    with torch.inference_mode(), s.autocast():
        w = s.hyper.op_weights(plan)
        for x, y in data.eval_batches(batch):
            logits = s.net(x, plan, w).float()
            wrong += (logits.argmax(1) != y).sum().item()
            loss += F.cross_entropy(logits, y, reduction="sum").item()
    return wrong / max(len(data), 1), loss / max(len(data), 1)


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


def rank_stats(smash: list[float], true: list[float], top_k: int) -> dict:
    """Kendall tau-b and Spearman rho (scipy.stats) of SMASH vs true error, top-k overlap, regret."""
    from scipy import stats

    n, k = len(smash), max(1, min(top_k, len(smash)))
    if n < 2:
        return dict(n=n)
    tau, rho = stats.kendalltau(smash, true), stats.spearmanr(smash, true)
    by_smash, by_true = np.argsort(smash, kind="stable"), np.argsort(true, kind="stable")
    overlap = len(set(by_smash[:k].tolist()) & set(by_true[:k].tolist())) / k
    return dict(n=n, kendall_tau=_num(tau.statistic), kendall_p=_num(tau.pvalue), spearman_rho=_num(rho.statistic),
                spearman_p=_num(rho.pvalue), top_k=k, top_k_overlap=overlap,
                regret=float(true[int(by_smash[0])] - min(true)))


def picks(conn, run_id: int, every: int, count: int) -> list[str]:
    """Arch ids at leaderboard ranks 1, 1+every, 1+2*every, ... (at most `count`)."""
    if every < 1 or count < 1:
        raise ConfigError(f"--every and --count must be positive, got {every} and {count}")
    board = store.leaderboard(conn, run_id)
    if len(board) < 2:
        raise ResultsFileError("the run has fewer than 2 scored architectures: let its rank phase finish first")
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


# -- 1. correlation ---------------------------------------------------------------------------------
def correlation(ctx: RunContext, every: int = 5, count: int = 50, epochs: int = 10, top_k: int = 5,
                new: bool = False, report: Report = print, train_size: int | None = None) -> int:
    archs = picks(ctx.w.conn, ctx.run_id, every, count)
    train = ctx.train if train_size is None else subset(ctx.train, train_size, ctx.cfg.seed)
    sid, opts = _study(ctx, "correlation", dict(every=every, count=count, epochs=epochs, top_k=top_k, archs=archs,
                                                train_size=train_size), new)
    done, t = _done(ctx, sid), ctx.cfg.train
    board = {r["arch_id"]: r for r in store.leaderboard(ctx.w.conn, ctx.run_id)}
    for i, arch_id in enumerate(opts["archs"]):
        if ("trained", i) in done:
            continue
        f = Final.create(arch_of(ctx.w.conn, arch_id), t, rng(ctx.cfg.seed, NORMAL, i).getrandbits(31), ctx.device)
        m = fit(f, t, epochs, rng(ctx.cfg.seed, NORMAL, i).getrandbits(31), train, ctx.val, ctx.test)
        row = board.get(arch_id, {})
        ctx.w.add_study_arch(sid, variant="trained", trial=i, arch_id=arch_id, smash_error=row.get("smash_error"),
                             smash_loss=row.get("smash_loss"), val_error=m["val_error"], test_error=m["test_error"],
                             epochs=epochs)
        report(f"trained {i + 1}/{len(opts['archs'])} {arch_id}: SMASH {row.get('smash_error', float('nan')):.3f}"
               f"  true val {m['val_error']:.3f}  test {m['test_error']:.3f}")
    stats = correlation_stats(ctx.w.conn, sid, "trained", "run", top_k)
    return _finish(ctx, sid, [stats], _headline(stats))


def correlation_stats(conn, sid: int, variant: str, name: str, top_k: int,
                      smash_of: dict[int, float] | None = None) -> dict:
    """rank_stats against true val error (test-error figures in extra_json), over the trained rows."""
    rows = [r for r in store.study_archs(conn, sid, variant) if r["val_error"] is not None]
    smash = [smash_of[r["trial"]] if smash_of else r["smash_error"] for r in rows]
    stats = rank_stats(smash, [r["val_error"] for r in rows], top_k)
    test = rank_stats(smash, [r["test_error"] for r in rows], top_k)
    return {**stats, "variant": name, "extra_json": {"against_test_error": test}}


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
    if hyper not in LOW_CAPACITY:
        raise ConfigError(f"unknown HyperNet preset {hyper!r}; choose one of {', '.join(LOW_CAPACITY)}")
    if LOW_CAPACITY[hyper] == ctx.cfg.hyper:
        raise ConfigError(f"the run already uses the {hyper!r} HyperNet; pick a smaller one (e.g. tiny)")
    epochs = epochs or ctx.cfg.train.epochs
    cfg = dataclasses.replace(ctx.cfg, hyper=LOW_CAPACITY[hyper], train=dataclasses.replace(ctx.cfg.train,
                                                                                           epochs=epochs))
    source = corr[-1]
    sid, opts = _study(ctx, "capacity", dict(hyper=hyper, epochs=epochs, correlation_study=source["id"]), new)
    s = smash_train(ctx, cfg, ctx.dir / f"capacity-{hyper}-e{epochs}.pt", report)
    trained = store.study_archs(ctx.w.conn, source["id"], "trained")
    done, batch = _done(ctx, sid), cfg.train.score_batch
    for r in trained:
        if (hyper, r["trial"]) not in done:
            err, loss = score_plan(s, encode(arch_of(ctx.w.conn, r["arch_id"]), cfg.space).to(ctx.device),
                                   ctx.val, batch)
            ctx.w.add_study_arch(sid, variant=hyper, trial=r["trial"], arch_id=r["arch_id"], smash_error=err,
                                 smash_loss=loss, val_error=r["val_error"], test_error=r["test_error"],
                                 epochs=r["epochs"])
    top_k = json.loads(source["options_json"])["top_k"]
    small = {r["trial"]: r["smash_error"] for r in store.study_archs(ctx.w.conn, sid, hyper)}
    stats = [correlation_stats(ctx.w.conn, source["id"], "trained", "run", top_k),
             correlation_stats(ctx.w.conn, source["id"], "trained", hyper, top_k, small)]
    return _finish(ctx, sid, stats, f"run's HyperNet {_headline(stats[0])}; {hyper}: {_headline(stats[1])}")


def smash_train(ctx: RunContext, cfg: RunConfig, ckpt: Path, report: Report) -> Smash:
    """SMASH training as the engine does it (same seeds, schedule, batches), checkpointed per epoch."""
    from .runs import save_atomic

    s, t, step = Smash.create(cfg, ctx.device), cfg.train, 0
    spe = ctx.train.num_batches(t.batch_size)
    T = t.epochs * spe
    if ckpt.exists():
        sd = torch.load(ckpt, map_location=ctx.device, weights_only=True)
        s.load_state_dict(sd)
        step = int(sd["step"])
    while step < T:
        epoch = step // spe
        losses = [smash_step(s, smash_arch(cfg, step + b, T), x, y, cosine_lr(t.lr, step + b, T))
                  for b, (x, y) in enumerate(ctx.train.epoch_batches(t.batch_size, torch_gen(cfg.seed, 1, epoch)))]
        step += len(losses)
        ctx.dir.mkdir(parents=True, exist_ok=True)
        save_atomic({**s.state_dict(), "step": step, "config": cfg.to_dict()}, ckpt)
        loss, err, _ = torch.stack(losses).mean(0).tolist()
        report(f"capacity SMASH epoch {epoch + 1}/{t.epochs}: loss {loss:.3f}, error {err:.3f}")
    return s


# -- 3. corrupted encoding --------------------------------------------------------------------------
def corrupt_plan(plan: ArchPlan, space, field: str, r: random.Random) -> ArchPlan | None:
    """`plan` with one field of c shuffled (across ops; `read` across columns); None if no shuffle changes c.

    Only `packed` (hence c) changes: `plan.arch` and the op tables, so the network run, stay the true ones."""
    packed = np.asarray(plan.packed if isinstance(plan.packed, np.ndarray) else plan.packed.cpu().numpy())
    lay, off = Layout(space), Layout(space).offsets()
    op_of = packed[:, -1].astype(np.int64)
    first = (np.asarray(plan.op_start) // plan.slice_channels).astype(np.int64)
    if field == "read":
        units = [(col, off["read"], off["read"] + space.max_banks) for col in range(len(packed))]
    elif field in ("out", "write"):
        size = space.k if field == "out" else space.max_banks
        units = [(j, off[field], off[field] + size) for j in range(len(first))]
    else:
        nK, nD = len(space.kernels), lay.n_dil
        lo, hi = {"kernel": (0, 2 * nK), "dilation": (2 * nK, 2 * nK + 2 * nD),
                  "groups": (2 * nK + 2 * nD, lay.conv_width)}[field]
        units = [(j, off["convs"] + n * lay.conv_width + lo, off["convs"] + n * lay.conv_width + hi)
                 for j in range(len(first)) for n in range(4) if packed[first[j], off["pattern"] + n] > 0]
    segs = [packed[first[u] if field != "read" else u, a:b].copy() for u, a, b in units]
    for _ in range(50):
        order = list(range(len(units)))
        r.shuffle(order)
        if any(not np.array_equal(segs[i], segs[o]) for i, o in enumerate(order)):
            break
    else:
        return None
    new = packed.copy()
    for (u, a, b), o in zip(units, order, strict=True):
        new[u if field == "read" else op_of == u, a:b] = segs[o]
    out = dataclasses.replace(plan, packed=new)
    return out.to(plan.packed.device) if isinstance(plan.packed, torch.Tensor) else out


def corrupt(ctx: RunContext, every: int = 5, count: int = 20, fields: tuple[str, ...] = FIELDS,
            new: bool = False, report: Report = print) -> int:
    bad = sorted(set(fields) - set(FIELDS))
    if bad:
        raise ConfigError(f"unknown field(s) {', '.join(bad)}; choose from {', '.join(FIELDS)}")
    archs = picks(ctx.w.conn, ctx.run_id, every, count)
    sid, opts = _study(ctx, "corrupt", dict(every=every, count=count, fields=list(fields), archs=archs), new)
    s, done, batch, space = load_smash(ctx), _done(ctx, sid), ctx.cfg.train.score_batch, ctx.cfg.space
    for i, arch_id in enumerate(opts["archs"]):
        plan = encode(arch_of(ctx.w.conn, arch_id), space)
        for variant in ("true", *opts["fields"]):
            if (variant, i) in done:
                continue
            p = plan if variant == "true" else corrupt_plan(plan, space, variant,
                                                            rng(ctx.cfg.seed, CORRUPT, 16 * i + FIELDS.index(variant)))
            err, loss = (None, None) if p is None else score_plan(s, p.to(ctx.device), ctx.val, batch)
            ctx.w.add_study_arch(sid, variant=variant, trial=i, arch_id=arch_id, smash_error=err, smash_loss=loss)
        report(f"scored {i + 1}/{len(opts['archs'])} {arch_id} with its true and {len(opts['fields'])} corrupted "
               "encodings")
    stats = corrupt_stats(ctx.w.conn, sid, opts["fields"])
    msg = "; ".join(f"{r['variant']}: true wins {r['win_rate']:.0%}, gap {r['mean_gap'] * 100:+.1f} pts"
                    for r in stats if r["n"])
    return _finish(ctx, sid, stats, msg)


def corrupt_stats(conn, sid: int, fields: list[str]) -> list[dict]:
    """Per field: share of archs where the true c scores strictly better, mean gap, Wilcoxon p (scipy)."""
    from scipy import stats

    true = {r["trial"]: r["smash_error"] for r in store.study_archs(conn, sid, "true")}
    out = []
    for field in fields:
        rows = [r for r in store.study_archs(conn, sid, field) if r["smash_error"] is not None and r["trial"] in true]
        gaps = np.array([r["smash_error"] - true[r["trial"]] for r in rows])
        extra = dict(unchanged=len(store.study_archs(conn, sid, field)) - len(rows), ties=int((gaps == 0).sum()))
        if len(gaps) and np.any(gaps != 0):
            extra["wilcoxon_p"] = _num(stats.wilcoxon(gaps).pvalue)
        out.append(dict(variant=field, n=len(rows), win_rate=float((gaps > 0).mean()) if len(rows) else None,
                        mean_gap=float(gaps.mean()) if len(rows) else None, extra_json=extra))
    return out


# -- 4. architecture gradient ----------------------------------------------------------------------
Edit = tuple[int, int, str, int, int]  # (block, op in block, field, conv or -1, new value)


def encoding_grad(s: Smash, plan: ArchPlan, data: DeviceData, batch: int) -> torch.Tensor:
    """dE/dc summed over each op's filled positions: (n_ops, C), E the mean validation cross-entropy."""
    s.hyper.eval()
    s.net.eval()
    c = plan.c.detach().clone().requires_grad_(True)
    plan.c = c  # op_weights reads plan.c: the generated weights, hence the loss, now depend on this leaf
    with s.autocast():
        w = s.hyper.op_weights(plan)
        for x, y in data.eval_batches(batch):
            loss = F.cross_entropy(s.net(x, plan, w).float(), y, reduction="sum") / len(data)
            loss.backward(retain_graph=True)
    p = plan._packed
    filled = torch.arange(plan.rows, device=c.device)[:, None] < p[:, -2][None, :]  # (R, S)
    per_col = (c.grad[0] * filled[None]).sum(1)  # (C, S)
    return torch.zeros(len(plan.op_in), per_col.shape[0], device=c.device).index_add_(
        0, p[:, -1].long(), per_col.T).cpu()


def candidate_edits(arch: Architecture, space, g: torch.Tensor) -> list[tuple[float, Edit]]:
    """Every one-field change with its first-order loss change (a one-hot moves from +1/-1 to -1/+1, so
    changing value a to b costs 2 (g_b - g_a); toggling a bank of reads/writes costs +-2 g), best first."""
    lay, off = Layout(space), Layout(space).offsets()
    nK, nD, out = len(space.kernels), lay.n_dil, []
    j = 0
    for i, b in enumerate(arch.blocks):
        for k, op in enumerate(b.ops):
            gj = g[j].tolist()

            def swap(base: int, cur: int, values, field: str, n: int = -1, gj=gj, i=i, k=k) -> None:
                out.extend((2 * (gj[base + v] - gj[base + cur]), (i, k, field, n, v)) for v in values if v != cur)

            unit = b.bank_size // space.N
            swap(off["out"], op.out_channels // space.N - 1, range(unit - 1, space.k, unit), "out")
            for field, have in (("read", op.reads), ("write", op.writes)):
                out.extend(((-2 if t in have else 2) * gj[off[field] + t], (i, k, field, -1, t))
                           for t in range(b.n_banks))
            for n, conv in enumerate(op.convs):
                if conv is None:
                    continue
                base = off["convs"] + n * lay.conv_width
                for ax in (0, 1):
                    swap(base + ax * nK, space.kernels.index(conv.kernel[ax]), range(nK), f"kernel{ax}", n)
                    swap(base + 2 * nK + ax * nD, conv.dilation[ax] - 1, range(nD), f"dilation{ax}", n)
                swap(base + 2 * nK + 2 * nD, space.groups.index(conv.groups), range(len(space.groups)), "groups", n)
            j += 1
    return sorted((d, e) for d, e in out if d < 0)


def apply_edit(arch: Architecture, space, e: Edit) -> Architecture | None:
    """`arch` with one edit, if the result obeys the space's rules (validity, encoding, budget, dilations)."""
    from .encoding import check_in_space
    from .errors import InvalidArchitecture
    from .space import validate

    i, k, field, n, v = e
    b = arch.blocks[i]
    op = b.ops[k]
    if field == "out":
        op = dataclasses.replace(op, out_channels=(v + 1) * space.N)
    elif field in ("read", "write"):
        banks = tuple(sorted(set(getattr(op, field + "s")) ^ {v}))
        op = dataclasses.replace(op, **{field + "s": banks})
    else:
        conv = op.convs[n]
        if field.startswith("kernel"):
            conv = dataclasses.replace(conv, kernel=_set(conv.kernel, int(field[-1]), space.kernels[v]))
        elif field.startswith("dilation"):
            conv = dataclasses.replace(conv, dilation=_set(conv.dilation, int(field[-1]), v + 1))
        else:
            conv = dataclasses.replace(conv, groups=space.groups[v])
        op = dataclasses.replace(op, convs=_set(op.convs, n, conv))
    op = dataclasses.replace(op, bottleneck=space.op_bottleneck(len(op.reads) * b.bank_size, op.out_channels))
    blocks = _set(arch.blocks, i, dataclasses.replace(b, ops=_set(b.ops, k, op)))
    new = dataclasses.replace(arch, blocks=blocks)
    top = (max(space.kernels) + 1) // 2
    try:
        validate(new)
        check_in_space(new, space)
    except InvalidArchitecture:
        return None
    for bi, blk in enumerate(new.blocks):
        if sum(len(o.reads) for o in blk.ops) * blk.bank_size > space.budgets[bi]:
            return None
        for o in blk.ops:
            if any(c and any(d > top - (kk - 1) // 2 for kk, d in zip(c.kernel, c.dilation, strict=True))
                   for c in o.convs):
                return None
    return new


def _set(t: tuple, i: int, v) -> tuple:
    return (*t[:i], v, *t[i + 1:])


def guided(s: Smash, arch: Architecture, space, data: DeviceData, batch: int, changes: int,
           skip: set) -> tuple[Architecture | None, list[Edit], int]:
    """Apply the `changes` most promising valid edits not in `skip`; (arch, edits, invalid edits seen)."""
    g = encoding_grad(s, encode(arch, space).to(s.device), data, batch)
    new, applied, invalid = arch, [], 0
    for _, e in candidate_edits(arch, space, g):
        if len(applied) == changes:
            break
        if e in skip:
            continue
        cand = apply_edit(new, space, e)
        if cand is None:
            invalid += 1
            continue
        new, applied = cand, [*applied, e]
    return (new if applied else None), applied, invalid


def archgrad(ctx: RunContext, arch_id: str | None = None, trials: int = 20, changes: int = 2,
             new: bool = False, report: Report = print) -> int:
    """Greedy walks from one start: gradient-guided edits vs random perturbations, `trials` scored each."""
    if trials < 1 or changes < 1:
        raise ConfigError(f"--trials and --changes must be positive, got {trials} and {changes}")
    start_id = arch_id or picks(ctx.w.conn, ctx.run_id, 1, 1)[0]
    start = arch_of(ctx.w.conn, start_id)
    sid, opts = _study(ctx, "archgrad", dict(arch=start.id, trials=trials, changes=changes), new)
    s, space, batch = load_smash(ctx), ctx.cfg.space, ctx.cfg.train.score_batch
    rows = {(r["variant"], r["trial"]): r for r in store.study_archs(ctx.w.conn, sid)}
    start_err = _walk_score(ctx, s, sid, rows, "start", 0, start, start.id)
    fallbacks = invalid = 0
    for variant in ("guided", "random"):
        cur, cur_err, skip = start, start_err, set()
        for t in range(trials):
            if (variant, t) in rows:
                cand = arch_of(ctx.w.conn, rows[(variant, t)]["arch_id"])
            elif variant == "guided":
                cand, edits, bad = guided(s, cur, space, ctx.val, batch, changes, skip)
                skip |= set(edits)
                invalid += bad
                if cand is None:  # no valid edit left: fall back to a random perturbation
                    fallbacks += 1
                    cand = _perturb(ctx, cur, 1000 + t)
            else:
                cand = _perturb(ctx, cur, t)
            err = _walk_score(ctx, s, sid, rows, variant, t, cand, cur.id)
            if err is not None and err < cur_err:
                cur, cur_err, skip = cand, err, set()
        report(f"{variant}: {trials} trials from {start.id} (SMASH {start_err:.3f}), best {cur_err:.3f}")
    stats = []
    for variant in ("guided", "random"):
        errs = [r["smash_error"] for r in store.study_archs(ctx.w.conn, sid, variant) if r["smash_error"] is not None]
        extra = dict(start_error=start_err, improved=sum(e < start_err for e in errs))
        if variant == "guided":
            extra |= dict(fallbacks_to_random=fallbacks, invalid_edits_skipped=invalid)
        stats.append(dict(variant=variant, n=len(errs), mean_error=float(np.mean(errs)), best_error=min(errs),
                          extra_json=extra))
    g, r = stats
    msg = (f"from {start_err:.3f}: guided mean {g['mean_error']:.3f} best {g['best_error']:.3f}; "
           f"random mean {r['mean_error']:.3f} best {r['best_error']:.3f}")
    return _finish(ctx, sid, stats, msg)


def _perturb(ctx: RunContext, arch: Architecture, t: int) -> Architecture:
    from .sampler import perturb

    return perturb(arch, ctx.cfg.space, rng(ctx.cfg.seed, WALK, t), ctx.cfg.train.perturb_prob)


def _walk_score(ctx: RunContext, s: Smash, sid: int, rows: dict, variant: str, t: int, arch: Architecture,
                parent: str) -> float | None:
    if (variant, t) in rows:
        return rows[(variant, t)]["smash_error"]
    from .network import arch_cost

    params, flops = arch_cost(arch)
    ctx.w.add_arch(ctx.run_id, arch.id, arch.to_json(), f"study-{variant}", parent, params, flops, arch.n_ops,
                   arch.n_ops)
    err, loss = score_plan(s, encode(arch, ctx.cfg.space).to(ctx.device), ctx.val, ctx.cfg.train.score_batch)
    ctx.w.add_study_arch(sid, variant=variant, trial=t, arch_id=arch.id, smash_error=err, smash_loss=loss)
    return err
