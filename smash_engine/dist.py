"""Several processes under `torchrun`: who we are, and the few collectives the engine needs.

Decisions (README, "Several GPUs"):
- SMASH training: every rank trains the SAME architecture each step (it is a pure function of (seed,
  step)), on its own shard of the batch, under DistributedDataParallel. This keeps the paper's semantics
  (one architecture per step) with a larger batch, and keeps parameters identical across ranks.
- Scoring (rank, refine's perturbations, `sample`): architectures are sharded over ranks (arch i on rank
  i mod W), scored without DDP, and the scores gathered to rank 0. Hill-climbing is sequential by nature:
  every rank scores the same candidate.
- Final training: one architecture at a time with DDP.
- Only rank 0 touches the results file and checkpoints; what it reads or decides (commands, positions,
  checkpoints) reaches the other ranks through `agree` and `combine_flags`.
With one process (no torchrun) every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as td


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


SINGLE = World()


def world_from_env() -> World:
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def init(world: World) -> None:
    if world.active and not td.is_initialized():
        # gloo carries the small CPU-side collectives, NCCL the gradients on GPUs; a long timeout, because
        # ranks wait in a collective while rank 0 sits in a user's pause
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        td.init_process_group(backend, timeout=datetime.timedelta(days=7))


def shutdown(clean: bool = False) -> None:
    """Tear the process group down; after a clean end (done, stopped) first wait for every rank, so that no rank
    destroys its group while another is still finishing (a rank aborted at exit under load otherwise). After a
    failure no barrier: the other ranks may be gone, and torchrun ends them anyway."""
    if td.is_initialized():
        if clean:
            td.barrier()
        td.destroy_process_group()


def agree(world: World, obj):
    """Rank 0's `obj` on every rank."""
    if not world.active:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def combine_flags(world: World, flags: list[int]) -> list[int]:
    """Element-wise max over ranks (a stop signal on any rank stops all; rank 0's commands reach all)."""
    if not world.active:
        return flags
    t = torch.tensor(flags, dtype=torch.float64)
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def mean(world: World, t: torch.Tensor) -> torch.Tensor:
    if world.active:
        td.all_reduce(t, op=td.ReduceOp.SUM)
        t /= world.size
    return t


def gather_rows(world: World, row: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's `row` (equal lengths), in rank order, on every rank."""
    if not world.active:
        return [row]
    t = torch.tensor(row, dtype=torch.float64, device=device)
    out = [torch.empty_like(t) for _ in range(world.size)]
    td.all_gather(out, t)
    return [o.tolist() for o in out]


def sync_buffers(world: World, module: torch.nn.Module) -> None:
    """Rank 0's buffers everywhere. DDP broadcasts them at the start of each forward, so after the last
    training step each rank still holds BatchNorm statistics updated from its own shard."""
    if world.active:
        for b in module.buffers():
            td.broadcast(b, src=0)
