"""The HyperNet: c -> the 1x1 weights of every op, in one forward pass.

Fully convolutional and DenseNet-like, as in the authors' code: 3x3 convolutions with "simple WeightNorm"
(each conv's weight divided by its Frobenius norm), LeakyReLU(0.02), no BatchNorm, no downsampling, so
the output grows with c. Each output position (row h, column q) is an `N x (dc*N)` tile of 1x1 weights:
output channels h*N.., input channels q*dc*N.. . One reshape turns the output into a matrix
`(R*N, S*dc*N)` = (1x1 output channel, global 1x1 input channel); each op's weight is a view of it.

Unlike the original we feed no random `z`: the paper defines W = H(c), and a fresh `z` per call made
SMASH scores noisy for no documented gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoding import ArchPlan, Layout
from .errors import ConfigError
from .space import SpaceConfig


@dataclass(frozen=True)
class HyperConfig:
    stem: int = 7  # channels the first conv adds to c
    growth: int = 10
    dense: tuple[int, ...] = (8, 10, 4)  # layers per dense stage (the original's 26 convs in all)
    compression: float = 0.5  # transitions keep this fraction of channels
    # c-set gains (issue 21): per output channel of each op's 1x1 and of its 4 convolutions, from the
    # HyperNet's features pooled over the op's positions. Off: the paper's HyperNet, where each op's 1x1 is
    # divided by its norm, so c sets its direction only and the shared kxk convs are the same for every op.
    gains: bool = False
    # "conv": the paper's HyperNet above; "graph": message passing over the op graph (graph_hyper.py), which
    # generates every weight of an op: 1x1 tiles, gains and a `templates`-dimensional code per kxk conv
    kind: str = "conv"
    hidden: int = 32  # graph: node state size
    rounds: int = 3  # graph: message-passing rounds
    templates: int = 1  # SmashNet's shared kxk convs per block and conv slot (graph: mixed per op)

    def to_dict(self) -> dict:
        return asdict(self)


# every HyperNet by name: the run presets use paper and small; tiny is for the capacity study on a run that
# already uses small; small-gains is small with c-set gains (measured on the truth panel, benchmarks/README.md)
HYPER_PRESETS = {"paper": HyperConfig(), "small": HyperConfig(stem=4, growth=4, dense=(2, 2), compression=0.5),
                 "tiny": HyperConfig(stem=2, growth=2, dense=(1, 1), compression=0.5),
                 "small-gains": HyperConfig(stem=4, growth=4, dense=(2, 2), compression=0.5, gains=True),
                 # templates=1: the kxk convs shared as in the paper, scaled by c-set gains; 4 templates mixed per op
                 # ranked *worse* on the truth panel (tau -0.21 at 3 epochs against +0.30; docs/search-quality.md)
                 "graph": HyperConfig(kind="graph", gains=True, hidden=32, rounds=3, templates=1)}


def hyper_preset(name: str) -> HyperConfig:
    if name not in HYPER_PRESETS:
        raise ConfigError(f"unknown HyperNet preset {name!r}; choose one of {', '.join(HYPER_PRESETS)}")
    return HYPER_PRESETS[name]


def make_hypernet(space: SpaceConfig, cfg: HyperConfig) -> nn.Module:
    """The HyperNet `cfg` names: both kinds have `generate(plan) -> (w, gains, mix)` and `op_weights`."""
    if cfg.kind == "graph":
        from .graph_hyper import GraphHyperNet

        return GraphHyperNet(space, cfg.hidden, cfg.rounds, cfg.templates)
    if cfg.kind != "conv" or cfg.templates != 1:
        raise ConfigError(f"HyperNet kind {cfg.kind!r} with {cfg.templates} templates is not one we build; "
                          "use a preset: " + ", ".join(HYPER_PRESETS))
    return HyperNet(space, cfg)


class _Normed(torch.autograd.Function):
    """Each of many weights divided by its Frobenius norm, forward and backward in a handful of multi-tensor
    kernels instead of ~10 per weight; with w^ = w / |w|, the gradient of w is (g - w^ <g, w^>) / |w|."""

    @staticmethod
    def forward(ctx, *ws: torch.Tensor):
        norms = torch._foreach_norm(ws)
        out = torch._foreach_div(ws, norms)
        ctx.save_for_backward(*out, *norms)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        n = len(grads)
        out, norms = ctx.saved_tensors[:n], ctx.saved_tensors[n:]
        grads = [torch.zeros_like(o) if g is None else g for g, o in zip(grads, out, strict=True)]
        dots = [p.sum() for p in torch._foreach_mul(grads, out)]
        return tuple(torch._foreach_div(torch._foreach_sub(grads, torch._foreach_mul(out, dots)), norms))


class WNConv(nn.Conv2d):
    """Conv whose weight is divided by its Frobenius norm (the original's simplified WeightNorm)."""

    def forward(self, x: torch.Tensor, normed: torch.Tensor | None = None) -> torch.Tensor:
        """`normed`: the weight already divided by its norm (`HyperNet.normed_weights`, all convs at once)."""
        w = self.weight
        w = w / w.norm() if normed is None else normed  # weights are fp32 (autocast casts them at the conv)
        return F.conv2d(x, w, None, self.stride, self.padding)


class HyperNet(nn.Module):
    def __init__(self, space: SpaceConfig, cfg: HyperConfig = HyperConfig()):
        super().__init__()
        self.space, self.layout = space, Layout(space)
        # the width of c (its columns) is rounded up to a multiple of this (1: exact), with zero columns that every
        # layer keeps zero, so the generated weights are the exact ones; set per device (train.conv_multiple): every
        # width of c is a new configuration of all of this HyperNet's convolutions for cuDNN to plan
        self.multiple = 1
        # every conv's weight norm in one `_foreach_norm` and one `_foreach_div` (~10 kernels a conv fewer, forward
        # and backward); their sums may round differently, so it is on where the net's bank state is (train.py: CUDA)
        self.fused_norm = False
        c = self.layout.channels
        self.stem = WNConv(c, cfg.stem, 3, padding=1, bias=False)
        c += cfg.stem
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for s, n_layers in enumerate(cfg.dense):
            layers = nn.ModuleList()
            for _ in range(n_layers):
                layers.append(WNConv(c, cfg.growth, 3, padding=1, bias=False))
                c += cfg.growth
            self.stages.append(layers)
            if s + 1 < len(cfg.dense):
                out = max(cfg.growth, int(c * cfg.compression))
                self.transitions.append(WNConv(c, out, 3, padding=1, bias=False))
                c = out
        self.out = WNConv(c, space.N * space.slice_channels, 1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.orthogonal_(m.weight)
        # log-gains of the 1x1's output channels and of each conv's; zero at first, so training starts from
        # the fixed-norm HyperNet
        self.gains = nn.Linear(c, space.max_bottleneck_channels + 4 * space.N_max) if cfg.gains else None
        if self.gains is not None:
            nn.init.zeros_(self.gains.weight)
            nn.init.zeros_(self.gains.bias)

    def features(self, c: torch.Tensor) -> torch.Tensor:
        """c (1, C, R, S) -> the hidden features the weights are decoded from (1, C_h, R, S)."""
        return self.padded_features(c, self.normed_weights())[..., :c.shape[-1]]

    def padded_features(self, c: torch.Tensor, normed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """`features` at c's padded width (`multiple`): zero beyond column S. `normed`: `normed_weights()`."""
        S = c.shape[-1]
        S_pad = -(-S // self.multiple) * self.multiple
        keep = None
        if S_pad != S:
            # zero columns beyond S look to each 3x3 like the zero padding past the edge, as long as they stay zero:
            # each layer's output is masked there (LeakyReLU keeps zeros), so columns < S are the exact ones
            c = F.pad(c, (0, S_pad - S))
            keep = (torch.arange(S_pad, device=c.device) < S).to(c.dtype)

        def conv(f: WNConv, x: torch.Tensor) -> torch.Tensor:
            y = f(x, None if normed is None else normed[id(f)])
            return y if keep is None else y * keep
        h = torch.cat([c, conv(self.stem, c)], 1)
        for s, layers in enumerate(self.stages):
            for layer in layers:
                h = torch.cat([h, conv(layer, F.leaky_relu(h, 0.02))], 1)
            if s < len(self.transitions):
                h = conv(self.transitions[s], F.leaky_relu(h, 0.02))
        return F.leaky_relu(h, 0.02)

    def conv_configs(self, S: int) -> list[tuple]:
        """The convolutions `features` and `decode` run for a c of width S, as a plan cache keys them:
        (batch, in channels, R, padded S, out channels, kernel, padding), in order."""
        S_pad, R = -(-S // self.multiple) * self.multiple, self.layout.rows
        return [(1, f.in_channels, R, S_pad, f.out_channels, f.kernel_size, f.padding) for f in self.wn_convs()]

    def wn_convs(self) -> list[WNConv]:
        """Every convolution, in the order `features` and `decode` run them."""
        return [self.stem, *(f for layers, *t in zip(self.stages, [*self.transitions, None], strict=True)
                             for f in [*layers, *(x for x in t if x is not None)]), self.out]

    def normed_weights(self) -> dict[int, torch.Tensor] | None:
        """With `fused_norm`, every conv's weight divided by its norm, by id(conv); None without."""
        if not self.fused_norm:
            return None
        convs = self.wn_convs()
        ws = [f.weight for f in convs]
        return {id(f): w for f, w in zip(convs, _Normed.apply(*ws), strict=True)}

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """c (1, C, R, S) -> raw weight matrix (R*N, S*dc*N)."""
        normed = self.normed_weights()
        return self.decode(self.padded_features(c, normed), normed)[:, :c.shape[-1] * self.space.slice_channels]

    def decode(self, h: torch.Tensor, normed: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        h = self.out(h, None if normed is None else normed[id(self.out)])  # (1, N*dcN, R, S)
        N, dcN = self.space.N, self.space.slice_channels
        _, _, R, S = h.shape
        # tile (o, p) at (h, q) -> matrix row h*N + o, column q*dcN + p
        return h.view(N, dcN, R, S).permute(2, 0, 3, 1).reshape(R * N, S * dcN)

    def op_weights(self, plan: ArchPlan) -> torch.Tensor:
        """Generated 1x1 weights, each op's block divided by its own Frobenius norm; ops slice views of it.

        The norms are computed for all ops at once (masked column sums, one index_add), in fp32.
        """
        return self.generate(plan)[0]

    def generate(self, plan: ArchPlan) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        """(`op_weights`, gains, mix): gains (n_ops, max_bottleneck + 4 * N_max), the 1x1's output channels
        then each conv's, or None without c-set gains; mix (the graph HyperNet's template code) is None."""
        if len(plan.op_in) == 0:  # a space whose budgets reach 0 can draw an architecture with no ops at all
            return plan.c.new_zeros(0, 0, dtype=torch.float32), None, None
        S = plan.c.shape[-1]
        normed = self.normed_weights()
        h = self.padded_features(plan.c, normed)
        w = self.decode(h, normed)[:, :S * self.space.slice_channels].float()
        h = h[..., :S]
        rows = torch.arange(w.shape[0], device=w.device)[:, None] < plan.col_rows[None, :]
        col_sq = (w * w * rows).sum(0)  # (S*dcN,)
        op_sq = torch.zeros(len(plan.op_in), device=w.device).index_add_(0, plan.col_op, col_sq)
        w = w * op_sq.rsqrt()[plan.col_op][None, :]
        return w, None if self.gains is None else self.op_gains(h, plan), None

    def op_gains(self, h: torch.Tensor, plan: ArchPlan) -> torch.Tensor:
        """Each op's gains from the mean of `h` over the positions of c it fills (its columns, its rows)."""
        R, n_ops = h.shape[2], len(plan.op_in)
        filled = (torch.arange(R, device=h.device)[:, None] < plan.slice_rows[None, :]).float()  # (R, S)
        col_sum = (h[0].float() * filled).sum(1)  # (C_h, S)
        op = plan.slice_op
        pooled = torch.zeros(n_ops, h.shape[1], device=h.device).index_add_(0, op, col_sum.T)
        count = torch.zeros(n_ops, device=h.device).index_add_(0, op, filled.sum(0).float())
        return torch.exp(self.gains(pooled / count[:, None]).clamp(-4, 4))  # (n_ops, G)


def op_weight(w: torch.Tensor, plan: ArchPlan, j: int) -> torch.Tensor:
    """Op j's normalised 1x1 weight (bottleneck, n_in, 1, 1), a view of `w` from `op_weights`."""
    a, n, b = int(plan.op_start[j]), int(plan.op_in[j]), int(plan.op_bottleneck[j])
    return w[:b, a:a + n, None, None]
