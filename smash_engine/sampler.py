"""Random architectures from a `SpaceConfig`, and perturbations of existing ones (the refine phase).

Sampling follows the authors' `sample_architecture` (budgets in encoding slices, bank sizes per block,
read/write patterns, output widths near the input width, few writes preferred) with the paper's op
family: each op picks which of the four convolutions of the 2-branch pattern are active, and each active
conv its kernel (per axis), dilation (per axis, by kernel) and groups. All draws come from the
`random.Random` passed in (Python's Mersenne Twister: stable across versions and platforms, and ~20x
cheaper per draw than numpy's scalar API, which matters because a new architecture is drawn every step),
so a seed reproduces an architecture exactly.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random

from .space import PATTERN_PROBS, PATTERNS, Architecture, Block, Conv, Op, SpaceConfig


def anneal(space: SpaceConfig, progress: float) -> tuple[float, tuple[int, ...]]:
    """Max block budget and allowed kernels at `progress` (0..1) of SMASH training.

    As in the original, both open up linearly over the first half of training: budgets from
    `start_budget` to 1, kernels from the smallest to all of them.
    """
    f = min(max(2.0 * progress, 0.0), 1.0)
    max_budget = space.start_budget + (1.0 - space.start_budget) * f
    k_lo, k_hi = min(space.kernels), max(space.kernels)
    if space.kernel_anneal == "original":
        # the authors' schedule whatever the largest kernel (shared/reference/original-smash-code.md): {3} for
        # f < 0.25, {3, 5} to 0.75, then 7s; so in a 3/5 space the 5s open at f = 0.25
        top = k_lo + 1 + 4 * f + 1e-9
    else:
        # linear from the smallest to the largest kernel: in a 3/5 space the 5s open only at f = 1
        top = k_lo + (k_hi - k_lo) * f + 1e-9
    kernels = tuple(k for k in space.kernels if k <= top)
    return max_budget, kernels


class _BlockSampler:
    """Draws the fields of ops within one block, tracking which banks are filled and the budget left."""

    def __init__(self, space: SpaceConfig, i: int, bank_size: int, budget_frac: float,
                 kernels: tuple[int, ...], rng: random.Random):
        self.space, self.i, self.bs, self.rng, self.kernels = space, i, bank_size, rng, kernels
        self.unit = bank_size // space.N
        self.min_reads = space.dc // math.gcd(self.unit, space.dc)  # reads must fill whole slices
        self.n_written = space.in_channels[i] // bank_size
        self.cap = space.widths[i] // bank_size
        self.budget = math.floor(budget_frac * space.budgets[i] / space.slice_channels)  # in slices

    def cost(self, n_reads: int) -> int:
        return n_reads * self.unit // self.space.dc

    def can_add(self) -> bool:
        return self.budget >= self.cost(self.min_reads) and self.n_written >= self.min_reads

    def reads(self) -> tuple[int, ...]:
        n = self.min_reads * (1 + self.rng.randrange(self.n_written // self.min_reads))
        while n > self.min_reads and self.cost(n) > self.budget:  # clip to what the budget still allows
            n -= self.min_reads
        return tuple(sorted(self.rng.sample(range(self.n_written), n)))

    def out_channels(self, reads: tuple[int, ...]) -> int:
        units = range(self.unit, self.space.k + 1, self.unit)
        return _weighted(self.rng, units, _width_weights(tuple(units), len(reads) * self.unit)) * self.space.N

    def writes(self, out_channels: int) -> tuple[int, ...]:
        m = out_channels // self.bs  # output chunks, one bank each
        empty = min(m, self.cap - self.n_written)
        pool = self.n_written + empty
        counts = range(m, min(max(self.n_written // 2, m), pool) + 1)
        n = _weighted(self.rng, counts, _exp_weights(len(counts)))
        return self.fill_sequentially(sorted(self.rng.sample(range(pool), n)))

    def fill_sequentially(self, writes) -> tuple[int, ...]:
        """Writes to empty banks go to the first empty banks, so banks fill in index order."""
        old = [w for w in writes if w < self.n_written]
        new = range(self.n_written, self.n_written + len(writes) - len(old))
        return tuple(sorted(old + list(new)))

    def conv(self) -> Conv:
        kernel = (self.rng.choice(self.kernels), self.rng.choice(self.kernels))
        return Conv(kernel, self.dilation(kernel), self.rng.choice(self.space.groups))

    def dilation(self, kernel: tuple[int, int]) -> tuple[int, int]:
        # the original's rule: bigger kernels get fewer dilations (k=3 -> 1..3, 5 -> 1..2, 7 -> 1)
        top = (max(self.space.kernels) + 1) // 2
        return (1 + self.rng.randrange(top - (kernel[0] - 1) // 2), 1 + self.rng.randrange(top - (kernel[1] - 1) // 2))

    def pattern(self) -> tuple[int, ...]:
        return PATTERNS[bisect.bisect_right(_PATTERN_CUM, self.rng.random() * _PATTERN_CUM[-1])]

    def commit(self, op: Op) -> None:
        self.budget -= self.cost(len(op.reads))
        self.n_written = max(self.n_written, max(op.writes) + 1)

    def new_op(self) -> Op:
        reads = self.reads()
        out = self.out_channels(reads)
        convs = tuple(self.conv() if on else None for on in self.pattern())
        return Op(reads, self.writes(out), out, self.space.op_bottleneck(len(reads) * self.bs, out), convs)

    def block(self, ops: list[Op]) -> Block:
        return Block(self.space.in_channels[self.i], self.bs, self.n_written, tuple(ops),
                     self.space.skeleton_out(self.i))


_PATTERN_CUM = tuple(itertools.accumulate(PATTERN_PROBS))


def _weighted(rng: random.Random, values, cum: tuple[float, ...]) -> int:
    return values[bisect.bisect_right(cum, rng.random() * cum[-1])]


_cache: dict[tuple, tuple[float, ...]] = {}


def _width_weights(units: tuple[int, ...], target: int) -> tuple[float, ...]:
    """Cumulative weights 1 / (0.01 + 10 |g - input width|): strongly prefers output width = input width."""
    key = ("w", units, target)
    if key not in _cache:
        _cache[key] = tuple(itertools.accumulate(1.0 / (0.01 + 10.0 * abs(u - target)) for u in units))
    return _cache[key]


def _exp_weights(n: int) -> tuple[float, ...]:
    """Cumulative weights exp(-i): fewer writes preferred."""
    if ("e", n) not in _cache:
        _cache[("e", n)] = tuple(itertools.accumulate(math.exp(-i) for i in range(n)))
    return _cache[("e", n)]


def sample_architecture(space: SpaceConfig, rng: random.Random, progress: float = 1.0) -> Architecture:
    """One random architecture from the space as it stands at `progress` of SMASH training."""
    max_budget, kernels = anneal(space, progress)
    blocks = []
    for i in range(space.n_blocks):
        frac = rng.uniform(space.min_budget, max_budget)
        s = _BlockSampler(space, i, rng.choice(space.bank_sizes(i)), frac, kernels, rng)
        ops: list[Op] = []
        while s.can_add():
            op = s.new_op()
            s.commit(op)
            ops.append(op)
        blocks.append(s.block(ops))
    return _arch(space, blocks)


def _arch(space: SpaceConfig, blocks: list[Block]) -> Architecture:
    return Architecture(space.image_channels, space.image_size, space.num_classes, space.stem_kernel,
                        tuple(blocks))


def perturb(arch: Architecture, space: SpaceConfig, rng: random.Random, p: float = 0.05) -> Architecture:
    """Resample each field of each op with probability `p`, keeping the result valid.

    Bank sizes and the number of ops stay (as in the original); the block budget is the full one. A field
    that a change upstream invalidated (a read of a bank no longer written, writes to banks that must now
    be filled in order) is resampled or renumbered whatever `p` says. Retries until something changed.
    """
    for _ in range(20):
        blocks = [_perturb_block(space, i, b, rng, p) for i, b in enumerate(arch.blocks)]
        new = _arch(space, blocks)
        if new.id != arch.id:
            return new
    return new


def _perturb_block(space: SpaceConfig, i: int, block: Block, rng: random.Random, p: float) -> Block:
    s = _BlockSampler(space, i, block.bank_size, 1.0, space.kernels, rng)
    ops = []
    for op in block.ops:
        flip = [rng.random() < p for _ in range(7)]  # reads, out width, writes, pattern, kernels, dilations, groups
        reads = op.reads
        if flip[0] or reads[-1] >= s.n_written or s.cost(len(reads)) > max(s.budget, s.cost(s.min_reads)):
            reads = s.reads()
        out = s.out_channels(reads) if flip[1] else op.out_channels
        writes = s.fill_sequentially(op.writes)
        if flip[2] or out != op.out_channels or writes[-1] >= s.cap:
            writes = s.writes(out)
        convs = _perturb_convs(s, op, flip[3:])
        new = Op(reads, writes, out, space.op_bottleneck(len(reads) * s.bs, out), convs)
        s.commit(new)
        ops.append(new)
    return s.block(ops)


def _perturb_convs(s: _BlockSampler, op: Op, flip) -> tuple[Conv | None, ...]:
    pattern = s.pattern() if flip[0] else op.pattern
    convs = []
    for on, old in zip(pattern, op.convs, strict=True):
        if not on:
            convs.append(None)
            continue
        c = old or s.conv()
        kernel = s.conv().kernel if flip[1] else c.kernel
        dilation = s.dilation(kernel) if flip[2] or kernel != c.kernel else c.dilation
        groups = s.rng.choice(s.space.groups) if flip[3] else c.groups
        convs.append(Conv(kernel, dilation, groups))
    return tuple(convs)
