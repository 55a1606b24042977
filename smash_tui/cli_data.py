"""A user's own images on the command line (`run` and `final` with `--dataset folder|npz`): reading them with
progress on stderr, and what was found or changed said in plain lines (userdata.py does the reading)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from smash_engine.errors import ConfigError
from smash_engine.report import data_line

# userdata.KINDS (a test holds them equal), here without importing numpy: `ls` and `show` start fast
USER_KINDS = ("folder", "npz")


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def progress_line(every_s: float = 1.0):
    """A (done, total, images/s) callback printing `decode D/T (R images/s)` at most every `every_s`, and at the end."""
    last = [0.0]

    def report(done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            say(f"decode {done:,}/{total:,} images ({rate:,.0f} images/s)")

    return report


def check_user_options(dataset: str | None, image_size: int | None, test_fraction: float | None,
                       skip_bad: bool) -> None:
    if dataset not in USER_KINDS and (image_size is not None or test_fraction is not None or skip_bad):
        raise ConfigError("--image-size, --test-fraction and --skip-bad apply to a user's images: --dataset folder "
                          "or npz")
    if dataset == "npz" and (test_fraction is not None or skip_bad):
        raise ConfigError("--test-fraction and --skip-bad apply to --dataset folder; an npz file holds its own test "
                          "split (x_test, y_test)")


def user_data(dataset: str, data_dir: str | None, image_size: int | None, default_size: int,
              test_fraction: float | None, skip_bad: bool, cache_dir: Path,
              workers: int | None = None) -> tuple[dict, list[str]]:
    """The spec of a user's dataset (userdata.prepare), a folder decoded into `cache_dir` at `image_size` (else
    `default_size`) by `workers` processes (`--threads`; default one per core), with progress on stderr; and
    what was said, for the run's event log (the last decode line, the notes, the summary)."""
    from smash_engine.userdata import prepare

    notes: list[str] = []
    show = progress_line()

    def progress(done: int, total: int, rate: float) -> None:
        show(done, total, rate)
        if done == total:
            notes.append(f"decode {total:,} images ({rate:,.0f} images/s)")

    def note(line: str) -> None:
        say(line)
        notes.append(line)

    fraction = 0.2 if test_fraction is None else test_fraction
    spec = prepare(dataset, data_dir, image_size=image_size or default_size, test_fraction=fraction,
                   skip_bad=skip_bad, cache_dir=cache_dir, say=note, progress=progress,
                   workers=workers)
    if dataset == "npz" and image_size is not None and spec["image_size"] != image_size:
        raise ConfigError(f"{spec['path']} holds {spec['image_size']} px images, used as they are: leave out "
                          f"--image-size {image_size} (a folder of images, --dataset folder, is resized)")
    note(data_line(spec))
    return spec, notes
