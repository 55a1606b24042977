"""Start a detached engine for a results file (used by the CLI and the UI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def engine_command(db: Path, nproc: int = 1, progress: bool = False, threads: int | None = None) -> list[str]:
    """The engine's command line: one process, or `torchrun --standalone` with `nproc` ranks."""
    cmd = [sys.executable, "-m", "smash_engine.engine", str(db), *(["--progress"] if progress else []),
           *([f"--threads={threads}"] if threads else [])]
    if nproc > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m",
                    "smash_engine.engine"]
    return cmd


def spawn_engine(db: Path, nproc: int = 1, threads: int | None = None) -> int:
    """Start the engine in its own session so that it outlives the UI, the terminal and the SSH connection.
    Its output goes to `<run dir>/engine.log`; returns its pid (torchrun's, with several processes)."""
    log = Path(db).with_suffix("") / "engine.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(engine_command(db, nproc, threads=threads), stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd())
    return proc.pid
