"""Engines and studies that share a CPU: each sizes its torch threads to its share of the cores.

Two default torch processes on a 2-core machine each start as many OpenMP threads as there are cores; they
preempt each other's spinning workers and each runs ~20x slower (issue 22: 15 and 13 images/s against 310
alone). Each process doing torch work (`smash-tui run`/`resume`, the detached engine, a study, a transfer)
holds a claim: a file named by its pid in one folder per user. Its thread count is the machine's cores divided
by the live claims (at least 1), rechecked every `REFRESH_S` from the training and scoring loops (`tick`),
so an engine alone uses every core and shrinks when a second one starts, and grows back when it ends. A
claim whose process is gone is removed by the next one that looks. `--threads N` fixes the count instead
(and still claims, so the others make room).

torch.set_num_threads must be called from the thread that computes (OpenMP's setting is per thread), which
is why the loops call `tick` and no background thread does.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

REFRESH_S = 2.0


def claims_folder() -> Path:
    base = os.environ.get("SMASH_TUI_CPU_CLAIMS")
    return Path(base) if base else Path(tempfile.gettempdir()) / f"smash-tui-cpu-{os.getuid()}"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


class CpuShare:
    """This process's claim on the CPU, while in its `with` block; `tick()` resizes torch's threads."""

    def __init__(self, threads: int | None = None, folder: Path | None = None):
        if threads is not None and threads < 1:
            raise ValueError("threads must be 1 or more")
        self.fixed = threads
        self.folder = folder or claims_folder()
        self.me = self.folder / str(os.getpid())
        self._checked = 0.0

    def __enter__(self) -> CpuShare:
        global _current
        self.folder.mkdir(parents=True, exist_ok=True)
        self.me.write_text(str(self.fixed or 0))
        _current = self
        self.tick(force=True)
        return self

    def __exit__(self, *exc) -> None:
        global _current
        _current = None
        self.me.unlink(missing_ok=True)

    def live_claims(self) -> int:
        """Processes holding a claim, this one included; removes the claims of processes that are gone."""
        n = 0
        for f in self.folder.iterdir():
            if not f.name.isdigit():
                continue
            if int(f.name) == os.getpid() or _alive(int(f.name)):
                n += 1
            else:
                f.unlink(missing_ok=True)
        return max(n, 1)

    def threads(self) -> int:
        return self.fixed or max(1, cores() // self.live_claims())

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        n = self.threads()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)


_current: CpuShare | None = None


def tick() -> None:
    """Called by the loops between batches: resize this process's threads if it holds a claim."""
    if _current is not None:
        _current.tick()
