"""Derived seeds: every random draw is a function of (seed, purpose, index), never of generator state.

Architecture t of SMASH training is `sample_architecture(space, rng(seed, ARCH, t), t / T)` whatever happened
before it, which is what makes stop + resume give exactly the run that never stopped. The purposes below are
the one table of them: a new kind of draw gets a new row here, never a bare number at its call site.
"""

from __future__ import annotations

import random

import numpy as np
import torch

# the engine's phases
ARCH = 0  # the architecture of SMASH step t
DATA = 1  # the batch order of SMASH epoch e
RANK = 2  # random architecture i of the rank phase
PERTURB = 3  # perturbation i of the refine phase
HILLCLIMB = 4  # hill-climbing candidate i
SAMPLE = 5  # architecture i scored by a `sample` command
FINAL = 6  # the batch order of a final training's epochs
BN_STATS = 7  # the images that re-estimate BatchNorm statistics (score_bn="recal")
VALIDATE = 8  # the fixed architectures of the per-epoch validation
VERIFY = 9  # the verify phase (halving.py): networks' init (1 + 10,000 t for a rung's trial t), rung r's image
           # subset (1000 + r), its batch orders (2000 + 100 r + epoch + 1,000,000 t)
LANDMARK = 10  # landmark training (landmarks.py), round k: step i's architecture and pairs (1e6 k + i), the
               # batch order of its epoch e (1e6 k + 500,000 + e)
CONTRAST = 11  # the field shuffled, and how, at SMASH step t's contrast (train.smash_step; index t)
SANDWICH = 12  # the further draws of SMASH step t's sandwich (train.sandwich_archs; index t)
DROP_PATH = 13  # which ops' writes SMASH step t drops, per image (train.drop_masks; index t)
# the studies (smash_engine.studies) and transfer
CORRUPT = 101  # which ops a corrupted encoding shuffles
WALK = 102  # the random walk of the archgrad study
NORMAL = 103  # normal (FixedNet) trainings of studies and transfers: init, batch order, image subsets
CAPACITY = 104  # reserved by the capacity study (it retrains SMASH with the run's own seeds)
# the truth panel (benchmarks/truth_panel.py)
PANEL = 201  # the panel's architectures
PANEL_TRAIN = 301  # the batch order of the panel's truth trainings


def derived(seed: int, purpose: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, purpose, index]).generate_state(1)[0])


def rng(seed: int, purpose: int, index: int) -> random.Random:
    return random.Random(derived(seed, purpose, index))


def torch_gen(seed: int, purpose: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(derived(seed, purpose, index))
