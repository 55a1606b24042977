"""A graph HyperNet: message passing over the architecture's op graph, then decoders that
generate every weight an op uses (`--hyper graph`; the paper's convolutional HyperNet stays `small`/`paper`).

Why: the paper's HyperNet collapses to one average 1x1 tile per op within the first epoch (probes.py). Its
1x1s are ~6% of an op's weights, the shared kxk convs fix what every bank channel means, and a column of c
says nothing about the ops that wrote the banks it reads. Following GHN (Zhang et al. 2019) and GHN-2
(Knyazev et al. 2021):

- **Nodes** are ops. Their features are the op's fields of `c` (read banks pooled over its columns) and its
  bottleneck, so a corrupted `c` (`study corrupt`, `probes.collapse`) changes the graph and the weights
  exactly as it would for the convolutional HyperNet: nothing is read from `plan.arch`.
- **Edges** run from each op to the later ops of its block that read a bank it writes (both directions), plus
  a virtual edge from every op to the mean of its block (GHN-2's virtual edges, in their cheapest form).
  `rounds` rounds of residual message passing with LayerNorm.
- **Decoders**: each column of `c` (dc*N of an op's 1x1 input channels) gets its 1x1 tile from the op's
  node state, the mean state of the ops that wrote the banks the column reads (a learned "block input"
  state for input banks) and the column's place in the op; the layout of the result is the convolutional
  HyperNet's, so SmashNet, the probes and the ablations read it unchanged. Each op's 1x1 is divided by its
  norm as before, then scaled per output channel by c-set gains; its kxk convs are a linear decoding of a
  `templates`-dimensional code per conv: the SmashNet's shared convs become `templates` tensors of the
  same max size (the decoder's columns), sliced per op as before, mixed by the code, and scaled per output
  channel by the gains. So `c` sets every weight an op uses, not 6% of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .encoding import ArchPlan, Layout
from .space import SpaceConfig


class GraphHyperNet(nn.Module):
    def __init__(self, space: SpaceConfig, hidden: int = 32, rounds: int = 3, templates: int = 4):
        super().__init__()
        self.space, self.layout = space, Layout(space)
        self.offsets = self.layout.offsets()
        self.templates = templates
        D = hidden
        feats = self.offsets["total"] + 1  # the op's fields, then its bottleneck
        self.embed = nn.Sequential(nn.Linear(feats, D), nn.LeakyReLU(0.02), nn.Linear(D, D))
        self.rounds = nn.ModuleList(nn.Sequential(nn.Linear(4 * D, D), nn.LeakyReLU(0.02), nn.Linear(D, D))
                                    for _ in range(rounds))
        self.norms = nn.ModuleList(nn.LayerNorm(D) for _ in range(rounds))
        self.input_state = nn.Parameter(torch.zeros(D))  # what a block input bank "was written by"
        # the column's place within its op (0..): small banks share a column, big ones span several
        self.max_cols = max(1, space.max_banks * space.N_max // space.slice_channels)
        self.column = nn.Embedding(self.max_cols, D)
        B, dcN = space.max_bottleneck_channels, space.slice_channels
        self.tile = nn.Sequential(nn.Linear(3 * D, 2 * D), nn.LeakyReLU(0.02), nn.Linear(2 * D, B * dcN))
        self.n_gains = B + 4 * space.N_max
        self.gains = nn.Linear(D, self.n_gains)
        self.mix = nn.Linear(D, 4 * templates)
        # start near the fixed-norm HyperNet (gains 1, every template weighted alike) but c-dependent
        nn.init.normal_(self.gains.weight, std=0.01)
        nn.init.zeros_(self.gains.bias)
        nn.init.normal_(self.mix.weight, std=0.1 / math.sqrt(D))
        nn.init.constant_(self.mix.bias, 1.0 / math.sqrt(templates))
        nn.init.normal_(self.input_state, std=1.0)

    # -- the graph, from the plan's packed columns (so from c) ------------------------------------------
    def _graph(self, plan: ArchPlan):
        p = plan._packed.float()
        off, s = self.offsets, self.space
        n_ops = len(plan.op_in)
        first = torch.as_tensor(plan.op_start // plan.slice_channels, device=p.device)
        op = plan.slice_op
        fields = p[:, :off["total"]]
        on = (fields > 0).float()
        read = torch.zeros(n_ops, s.max_banks, device=p.device).index_add_(
            0, op, on[:, off["read"]:off["read"] + s.max_banks]).clamp(max=1)
        x = fields[first].clone()
        x[:, off["read"]:off["read"] + s.max_banks] = 2 * read - 1
        x = torch.cat([x, (p[first, -2] * s.N / s.max_bottleneck_channels)[:, None]], 1)
        write = on[first, off["write"]:off["write"] + s.max_banks]
        blk = on[first, off["block"]:off["block"] + s.n_blocks]
        same = blk @ blk.T  # (n_ops, n_ops)
        earlier = torch.ones(n_ops, n_ops, device=p.device).tril(-1)  # [j, i] = 1 where i < j
        before = same * earlier  # [j, i]: i is an earlier op of j's block
        edges = ((read @ write.T) > 0).float() * before  # [j, i]: i writes a bank j reads
        # is bank b a block input bank for op j? banks 0 .. in_channels / bank_size - 1
        in_ch = torch.tensor(s.in_channels, device=p.device, dtype=torch.float32)[blk.argmax(1)]
        bank = (on[first, off["bank"]:off["bank"] + s.k].argmax(1) + 1).float() * s.N
        is_input = (torch.arange(s.max_banks, device=p.device)[None, :] < (in_ch / bank)[:, None]).float()
        writers = before[:, None, :] * write.T[None, :, :]  # [j, b, i]: earlier op i of j's block writes b
        return x, same, edges, writers, is_input

    def states(self, plan: ArchPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """(node states (n_ops, D), each bank's writer state per op (n_ops, max_banks, D))."""
        x, same, edges, writers, is_input = self._graph(plan)
        h = self.embed(x)

        def mean(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return (a @ v) / a.sum(1, keepdim=True).clamp(min=1)

        for mlp, norm in zip(self.rounds, self.norms, strict=True):
            h = norm(h + mlp(torch.cat([h, mean(edges, h), mean(edges.T, h), mean(same, h)], 1)))
        count = writers.sum(2) + is_input  # (n_ops, max_banks)
        bank_state = (torch.einsum("jbi,id->jbd", writers, h) + is_input[..., None] * self.input_state) \
            / count.clamp(min=1)[..., None]
        return h, bank_state

    def generate(self, plan: ArchPlan):
        """(1x1 matrix as `HyperNet.op_weights`, gains (n_ops, max_bottleneck + 4 N_max), mix (n_ops, 4, T))."""
        if len(plan.op_in) == 0:
            return plan.c.new_zeros(0, 0, dtype=torch.float32), None, None
        h, bank_state = self.states(plan)
        p = plan._packed.float()
        off, s = self.offsets, self.space
        op = plan.slice_op
        cols_read = (p[:, off["read"]:off["read"] + s.max_banks] > 0).float()  # (S, max_banks)
        ctx = torch.einsum("sb,sbd->sd", cols_read, bank_state[op]) / cols_read.sum(1, keepdim=True).clamp(min=1)
        first = torch.as_tensor(plan.op_start // plan.slice_channels, device=p.device)
        place = (torch.arange(len(op), device=p.device) - first[op]).clamp(max=self.max_cols - 1)
        tiles = self.tile(torch.cat([h[op], ctx, self.column(place)], 1))  # (S, B * dcN)
        B, dcN = s.max_bottleneck_channels, s.slice_channels
        w = tiles.view(-1, B, dcN).permute(1, 0, 2).reshape(B, -1).float()  # (B, S * dcN)
        rows = torch.arange(B, device=w.device)[:, None] < plan.col_rows[None, :]
        col_sq = (w * w * rows).sum(0)
        op_sq = torch.zeros(len(plan.op_in), device=w.device).index_add_(0, plan.col_op, col_sq)
        w = w * op_sq.clamp(min=1e-12).rsqrt()[plan.col_op][None, :]
        gains = torch.exp(self.gains(h).float().clamp(-4, 4))
        mix = self.mix(h).float().view(-1, 4, self.templates)
        return w, gains, mix

    def op_weights(self, plan: ArchPlan) -> torch.Tensor:
        return self.generate(plan)[0]
