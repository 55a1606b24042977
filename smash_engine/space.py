"""The memory-bank search space: architecture model, search-space config and presets, sampler.

An `Architecture` is frozen, JSON-serialisable data; `network.py` is the only place it becomes modules.
Symbols follow the paper and the authors' code: `N` channels per bank unit, `N_max` the widest op output,
`k = N_max / N`, `D` reference depth, `W` widening factor, `dc` depth compression (1x1 input channels per
encoding slice = `dc * N`).

Where we differ from the authors' code (docs/how-it-works.md, the search space):
- bank sizes divide the block input width, so no input channels are silently dropped;
- the generated 1x1 keeps its full bottleneck width (the original truncates it to `N_max` in the SMASH
  network but not in the final network, so the two nets disagreed);
- ops vary which of the four convolutions are active (the paper's description; the original's default is one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from .errors import ConfigError, InvalidArchitecture

FORMAT_VERSION = 1
# The 2-branch pattern of the paper: branch A = conv0 then conv1, branch B = conv2 then conv3.
PATTERNS = ((1, 0, 0, 0), (1, 0, 1, 0), (1, 1, 0, 0), (1, 1, 1, 0), (1, 1, 1, 1))
PATTERN_PROBS = (0.05, 0.10, 0.15, 0.25, 0.45)  # the original's `var_op` probabilities


@dataclass(frozen=True)
class Conv:
    """One active convolution of an op: kernel and dilation per axis (h, w), and groups."""

    kernel: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass(frozen=True)
class Op:
    """Reads banks, 1x1 to `bottleneck` channels, active convs to `out_channels`, writes (adds) banks."""

    reads: tuple[int, ...]
    writes: tuple[int, ...]
    out_channels: int
    bottleneck: int
    convs: tuple[Conv | None, Conv | None, Conv | None, Conv | None]

    @property
    def pattern(self) -> tuple[int, int, int, int]:
        return tuple(int(c is not None) for c in self.convs)  # type: ignore[return-value]


@dataclass(frozen=True)
class Block:
    """`in_channels` fill banks 0.. of `bank_size` each; the block outputs all `n_banks` concatenated."""

    in_channels: int
    bank_size: int
    n_banks: int
    ops: tuple[Op, ...]
    out_channels: int  # after the transition (next block's input) or, for the last block, its width

    @property
    def n_input_banks(self) -> int:
        return self.in_channels // self.bank_size

    @property
    def width(self) -> int:
        return self.n_banks * self.bank_size


@dataclass(frozen=True)
class Architecture:
    image_channels: int
    image_size: int
    num_classes: int
    stem_kernel: int
    blocks: tuple[Block, ...]
    version: int = FORMAT_VERSION
    # 3 for the voxel variant (transfer to ModelNet): every convolution gets a depth axis that copies
    # its height axis, so a (kh, kw) kernel becomes (kh, kh, kw) and a square one a cube
    spatial_dims: int = 2

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        if self.spatial_dims == 2:  # left out, so ids of 2-D architectures are what they always were
            del d["spatial_dims"]
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, separators=None if indent else (",", ":"))

    @property
    def id(self) -> str:
        """Stable id: the first 16 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        try:
            if d.get("version", FORMAT_VERSION) != FORMAT_VERSION:
                raise InvalidArchitecture(
                    f"architecture format version {d.get('version')} is not {FORMAT_VERSION}; "
                    "export it again with this smash-tui")
            blocks = tuple(_block_from_dict(b) for b in d["blocks"])
            arch = cls(_int(d["image_channels"]), _int(d["image_size"]), _int(d["num_classes"]),
                       _int(d["stem_kernel"]), blocks, _int(d.get("version", FORMAT_VERSION)),
                       _int(d.get("spatial_dims", 2)))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise InvalidArchitecture(f"malformed architecture JSON ({type(e).__name__}: {e}); "
                                      "export a valid one with `smash-tui export`") from None
        validate(arch)
        return arch

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidArchitecture(f"architecture is not valid JSON: {e}") from None
        except RecursionError:
            raise InvalidArchitecture("architecture JSON is nested too deeply to be one") from None
        if not isinstance(d, dict):
            raise InvalidArchitecture("architecture JSON must be an object with 'blocks'")
        return cls.from_dict(d)

    @property
    def n_ops(self) -> int:
        return sum(len(b.ops) for b in self.blocks)


