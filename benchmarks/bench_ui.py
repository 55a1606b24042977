"""UI cost: what the terminal UI costs while it sits there (CPU of a real `smash-tui watch` in tmux), and how
fast its leaderboard and plot refresh on a large run.

`--what cpu` (the figure issue 22 set: under 2% of one core on a finished run, under 10% on a live one):
starts `smash-tui watch DB` inside tmux at 80x24, waits for it to draw, then reads utime + stime of the UI
process from /proc/PID/stat over `--seconds` (20) s. Measured on
  - a finished run (`--finished DB`, or a short quick search made here first),
  - the same with the help overlay open (a modal over the run: everything below it is composited again),
  - a live run: a real `smash-tui run --headless` quick search started next to it (one torch thread), the
    UI watching it while it trains; the engine is stopped afterwards.
Each records the UI's resident memory and whether torch is loaded in it (it must not be).

`--what speed`: builds a synthetic but schema-correct results file with the engine's `Writer` (10,000 archs
and scores, 100,000 train steps + 100 val steps), then times, on the real widgets inside a headless app:
  - leaderboard refresh: read the new score rows (`scores_since`), fold them into the model, sync the
    DataTable in place; a refresh brings 10 new scores, one of them a new best (so every rank shifts);
    also timed sorted by params with a filter on;
  - plot redraw: plotext build of 100,000 steps downsampled to the widget's width (80x9 and 200x25),
    and the incremental read of 20 new steps.
The first load of the whole history is reported too (it happens once per opening). Medians over repeats,
after a warm-up. Target: < 50 ms each.

Writes benchmarks/results/ui-cpu-<stamp>.json and ui-<date>.json (or under --out).

    .venv/bin/python benchmarks/bench_ui.py --what cpu [--finished runs/quick.db] [--seconds 20]
    .venv/bin/python benchmarks/bench_ui.py --what speed [--archs 10000] [--steps 100000] [--repeats 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import shutil
import statistics
import subprocess
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


# -- CPU of a real UI in tmux ---------------------------------------------------------------------------
CLI = [sys.executable, "-m", "smash_tui.cli"]
UI_SIZE = (80, 24)
CPU_TARGETS = {"finished": 2.0, "finished_help_open": 2.0, "live": 10.0}  # % of one core


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise SystemExit(f"bench_ui: gave up waiting for {what}")
        time.sleep(0.5)


def measure_ui(db: Path, seconds: float, keys: tuple[str, ...] = (), settle: float = 5.0) -> dict:
    """CPU of `smash-tui watch DB` in a detached tmux session over `seconds`, once it has drawn the run."""
    session = f"bench-ui-{os.getpid()}"
    # exec: the pane's process is the UI itself, not a shell around it
    cmd = "exec " + shlex.join([*CLI, "watch", str(db)])
    tmux("new-session", "-d", "-s", session, "-x", str(UI_SIZE[0]), "-y", str(UI_SIZE[1]), "-c", str(ROOT), cmd)
    try:
        pid = int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0])
        wait_for(lambda: "leaderboard:" in tmux("capture-pane", "-p", "-t", session), 120, "the UI to draw")
        for key in keys:
            tmux("send-keys", "-t", session, key)
        time.sleep(settle)  # the first load and any worker it started are not what is measured
        screen = tmux("capture-pane", "-p", "-t", session)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        return {"cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 2), "seconds": round(t1 - t0, 1),
                "rss_mb": round(rss_mb(pid), 1), "torch_loaded": torch_loaded(pid), "keys": list(keys),
                "screen": screen.splitlines()}
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def quick_search(db: Path, *extra: str) -> list[str]:
    # one torch thread: the engine keeps to one core, and the UI's figure is not the engine's squeeze on it
    return [*CLI, "run", "--preset", "quick", "--headless", "--db", str(db), "--name", db.stem, "--device", "cpu",
            "--threads", "1", *extra]


def make_finished(folder: Path) -> Path:
    db = folder / "finished.db"
    print(f"making a finished run {db} (a short quick search) ...", file=sys.stderr)
    subprocess.run(quick_search(db, "--epochs", "2", "--archs", "20", "--final-top", "1", "--final-epochs", "1"),
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return db


def live_steps(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = store.connect_reader(db)
    except Exception:  # not created or not migrated yet
        return 0
    try:
        return conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    finally:
        conn.close()


def measure_live(folder: Path, seconds: float) -> dict:
    """The UI on a search that is training: a real engine started here, stopped once measured."""
    db = folder / "live.db"
    log = open(folder / "live-engine.log", "wb")
    engine = subprocess.Popen(quick_search(db), cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: live_steps(db) > 0 or engine.poll() is not None, 300, "the engine's first steps")
        if engine.poll() is not None:
            raise SystemExit(f"bench_ui: the engine exited ({engine.returncode}); see {log.name}")
        steps0 = live_steps(db)
        out = measure_ui(db, seconds)
        out["steps_logged_while_measured"] = live_steps(db) - steps0
        out["engine_alive_throughout"] = engine.poll() is None
        return out
    finally:
        engine.terminate()  # SIGTERM: the engine checkpoints and exits
        try:
            engine.wait(60)
        except subprocess.TimeoutExpired:
            engine.kill()
        log.close()


def run_cpu(a: argparse.Namespace) -> None:
    if shutil.which("tmux") is None:
        raise SystemExit("bench_ui: --what cpu needs tmux")
    report: dict = {"benchmark": "ui-cpu", "machine": common.machine(), "targets_percent": CPU_TARGETS,
                    "config": {"seconds": a.seconds, "size": UI_SIZE, "finished": str(a.finished or "")},
                    "note": "CPU of the UI process (utime + stime from /proc/PID/stat) over the window, in % of "
                            "one core; load is the 1-minute load average before the run", "results": {}}
    name = f"ui-cpu-{common.stamp()}.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        finished = a.finished or make_finished(folder)
        for label, keys in (("finished", ()), ("finished_help_open", ("?",))):
            report["results"][label] = measure_ui(finished, a.seconds, keys)
            common.save_result(report, name, a.out)
        report["results"]["live"] = measure_live(folder, a.seconds)
    out = common.save_result(report, name, a.out)
    for label, r in report["results"].items():
        verdict = "ok" if r["cpu_percent"] < CPU_TARGETS[label] else "OVER"
        print(f"{label:<20} {r['cpu_percent']:>6.2f}% of a core (target < {CPU_TARGETS[label]}%: {verdict})  "
              f"RSS {r['rss_mb']} MB  torch loaded: {r['torch_loaded']}")
    print(f"wrote {out}")


def run_speed(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        run = make_file(path, a.archs, a.steps)
        print(f"built {path.name}: {a.archs} scored archs, {a.steps} steps in {ms(t0) / 1000:.1f} s", file=sys.stderr)
        results = asyncio.run(measure(path, run, a.repeats))
    report = {"benchmark": "ui", "machine": common.machine(),
              "versions": {"textual": version("textual"), "plotext": version("plotext")},
              "config": {"archs": a.archs, "steps": a.steps, "repeats": a.repeats},
              "results_ms": {k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()},
              "target_ms": 50}
    out = common.save_result(report, f"ui-{datetime.now(UTC):%Y-%m-%d}.json", a.out)
    for k, v in report["results_ms"].items():
        print(f"{k:<42} {v}")
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=("cpu", "speed", "all"), default="all")
    p.add_argument("--finished", type=Path, help="a finished run to watch (default: make one, ~2 min)")
    p.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window")
    p.add_argument("--archs", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", type=Path, default=common.RESULTS, help="folder of the JSON")
    a = p.parse_args()
    if a.finished is not None:
        a.finished = a.finished.resolve()
    if a.what in ("cpu", "all"):
        run_cpu(a)
    if a.what in ("speed", "all"):
        run_speed(a)


if __name__ == "__main__":
    main()
