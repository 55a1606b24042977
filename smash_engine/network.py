"""Where architectures become modules: SmashNet (generated 1x1 weights) and FixedNet (free weights).

Both run the same memory-bank program (`run_block`): a block's input fills banks 0.. ; each op reads the
concatenation of its read banks, computes, and adds its output (split into bank-sized chunks, chunk
t mod m to its t-th write) to the banks it writes; the block outputs all banks concatenated.

An op is a 1x1 convolution, ReLU, then the active convolutions of the 2-branch pattern (`two_branch`),
each preceded by ReLU. In SmashNet the 1x1 weight comes from the HyperNet (divided by its norm) and the
other convolutions are slices of one freely learned 4-conv bank per block, shared by all its ops; BatchNorm
only in transitions and the head, as in the paper. FixedNet is a plain static `nn.Module` for final
training; with `norm="bn"` (default) each op gets the original's "sandwich" BatchNorm (BN -> ReLU -> 1x1 ->
BN), with `norm="none"` it computes exactly SmashNet's function (used to check the two agree).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cost import conv_in, per_axis
from .encoding import ArchPlan
from .hypernet import op_weight
from .space import Architecture, Block, Conv, Op, SpaceConfig


def run_block(x: torch.Tensor, block: Block, op_fn: Callable[[int, Op, torch.Tensor], torch.Tensor],
              keep: torch.Tensor | None = None) -> torch.Tensor:
    """`keep` (ops, B): path dropout, each op's output scaled per image by its row (0 drops it)."""
    banks: list[torch.Tensor | None] = list(x.split(block.bank_size, 1))
    banks += [None] * (block.n_banks - len(banks))
    for k, op in enumerate(block.ops):
        inp = banks[op.reads[0]] if len(op.reads) == 1 else torch.cat([banks[r] for r in op.reads], 1)
        out = op_fn(k, op, inp)
        if keep is not None:
            out = out * keep[k].to(out.dtype)[:, None, None, None]
        chunks = out.split(block.bank_size, 1)
        for t, target in enumerate(op.writes):
            chunk = chunks[t % len(chunks)]
            banks[target] = chunk if banks[target] is None else banks[target] + chunk
    return torch.cat(banks, 1)  # type: ignore[arg-type]


def bank_indices(block: Block) -> list[tuple[list[int], list[int], list[int] | None]]:
    """For each op of `block`, as channel lists of the block's full width: what it reads (its read banks,
    concatenated), where its output's chunks go (its write banks), and which of its output channels feed them
    (None where each chunk goes to one bank, in order)."""
    bs, out = block.bank_size, []
    for op in block.ops:
        reads = [c for r in op.reads for c in range(r * bs, (r + 1) * bs)]
        m = op.out_channels // bs
        writes = [c for w in op.writes for c in range(w * bs, (w + 1) * bs)]
        src = [c for t in range(len(op.writes)) for c in range((t % m) * bs, (t % m + 1) * bs)]
        out.append((reads, writes, None if src == list(range(op.out_channels)) else src))
    return out


def run_block_state(x: torch.Tensor, block: Block, op_fn: Callable[[int, Op, torch.Tensor], torch.Tensor],
                    index: list[tuple[torch.Tensor | slice, torch.Tensor, torch.Tensor | None]],
                    keep: torch.Tensor | None = None) -> torch.Tensor:
    """`run_block` over one tensor of all the block's banks (unwritten ones zero): an op reads with one
    index_select (or a view, where its banks are adjacent) and adds its output into the banks it writes with one
    index_add. The forward sums what `run_block` sums, in the same order; the backward has one gradient
    accumulation an op instead of one per bank read (an op reads ~10 banks in the paper space), in another order.
    `index`: `bank_indices` as device tensors (a slice for an adjacent read)."""
    state = F.pad(x, (0, 0, 0, 0, 0, block.width - x.shape[1]))
    for k, op in enumerate(block.ops):
        reads, writes, src = index[k]
        inp = state[:, reads] if isinstance(reads, slice) else state.index_select(1, reads)
        out = op_fn(k, op, inp)
        if keep is not None:
            out = out * keep[k].to(out.dtype)[:, None, None, None]
        state = state.index_add(1, writes, out if src is None else out.index_select(1, src))
    return state


def _conv(x: torch.Tensor, w: torch.Tensor, padding: tuple[int, int], dilation: tuple[int, int],
          groups: int) -> torch.Tensor:
    return F.conv2d(x, w, None, 1, padding, dilation, groups)