# Past this a width, kernel or count is no network anyone trains (and would not fit a 64-bit integer column).
MAX_FIELD = 2**20


def _int(x) -> int:
    """A whole number from JSON: an int, or a float that is one; bools, text and NaN are not (ValueError)."""
    if isinstance(x, bool) or not isinstance(x, int | float) or isinstance(x, float) and not x.is_integer():
        raise ValueError(f"{x!r} is not a whole number")
    if abs(x) > MAX_FIELD:
        raise ValueError(f"{x!r} is out of range (at most {MAX_FIELD:,})")
    return int(x)


def _ints(xs, n: int | None = None) -> tuple[int, ...]:
    if not isinstance(xs, list):
        raise ValueError(f"{xs!r} is not a list")
    if n is not None and len(xs) != n:
        raise ValueError(f"{xs!r} does not have {n} entries")
    return tuple(_int(x) for x in xs)


def _block_from_dict(b: dict) -> Block:
    def conv(c: dict) -> Conv:
        kernel = _ints(c["kernel"])
        if not 2 <= len(kernel) <= 3:
            raise ValueError(f"kernel {c['kernel']!r} needs one size per axis (2 or 3)")
        return Conv(kernel, _ints(c["dilation"], len(kernel)), _int(c["groups"]))  # type: ignore[arg-type]

    ops = tuple(
        Op(_ints(o["reads"]), _ints(o["writes"]), _int(o["out_channels"]), _int(o["bottleneck"]),
           tuple(None if c is None else conv(c) for c in o["convs"]))
        for o in b["ops"])
    return Block(_int(b["in_channels"]), _int(b["bank_size"]), _int(b["n_banks"]), ops, _int(b["out_channels"]))


# -- validation ----------------------------------------------------------------------------------
def validate(arch: Architecture) -> None:
    """Raise InvalidArchitecture naming the first impossible thing (block, op and field)."""
    if arch.image_channels < 1 or arch.image_size < 1 or arch.num_classes < 2:
        raise InvalidArchitecture("image_channels, image_size must be >= 1 and num_classes >= 2")
    if arch.spatial_dims not in (2, 3):
        raise InvalidArchitecture(f"spatial_dims {arch.spatial_dims} must be 2 (images) or 3 (voxel grids)")
    if arch.stem_kernel < 1 or arch.stem_kernel % 2 == 0:
        raise InvalidArchitecture(f"stem_kernel {arch.stem_kernel} must be odd and positive")
    if not arch.blocks:
        raise InvalidArchitecture("an architecture needs at least one block")
    for i, block in enumerate(arch.blocks):
        if i + 1 < len(arch.blocks) and block.out_channels != arch.blocks[i + 1].in_channels:
            raise InvalidArchitecture(
                f"block {i} outputs {block.out_channels} channels but block {i + 1} takes "
                f"{arch.blocks[i + 1].in_channels}")
        _validate_block(i, block)


def _validate_block(i: int, b: Block) -> None:
    def bad(msg: str) -> InvalidArchitecture:
        return InvalidArchitecture(f"block {i}: {msg}")

    if b.bank_size < 1 or b.in_channels % b.bank_size:
        raise bad(f"bank size {b.bank_size} does not divide the block input width {b.in_channels}")
    if b.n_banks < b.n_input_banks:
        raise bad(f"{b.n_banks} banks cannot hold the {b.n_input_banks} banks of block input")
    written = set(range(b.n_input_banks))
    for j, op in enumerate(b.ops):
        where = f"op {j}: "
        if not op.reads or list(op.reads) != sorted(set(op.reads)):
            raise bad(where + f"reads {list(op.reads)} must be a non-empty sorted list without repeats")
        unread = [r for r in op.reads if r not in written]
        if unread:
            raise bad(where + f"reads bank {unread[0]}, which nothing has written yet")
        if not op.writes or len(set(op.writes)) != len(op.writes):
            raise bad(where + f"writes {list(op.writes)} must be a non-empty list without repeats")
        if any(w < 0 or w >= b.n_banks for w in op.writes):
            raise bad(where + f"writes {list(op.writes)} outside banks 0..{b.n_banks - 1}")
        if op.out_channels < b.bank_size or op.out_channels % b.bank_size:
            raise bad(where + f"output width {op.out_channels} is not a multiple of the bank size {b.bank_size}")
        if len(op.writes) < op.out_channels // b.bank_size:
            raise bad(where + f"output of {op.out_channels // b.bank_size} banks needs at least as many writes")
        if op.bottleneck < 1:
            raise bad(where + "bottleneck width must be positive")
        _validate_convs(op, bad, where)
        written.update(op.writes)
    missing = sorted(set(range(b.n_banks)) - written)
    if missing:
        raise bad(f"bank {missing[0]} is never written, but the block output concatenates every bank")


