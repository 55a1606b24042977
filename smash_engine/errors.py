"""The error tree. Every message says what was wrong and what to do about it.

`smash_tui/cli.py` alone turns a `SmashError` into one stderr line and an exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import os


class SmashError(Exception):
    """A mistake a user can fix; the message is shown as is."""

    exit_code = 2


class InvalidArchitecture(SmashError):
    """An architecture that cannot be built (reads an empty bank, widths not divisible, ...)."""


class ConfigError(SmashError):
    """Unknown preset, dataset or device; a non-positive count; an impossible option."""


class DatasetError(SmashError):
    """A dataset that is missing, incomplete or corrupt on disk."""

    @classmethod
    def corrupt(cls, path: str | os.PathLike[str], what: str) -> DatasetError:
        """A file that is there but cannot be read; `what` says how (see `one_line`)."""
        return cls(f"{path} is corrupt ({what}); delete it and fetch the dataset again")


class ResultsFileError(SmashError):
    """A path that is not a results file, a newer schema, a read-only file, an unknown id."""


class EngineBusy(SmashError):
    """Another engine is already writing this results file."""

    exit_code = 3


def one_line(e: BaseException) -> str:
    """`Type: message` with the message's whitespace collapsed, to quote an exception in a one-line error."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


MAX_COUNT = 1_000_000  # architectures one `sample` asks for, epochs of one final: past it, a typo


def whole_count(value: object, what: str) -> int:
    """A count a person gave (`control` on the command line, or a command's `args_json` the engine reads): a
    whole number from 1 to MAX_COUNT, or a one-line ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{what} must be a whole number, got {value!r}")
    try:
        n = int(value)
        exact = float(value) == n
    except (ValueError, OverflowError):
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if not exact or not 0 < n <= MAX_COUNT:
        raise ConfigError(f"{what} must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}")
    return n