def two_branch(y: torch.Tensor, pattern, conv: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Branch A = conv0 then conv1, branch B = conv2 then conv3; the op's output is A + B."""
    a = conv(0, y)
    b = conv(2, y) if pattern[2] else None
    if pattern[1]:
        a = conv(1, F.relu(a))
    if pattern[3]:
        b = conv(3, F.relu(b))
    return a if b is None else a + b


def conv_padding(c: Conv) -> tuple[int, int]:
    return (c.dilation[0] * (c.kernel[0] - 1) // 2, c.dilation[1] * (c.kernel[1] - 1) // 2)


# the module kinds FixedNet is built from, per number of spatial axes
_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_BN = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


def sliced_bn(x: torch.Tensor, bn: nn.BatchNorm2d, training: bool) -> torch.Tensor:
    """BatchNorm over the first C channels of a wider BN; running stats of the slice update in place."""
    C = x.shape[1]
    return F.batch_norm(x, bn.running_mean[:C], bn.running_var[:C], bn.weight[:C], bn.bias[:C],
                        training, bn.momentum, bn.eps)


def round_up(c: int, multiple: int) -> int:
    return -(-c // multiple) * multiple


@dataclass(frozen=True)
class Padding:
    """Where one weight slice sits in a zero-padded weight, so a convolution runs at rounded widths exactly.

    A padded tensor of `c` real channels has `round_up(c, multiple)` channels in `chunks` equal chunks, each
    holding its share of the real channels first, then zeros (the *chunked* layout). With `chunks` the largest
    groups count of the space, a grouped convolution of any allowed groups over the padded widths sees in each of
    its groups exactly the real channels of that group, so zero weights at the padded positions make it compute
    the exact convolution's outputs (at the real positions) and zeros (at the padded ones). A 1x1 reads banks of
    real width: `chunks_in` 1 there, no input padding.
    """

    out: int
    out_pad: int
    cin: int
    cin_pad: int
    chunks: int  # output chunks (and input chunks where chunks_in is None)
    groups: int = 1
    chunks_in: int | None = None

    def _split(self, t: torch.Tensor, out: int, cin: int) -> torch.Tensor:
        gi = self.chunks if self.chunks_in is None else self.chunks_in
        return t.view(self.chunks, out // self.chunks, gi // self.groups, cin // gi, *t.shape[2:])

    def real(self, t: torch.Tensor) -> torch.Tensor:
        """The real weight (out, cin / groups, ...) viewed by chunks."""
        return self._split(t, self.out, self.cin)

    def place(self, padded: torch.Tensor) -> torch.Tensor:
        """The real weight's positions in the padded weight (out_pad, cin_pad / groups, ...), viewed as `real`."""
        gi = self.chunks if self.chunks_in is None else self.chunks_in
        return self._split(padded, self.out_pad, self.cin_pad)[:, :self.out // self.chunks, :, :self.cin // gi]

    def padded(self, real: torch.Tensor) -> torch.Tensor:
        """The real weight inside zeros of the padded widths, contiguous: one kernel (the copy a slice costs anyway)."""
        gi = self.chunks if self.chunks_in is None else self.chunks_in
        trailing = real.dim() - 2
        # F.pad counts dims from the last: the kernel's stay, cin / gi grows, gi / groups stays, out / chunks grows
        grow_in, grow_out = (self.cin_pad - self.cin) // gi, (self.out_pad - self.out) // self.chunks
        pad = [0, 0] * trailing + [0, grow_in, 0, 0, 0, grow_out]
        return F.pad(self.real(real), pad).view(self.out_pad, self.cin_pad // self.groups, *real.shape[2:])


class _Slices(torch.autograd.Function):
    """Every slice a step takes of one shared weight, in one autograd node.

    Sliced one by one, each slice's backward writes a zero tensor of the weight's full size and adds it to
    the gradient (~3 full-size kernels per op and conv). Here the slices' gradients are added in place into
    one buffer: one full-size allocation per shared weight per step. The slices are returned contiguous,
    which the convolutions would otherwise copy them to anyway; a slice with a `Padding` comes back inside a
    zero weight of the padded widths (one copy either way).
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, index: list[tuple[slice, ...]], pads: list[Padding | None] | None = None):
        pads = pads or [None] * len(index)
        ctx.index, ctx.pads, ctx.shape = index, pads, weight.shape
        out = []
        for ix, pad in zip(index, pads, strict=True):
            out.append(weight[ix].contiguous() if pad is None else pad.padded(weight[ix]))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        g = next(x for x in grads if x is not None).new_zeros(ctx.shape)
        for ix, pad, gi in zip(ctx.index, ctx.pads, grads, strict=True):
            if gi is None:
                continue
            if pad is None:
                g[ix].add_(gi)  # not `g[ix] += gi`: that also copies the view back onto itself
            else:
                pad.real(g[ix]).add_(pad.place(gi))
        return g, None, None


def unpad(y: torch.Tensor, c: int, chunks: int) -> torch.Tensor:
    """The `c` real channels of a padded activation in the chunked layout (`Padding`), contiguous."""
    B, cp = y.shape[:2]
    if cp == c:
        return y
    return y.view(B, chunks, cp // chunks, *y.shape[2:])[:, :, :c // chunks].reshape(B, c, *y.shape[2:])


class ConvKey(NamedTuple):
    """What a convolution library plans for (cuDNN keys its plans by this, dtype and layout aside)."""

    batch: int
    cin: int
    height: int
    width: int
    cout: int
    kernel: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    padding: tuple[int, int]


class SmashNet(nn.Module):
    """The main network of SMASH for every architecture of `space`; 1x1 weights are passed in."""

    def __init__(self, space: SpaceConfig, templates: int = 1):
        super().__init__()
        self.space, self.templates = space, templates
        # path dropout of the next training forward (train.drop_masks): (ops, B) scales, or None
        self.keep: torch.Tensor | None = None
        # channel widths inside ops are rounded up to a multiple of this (1: exact widths), with zero weights at the
        # padded positions, so the results are the exact ones; set per device (train.conv_multiple): on CUDA it
        # bounds the convolution configurations cuDNN must build a plan for (benchmarks/plan_cache.py)
        self.multiple = 1
        self.chunks = max(space.groups)
        # run blocks over one tensor of all banks (`run_block_state`): ~8 fewer kernels an op, the backward summing in
        # another order; set per device (train.Smash.create: CUDA), so the CPU's results stay bit for bit
        self.bank_state = False
        # where set (conv_graphs.ConvGraphs, opt-in on CUDA), the ops' convolutions run through per-configuration
        # CUDA graphs: an object with `conv(x, w, padding, dilation, groups)`
        self.graphs = None
        s, K = space, max(space.kernels)
        # with templates > 1 (the graph HyperNet) each shared conv is `templates` tensors that each op mixes
        # with the code the HyperNet generates for it; 1 keeps the paper's one shared tensor (and checkpoints)
        lead = (templates,) if templates > 1 else ()
        self.stem = nn.Conv2d(s.image_channels, s.in_channels[0], s.stem_kernel, padding=s.stem_kernel // 2,
                              bias=False)
        # per block, convs 0 and 2 read the 1x1 output (<= max bottleneck), 1 and 3 an op output (<= N_max)
        self.convs = nn.ParameterList(
            nn.Parameter(torch.empty(*lead, s.N_max, s.max_bottleneck_channels if n in (0, 2) else s.N_max, K, K))
            for _ in range(s.n_blocks) for n in range(4))
        self.trans_bn = nn.ModuleList(nn.BatchNorm2d(w) for w in s.widths[:-1])
        self.trans = nn.ParameterList(nn.Parameter(torch.empty(s.in_channels[i + 1], s.widths[i], 1, 1))
                                      for i in range(s.n_blocks - 1))
        self.head_bn = nn.BatchNorm2d(s.widths[-1])
        self.fc = nn.Linear(s.widths[-1], s.num_classes)
        for p in [self.stem.weight, *self.trans, *(t for c in self.convs for t in (c if lead else [c]))]:
            nn.init.orthogonal_(p)
        nn.init.zeros_(self.fc.bias)

    def conv_index(self, n: int, op: Op) -> tuple[slice, ...]:
        """Where op's conv n sits in its block's shared weight: its widths, groups, centred kernel window."""
        c, K = op.convs[n], max(self.space.kernels)
        kh, kw = c.kernel
        lead = (slice(None),) if self.templates > 1 else ()
        return (*lead, slice(0, op.out_channels), slice(0, conv_in(op, n) // c.groups),
                slice(K // 2 - kh // 2, K // 2 + kh // 2 + 1), slice(K // 2 - kw // 2, K // 2 + kw // 2 + 1))

    def shared_conv(self, i: int, n: int, op: Op) -> torch.Tensor:
        """Block i's conv n sliced for op (a view)."""
        return self.convs[4 * i + n][self.conv_index(n, op)]

    def pad(self, c: int, padded: bool = True) -> int:
        """The width a tensor of `c` real channels has inside an op."""
        return round_up(c, math.lcm(self.multiple, self.chunks)) if padded and self.multiple > 1 else c

    def conv_padding(self, op: Op, n: int, n_in: int = 0) -> Padding | None:
        """Where op's conv n sits in its padded weight, or (n = -1) its 1x1 reading `n_in` channels of banks,
        which have their real widths; None where the padded widths are the real ones."""
        if n < 0:
            cout, cout_pad = op.bottleneck, self.pad(op.bottleneck)
            return None if cout_pad == cout else Padding(cout, cout_pad, n_in, n_in, self.chunks, 1, 1)
        conv, cin, cout = op.convs[n], conv_in(op, n), op.out_channels
        assert conv is not None
        if self.pad(cout) == cout and self.pad(cin) == cin:
            return None
        return Padding(cout, self.pad(cout), cin, self.pad(cin), self.chunks, conv.groups)

    def block_convs(self, i: int, ops: tuple[Op, ...], padded: bool = False,
                    weights_of: Callable[[int], torch.Tensor] | None = None) -> list[dict[int, torch.Tensor]]:
        """For each op of block i, its active convs' weights, sliced through one `_Slices` node per conv from
        `weights_of(j)` (default: the shared weights themselves); with `padded`, each inside a zero weight of the
        op's padded widths."""
        out: list[dict[int, torch.Tensor]] = [{} for _ in ops]
        weights_of = weights_of or (lambda j: self.convs[j])
        for n in range(4):
            users = [k for k, op in enumerate(ops) if op.convs[n] is not None]
            if users:
                pads = [self.conv_padding(ops[k], n) for k in users] if padded else None
                weights = _Slices.apply(weights_of(4 * i + n), [self.conv_index(n, ops[k]) for k in users], pads)
                for k, wk in zip(users, weights, strict=True):
                    out[k][n] = wk
        return out

    def cast_banks(self) -> Callable[[int], torch.Tensor]:
        """The shared conv banks as the convolutions will read them: under autocast, each bank is cast once per
        forward (one kernel per bank instead of one per op and conv, as autocast would cast every slice)."""
        device = self.convs[0].device.type
        if not torch.is_autocast_enabled(device):
            return lambda j: self.convs[j]
        dtype = torch.get_autocast_dtype(device)
        cast: dict[int, torch.Tensor] = {}

        def bank(j: int) -> torch.Tensor:
            if j not in cast:
                cast[j] = self.convs[j].to(dtype)
            return cast[j]
        return bank

    @staticmethod
    def bank_index(arch: Architecture, device: torch.device) -> list[list[tuple]]:
        """`bank_indices` of every block as device tensors, copied in one transfer (adjacent reads as slices)."""
        lists = [bank_indices(b) for b in arch.blocks]
        flat = [c for block in lists for op in block for part in op if part is not None for c in part]
        t = torch.tensor(flat, dtype=torch.long)
        if device.type == "cuda":
            t = t.pin_memory()
        t, at, out = t.to(device, non_blocking=True), 0, []

        def take(n: int) -> torch.Tensor:
            nonlocal at
            at += n
            return t[at - n:at]
        for block in lists:
            ops = []
            for reads, writes, src in block:
                r = take(len(reads))
                if reads == list(range(reads[0], reads[0] + len(reads))):
                    r = slice(reads[0], reads[0] + len(reads))
                ops.append((r, take(len(writes)), None if src is None else take(len(src))))
            out.append(ops)
        return out

    def conv_configs(self, arch: Architecture, batch: int) -> list[ConvKey]:
        """The convolutions `forward` runs for `arch` at this batch, in order, as a plan cache keys them: the code's
        own widths (`pad`), so counting configurations counts what runs (a test holds the two together)."""
        s, padded = self.space, self.multiple > 1 and self.templates == 1  # as `forward` without c-set gains
        size = arch.image_size
        k = s.stem_kernel
        out = [ConvKey(batch, arch.image_channels, size, size, s.in_channels[0], (k, k), (1, 1), 1, (k // 2, k // 2))]
        for i, block in enumerate(arch.blocks):
            for op in block.ops:
                n_in = len(op.reads) * block.bank_size
                out.append(ConvKey(batch, n_in, size, size, self.pad(op.bottleneck, padded), (1, 1), (1, 1), 1,
                                   (0, 0)))
                for n in (0, 2, 1, 3):  # two_branch's order
                    c = op.convs[n]
                    if c is not None:
                        out.append(ConvKey(batch, self.pad(conv_in(op, n), padded), size, size,
                                           self.pad(op.out_channels, padded), c.kernel, c.dilation, c.groups,
                                           conv_padding(c)))
            if i < len(self.trans):
                out.append(ConvKey(batch, block.width, size, size, s.in_channels[i + 1], (1, 1), (1, 1), 1, (0, 0)))
                size //= 2
        return out

    def forward(self, x: torch.Tensor, plan: ArchPlan, w: torch.Tensor, gains: torch.Tensor | None = None,
                mix: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W) -> logits, for architecture `plan.arch` with 1x1 weights `w` and, with c-set gains,
        each op's output-channel `gains` and (with templates) its conv codes `mix` (all from `generate`)."""
        x = self.stem(x)
        first = 0
        # the weights as the paper's HyperNet makes them (no c-set gains or templates, which scale and mix the real
        # ones): cast once per forward under autocast, and at padded widths where `multiple` asks for them
        plain = gains is None and self.templates == 1
        padded = plain and self.multiple > 1
        weights_of = self.cast_banks() if plain else None
        if plain and torch.is_autocast_enabled(w.device.type):
            w = w.to(torch.get_autocast_dtype(w.device.type))
        ops = [op for block in plan.arch.blocks for op in block.ops]
        # every op's 1x1 weight out of the generated matrix through one node, as for the shared convs
        index = [(slice(0, int(b)), slice(int(a), int(a + n)))
                 for a, n, b in zip(plan.op_start, plan.op_in, plan.op_bottleneck, strict=True)]
        pads = [self.conv_padding(op, -1, int(n)) for op, n in zip(ops, plan.op_in, strict=True)] if padded else None
        w1x1 = list(_Slices.apply(w, index, pads))
        banks = self.bank_index(plan.arch, x.device) if self.bank_state else None
        conv = self.graphs.conv if self.graphs is not None else _conv
        for i, block in enumerate(plan.arch.blocks):
            convs = self.block_convs(i, block.ops, padded, weights_of)
            if gains is not None:
                for k in range(len(block.ops)):
                    w1x1[first + k], convs[k] = self.gained(gains[first + k], w1x1[first + k], convs[k],
                                                            None if mix is None else mix[first + k])

            def op_fn(k: int, op: Op, inp: torch.Tensor, first=first, convs=convs) -> torch.Tensor:
                y = F.relu(conv(inp, w1x1[first + k][:, :, None, None].to(inp.dtype), (0, 0), (1, 1), 1))
                out = two_branch(y, op.pattern, lambda n, t: conv(
                    t, convs[k][n], conv_padding(op.convs[n]), op.convs[n].dilation, op.convs[n].groups))
                return unpad(out, op.out_channels, self.chunks) if padded else out
            keep = self.keep[first:first + len(block.ops)] if self.keep is not None and self.training else None
            x = run_block(x, block, op_fn, keep) if banks is None else run_block_state(x, block, op_fn, banks[i], keep)
            first += len(block.ops)
            if i < len(self.trans):
                x = F.relu(sliced_bn(x, self.trans_bn[i], self.training))
                x = F.avg_pool2d(F.conv2d(x, self.trans[i][:, :x.shape[1]]), 2)
        x = F.relu(sliced_bn(x, self.head_bn, self.training))
        return F.linear(x.mean((2, 3)), self.fc.weight[:, :x.shape[1]], self.fc.bias)


    def gained(self, g: torch.Tensor, w1: torch.Tensor, convs: dict[int, torch.Tensor],
               mix: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """An op's 1x1 and conv weights scaled per output channel by its gains `g` (HyperNet.op_gains); with
        templates, each conv first mixed from its templates by the op's code `mix` (4, templates)."""
        B, M = self.space.max_bottleneck_channels, self.space.N_max
        if self.templates > 1:
            if mix is None:
                raise ValueError("a SmashNet with templates needs each op's template code (the graph HyperNet's)")
            convs = {n: torch.einsum("t,t...->...", mix[n].to(c.dtype), c) for n, c in convs.items()}
        w1 = w1 * g[:w1.shape[0], None].to(w1.dtype)
        out = {n: c * g[B + n * M:B + n * M + c.shape[0], None, None, None].to(c.dtype) for n, c in convs.items()}
        return w1, out


class FixedOp(nn.Module):
    def __init__(self, op: Op, n_in: int, norm: str, dims: int = 2):
        super().__init__()
        bn, conv, bnorm = norm == "bn", _CONV[dims], _BN[dims]
        self.pattern = op.pattern
        self.pre = nn.Sequential(bnorm(n_in), nn.ReLU()) if bn else nn.Identity()
        self.conv1x1 = conv(n_in, op.bottleneck, 1, bias=False)
        self.post = bnorm(op.bottleneck) if bn else nn.Identity()
        self.convs = nn.ModuleDict({
            str(n): conv(conv_in(op, n), op.out_channels, per_axis(c.kernel, dims),
                         padding=per_axis(conv_padding(c), dims), dilation=per_axis(c.dilation, dims),
                         groups=c.groups, bias=False)
            for n, c in enumerate(op.convs) if c is not None})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.post(self.conv1x1(self.pre(x))))
        return two_branch(y, self.pattern, lambda n, t: self.convs[str(n)](t))


class FixedNet(nn.Module):
    """One architecture with freely learned weights (final training); a static graph.

    With `arch.spatial_dims == 3` the same program runs on voxel grids (N, C, D, H, W) with 3-D
    convolutions, BatchNorm and pooling (`per_axis` says how an op's 2-D kernel gains its depth axis).
    """

    def __init__(self, arch: Architecture, norm: str = "bn"):
        super().__init__()
        if norm not in ("bn", "none"):
            raise ValueError(f"norm must be 'bn' or 'none', not {norm!r}")
        self.arch = arch
        dims = arch.spatial_dims
        conv, bnorm = _CONV[dims], _BN[dims]
        c0 = arch.blocks[0].in_channels
        self.stem = conv(arch.image_channels, c0, arch.stem_kernel, padding=arch.stem_kernel // 2, bias=False)
        self.ops = nn.ModuleList(FixedOp(op, len(op.reads) * b.bank_size, norm, dims)
                                 for b in arch.blocks for op in b.ops)
        self.trans = nn.ModuleList(
            nn.Sequential(bnorm(b.width), nn.ReLU(), conv(b.width, b.out_channels, 1, bias=False), _POOL[dims](2))
            for b in arch.blocks[:-1])
        self.head_bn = bnorm(arch.blocks[-1].width)
        self.fc = nn.Linear(arch.blocks[-1].width, arch.num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.orthogonal_(m.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        first = 0
        for i, block in enumerate(self.arch.blocks):
            x = run_block(x, block, lambda k, op, inp, first=first: self.ops[first + k](inp))
            first += len(block.ops)
            if i < len(self.trans):
                x = self.trans[i](x)
        x = F.relu(self.head_bn(x))
        return self.fc(x.flatten(2).mean(2))


@torch.no_grad()
def fixed_from_smash(net: SmashNet, w: torch.Tensor, plan: ArchPlan, gains: torch.Tensor | None = None,
                     mix: torch.Tensor | None = None) -> FixedNet:
    """A FixedNet(norm="none") holding the weights SmashNet uses for this architecture (generated 1x1 and
    gains included), with the same BN statistics: it computes the same function as `net(x, plan, w, gains)`."""
    arch = plan.arch
    fixed = FixedNet(arch, norm="none").to(w.device)
    fixed.stem.weight.copy_(net.stem.weight)
    j = 0
    for i, block in enumerate(arch.blocks):
        for op in block.ops:
            m = fixed.ops[j]
            w1 = op_weight(w, plan, j)[:, :, 0, 0]
            convs = {int(n): net.shared_conv(i, int(n), op) for n in m.convs}
            if gains is not None:
                w1, convs = net.gained(gains[j], w1, convs, None if mix is None else mix[j])
            m.conv1x1.weight.copy_(w1[:, :, None, None])
            for n, conv in m.convs.items():
                conv.weight.copy_(convs[int(n)])
            j += 1
        if i < len(fixed.trans):
            _copy_bn(fixed.trans[i][0], net.trans_bn[i])
            fixed.trans[i][2].weight.copy_(net.trans[i][:, :block.width])
    _copy_bn(fixed.head_bn, net.head_bn)
    fixed.fc.weight.copy_(net.fc.weight[:, :arch.blocks[-1].width])
    fixed.fc.bias.copy_(net.fc.bias)
    return fixed


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    C = dst.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:C])
