"""Start a detached engine for a results file (used by the CLI and the UI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def spawn_engine(db: Path) -> int:
    """Start the engine in its own session so that it outlives the UI, the terminal and the SSH connection.
    Its output goes to `<run dir>/engine.log`; returns its pid."""
    log = Path(db).with_suffix("") / "engine.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "smash_engine.engine", str(db)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=os.getcwd())
    return proc.pid