def _validate_convs(op: Op, bad, where: str) -> None:
    if len(op.convs) != 4:
        raise bad(where + "needs exactly four conv slots (null for an inactive one)")
    if op.pattern not in PATTERNS:
        raise bad(where + f"conv pattern {op.pattern} is not one of the 2-branch patterns {PATTERNS}")
    for n, conv in enumerate(op.convs):
        if conv is None:
            continue
        c_in = op.bottleneck if n in (0, 2) else op.out_channels
        if any(k < 1 or k % 2 == 0 for k in conv.kernel) or any(d < 1 for d in conv.dilation):
            raise bad(where + f"conv {n}: kernels {conv.kernel} must be odd and dilations {conv.dilation} >= 1")
        if conv.groups < 1 or c_in % conv.groups or op.out_channels % conv.groups:
            raise bad(where + f"conv {n}: {conv.groups} groups do not divide widths {c_in} -> {op.out_channels}")


# -- the search space ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceConfig:
    """Search-space hyper-parameters; defaults are the authors' (`paper` preset)."""

    N: int = 8  # channels per bank unit
    N_max: int = 64  # widest op output (channels); k = N_max / N bank-size choices
    depth: int = 12  # reference layers per block (sets the budget only)
    width: int = 4  # reference widening factor (budget and skeleton)
    dc: int = 2  # depth compression: 1x1 input channels per encoding slice = dc * N
    n_blocks: int = 3
    kernels: tuple[int, ...] = (3, 5, 7)
    groups: tuple[int, ...] = (1, 2, 4, 8)
    bottleneck: int = 4  # 1x1 output <= bottleneck * op output width
    max_bottleneck: int = 2  # 1x1 output <= max_bottleneck * N_max
    min_budget: float = 0.3  # block budget fraction ~ U(min_budget, max budget)
    start_budget: float = 0.5  # max budget at the start; annealed to 1.0 over the first half of training
    stem_kernel: int = 7
    # how kernel sizes open during SMASH training: linear (smallest to largest over the first half) or the
    # authors' original (3 + floor(4f), f = 2 x progress capped at 1)
    kernel_anneal: str = "linear"
    # position in c (encoding.py): each 1x1 output-row group one-hot, and each column's place within its op.
    # Without them every row of an op, and every column reading the same bank, gets an identical encoding.
    encode_position: bool = False
    # writer context in c (issue 21): each column also describes the ops that wrote the bank(s) it reads (their
    # pattern, output width and convolutions, averaged) and whether the block input did. Without it c says
    # nothing about what a read bank holds: its writers sit in other columns, often beyond the HyperNet's view.
    encode_writers: bool = False
    image_channels: int = 3
    image_size: int = 32
    num_classes: int = 100
    max_banks: int = field(default=0)  # derived in __post_init__ when 0

    def __post_init__(self) -> None:
        if self.N_max % self.N or self.N < 1:
            raise ConfigError(f"N_max {self.N_max} must be a positive multiple of N {self.N}")
        if any(self.N % g for g in self.groups):
            raise ConfigError(f"groups {self.groups} must divide N={self.N}")
        if not 1 <= self.image_channels <= 3 or not 8 <= self.image_size <= 96:
            raise ConfigError("image channels must be 1..3 and image size 8..96")
        if self.kernel_anneal not in ("linear", "original"):
            raise ConfigError(f"unknown kernel schedule {self.kernel_anneal!r}; choose linear or original")
        if self.max_banks == 0:
            object.__setattr__(self, "max_banks", max(self.widths) // self.N)

    @property
    def k(self) -> int:
        return self.N_max // self.N

    @property
    def base(self) -> int:
        return 2 * self.N

    @property
    def in_channels(self) -> tuple[int, ...]:
        """Block input widths: the stem output, then each transition's output (the original's rule)."""
        chans = [self.base * self.width]
        for i in range(self.n_blocks - 1):
            chans.append(max(self.base, self.widths_for(chans[i], i) // 2 // self.base * self.base))
        return tuple(chans)

    def widths_for(self, c_in: int, i: int) -> int:
        if i == self.n_blocks - 1:
            return max(4 * self.base * self.width, c_in + self.base * self.width)
        return c_in + 2 * self.base * self.width

    @property
    def widths(self) -> tuple[int, ...]:
        """Largest block output (memory) width per block."""
        return tuple(self.widths_for(c, i) for i, c in enumerate(self.in_channels))

    @property
    def budgets(self) -> tuple[int, ...]:
        """Full budget per block in 1x1 input channels (WRN-D-W-like: in + D * layer width)."""
        return tuple(c + self.depth * (2**i * self.base * self.width) for i, c in enumerate(self.in_channels))

    @property
    def slice_channels(self) -> int:
        return self.dc * self.N

    @property
    def max_bottleneck_channels(self) -> int:
        return self.max_bottleneck * self.N_max

    def bank_sizes(self, i: int) -> tuple[int, ...]:
        """Allowed bank sizes (channels) in block i: multiples of N dividing its input, at most N_max."""
        c_in = self.in_channels[i]
        sizes = []
        for u in range(1, self.k + 1):
            bs = u * self.N
            # odd-unit banks need >= dc input banks so that an op can read whole slices
            if c_in % bs == 0 and (u % self.dc == 0 or c_in // bs >= self.dc // math.gcd(u, self.dc)):
                sizes.append(bs)
        return tuple(sizes)

    def op_bottleneck(self, n_in: int, out: int) -> int:
        """The original's rule: ~bottleneck x the output width, never above the input or the cap."""
        units = min(max(n_in // out, 1), self.bottleneck)
        return min(units * out, n_in, self.max_bottleneck_channels)

    def skeleton_out(self, i: int) -> int:
        return self.in_channels[i + 1] if i + 1 < self.n_blocks else self.widths[i]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpaceConfig:
        d = dict(d)
        for key in ("kernels", "groups"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


SPACE_PRESETS: dict[str, dict] = {
    "paper": {},
    "fmnist": dict(N=8, N_max=32, depth=6, width=2, kernels=(3, 5), groups=(1, 2, 4), stem_kernel=3,
                   image_channels=1, image_size=32, num_classes=10),
    "quick": dict(N=4, N_max=16, depth=4, width=2, kernels=(3, 5), groups=(1, 2, 4), stem_kernel=3,
                  image_channels=1, image_size=8, num_classes=10),
    "tiny": dict(N=2, N_max=8, depth=2, width=2, n_blocks=2, kernels=(3, 5), groups=(1, 2), stem_kernel=3,
                 image_channels=1, image_size=8, num_classes=10),
}


def space_preset(name: str, **overrides) -> SpaceConfig:
    if name not in SPACE_PRESETS:
        raise ConfigError(f"unknown search-space preset {name!r}; choose one of {', '.join(SPACE_PRESETS)}")
    return SpaceConfig(**{**SPACE_PRESETS[name], **overrides})


def reshaped(arch: Architecture, channels: int | None = None, size: int | None = None, classes: int | None = None,
             spatial_dims: int | None = None, label: str = "") -> Architecture:
    """`arch` for other images: same blocks and ops, the stem takes `channels`, the classifier `classes`
    (the global average pool makes `size` free; only the transitions halve it). `label` names the images
    in the error (transfer: "cifar10's ")."""
    new = dataclasses.replace(arch, image_channels=channels or arch.image_channels,
                              image_size=size or arch.image_size, num_classes=classes or arch.num_classes,
                              spatial_dims=spatial_dims or arch.spatial_dims)
    if new.image_size >> (len(new.blocks) - 1) < 1:
        raise ConfigError(f"{label}{new.image_size} px images are too small for {len(new.blocks)} blocks")
    validate(new)
    return new
