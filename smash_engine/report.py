"""Plain progress lines (headless runs whose output is not a terminal, and engines under torchrun), and the
lines that say what a search found (`pick_line`, `pick_summary`)."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable

PLAIN_EVERY_S = 5.0


def data_line(data: dict) -> str:
    """A user's dataset (a run's `extra["data"]`, userdata.py) in one line: where, how many, shape, class names."""
    names = data["class_names"]
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    size = data["image_size"]
    return (f"images: {data['kind']} {data['path']}: {data['n_train']:,} train and {data['n_test']:,} test, "
            f"{data['channels']}x{size}x{size}, {len(names)} classes: {shown}")


def detail(info: dict) -> str:
    """The figures of a progress report, each named: SMASH error while scoring, test error in final training."""
    parts = []
    if info.get("final") is not None:
        parts.append(f"#{info['final']} {str(info.get('arch', ''))[:8]}".rstrip())
    elif info.get("stage") and info["stage"] != info["phase"]:
        parts.append(str(info["stage"]))  # refine's perturb and hill-climb stages share one count
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.3f}")
    if info.get("error") is not None:
        name = info.get("error_name") or ("SMASH err" if info["phase"] in ("rank", "refine", "sample") else "err")
        parts.append(f"{name} {100 * info['error']:.1f}%")
    if info.get("images_per_s"):
        parts.append(f"{info['images_per_s']:.0f} img/s")
    return "  ".join(parts)


def _clock(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def plain_reporter(stream=None) -> Callable[[dict], None]:
    """A line per phase change, per finished phase, per pause or continue, and at most every PLAIN_EVERY_S
    seconds otherwise; each with the phase's elapsed time and, once it has progressed, an estimate of the rest."""
    stream = stream or sys.stderr
    last: dict = {"at": 0.0, "phase": None, "since": time.monotonic(), "first": 0}

    def report(info: dict) -> None:
        now = time.monotonic()
        if info.get("note"):
            print(f"{info['phase']}: {info['note']}", file=stream, flush=True)
            return
        if info["phase"] != last["phase"]:  # the phase's clock starts at its first report
            last.update(phase=info["phase"], since=now, first=info.get("done", 0), at=0.0)
        finished = info.get("total") and info.get("done") == info.get("total")
        if finished or now - last["at"] >= PLAIN_EVERY_S or last["at"] == 0.0:
            last["at"] = now
            total, done = info.get("total"), info.get("done", 0)
            spent = now - last["since"]
            clock = f"  {_clock(spent)}"
            if total and done > last["first"] and not finished:
                clock += f" ETA {_clock(spent / (done - last['first']) * (total - done))}"
            print(f"{info['phase']} {done}/{total or '?'} {detail(info)}".rstrip() + clock, file=stream, flush=True)

    return report

def _error(err: float | None, n: int | None, split: str) -> str:
    if err is None:
        return f"{split} -"
    return f"{split} {100 * err:.2f}%" + (f" ({round(err * n):,}/{n:,})" if n else "")


def pick_line(p: dict, n_scored: int | None = None, id_len: int = 16) -> str:
    """The run's pick (`store.pick`) in one line, every figure named (validation and test error with the
    wrong/total images of each split): the UI header, the run's events and message."""
    rank = "not scored by SMASH" if p["smash_rank"] is None else \
        f"SMASH rank {p['smash_rank']}" + (f"/{n_scored}" if n_scored else "")
    return (f"pick {p['arch_id'][:id_len]}: {_error(p['val_error'], p.get('val_images'), 'validation')}, "
            f"{_error(p['test_error'], p.get('test_images'), 'test')}; {rank}; {p['params'] or 0:,} params")


def no_pick_line(top: dict | None) -> str:
    """Before a final training finishes: no pick, and SMASH's first place (`top`, a leaderboard row) if any."""
    if top is None:
        return "nothing scored yet: no pick"
    return (f"no final training has finished, so no pick yet; SMASH's first place is {top['arch_id']} "
            f"(SMASH error {100 * top['smash_error']:.2f}%)")


def pick_summary(db: str, p: dict | None, top: dict | None, n_scored: int | None = None) -> list[str]:
    """What a finished search found, for the end of a headless run and `smash-tui show`: the pick (`store.pick`)
    with its errors and split sizes, SMASH rank, size, weights and the commands that take it home; before a
    final finishes, SMASH's first place (`top`, a leaderboard row) and how to train it."""
    if p is None:
        if top is None:
            return [no_pick_line(None)]
        return [no_pick_line(top), f"  train it: smash-tui control {db} final {top['arch_id']}"]
    mflops = (p["flops"] or 0) / 1e6
    epochs = f"{p['epochs']} epoch{'s' if p['epochs'] != 1 else ''}"
    return [f"{pick_line(p, n_scored)}; {mflops:.2f} MFLOPs; final training #{p['final_id']}, {epochs}",
            f"  weights: {p['weights_path']}",
            f"  export:  smash-tui export {db} --arch best -o {p['arch_id']}.json --weights",
            f"  load:    python -c \"from smash_engine import api; print(api.load_model('{db}'))\""]


def hyper_label(run: dict) -> str:
    """Which HyperNet a run trains, from its stored config (no torch): "graph", or the paper's convolutional
    one, with "+gains" where it sets c-set gains (hypernet.HYPER_PRESETS)."""
    return _hyper_label(run.get("config_json") or "{}")


@functools.lru_cache(maxsize=8)
def _hyper_label(config_json: str) -> str:
    # the UI header asks on every redraw; a run's config never changes, so parse it once
    try:
        h = json.loads(config_json).get("hyper", {})
    except ValueError:
        return "?"
    return f"{h.get('kind', 'conv')}{'+gains' if h.get('gains') and h.get('kind', 'conv') == 'conv' else ''}"
