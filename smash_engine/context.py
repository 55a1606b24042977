"""What the parts of one engine process share (`engine.py`, `commands.py`, `finals.py`): the results file's
writer, the run's identity and config, its folder, the device and the world of ranks.

Only rank 0 writes the results file; the other ranks hold a `NoWriter` and learn what rank 0 read through
`Context.agreed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from . import dist, store
from .config import RunConfig
from .dist import World

Reporter = Callable[[dict], None]


class NoWriter:
    """What ranks other than 0 write to: nothing. Only the writes every rank makes are here, so a read or
    a rank-0-only write on another rank fails loudly instead of passing silently."""

    def transaction(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()

    def heartbeat(self, run_id: int, **fields: Any) -> None:
        pass

    def add_event(self, run_id: int, level: str, message: str) -> None:
        pass

    def add_steps(self, rows: list[dict]) -> None:
        pass

    def add_arch(self, *args: Any) -> None:
        pass

    def add_score(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update_final(self, final_id: int, **fields: Any) -> None:
        pass

    def queue_verifications(self, run_id: int, rows: list, epochs: int, images: int) -> None:
        pass

    def set_verification(self, run_id: int, arch_id: str, status: str, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Context:
    w: store.Writer | NoWriter
    run_id: int
    uid: str
    cfg: RunConfig
    dir: Path  # the run folder: checkpoints, finals' weights
    device: torch.device
    world: World
    report: Reporter  # progress for a headless run's terminal (a no-op on ranks other than 0)

    @property
    def conn(self):
        """The results file (rank 0 only)."""
        assert isinstance(self.w, store.Writer), "only rank 0 reads the results file"
        return self.w.conn

    def agreed(self, read: Callable[[], Any]) -> Any:
        """`read()` on rank 0 (the only one with the results file and checkpoints), its value on every rank."""
        return dist.agree(self.world, read() if self.world.main else None)

    def event(self, level: str, message: str) -> None:
        self.w.add_event(self.run_id, level, message)

    def set(self, **fields: Any) -> None:
        self.w.heartbeat(self.run_id, **fields)


class EngineView(Protocol):
    """What `commands.py` and `scoring.py` use of the engine they serve (`engine.Engine`)."""

    ctx: Context
    phase: str
    step: int
    smash: Any  # train.Smash, once the run is prepared
    val: Any  # data.DeviceData: the held-out split architectures are scored on
    calib: list[torch.Tensor] | None
    no_hyper: str | None
    commands: Any  # commands.Commands
    finals: Any  # finals.Finals
    scorer: Any  # scoring.Scorer
    budget: Any  # budget.Budget: what every scored architecture must fit

    def count(self, source: str) -> int: ...

    def checkpoint(self) -> None: ...

    def status_fields(self) -> dict: ...

    def budget_event(self, stage: str, what: str, rejected: int, archs: list) -> None: ...
