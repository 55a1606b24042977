"""UI speed: one leaderboard refresh with 10,000 scored architectures, one plot redraw with 100,000 steps.

Builds a synthetic but schema-correct results file with the engine's `Writer` (10,000 archs and scores,
100,000 train steps + 100 val steps), then times, on the real widgets inside a headless app:
  - leaderboard refresh: read the new score rows (`scores_since`), fold them into the model, sync the
    DataTable in place; a refresh brings 10 new scores, one of them a new best (so every rank shifts);
    also timed sorted by params with a filter on;
  - plot redraw: plotext build of 100,000 steps downsampled to the widget's width (80x9 and 200x25),
    and the incremental read of 20 new steps.
The first load of the whole history is reported too (it happens once per opening). Medians over repeats,
after a warm-up. Target: < 50 ms each. Writes benchmarks/results/ui-<date>.json (or under --out).

    .venv/bin/python benchmarks/bench_ui.py [--archs 10000] [--steps 100000] [--repeats 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)
from textual.app import App  # noqa: E402

from smash_engine import store  # noqa: E402
from smash_tui.widgets.board_model import parse_filter  # noqa: E402
from smash_tui.widgets.leaderboard import Leaderboard  # noqa: E402
from smash_tui.widgets.loss_plot import LossPlot  # noqa: E402


def make_file(path: Path, n_archs: int, n_steps: int) -> int:
    rng = random.Random(0)
    with store.connect_writer(path) as w:
        run = w.create_run("bench", {"train": {}}, "digits", "quick", "cpu", 0, n_steps)
        with w.transaction() as c:
            for i in range(n_archs):
                arch = f"{i:016x}"
                params, flops = rng.randint(50_000, 5_000_000), rng.randint(1_000_000, 500_000_000)
                c.execute("INSERT INTO archs VALUES (?, ?, '{}', 'random', NULL, ?, ?, 16, 16, ?)",
                          (arch, run, params, flops, store.now_iso()))
                c.execute("INSERT INTO scores (run_id, arch_id, smash_error, smash_loss, n_images, hypernet_step,"
                          " source, scored_at) VALUES (?, ?, ?, 1.0, 300, 0, 'random', ?)",
                          (run, arch, rng.uniform(0.2, 0.9), store.now_iso()))
        for lo in range(1, n_steps + 1, 10_000):
            w.add_steps([dict(run_id=run, step=s, epoch=s // 1000, phase="train", loss=2.3 * 0.99999 ** s
                              + rng.uniform(0, 0.1), error=0.5, lr=1e-3, images_per_s=1000.0)
                         for s in range(lo, min(lo + 10_000, n_steps + 1))])
        w.add_steps([dict(run_id=run, step=s, epoch=s // 1000, phase="val", loss=1.0, error=0.4 * 0.99999 ** s)
                     for s in range(1000, n_steps + 1, 1000)])
    return run


def add_scores(path: Path, run: int, n: int, start: int) -> None:
    with store.connect_writer(path) as w, w.transaction() as c:
        for i in range(n):
            arch = f"new{start + i:013x}"
            c.execute("INSERT INTO archs VALUES (?, ?, '{}', 'sample', NULL, 100000, 2000000, 16, 16, ?)",
                      (arch, run, store.now_iso()))
            err = 0.01 if i == 0 else 0.5  # one new best per refresh: every rank below moves
            c.execute("INSERT INTO scores (run_id, arch_id, smash_error, smash_loss, n_images, hypernet_step,"
                      " source, scored_at) VALUES (?, ?, ?, 1.0, 300, 0, 'sample', ?)",
                      (run, arch, err - start * 1e-6, store.now_iso()))


def ms(t0: float) -> float:
    return 1000 * (time.perf_counter() - t0)


class Bench(App):
    def compose(self):
        yield Leaderboard(id="board")
        yield LossPlot(id="plot")


async def measure(path: Path, run: int, repeats: int) -> dict:
    out: dict = {}
    app = Bench()
    async with app.run_test(size=(200, 60)) as pilot:
        board, plot = app.query_one(Leaderboard), app.query_one(LossPlot)
        conn = store.connect_reader(path)
        t0 = time.perf_counter()
        rows = store.scores_since(conn, run, 0)
        board.model.add_scores(rows)
        board.sync()
        out["leaderboard_first_load_ms"] = ms(t0)
        await pilot.pause()
        last, read, apply, sorted_filtered = rows[-1]["id"], [], [], []
        for r in range(repeats + 1):
            add_scores(path, run, 10, 10 * r)
            t0 = time.perf_counter()
            new = store.scores_since(conn, run, last)
            t1 = time.perf_counter()
            board.model.add_scores(new)
            board.sync()
            t2 = time.perf_counter()
            last = new[-1]["id"]
            if r:  # the first is the warm-up
                read.append(1000 * (t1 - t0))
                apply.append(1000 * (t2 - t1))
            await pilot.pause()
        board.sort_by, cond = "params", parse_filter("params < 2e6")
        board.set_filter("params < 2e6", cond)
        for _ in range(repeats):
            t0 = time.perf_counter()
            board.sync()
            sorted_filtered.append(ms(t0))
        out["leaderboard_refresh_read_ms"] = statistics.median(read)
        out["leaderboard_refresh_apply_ms"] = statistics.median(apply)
        out["leaderboard_refresh_total_ms"] = statistics.median(a + b for a, b in zip(read, apply, strict=True))
        out["leaderboard_refresh_sorted_filtered_ms"] = statistics.median(sorted_filtered)
        out["leaderboard_scored_archs"] = len(board.model)

        t0 = time.perf_counter()
        steps, val = store.steps_since(conn, run, -1, "train"), store.steps_since(conn, run, -1, "val")
        out["plot_first_load_read_ms"] = ms(t0)  # in the polling thread
        t0 = time.perf_counter()
        plot.add_steps(steps, val)
        out["plot_first_load_apply_ms"] = ms(t0)  # on the event loop
        out["plot_steps"] = len(plot.train)
        for w, h in ((80, 9), (200, 25)):
            times = []
            for i in range(repeats + 1):
                plot.smooth = bool(i % 2)
                t0 = time.perf_counter()
                plot.draw(w, h)
                if i:
                    times.append(ms(t0))
            out[f"plot_redraw_{w}x{h}_ms"] = statistics.median(times)
        reads = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            store.steps_since(conn, run, len(plot.train) - 20, "train")
            reads.append(ms(t0))
        out["plot_refresh_read_20_steps_ms"] = statistics.median(reads)
        conn.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=common.RESULTS, help="folder of the JSON")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        run = make_file(path, a.archs, a.steps)
        print(f"built {path.name}: {a.archs} scored archs, {a.steps} steps in {ms(t0) / 1000:.1f} s", file=sys.stderr)
        results = asyncio.run(measure(path, run, a.repeats))
    report = {"benchmark": "ui", "machine": common.machine(),
              "versions": {"textual": version("textual"), "plotext": version("plotext")},
              "config": {**vars(a), "out": str(a.out)}, "results_ms": {k: round(v, 2) if isinstance(v, float) else v
                                                for k, v in results.items()}, "target_ms": 50}
    out = common.save_result(report, f"ui-{datetime.now(UTC):%Y-%m-%d}.json", a.out)
    for k, v in report["results_ms"].items():
        print(f"{k:<42} {v}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
