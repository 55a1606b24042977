"""Landmark training: SMASH continued with a loss that asks it to rank trained networks as their training did.

Nothing in SMASH's own loss pays for reading the encoding `c`: one average generated weight serves every
architecture about as well (the HyperNet issue's field-shuffle distances of 0.004-0.09). The verify phase trains
real networks and measures their held-out loss; those are landmarks (Yu et al., CVPR 2021, "Landmark
Regularization: Ranking Guided Super-Net Training"). Each landmark step is a SMASH step on a random architecture
plus `weight` x a margin ranking loss over pairs of landmarks on the same batch:

    max(0, margin - (L_worse - L_better))

where L is the SMASH cross-entropy of that landmark's generated network on the batch, and "worse" is the one whose
real held-out loss is higher. Pairs whose real losses differ by less than `min_gap` carry no order worth teaching
(one short training's seed noise) and are not drawn.

Randomness is derived (`seeds.LANDMARK`): step i's architecture and pairs from (seed, LANDMARK, round x 1e6 + i),
epoch e's batch order from (seed, LANDMARK, round x 1e6 + 500,000 + e), so a stretch resumed at any step continues
the one that never stopped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import dist
from .config import RunConfig
from .data import DeviceData
from .dist import SINGLE, World
from .loops import shards
from .sampler import sample_architecture
from .seeds import LANDMARK, rng, torch_gen
from .space import Architecture
from .train import Smash, cosine_lr

# draws before a part of the space is taken to be (nearly) empty
MAX_REDRAWS = 1000


@dataclass(frozen=True)
class Landmark:
    arch: Architecture
    loss: float  # its real held-out loss after a verify rung's training (lower is better)


@dataclass(frozen=True)
class LandmarkConfig:
    steps: int = 200  # SMASH steps in one stretch
    weight: float = 1.0  # of the ranking loss against the step's cross-entropy
    margin: float = 0.05  # in SMASH cross-entropy, nats
    pairs: int = 1  # landmark pairs per step (each costs two more forward and backward passes)
    lr_scale: float = 0.25  # the stretch's learning rate (cosine to 0) as a fraction of SMASH training's
    min_gap: float = 0.01  # real losses closer than this make no pair


def usable_pairs(marks: list[Landmark], min_gap: float) -> list[tuple[int, int]]:
    """(better, worse) index pairs whose real losses differ by at least `min_gap` (and by something: equal
    losses teach no order)."""
    return [(i, j) for i in range(len(marks)) for j in range(len(marks))
            if marks[j].loss - marks[i].loss >= min_gap and marks[j].loss > marks[i].loss]


def landmark_step(s: Smash, arch: Architecture, pairs: list[tuple[Architecture, Architecture]], x: torch.Tensor,
                  y: torch.Tensor, lr: float, cfg: LandmarkConfig, world: World = SINGLE) -> torch.Tensor:
    """One step: cross-entropy of `arch` + weight x the mean hinge over `pairs` (better, worse) on this batch.
    Returns (loss, ranking loss, share of pairs out of order, skipped) as a device tensor of 4.

    Under torchrun the passes run outside DDP (one DDP forward per backward is all it allows) and the gradients
    are averaged over ranks by hand; every rank draws the same architecture and pairs."""
    s.hyper.train()
    s.net.train()
    model = s.inner()
    for group in s.opt.param_groups:
        group["lr"] = lr

    def ce(a: Architecture) -> torch.Tensor:
        model.plan = s.plan(a)
        with s.autocast():
            return F.cross_entropy(model(x).float(), y)

    loss = ce(arch)
    rank = torch.zeros((), device=s.device)
    wrong = torch.zeros((), device=s.device)
    for better, worse in pairs:
        gap = ce(worse) - ce(better)
        rank = rank + F.relu(cfg.margin - gap)
        wrong = wrong + (gap < 0).float()
    n = max(len(pairs), 1)
    total = loss + cfg.weight * rank / n
    found_inf = s.update(total, average_over=world)
    return torch.stack([loss.detach(), rank.detach() / n, wrong / n, found_inf])


def landmark_steps(s: Smash, run: RunConfig, data: DeviceData, marks: list[Landmark], cfg: LandmarkConfig,
                   round_: int = 0, step: int = 0, world: World = SINGLE,
                   accept: Callable[[Architecture], bool] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """A stretch of `cfg.steps` landmark steps from `step` (resumable), as (steps done, metrics) per step.
    With fewer than two landmarks of distinct enough losses, it is plain SMASH training at the stretch's
    learning rate (the control arm of a measurement sets weight 0 for the same). `accept` limits the steps to
    a part of the space: each step's architecture is drawn again from the same derived draw until accepted
    (the few-shot split's fine-tuning, fewshot.py)."""
    pairs = usable_pairs(marks, cfg.min_gap)
    lr0 = cfg.lr_scale * run.train.lr
    spe = data.num_batches(run.train.batch_size * world.size)
    base = 1_000_000 * round_
    while step < cfg.steps:
        epoch, start = divmod(step, spe)
        gen = torch_gen(run.seed, LANDMARK, base + 500_000 + epoch)
        for x, y in shards(data, run.train.batch_size, gen, world, start):
            if step >= cfg.steps:
                return
            draw = rng(run.seed, LANDMARK, base + step)
            arch = sample_architecture(run.space, draw, progress=1.0)
            for _ in range(MAX_REDRAWS):
                if accept is None or accept(arch):
                    break
                arch = sample_architecture(run.space, draw, progress=1.0)
            else:
                raise ValueError(f"no architecture of the part drawn in {MAX_REDRAWS} tries; split on a field "
                                 "whose parts each hold a fair share of the space")
            chosen = _draw_pairs(pairs, cfg.pairs if cfg.weight else 0, draw)
            m = landmark_step(s, arch, [(marks[i].arch, marks[j].arch) for i, j in chosen], x, y,
                              cosine_lr(lr0, step, cfg.steps), cfg, world)
            step += 1
            yield step, m


def _draw_pairs(pairs: list[tuple[int, int]], k: int, draw: random.Random) -> list[tuple[int, int]]:
    return draw.sample(pairs, min(k, len(pairs))) if pairs else []


def summary(metrics: list[torch.Tensor], world: World = SINGLE) -> dict:
    """Mean (loss, ranking loss, out-of-order share) over a stretch's steps that were not skipped."""
    m = dist.mean(world, torch.stack(metrics)).cpu()
    ok = m[:, 3] == 0
    loss, rank, wrong = (m[ok, :3].mean(0).tolist() if ok.any() else [float("nan")] * 3)
    return dict(steps=len(m), skipped=int((~ok).sum()), loss=loss, rank_loss=rank, out_of_order=wrong)
