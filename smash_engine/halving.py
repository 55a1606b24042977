"""The verify phase: successive halving over the search's best candidates.

A SMASH score ranks roughly; a short real training separates close candidates better, and a longer one better
still. Successive halving spends little on many and more on few: every candidate is trained on a few images,
the best 1/eta of them (by held-out loss, ties to the better SMASH rank) on eta times as many, and so on until
one is left; final training takes them in that order. Each rung trains from scratch with its own
cosine schedule (a stop partway through a longer schedule is a noisy high-learning-rate state), and every
candidate of a rung sees the same seeded images from the same seeded init, so they differ by architecture.

The phase's cost is fixed before it starts, as a fraction (`verify_budget`) of the images SMASH training
itself went through; `plan` gives each rung an equal share (Karnin et al. 2013's successive halving). The candidates are
SMASH's `verify_top` best, plus, with `verify_add`, the best `verify_add_top` of a free baseline (FLOPs,
or NASWOT at initialisation) among the scored architectures: a rough ranking's misses get a second way in.
With `verify_order` the `verify_top` come from an order that mixes SMASH with FLOPs (`blend_orders`): on the
300-architecture pool, FLOPs' order with SMASH's residual breaking near-ties picked better than SMASH's own
(docs/search-quality.md).

`plan`, `candidates`, `survivors` and `order` are pure; `train_rung` is the one short training the engine and
the truth panel (`benchmarks/pick_quality.py`) both use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the plan is torch-free (the UI and `show` read it)
    from .config import TrainConfig
    from .data import DeviceData
    from .space import Architecture
    from .train import Final


@dataclass(frozen=True)
class Rung:
    index: int
    candidates: int  # trained at this rung
    images: int  # training images each: `epochs` passes over a seeded subset of images // epochs
    seeds: int = 1  # trainings per candidate, from different inits and batch orders; it is ranked by their mean

    def epochs(self, train_images: int) -> int:
        return max(1, math.ceil(self.images / train_images))

    def subset(self, train_images: int) -> int:
        return min(train_images, self.images // self.epochs(train_images))


def sizes(n: int, eta: int) -> list[int]:
    """Candidates per rung: n, n // eta, ... while more than one is left (16, eta 4: [16, 4]; 20: [20, 5])."""
    out = []
    while n > 1:
        out.append(n)
        n //= eta
    return out


# The shortest training a rung may give a candidate, in batches: a few steps leave every network at chance level,
# and choosing among them is a coin toss (on `quick`, 6 steps left all 16 candidates at 89-91% error).
MIN_STEPS = 20


