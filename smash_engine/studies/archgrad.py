"""4. architecture gradient: dE/dc turned into valid edits; a guided walk against a random one."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from .. import store
from ..data import DeviceData
from ..encoding import ArchPlan, Layout, encode
from ..errors import ConfigError
from ..runs import RunContext, arch_of, load_smash
from ..seeds import WALK, rng
from ..space import Architecture
from ..train import Smash
from .common import Report, finish, picks, study_row

# -- 4. architecture gradient ----------------------------------------------------------------------
Edit = tuple[int, int, str, int, int]  # (block, op in block, field, conv or -1, new value)


def encoding_grad(s: Smash, plan: ArchPlan, data: DeviceData, batch: int) -> torch.Tensor:
    """dE/dc summed over each op's filled positions: (n_ops, C), E the mean validation cross-entropy."""
    s.hyper.eval()
    s.net.eval()
    c = plan.c.detach().clone().requires_grad_(True)
    plan.c = c  # generate reads plan.c: the generated weights, hence the loss, now depend on this leaf
    with s.autocast():
        generated = s.hyper.generate(plan)
        for x, y in data.eval_batches(batch):
            loss = F.cross_entropy(s.net(x, plan, *generated).float(), y, reduction="sum") / len(data)
            loss.backward(retain_graph=True)
    filled = torch.arange(plan.rows, device=c.device)[:, None] < plan.slice_rows[None, :]  # (R, S)
    per_col = (c.grad[0] * filled[None]).sum(1)  # (C, S)
    return torch.zeros(len(plan.op_in), per_col.shape[0], device=c.device).index_add_(
        0, plan.slice_op, per_col.T).cpu()


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
    from ..encoding import check_in_space
    from ..errors import InvalidArchitecture
    from ..space import validate

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
    if ctx.cfg.hyper.kind != "conv":
        raise ConfigError("study archgrad differentiates the convolutional HyperNet's input c, and this run uses the "
                          f"{ctx.cfg.hyper.kind} HyperNet; run it on a search with --hyper small or paper")
    start_id = arch_id or picks(ctx.w.conn, ctx.run_id, 1, 1)[0]
    start = arch_of(ctx.w.conn, start_id)
    sid, opts = study_row(ctx, "archgrad", dict(arch=start.id, trials=trials, changes=changes), new)
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
    return finish(ctx, sid, stats, msg)


def _perturb(ctx: RunContext, arch: Architecture, t: int) -> Architecture:
    from ..sampler import perturb

    return perturb(arch, ctx.cfg.space, rng(ctx.cfg.seed, WALK, t), ctx.cfg.train.perturb_prob)


def _walk_score(ctx: RunContext, s: Smash, sid: int, rows: dict, variant: str, t: int, arch: Architecture,
                parent: str) -> float | None:
    if (variant, t) in rows:
        return rows[(variant, t)]["smash_error"]
    from ..cost import arch_cost

    params, flops = arch_cost(arch)
    ctx.w.add_arch(ctx.run_id, arch.id, arch.to_json(), f"study-{variant}", parent, params, flops, arch.n_ops,
                   arch.n_ops)
    err, loss = ctx.score(s, encode(arch, ctx.cfg.space).to(ctx.device))
    ctx.w.add_study_arch(sid, variant=variant, trial=t, arch_id=arch.id, smash_error=err, smash_loss=loss)
    return err
