"""Plain progress lines (headless runs whose output is not a terminal, and engines under torchrun)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

PLAIN_EVERY_S = 5.0


def detail(info: dict) -> str:
    parts = []
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.3f}")
    if info.get("error") is not None:
        parts.append(f"err {100 * info['error']:.1f}%")
    if info.get("images_per_s"):
        parts.append(f"{info['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def plain_reporter(stream=None) -> Callable[[dict], None]:
    """A line per phase change, per finished phase, and at most every PLAIN_EVERY_S seconds otherwise."""
    stream = stream or sys.stderr
    last = {"at": 0.0, "phase": None}

    def report(info: dict) -> None:
        now = time.monotonic()
        finished = info.get("total") and info.get("done") == info.get("total")
        if info["phase"] != last["phase"] or finished or now - last["at"] >= PLAIN_EVERY_S:
            last.update(at=now, phase=info["phase"])
            total = info.get("total") or "?"
            print(f"{info['phase']} {info.get('done', 0)}/{total} {detail(info)}".rstrip(), file=stream, flush=True)

    return report