def plan(n: int, eta: int, budget_images: int, min_images: int, max_images: int | None = None) -> list[Rung]:
    """The rungs for the best `n` candidates: each rung gets an equal share of `budget_images`, split evenly over
    its candidates, so rung r + 1 trains each on about eta times rung r's images, but never more than
    `max_images` (final training's own length: a longer training ranks networks by what they reach with more
    training than the user's network will get). A rung so cut spends what is left of its share on more seeds of
    the same training: the last few candidates are close, and one training's seed noise is as large as their
    differences (0.58 points on the truth panel), so averaging is what more images can still buy. When rung 0
    would get fewer than
    `min_images` each, fewer candidates are taken (the first ones: `plan(...)[0].candidates` says how many);
    none when even two cannot be (no rungs: final training takes SMASH's order)."""
    cap = max_images or budget_images
    for k in range(n, 1, -1):
        ks = sizes(k, eta)
        if budget_images // (len(ks) * k) >= min_images:
            shares = [budget_images // (len(ks) * m) for m in ks]
            return [Rung(r, m, min(cap, share), max(1, share // min(cap, share)))
                    for r, (m, share) in enumerate(zip(ks, shares, strict=True))]
    return []


def cost(rungs: list[Rung]) -> int:
    """Training images the whole phase takes."""
    return sum(r.candidates * r.images * r.seeds for r in rungs)


# width of a FLOPs "near-tie" for `flopsres`, in log2 units: networks within ~19% of each other's FLOPs
FLOPS_TIE_LOG2 = 0.25


def blend_orders(smash: dict[str, float], flops: dict[str, float],
                 naswot: dict[str, float] | None = None) -> dict[str, list[str]]:
    """Candidate orders, best first, from SMASH's error, FLOPs (bigger first) and NASWOT's predicted error (lower
    first), each by architecture id:
    - `flopsres`: FLOPs' order in bins of FLOPS_TIE_LOG2, SMASH's residual deciding within a bin: its error less
      what a least-squares line on log FLOPs predicts (what SMASH knows once size is held fixed);
    - `rankavg` (only given `naswot`): the mean of the three ranks (ties by SMASH's rank)."""
    import numpy as np

    ids = sorted(smash)
    by_smash = sorted(ids, key=lambda i: (smash[i], i))
    srank = {i: k for k, i in enumerate(by_smash)}
    logf = np.log2([max(flops[i], 1.0) for i in ids])
    err = np.array([smash[i] for i in ids])
    slope, icpt = np.polyfit(logf, err, 1) if len(ids) > 2 else (0.0, float(err.mean()))
    resid = dict(zip(ids, (err - (slope * logf + icpt)).tolist(), strict=True))
    bins = dict(zip(ids, np.floor(logf / FLOPS_TIE_LOG2).tolist(), strict=True))
    out = {"flopsres": sorted(ids, key=lambda i: (-bins[i], resid[i], i))}
    if naswot is not None:
        ranks = [srank] + [{i: k for k, i in enumerate(o)} for o in
                           (sorted(ids, key=lambda i: (-flops[i], i)), sorted(ids, key=lambda i: (naswot[i], i)))]
        out["rankavg"] = sorted(ids, key=lambda i: (sum(r[i] for r in ranks), srank[i]))
    return out


def candidates(board: list[dict], top: int, add: str = "", add_top: int = 0,
               naswot: Callable[[list[dict]], list[float]] | None = None,
               order: str = "smash") -> list[tuple[str, int, str]]:
    """(arch id, SMASH rank, why) of the phase's candidates: the `top` first of `order` (why: the order's name;
    'smash' is the leaderboard's), then the `add_top` best by the baseline `add` not already in (why 'flops' or
    'naswot'). `board` is the leaderboard in rank order (rows with arch_id, rank, smash_error, flops);
    `naswot(rows)` gives their NASWOT scores, higher better."""
    from .config import ORDER_CHOICES  # here: the module stays torch-free at import

    if order not in ORDER_CHOICES:
        raise ValueError(f"unknown verify_order {order!r}; choose {', '.join(ORDER_CHOICES)}")
    ranked = board
    if order != "smash" and board:
        scored = [r for r in board if r.get("smash_error") is not None]
        nas = None
        if order == "rankavg":
            if naswot is None:
                raise ValueError("verify_order='rankavg' needs the NASWOT scorer")
            nas = {r["arch_id"]: -s for r, s in zip(scored, naswot(scored), strict=True)}
        by_id = {r["arch_id"]: r for r in scored}
        ranked = [by_id[i] for i in blend_orders({r["arch_id"]: r["smash_error"] for r in scored},
                                                 {r["arch_id"]: float(r["flops"] or 0) for r in scored}, nas)[order]]
    out = [(r["arch_id"], r["rank"], order) for r in ranked[:top]]
    if add and add_top:
        if add == "flops":
            score = [float(r["flops"] or 0) for r in board]
        elif add == "naswot":
            if naswot is None:
                raise ValueError("verify_add='naswot' needs the NASWOT scorer")
            score = naswot(board)
        else:
            raise ValueError(f"unknown verify_add {add!r}; choose flops or naswot")
        have = {a for a, _, _ in out}
        best = sorted(range(len(board)), key=lambda i: (-score[i], board[i]["rank"]))
        out += [(board[i]["arch_id"], board[i]["rank"], add) for i in best
                if board[i]["arch_id"] not in have][:add_top]
    return out


def _key(row: dict, by: str = "loss") -> tuple:
    """Held-out cross-entropy ranks candidates better than held-out error: on the truth panel, short trainings'
    loss put them in the truth's order with Kendall tau 0.40-0.80 where their error gave 0.20-0.52 (the error of
    10,000 images moves by +-0.4 points on counting alone). Rows without a loss (schema 5) go by error."""
    loss = row.get("val_loss") if by == "loss" else None
    return (loss is None, loss or 0.0, row["val_error"], row["smash_rank"])


def survivors(rung_rows: list[dict], k: int, by: str = "loss") -> list[dict]:
    """The `k` best of a finished rung by held-out loss (`by="error"`: error); a tie goes to the better SMASH
    rank."""
    return sorted(rung_rows, key=lambda r: _key(r, by))[:k]


def latest(rows: list[dict], done: bool = False) -> dict[str, dict]:
    """Each candidate's row at the highest rung it reached (`done`: the highest it finished), by arch id."""
    out: dict[str, dict] = {}
    for r in rows:
        if (not done or r["status"] == "done") and (r["arch_id"] not in out or r["rung"] > out[r["arch_id"]]["rung"]):
            out[r["arch_id"]] = r
    return out


def order(rows: list[dict], by: str = "loss") -> list[str]:
    """Every candidate, best first: those that reached a higher rung first, then as `survivors` ranks them."""
    return [r["arch_id"] for r in sorted(latest(rows, done=True).values(), key=lambda r: (-r["rung"], *_key(r, by)))]


def train_rung(arch: Architecture, t: TrainConfig, train: DeviceData, rung: Rung, seed: int, device: Any,
               world: Any = None, after_step: Callable[[], None] | None = None, trial: int = 0,
               on_epoch: Callable[[Any], None] | None = None,
               on_step: Callable[[Final, Any], None] | None = None) -> Final:
    """One candidate's training at `rung`: the run's final-training recipe (SGD Nesterov, cosine from
    `final_lr`) over the rung's seeded subset of `train`. Every draw is a function of (seed, rung, trial): the
    same images, init and batch order for every candidate of a rung (`seeds.VERIFY`); trial t of `rung.seeds`
    keeps the images and draws its own init and batch order."""
    from .dist import SINGLE
    from .loops import fit
    from .seeds import VERIFY, rng, torch_gen
    from .train import Final

    world = world or SINGLE
    epochs = rung.epochs(len(train))
    data = train.subset(rung.subset(len(train)), torch_gen(seed, VERIFY, 1000 + rung.index))
    f = Final.create(arch, t, rng(seed, VERIFY, 1 + 10_000 * trial).getrandbits(31), device, world)
    fit(f, data, epochs, min(t.final_batch, len(data)), t.final_lr,
        lambda epoch: torch_gen(seed, VERIFY, 2000 + 100 * rung.index + epoch + 1_000_000 * trial), world=world,
        after_step=after_step, on_epoch=on_epoch, on_step=on_step)
    return f
