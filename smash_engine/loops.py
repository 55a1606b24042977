"""The two training loops, each written once: SMASH training (`smash_steps`) and the training of one fixed
network (`fit`).

The engine, the studies, transfer and the benchmarks all drive these, so a measurement (the truth panel's
`search_quality.py`, a study) trains exactly what a user's search trains. The loops own the schedule
(cosine LR per step), the batch order (derived seeds, `seeds.py`), the architecture of each SMASH step and
the sharding of each global batch over ranks; the caller owns everything between steps and at each
epoch's end (commands, logging, evaluation, checkpoints), through the iterator or the hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from . import cpu_share, dist
from .config import RunConfig
from .data import DeviceData
from .dist import SINGLE, World
from .seeds import CONTRAST, DATA, rng, torch_gen
from .space import Architecture
from .train import Final, Smash, cosine_lr, drop_masks, sandwich_archs, smash_arch, smash_step


def shards(data: DeviceData, batch: int, gen: torch.Generator, world: World = SINGLE,
           start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's part of each global batch of `batch` x world images (every rank draws the same)."""
    r = world.rank
    for x, y in data.epoch_batches(batch * world.size, gen, start=start):
        cpu_share.tick()  # every training step of both loops: make room when another engine starts
        yield x[r * batch:(r + 1) * batch], y[r * batch:(r + 1) * batch]


# -- SMASH training ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SmashStep:
    """What one SMASH step did."""

    step: int  # steps done, this one included
    epoch: int  # the epoch this step belongs to, from 0
    lr: float
    arch: Architecture
    metrics: torch.Tensor  # (loss, error, skipped) on the device: read in windows, never per step
    out_of_memory: bool  # the step was skipped because its architecture did not fit
    epoch_end: bool  # the last step of its epoch


def steps_per_epoch(cfg: RunConfig, data: DeviceData, world: World = SINGLE) -> int:
    return data.num_batches(cfg.train.batch_size * world.size)


def total_steps(cfg: RunConfig, data: DeviceData, world: World = SINGLE) -> int:
    return cfg.train.epochs * steps_per_epoch(cfg, data, world)


def smash_steps(s: Smash, cfg: RunConfig, data: DeviceData, step: int = 0,
                world: World = SINGLE) -> Iterator[SmashStep]:
    """SMASH training from `step` to the end of the schedule, one step per item: a new random architecture
    each step (`train.smash_arch`), the batches of epoch e in the order `(seed, DATA, e)` draws, cosine LR
    over the whole schedule. Starting at any step continues exactly the run that never stopped."""
    t = cfg.train
    spe = steps_per_epoch(cfg, data, world)
    T = t.epochs * spe
    while step < T:
        epoch, start = divmod(step, spe)
        for x, y in shards(data, t.batch_size, torch_gen(cfg.seed, DATA, epoch), world, start):
            lr = cosine_lr(t.lr, step, T)
            arch = smash_arch(cfg, step, T)
            contrast = (rng(cfg.seed, CONTRAST, step), t.contrast, t.contrast_margin) \
                if t.contrast and step % t.contrast_every == 0 else None
            metrics, oom = _guarded_step(s, arch, x, y, lr, contrast, sandwich_archs(cfg, step, step / max(T, 1)),
                                         drop_masks(cfg, step, T, arch, len(y)))
            step += 1
            yield SmashStep(step, epoch, lr, arch, metrics, oom, step % spe == 0)


def _guarded_step(s: Smash, arch: Architecture, x: torch.Tensor, y: torch.Tensor, lr: float,
                  contrast=None, also=(), keep=None) -> tuple[torch.Tensor, bool]:
    """An architecture too large for the device skips its step (as a non-finite one does) instead of
    ending the run: the next step draws another."""
    try:
        return smash_step(s, arch, x, y, lr, contrast, also, keep), False
    except torch.OutOfMemoryError:
        s.opt.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return torch.tensor([float("nan"), float("nan"), 1.0], device=s.device), True


# -- a fixed network ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochEnd:
    """One finished epoch of `fit`."""

    epoch: int  # epochs done, this one included
    loss: float  # mean training loss over the epoch's steps (and over ranks)
    error: float  # mean training error, likewise
    lr: float  # the epoch's last step's
    steps: int  # this rank's steps in the epoch
    started: float  # time.perf_counter() when the epoch began


def fit(f: Final, data: DeviceData, epochs: int, batch: int, lr: float, gen: Callable[[int], torch.Generator],
        start: int = 0, world: World = SINGLE, after_step: Callable[[], None] | None = None,
        on_epoch: Callable[[EpochEnd], None] | None = None,
        on_step: Callable[[Final, torch.Tensor], None] | None = None) -> EpochEnd | None:
    """Train `f` for epochs `start`..`epochs - 1` on `data` (SGD as `Final` sets it up, cosine LR per step
    from `lr` over all `epochs`), epoch e's batches drawn from `gen(e)`. `after_step` runs after each step
    (the engine answers commands there), `on_epoch` after each epoch (evaluation, records, checkpoints),
    `on_step(f, metrics)` after each step with its (loss, error) (a benchmark's per-step record; reading it
    waits on the device).
    Returns the last epoch's figures (None when there was nothing left to train)."""
    spe = data.num_batches(batch * world.size)
    total, last = epochs * spe, None
    for epoch in range(start, epochs):
        t0, sums, step_lr = time.perf_counter(), [], lr
        for b, (x, y) in enumerate(shards(data, batch, gen(epoch), world)):
            step_lr = cosine_lr(lr, epoch * spe + b, total)
            sums.append(f.step(x, y, step_lr))
            if on_step is not None:
                on_step(f, sums[-1])
            if after_step is not None:
                after_step()
        loss, err = dist.mean(world, torch.stack(sums).mean(0)).tolist()
        last = EpochEnd(epoch + 1, loss, err, step_lr, len(sums), t0)
        if on_epoch is not None:
            on_epoch(last)
    return last
