"""Few-shot SMASH: after the one-shot training, one copy of the HyperNet and shared weights per part of the space,
each fine-tuned on its part alone, and each architecture scored with its part's copy.

One set of weights serves every architecture, and SMASH's loss does not pay for reading `c` (landmarks.py says
why), so what the weights can tell apart is limited. Zhao et al. (ICML 2021, "Few-shot Neural Architecture
Search") split a supernet by the operation on one edge; on NAS-Bench-201, Kendall tau rose from 0.01 to 0.12, 0.26
and 0.63 with 6, 36 and 216 sub-supernets. SMASH has no edge with one operation: each conv of each op takes its
own groups (or kernel). The part of an architecture is the value that most of its convs take (a tie goes to the
smaller), so there are as many parts as choices. Each part holds a fair share of random draws: 13 / 9 / 18 of the
truth panel's 40 for groups 1 / 2 / 4.

A copy's fine-tuning is a landmark stretch without landmarks (weight 0) whose architectures are redrawn until
they fall in the copy's part, so its randomness is derived and a copy resumed partway continues the one that
never stopped; copy k draws as landmark round `ROUND + k`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .config import RunConfig
from .data import DeviceData
from .errors import ConfigError
from .landmarks import LandmarkConfig, landmark_steps
from .space import Architecture, SpaceConfig
from .train import Smash

FIELDS = ("groups", "kernel")
ROUND = 1000  # landmark rounds 1000 + k: copy k's fine-tuning (no landmark round comes near)


@dataclass(frozen=True)
class FewShotConfig:
    field: str = "groups"  # what the space is split by
    steps: int = 1200  # fine-tuning steps of all copies together (each copy gets steps // parts)
    lr_scale: float = 0.25  # the fine-tuning's learning rate (cosine to 0) as a fraction of SMASH training's


def choices(space: SpaceConfig, field: str) -> tuple[int, ...]:
    """The parts of `space` split by `field`: the values a conv may take."""
    if field not in FIELDS:
        raise ConfigError(f"the few-shot split takes one of {', '.join(FIELDS)}, not {field!r}")
    return tuple(sorted(space.groups if field == "groups" else space.kernels))


def part_of(arch: Architecture, field: str, values: tuple[int, ...]) -> int:
    """Index in `values` of what most of `arch`'s convs take for `field` (a tie goes to the smaller value)."""
    seen = Counter(c.groups if field == "groups" else max(c.kernel)
                   for b in arch.blocks for op in b.ops for c in op.convs if c is not None)
    best = max(values, key=lambda v: (seen[v], -v))
    return values.index(best)


def fine_tune(s: Smash, run: RunConfig, data: DeviceData, cfg: FewShotConfig, k: int,
              step: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
    """Copy k's fine-tuning on its part of the space, from `step` (resumable), as (steps done, metrics); `s` is
    the copy, already holding the one-shot weights."""
    values = choices(run.space, cfg.field)
    stretch = LandmarkConfig(steps=cfg.steps // len(values), weight=0.0, lr_scale=cfg.lr_scale)
    yield from landmark_steps(s, run, data, [], stretch, round_=ROUND + k, step=step,
                              accept=lambda a: part_of(a, cfg.field, values) == k)


def split(s: Smash, run: RunConfig, data: DeviceData, cfg: FewShotConfig) -> list[dict]:
    """Every copy's weights (`Smash.state_dict`) after its fine-tuning; `s` ends as it began."""
    one_shot = copy.deepcopy(s.state_dict())
    copies = []
    for k in range(len(choices(run.space, cfg.field))):
        s.load_state_dict(copy.deepcopy(one_shot))
        for _ in fine_tune(s, run, data, cfg, k):
            pass
        copies.append(copy.deepcopy(s.state_dict()))
    s.load_state_dict(one_shot)
    return copies
