"""What the `smash-tui` command modules share (`cli.py`, `cli_studies.py`): checking a results file
exists, and formatting for the terminal. Imports neither of them, so neither imports the other back."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from smash_engine.errors import ConfigError, ResultsFileError
from smash_engine.store.files import file_version

# the largest count, size or length an option takes: past it a typo, and past 2**63 not even storable
BIG = 10**9


def require_db(db: Path) -> None:
    if not db.exists():
        raise ResultsFileError(f"{db} does not exist; list runs with `smash-tui ls`")
    if not db.is_file() or db.stat().st_size == 0:  # sqlite would take an empty file for a new database
        raise ResultsFileError(f"{db} is not a results file (empty, or not a file); list runs with `smash-tui ls`")
    file_version(str(db))  # what is not ours (random bytes, a truncated file, another program's database) stops here


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def term_width() -> int:
    return os.get_terminal_size().columns if sys.stdout.isatty() else 80


def check_threads(n: int | None) -> None:
    if n is not None and n < 1:
        raise ConfigError(f"--threads must be 1 or more, got {n}; leave it out to take a share of the cores")
