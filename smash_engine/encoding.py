"""Architecture -> encoding tensor `c` (the HyperNet's input) and the per-op tables the networks need.

Layout of `c`, shape (1, C, R, S), BCHW with batch 1 as in the paper:
- width S: one column per *slice* of `dc * N` consecutive 1x1-input channels, in the global order of all
  ops' inputs (block by block, op by op, read banks in sorted order). An op reading `n` channels owns
  `n / (dc * N)` consecutive columns, so deeper or wider networks make `c` wider.
- height R = `max_bottleneck * N_max / N`: row h stands for 1x1 output channels [h*N, (h+1)*N).
  An op fills rows below `bottleneck / N`; the rest of its columns stay "off".
- channels C: the fields below, +1 where on and -1 where off (the original's convention). Every field of
  the op is repeated over all of its (row, column) positions, so each tile of generated weights sees the
  whole description of the op it belongs to (the original left the op configuration out and shifted the
  groups field by one).

  | offset            | size        | field                                              |
  | 0                 | 1           | op start: +1 on the first column of each op         |
  | 1                 | max_banks   | read: the bank(s) whose channels this column holds  |
  | +max_banks        | max_banks   | write: every bank the op writes                    |
  | ...               | n_blocks    | block index                                        |
  | ...               | k           | bank size, in units of N (index units - 1)          |
  | ...               | k           | op output width, in units of N (index units - 1)    |
  | ...               | 4           | which of the 4 convolutions are active             |
  | ... per conv x 4  | 2nK+2nD+nG  | kernel h, kernel w, dilation h, dilation w, groups   |
  |                   |             | (one-hots; all off for an inactive conv)            |

The generated weight tile at (row h, column q) is the N x (dc*N) block of 1x1 weights for output channels
h*N.. and input channels q*dc*N.. (see hypernet.py), so each position of `c` describes the weights it makes.

`encode` builds one (S, C + 2) array on the CPU: each column's fields, its row count and its op index.
`ArchPlan.to(device)` copies that once; c (R times larger) and the column tables are expanded from it on the
device, so the per-step host work and transfer stay small.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .errors import InvalidArchitecture
from .space import Architecture, SpaceConfig

# the fields of an op in c that a corrupted-encoding study shuffles across ops (`studies/corrupt.py`, `probes.py`)
FIELDS = ("dilation", "kernel", "out", "groups", "read", "write")


@dataclass(frozen=True)
class Layout:
    """Channel offsets of each field of c for one search space."""

    space: SpaceConfig

    @property
    def n_dil(self) -> int:
        return (max(self.space.kernels) + 1) // 2

    @property
    def conv_width(self) -> int:
        s = self.space
        return 2 * len(s.kernels) + 2 * self.n_dil + len(s.groups)

    def offsets(self) -> dict[str, int]:
        s = self.space
        sizes = [("start", 1), ("read", s.max_banks), ("write", s.max_banks), ("block", s.n_blocks),
                 ("bank", s.k), ("out", s.k), ("pattern", 4), ("convs", 4 * self.conv_width)]
        if s.encode_position:
            sizes.append(("colpos", 1))  # the column's place in its op, -1 (first) .. +1 (last)
        if s.encode_writers:  # block input wrote the bank, then the writers' pattern, out and convs fields
            sizes.append(("writers", 1 + 4 + s.k + 4 * self.conv_width))
        out, at = {}, 0
        for name, size in sizes:
            out[name] = at
            at += size
        out["total"] = at
        return out

    @property
    def channels(self) -> int:
        """Channels of c: the per-column fields, then (encode_position) a one-hot of the row, made on the device."""
        return self.offsets()["total"] + (self.rows if self.space.encode_position else 0)

    @property
    def rows(self) -> int:
        return self.space.max_bottleneck_channels // self.space.N


@dataclass
class ArchPlan:
    """The encoding of one architecture and the per-op tables that slice its generated weights."""

    arch: Architecture
    packed: np.ndarray | torch.Tensor  # (S, C + 2): fields of each column, its rows (bottleneck / N), its op
    op_start: np.ndarray  # (n_ops,) first 1x1-input column of each op in the generated weight matrix
    op_in: np.ndarray  # (n_ops,) 1x1 input channels
    op_bottleneck: np.ndarray  # (n_ops,) 1x1 output channels
    rows: int  # R
    N: int
    slice_channels: int  # dc * N
    position: bool = False  # append the row one-hot channels to c (SpaceConfig.encode_position)

    def to(self, device: torch.device | str) -> ArchPlan:
        dev = torch.device(device)
        t = torch.from_numpy(self.packed) if isinstance(self.packed, np.ndarray) else self.packed
        if dev.type == "cuda":
            t = t.pin_memory().to(dev, non_blocking=True)
        return ArchPlan(self.arch, t.to(dev), self.op_start, self.op_in, self.op_bottleneck, self.rows, self.N,
                        self.slice_channels, self.position)

    @cached_property
    def _packed(self) -> torch.Tensor:
        return torch.from_numpy(self.packed) if isinstance(self.packed, np.ndarray) else self.packed

    @cached_property
    def c(self) -> torch.Tensor:
        """(1, C, R, S): each column's fields on the rows its op's 1x1 fills, -1 ("off") elsewhere."""
        p = self._packed
        rows = torch.arange(self.rows, device=p.device)[:, None] < p[:, -2][None, :]  # (R, S)
        c = torch.where(rows[None], p[:, :-2].T[:, None, :], -1.0)
        if self.position:  # channel h is on at row h of every filled position
            eye = torch.eye(self.rows, dtype=torch.bool, device=p.device)[:, :, None]  # (R, R, 1)
            c = torch.cat([c, torch.where(eye & rows[None], 1.0, -1.0).to(c.dtype)])
        return c[None]

    @cached_property
    def slice_op(self) -> torch.Tensor:
        """(S,) op index of every column of c."""
        return self._packed[:, -1].long()

    @cached_property
    def slice_rows(self) -> torch.Tensor:
        """(S,) rows of c the op owning each column fills (its bottleneck / N)."""
        return self._packed[:, -2]

    @cached_property
    def col_op(self) -> torch.Tensor:
        """(S * dc * N,) op index of every 1x1-input column (for the per-op norms)."""
        return self._packed[:, -1].long().repeat_interleave(self.slice_channels)

    @cached_property
    def col_rows(self) -> torch.Tensor:
        """(S * dc * N,) bottleneck channels of the op owning each 1x1-input column."""
        return (self._packed[:, -2] * self.N).repeat_interleave(self.slice_channels)


def check_in_space(arch: Architecture, space: SpaceConfig) -> None:
    """Raise InvalidArchitecture if `arch` cannot be run by a SMASH network of `space`."""
    def bad(msg: str) -> InvalidArchitecture:
        return InvalidArchitecture(f"architecture {arch.id} is outside this run's search space: {msg}")
    if arch.spatial_dims != 2:
        raise bad("SMASH networks are 2-D; a 3-D architecture is for final training only")
    skeleton = (space.image_channels, space.image_size, space.num_classes, space.stem_kernel, space.n_blocks)
    if (arch.image_channels, arch.image_size, arch.num_classes, arch.stem_kernel, len(arch.blocks)) != skeleton:
        raise bad("image shape, classes, stem or number of blocks differ")
    for i, b in enumerate(arch.blocks):
        if b.in_channels != space.in_channels[i] or b.out_channels != space.skeleton_out(i):
            raise bad(f"block {i} widths {b.in_channels}->{b.out_channels} differ from the skeleton")
        if b.bank_size % space.N or b.bank_size > space.N_max or b.width > space.widths[i]:
            raise bad(f"block {i} bank size {b.bank_size} or width {b.width} not allowed")
        for j, op in enumerate(b.ops):
            if (len(op.reads) * b.bank_size) % space.slice_channels or op.out_channels > space.N_max \
                    or op.bottleneck % space.N or op.bottleneck > space.max_bottleneck_channels:
                raise bad(f"block {i} op {j}: widths do not fit the encoding")
            for conv in op.convs:
                if conv and (any(k not in space.kernels for k in conv.kernel) or conv.groups not in space.groups
                             or max(conv.dilation) > Layout(space).n_dil):
                    raise bad(f"block {i} op {j}: kernel, dilation or groups outside the space")


def encode(arch: Architecture, space: SpaceConfig) -> ArchPlan:
    """Build c and the op tables for `arch` (which must lie in `space`)."""
    check_in_space(arch, space)
    lay, off, N, dcN = Layout(space), Layout(space).offsets(), space.N, space.slice_channels
    ops = [(i, b, op) for i, b in enumerate(arch.blocks) for op in b.ops]
    n_ops = len(ops)
    op_in = np.array([len(op.reads) * b.bank_size for _, b, op in ops], dtype=np.int64)
    op_slices = op_in // dcN
    op_first = (np.cumsum(op_slices) - op_slices).astype(np.int64)  # empty for an architecture with no ops
    feat = -np.ones((n_ops, off["total"]), dtype=np.float32)
    rows_idx = np.arange(n_ops)

    def on(col: np.ndarray, rows=rows_idx) -> None:
        feat[rows, col] = 1.0

    on(off["block"] + np.array([i for i, _, _ in ops], dtype=np.int64))
    on(off["bank"] + np.array([b.bank_size // N - 1 for _, b, _ in ops], dtype=np.int64))
    on(off["out"] + np.array([op.out_channels // N - 1 for _, _, op in ops], dtype=np.int64))
    w_rows, w_cols = _pairs([(j, off["write"] + w) for j, (_, _, op) in enumerate(ops) for w in op.writes])
    on(w_cols, w_rows)
    c_rows, c_cols = _pairs(_conv_entries(ops, space, lay, off["pattern"], off["convs"]))
    on(c_cols, c_rows)

    slice_op = np.repeat(rows_idx, op_slices)  # (S,)
    per_slice = feat[slice_op]  # (S, C)
    per_slice[op_first, off["start"]] = 1.0
    r_slices, r_cols = _pairs(_read_entries(ops, op_first, space, off["read"]))
    per_slice[r_slices, r_cols] = 1.0

    if space.encode_position:
        place = np.arange(len(slice_op)) - op_first[slice_op]
        per_slice[:, off["colpos"]] = 2.0 * place / np.maximum(op_slices[slice_op] - 1, 1) - 1.0
    if space.encode_writers:
        at = off["writers"]
        per_slice[:, at:at + 1 + 4 + space.k + 4 * lay.conv_width] = _writer_fields(ops, op_first, space, feat, off)
    bottleneck = np.array([op.bottleneck for _, _, op in ops], dtype=np.int64)
    packed = np.concatenate([per_slice, (bottleneck[slice_op] // N)[:, None], slice_op[:, None]], 1)
    return ArchPlan(arch, packed.astype(np.float32), op_first * dcN, op_in, bottleneck, lay.rows, N, dcN,
                    space.encode_position)


def _pairs(entries: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    a = np.array(entries, dtype=np.int64).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def _read_entries(ops, op_first, space: SpaceConfig, read_off: int) -> list[tuple[int, int]]:
    """(column, channel) for every column a read bank's channels fall into (small banks share columns)."""
    out, dc = [], space.dc
    for j, (_, b, op) in enumerate(ops):
        unit = b.bank_size // space.N
        for n, bank in enumerate(op.reads):
            lo, hi = n * unit, (n + 1) * unit  # in units of N within the op's input
            for col in range(lo // dc, -(-hi // dc)):
                out.append((int(op_first[j]) + col, read_off + bank))
    return out


def _writer_fields(ops, op_first, space: SpaceConfig, feat: np.ndarray, off: dict[str, int]) -> np.ndarray:
    """(S, 1 + 4 + k + 4 * conv_width): for each column, over the banks it reads, whether the block input wrote
    the bank and the mean of its writers' pattern, out and convs fields (as 0/1), mapped to -1..+1."""
    cw = Layout(space).conv_width
    own = np.concatenate([feat[:, off["pattern"]:off["pattern"] + 4], feat[:, off["out"]:off["out"] + space.k],
                          feat[:, off["convs"]:off["convs"] + 4 * cw]], 1) > 0  # (n_ops, 4 + k + 4cw)
    cols: dict[int, list[np.ndarray]] = {}
    for j, (i, b, op) in enumerate(ops):
        unit = b.bank_size // space.N
        for n, bank in enumerate(op.reads):
            earlier = [k for k in range(j) if ops[k][0] == i and bank in ops[k][2].writes]
            v = np.zeros(1 + own.shape[1], dtype=np.float32)
            v[0] = bank < b.n_input_banks
            if earlier:
                v[1:] = own[earlier].mean(0)
            lo, hi = n * unit, (n + 1) * unit  # in units of N within the op's input
            for col in range(lo // space.dc, -(-hi // space.dc)):
                cols.setdefault(int(op_first[j]) + col, []).append(v)
    out = np.zeros((max(cols) + 1 if cols else 0, 1 + own.shape[1]), dtype=np.float32)
    for col, vs in cols.items():
        out[col] = np.mean(vs, 0)
    return 2 * out - 1


def _conv_entries(ops, space: SpaceConfig, lay: Layout, pat_off: int, conv_off: int) -> list[tuple[int, int]]:
    nK, nD, K, G = len(space.kernels), lay.n_dil, space.kernels, space.groups
    out = []
    for j, (_, _, op) in enumerate(ops):
        for n, conv in enumerate(op.convs):
            if conv is None:
                continue
            base = conv_off + n * lay.conv_width
            out += [(j, pat_off + n), (j, base + K.index(conv.kernel[0])), (j, base + nK + K.index(conv.kernel[1])),
                    (j, base + 2 * nK + conv.dilation[0] - 1), (j, base + 2 * nK + nD + conv.dilation[1] - 1),
                    (j, base + 2 * nK + 2 * nD + G.index(conv.groups))]
    return out


def decode(c: np.ndarray | torch.Tensor, space: SpaceConfig) -> list[dict]:
    """Recover each op's fields from c (for tests and the corrupted-encoding study)."""
    c = c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c)
    lay, off, N = Layout(space), Layout(space).offsets(), space.N
    row0 = c[0, :, 0, :] > 0  # (C, S): every op fills row 0
    starts = list(np.flatnonzero(row0[off["start"]])) + [c.shape[-1]]
    ops = []
    for a, z in zip(starts[:-1], starts[1:], strict=True):
        f = row0[:, a]
        def idx(name: str, size: int, at: np.ndarray = f) -> list[int]:
            return [int(i) for i in np.flatnonzero(at[off[name]:off[name] + size])]
        read_field = row0[off["read"]:off["read"] + space.max_banks, a:z]
        reads = sorted({int(r) for r in np.flatnonzero(read_field.any(axis=1))})
        rows = int((c[0, :, :, a] > 0).any(axis=0).sum())
        ops.append(dict(block=idx("block", space.n_blocks)[0], bank_size=(idx("bank", space.k)[0] + 1) * N,
                        reads=tuple(reads), writes=tuple(idx("write", space.max_banks)),
                        out_channels=(idx("out", space.k)[0] + 1) * N, bottleneck=rows * N,
                        convs=_decode_convs(f[off["pattern"]:off["pattern"] + 4], f[off["convs"]:], space, lay)))
    return ops


def _decode_convs(pattern: np.ndarray, f: np.ndarray, space: SpaceConfig, lay: Layout) -> tuple:
    nK, nD, K = len(space.kernels), lay.n_dil, space.kernels
    convs = []
    for n in range(4):
        if not pattern[n]:
            convs.append(None)
            continue
        g = f[n * lay.conv_width:(n + 1) * lay.conv_width]

        def first(lo: int, size: int, g=g) -> int:
            return int(np.flatnonzero(g[lo:lo + size])[0])

        convs.append(dict(kernel=(K[first(0, nK)], K[first(nK, nK)]),
                          dilation=(first(2 * nK, nD) + 1, first(2 * nK + nD, nD) + 1),
                          groups=space.groups[first(2 * nK + 2 * nD, len(space.groups))]))
    return tuple(convs)


def corrupt_plan(plan: ArchPlan, space, field: str, r: random.Random) -> ArchPlan | None:
    """`plan` with one field of c shuffled (across ops; `read` across columns); None if no shuffle changes c.

    Only `packed` (hence c) changes: `plan.arch` and the op tables, so the network run, stay the true ones."""
    packed = np.asarray(plan.packed if isinstance(plan.packed, np.ndarray) else plan.packed.cpu().numpy())
    lay = Layout(space)
    off = lay.offsets()
    op_of = packed[:, -1].astype(np.int64)
    first = (np.asarray(plan.op_start) // plan.slice_channels).astype(np.int64)
    if field == "read":
        units = [(col, off["read"], off["read"] + space.max_banks) for col in range(len(packed))]
    elif field in ("out", "write"):
        size = space.k if field == "out" else space.max_banks
        units = [(j, off[field], off[field] + size) for j in range(len(first))]
    else:
        nK, nD = len(space.kernels), lay.n_dil
        lo, hi = {"kernel": (0, 2 * nK), "dilation": (2 * nK, 2 * nK + 2 * nD),
                  "groups": (2 * nK + 2 * nD, lay.conv_width)}[field]
        units = [(j, off["convs"] + n * lay.conv_width + lo, off["convs"] + n * lay.conv_width + hi)
                 for j in range(len(first)) for n in range(4) if packed[first[j], off["pattern"] + n] > 0]
    segs = [packed[first[u] if field != "read" else u, a:b].copy() for u, a, b in units]
    for _ in range(50):
        order = list(range(len(units)))
        r.shuffle(order)
        if any(not np.array_equal(segs[i], segs[o]) for i, o in enumerate(order)):
            break
    else:
        return None
    new = packed.copy()
    for (u, a, b), o in zip(units, order, strict=True):
        new[u if field == "read" else op_of == u, a:b] = segs[o]
    out = dataclasses.replace(plan, packed=new)
    return out.to(plan.packed.device) if isinstance(plan.packed, torch.Tensor) else out
