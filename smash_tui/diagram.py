"""Plain-text memory-bank diagram of an architecture (used by `smash-tui show --arch` and the UI).

Per block: a header, then one row per op. Bank columns, one character each: R the op reads that bank,
W writes (adds to) it, B both, a dot neither. Then the widths (1x1 input > bottleneck > output) and the
active convolutions: branch A = conv0 then conv1, branch B = conv2 then conv3, each as KHxKW, with
`dH,W` for a dilation other than 1 and `/G` for groups.
"""

from __future__ import annotations

from smash_engine.cost import summary
from smash_engine.space import Architecture, Conv, Op

LEGEND = "R read  W write (add)  B both  . untouched; widths: in>1x1>out; A=conv0>conv1  B=conv2>conv3"


def conv_text(c: Conv) -> str:
    s = f"{c.kernel[0]}x{c.kernel[1]}"
    if c.dilation != (1, 1):
        s += f"d{c.dilation[0]},{c.dilation[1]}" if c.dilation[0] != c.dilation[1] else f"d{c.dilation[0]}"
    return s + (f"/{c.groups}" if c.groups > 1 else "")


def op_text(op: Op) -> str:
    a = ">".join(conv_text(c) for c in op.convs[:2] if c)
    b = ">".join(conv_text(c) for c in op.convs[2:] if c)
    return f"A {a}" + (f"  B {b}" if b else "")


def bank_strip(op: Op, n_banks: int, ascii_only: bool = False) -> str:
    dot = "." if ascii_only else "·"
    reads, writes = set(op.reads), set(op.writes)
    return "".join("B" if i in reads and i in writes else "R" if i in reads else "W" if i in writes else dot
                   for i in range(n_banks))


def diagram(arch: Architecture, width: int = 80, ascii_only: bool = False) -> list[str]:
    """Lines of at most `width` characters (longer op descriptions are cut with an ellipsis)."""
    ell = "..." if ascii_only else "…"
    lines = [f"architecture {arch.id}: {arch.n_ops} ops, {len(arch.blocks)} blocks, "
             f"{arch.image_channels}x{'x'.join([str(arch.image_size)] * arch.spatial_dims)} in"
             f"{' (3-D)' if arch.spatial_dims == 3 else ''}, {arch.num_classes} classes"]
    for i, b in enumerate(arch.blocks):
        new = b.n_banks - b.n_input_banks
        lines.append(f"block {i}: {b.in_channels} ch in as {b.n_input_banks} banks of {b.bank_size} ch"
                     f" + {new} new = {b.n_banks} banks ({b.width} ch) -> {b.out_channels} ch")
        digits = len(str(max(b.n_banks - 1, 0)))
        index = "".join(str(n % 10) for n in range(b.n_banks))
        lines.append(f"  {'op':>3} {index}" + (f"   (bank index mod 10, {digits} digits)" if b.n_banks > 10 else ""))
        for j, op in enumerate(b.ops):
            n_in = len(op.reads) * b.bank_size
            text = (f"  {j:>3} {bank_strip(op, b.n_banks, ascii_only)} "
                    f"{n_in}>{op.bottleneck}>{op.out_channels} {op_text(op)}")
            lines.append(text if len(text) <= width else text[:width - len(ell)] + ell)
    return [line[:width] for line in lines]


def summary_lines(arch: Architecture) -> list[str]:
    """A model summary (torchinfo's shape): parameters, FLOPs and output shape of each part, then totals."""
    parts = summary(arch)
    lines = [f"{'part':<13}{'ops':>4}{'params':>10}{'MFLOPs':>9}  output"]
    for p in parts:
        ops = str(p.ops) if p.name.startswith("block") else ""
        shape = "x".join(map(str, p.out_shape))
        lines.append(f"{p.name:<13}{ops:>4}{p.params:>10,}{p.flops / 1e6:>9.2f}  {shape}")
    total_p, total_f = sum(p.params for p in parts), sum(p.flops for p in parts)
    lines.append(f"{'total':<13}{arch.n_ops:>4}{total_p:>10,}{total_f / 1e6:>9.2f}")
    return lines
