"""Does the HyperNet read the architecture? Image-free measures of the 1x1 weights it generates, and the
ablations that bound what any change of those weights can buy.

- `shuffle_distance`: for each field of `c`, how far shuffling that field across ops (as `study corrupt` does,
  the network unchanged) moves each op's generated 1x1. Both are unit-norm (`HyperNet.op_weights`), so 0 means
  the field is ignored and 1.41 means unrelated weights.
- `gain_shuffle`, `gain_spread` (c-set gains only): how far a shuffled field moves an op's log-gains, and how
  much the ops of one architecture differ in them.
- `mix_shuffle`, `mix_spread` (graph HyperNet only): the same for each op's kxk template codes, relative to the
  codes' RMS (0: every op mixes its convs alike whatever c says).
- `tile_cosine`: the mean cosine similarity between the `N x dc*N` tiles of each op's 1x1 (`hypernet.py`: one
  tile per position of `c`). Near 1, the HyperNet writes one average tile wherever it is asked.
- `mean_tile` and `random_weights`: transforms of the generated weights for scoring (`train.score_plan`): each
  op's 1x1 replaced by its own mean tile, or by random weights of the same norm.

Issue 13's probes found SMASH training collapses the generated 1x1s toward one average tile (shuffle distance
0.16-0.43 at initialisation, 0.06-0.17 after 240 steps; tile cosine 0.73 -> 0.94); these record it per epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from .encoding import ArchPlan
from .hypernet import op_weight
from .space import SpaceConfig


def op_tiles(w: torch.Tensor, plan: ArchPlan, j: int) -> torch.Tensor:
    """Op j's 1x1 cut into its tiles: (tiles, N * dc*N)."""
    W = op_weight(w, plan, j)[:, :, 0, 0]  # (bottleneck, n_in)
    N, dcN = plan.N, plan.slice_channels
    b, n = W.shape
    return W.reshape(b // N, N, n // dcN, dcN).permute(0, 2, 1, 3).reshape(-1, N * dcN)


def _tile_cosine(w: torch.Tensor, plan: ArchPlan) -> list[float]:
    out = []
    for j in range(len(plan.op_in)):
        t = torch.nn.functional.normalize(op_tiles(w, plan, j).float(), dim=1)
        k = len(t)
        if k > 1:
            out.append(float(((t @ t.T).sum() - k) / (k * (k - 1))))
    return out


@torch.no_grad()
def collapse(hyper, plans: list[ArchPlan], space: SpaceConfig, seed: int, fields: tuple[str, ...]) -> dict:
    """`shuffle_distance` per field and `tile_cosine`, each the mean over the ops of `plans`."""
    from .studies.corrupt import variant_plan

    was = hyper.training
    hyper.eval()
    dist: dict[str, list[float]] = {f: [] for f in fields}
    gain_dist: dict[str, list[float]] = {f: [] for f in fields}
    cos: list[float] = []
    spread: list[float] = []
    mix_dist: dict[str, list[float]] = {f: [] for f in fields}
    mix_spread: list[float] = []
    try:
        for i, plan in enumerate(plans):
            w, g, mix = hyper.generate(plan)
            w = w.float()
            cos += _tile_cosine(w, plan)
            if g is not None and len(g) > 1:
                spread.append(float(g.log().std(0).pow(2).mean().sqrt()))
            if mix is not None and len(mix) > 1:
                mix_spread.append(float(mix.std(0).pow(2).mean().sqrt() / mix.pow(2).mean().sqrt()))
            for field in fields:
                p = variant_plan(plan, space, field, seed, i)
                if p is None:
                    continue
                w2, g2, mix2 = hyper.generate(p)
                dist[field] += [float((op_weight(w, plan, j) - op_weight(w2.float(), plan, j)).norm())
                                for j in range(len(plan.op_in))]
                if g is not None:
                    gain_dist[field] += (g.log() - g2.log()).pow(2).mean(1).sqrt().tolist()
                if mix is not None:
                    rms = mix.pow(2).mean().sqrt()
                    mix_dist[field] += ((mix - mix2).pow(2).flatten(1).mean(1).sqrt() / rms).tolist()
    finally:
        hyper.train(was)
    out = dict(shuffle_distance={f: float(np.mean(v)) if v else None for f, v in dist.items()},
               tile_cosine=float(np.mean(cos)) if cos else None)
    if getattr(hyper, "gains", None) is not None:
        # c-set gains: how much a shuffled field moves an op's log-gains (RMS over channels), and how much
        # the ops of one architecture differ in them
        out["gain_shuffle"] = {f: float(np.mean(v)) if v else None for f, v in gain_dist.items()}
        out["gain_spread"] = float(np.mean(spread)) if spread else None
    if getattr(hyper, "templates", 1) > 1:
        out["mix_shuffle"] = {f: float(np.mean(v)) if v else None for f, v in mix_dist.items()}
        out["mix_spread"] = float(np.mean(mix_spread)) if mix_spread else None
    return out


def mean_tile(w: torch.Tensor, plan: ArchPlan) -> torch.Tensor:
    """Every op's 1x1 made of copies of its own mean tile, at the op's norm (1)."""
    out = torch.zeros_like(w)
    N, dcN = plan.N, plan.slice_channels
    for j in range(len(plan.op_in)):
        view = op_weight(out, plan, j)[:, :, 0, 0]  # (bottleneck, n_in), a view of `out`
        block = op_tiles(w, plan, j).mean(0).view(N, dcN).repeat(view.shape[0] // N, view.shape[1] // dcN)
        view.copy_(block / block.norm())
    return out


def random_weights(seed: int):
    """A transform giving each op random 1x1 weights of its norm (1), drawn from `seed`."""
    def transform(w: torch.Tensor, plan: ArchPlan) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        out = torch.zeros_like(w)
        for j in range(len(plan.op_in)):
            view = op_weight(out, plan, j)[:, :, 0, 0]  # (bottleneck, n_in), a view of `out`
            r = torch.randn(view.shape, generator=gen).to(w)
            view.copy_(r / r.norm())
        return out

    return transform


def describe(m: dict) -> str:
    """One line for the run's events."""
    moved = ", ".join(f"{f} {v:.3f}" for f, v in m["shuffle_distance"].items() if v is not None)
    cos = "n/a" if m["tile_cosine"] is None else f"{m['tile_cosine']:.3f}"
    line = f"generated 1x1s: moved by a shuffled field of c {moved} (1.41 = unrelated); tile cosine {cos}"
    if m.get("gain_shuffle"):
        gains = ", ".join(f"{f} {v:.3f}" for f, v in m["gain_shuffle"].items() if v is not None)
        line += f"; log-gains moved {gains}, spread over ops {m['gain_spread']:.3f}"
    if m.get("mix_shuffle"):
        mix = ", ".join(f"{f} {v:.3f}" for f, v in m["mix_shuffle"].items() if v is not None)
        line += f"; conv codes moved {mix} (of their RMS), spread over ops {m['mix_spread']:.3f}"
    return line
