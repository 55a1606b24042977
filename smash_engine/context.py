"""What the parts of one engine process share (`engine.py`, `commands.py`, `finals.py`): the results file's
writer, the run's identity and config, its folder, the device and the world of ranks.

Only rank 0 writes the results file; the other ranks hold a `NoWriter` and learn what rank 0 read through
`Context.agreed`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from . import dist, store
from .config import RunConfig
from .dist import World

Reporter = Callable[[dict], None]


class NoWriter(store.Writer):
    """What ranks other than 0 write to: nothing. It is a `Writer`, so the writes every rank makes keep the real
    signatures (mypy checks each override against `Writer`, tests/engine/test_dist.py compares them and runs every
    phase under torchrun). It has no connection: a read or a rank-0-only write on another rank fails loudly
    (AttributeError: no `conn`) instead of passing silently."""

    def __init__(self) -> None:  # no results file on this rank
        self.path = ""

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return contextlib.nullcontext()  # type: ignore[return-value]  # nothing is read through it

    def heartbeat(self, run_id: int, **fields: Any) -> None:
        pass

    def add_event(self, run_id: int, level: str, message: str) -> int:
        return 0

    def add_steps(self, rows: list[dict[str, Any]]) -> None:
        pass

    def add_arch(self, run_id: int, arch_id: str, spec_json: str | dict[str, Any], source: str,
                 parent_id: str | None, params: int | None, flops: int | None, n_ops: int | None,
                 depth: int | None) -> None:
        pass

    def add_score(self, run_id: int, arch_id: str, smash_error: float | None, smash_loss: float | None,
                  n_images: int | None, hypernet_step: int | None, status: str = "ok", reason: str | None = None,
                  source: str | None = None) -> int:
        return 0

    def update_final(self, final_id: int, **fields: Any) -> None:
        pass

    def queue_verifications(self, run_id: int, rows: list[tuple[str, int, str]], rung: int, epochs: int,
                            images: int, seeds: int = 1) -> None:
        pass

    def set_verification(self, run_id: int, arch_id: str, rung: int, status: str, val_error: float | None = None,
                         val_loss: float | None = None, seconds: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Context:
    w: store.Writer  # a NoWriter on ranks other than 0
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
        assert not isinstance(self.w, NoWriter), "only rank 0 reads the results file"
        return self.w.conn

    def agreed(self, read: Callable[[], Any]) -> Any:
        """`read()` on rank 0 (the only one with the results file and checkpoints), its value on every rank."""
        return dist.agree(self.world, read() if self.world.main else None)

    def event(self, level: str, message: str) -> None:
        self.w.add_event(self.run_id, level, message)

    def set(self, **fields: Any) -> None:
        self.w.heartbeat(self.run_id, **fields)


class EngineView(Protocol):
    """What `commands.py`, `scoring.py`, `ranking.py` and `verify.py` use of the engine they serve
    (`engine.Engine`)."""

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

    train: Any  # data.DeviceData: the training split
    total_steps: int  # SMASH training's steps

    def count(self, source: str) -> int: ...

    def enter(self, phase: str) -> None: ...

    def top(self, n: int) -> list[dict]: ...

    def queue_finals_and_enter(self, arch_ids: list[str]) -> None: ...

    def checkpoint(self) -> None: ...

    def status_fields(self) -> dict: ...

    def budget_event(self, stage: str, what: str, rejected: int, archs: list) -> None: ...
