"""What a user gets without SMASH: predictors of trained error that cost nothing or one batch.

Every ranking figure the product reports sits beside these, because a proxy that does not beat counting
parameters gives a user nothing (`shared/reference/ranking.md`: parameter count reaches Kendall 0.28-0.58 in
NAS-Bench-101 sub-spaces). Each predictor here returns a *predicted error*: lower means "expected to train
to a lower error", so every predictor is compared with true error the same way SMASH's error is.

- `params`, `flops`: the exact counts of `cost.arch_cost`, negated (bigger is predicted better).
- `synflow` (Tanaka et al. 2020; as a NAS proxy, Abdelfattah et al. 2021): at initialisation, with every
  weight replaced by its absolute value, in float64, the sum over weights of |w * dR/dw| where R is the sum
  of the logits for an all-ones input. Data-free. BatchNorm runs in eval mode on its initial statistics
  (an identity up to eps), as the reference code's copy without BatchNorm does in effect.
- `naswot` (Mellor et al. 2021): at initialisation, one batch of real images; each unit's on/off pattern
  after every BatchNorm (every ReLU in FixedNet but the one inside a two-conv branch follows one) gives a
  binary code per image; the score is log|det K| with K[i, j] the number of units on which images i and j
  agree. Networks that tell images apart at init score higher.
Both are computed on a seeded initialisation, so a figure is reproducible.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .cost import arch_cost
from .network import FixedNet
from .space import Architecture

BASELINES = ("params", "flops", "synflow", "naswot")
_INIT_SEED = 0


def _fresh(arch: Architecture) -> FixedNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return FixedNet(arch)


def synflow(arch: Architecture) -> float:
    """log of the synflow score (the raw score spans many orders of magnitude)."""
    net = _fresh(arch).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    x = torch.ones(1, arch.image_channels, *(arch.image_size,) * arch.spatial_dims, dtype=torch.float64)
    net(x).sum().backward()
    total = sum((p * p.grad).abs().sum().item() for p in net.parameters() if p.grad is not None)
    return math.log(total) if total > 0 else -math.inf


@torch.no_grad()
def naswot(arch: Architecture, x: torch.Tensor) -> float:
    """log|det K| over the batch `x` (normalised images, on the CPU or any device)."""
    net = _fresh(arch).to(x.device).train()
    n = len(x)
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_m, _inp, out: torch.Tensor) -> None:
        nonlocal k
        c = (out.flatten(1) > 0).double()
        k += c @ c.T + (1 - c) @ (1 - c).T

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        net(x)
    finally:
        for h in handles:
            h.remove()
    return torch.linalg.slogdet(k)[1].item()


def naswot_batch(data) -> torch.Tensor:
    """The images NASWOT scores every architecture on: 64 training images from a fixed draw, so the truth panel's
    figures (`search_quality.py`) and a correlation study's are the same computation."""
    x, _ = next(data.epoch_batches(64, torch.Generator().manual_seed(0), augment=False))
    return x


def predicted_errors(archs: list[Architecture], x: torch.Tensor | None = None,
                     which: tuple[str, ...] = BASELINES) -> dict[str, list[float]]:
    """Per baseline, one predicted error per architecture (the negated score). `naswot` needs `x`."""
    out: dict[str, list[float]] = {}
    for name in which:
        if name == "params":
            out[name] = [-float(arch_cost(a)[0]) for a in archs]
        elif name == "flops":
            out[name] = [-float(arch_cost(a)[1]) for a in archs]
        elif name == "synflow":
            out[name] = [-synflow(a) for a in archs]
        elif name == "naswot":
            if x is None:
                raise ValueError("naswot needs a batch of images")
            out[name] = [-naswot(a, x) for a in archs]
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    return out
