"""Exact parameter and FLOP counts of an architecture's `FixedNet`, by arithmetic on its description.

Torch-free on purpose: the UI draws an architecture's per-part summary beside its diagram and must never
import torch to do it (loading it cost the UI ~500 MB of memory). `network.FixedNet` builds the modules
these counts describe; `tests/engine/test_cost.py` holds them to `network`'s own counts and to the modules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .space import Architecture, Op


def per_axis(hw: tuple[int, int], dims: int) -> tuple[int, ...]:
    """An (h, w) kernel, dilation or padding for `dims` spatial axes: in 3-D the depth axis copies h."""
    return hw if dims == 2 else (hw[0], *hw)


def conv_in(op: Op, n: int) -> int:
    return op.bottleneck if n in (0, 2) else op.out_channels


@dataclass(frozen=True)
class Part:
    """One row of a model summary: a part of `FixedNet(arch)` in forward order."""

    name: str  # "stem", "block 0", "transition 0", "block 1", ..., "head" (blocks numbered as in the diagram)
    params: int
    flops: int  # forward FLOPs per image (2 per multiply-add)
    out_shape: tuple[int, ...]  # per image: (channels, height, width) (or with depth), (classes,) for the head
    ops: int = 0  # ops in a block


def summary(arch: Architecture, norm: str = "bn") -> list[Part]:
    """Parameters, FLOPs and output shape of each part of `FixedNet(arch, norm)`: stem, each block and
    the transition after it, head. Exact: they sum to `arch_cost`, and the shapes are the forward's.

    FLOPs count 2 per multiply-add of every convolution and the classifier (BN, ReLU and pooling are
    left out, as usual; the original counted multiply-adds of ops only, so its figures are ~half).
    """
    bn, dims = (2 if norm == "bn" else 0), arch.spatial_dims
    c0, size = arch.blocks[0].in_channels, arch.image_size

    def shape(c: int) -> tuple[int, ...]:
        return (c, *(size,) * dims)

    stem = arch.image_channels * c0 * arch.stem_kernel**dims
    parts = [Part("stem", stem, 2 * stem * size**dims, shape(c0))]
    for i, b in enumerate(arch.blocks):
        params = macs = 0
        for op in b.ops:
            n_in = len(op.reads) * b.bank_size
            w = n_in * op.bottleneck + sum(
                op.out_channels * conv_in(op, n) // c.groups * math.prod(per_axis(c.kernel, dims))
                for n, c in enumerate(op.convs) if c is not None)
            params += w + bn * (n_in + op.bottleneck)
            macs += w * size**dims
        parts.append(Part(f"block {i}", params, 2 * macs, shape(b.width), len(b.ops)))
        if i + 1 < len(arch.blocks):
            w = b.width * b.out_channels
            macs = w * size**dims
            size //= 2
            parts.append(Part(f"transition {i}", 2 * b.width + w, 2 * macs, shape(b.out_channels)))
    width = arch.blocks[-1].width
    head = width * arch.num_classes
    parts.append(Part("head", 2 * width + head + arch.num_classes, 2 * head, (arch.num_classes,)))
    return parts


def arch_cost(arch: Architecture, norm: str = "bn") -> tuple[int, int]:
    """Exact (parameters, forward FLOPs per image) of `FixedNet(arch, norm)` (see `summary`)."""
    parts = summary(arch, norm)
    return sum(p.params for p in parts), sum(p.flops for p in parts)

