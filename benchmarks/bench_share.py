"""Two engines on one CPU: each one's SMASH training speed against one engine alone, measured in one run.

    python benchmarks/bench_share.py              # quick preset, 2 SMASH epochs each, this machine's cores
    python benchmarks/bench_share.py --smoke --out /tmp/s

Issue 22: two default quick searches at once on 2 cores ran at 15 and 13 images/s against 310 alone, because
each started one torch thread per core. Engines now take their share of the cores (`smash_engine/cpu_share.py`);
the goal is each at least 40% of one alone. The figure is the median of a run's per-step `images_per_s`
over SMASH training (its `steps` table), which leaves out start-up, scoring and final training. Rounds:
alone, then two at once started together, then `--default-threads` (every engine given all the cores, as
before the fix, through `--threads`) to show what the sharing buys.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402

EXE = Path(sys.executable).with_name("smash-tui")


def start(folder: Path, name: str, epochs: int, threads: int | None) -> subprocess.Popen:
    cmd = [str(EXE), "run", "--preset", "quick", "--headless", "--epochs", str(epochs), "--archs", "2",
           "--final-top", "0", "--name", name, *([f"--threads={threads}"] if threads else [])]
    return subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def speed(folder: Path, name: str) -> float:
    conn = sqlite3.connect(folder / "runs" / f"{name}.db")
    rows = [r[0] for r in conn.execute("SELECT images_per_s FROM steps WHERE phase = 'train' AND images_per_s > 0")]
    conn.close()
    return statistics.median(rows) if rows else 0.0


def together(folder: Path, names: list[str], epochs: int, threads: int | None) -> list[float]:
    procs = [start(folder, n, epochs, threads) for n in names]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"a search failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}")
    return [round(speed(folder, n), 1) for n in names]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-default-threads", action="store_true", help="skip the before-the-fix round")
    ap.add_argument("--smoke", action="store_true", help="1 epoch: checks the code path only")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    epochs = 1 if a.smoke else a.epochs
    cores = len(os.sched_getaffinity(0))
    doc: dict = dict(benchmark="two engines on one CPU", epochs=epochs, cores=cores, machine=common.machine("cpu"))
    name = f"share-{common.stamp()}.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        alone = together(folder, ["alone"], epochs, None)[0]
        doc["alone_images_per_s"] = alone
        print(f"one engine alone: {alone} images/s", flush=True)
        shared = together(folder, ["a", "b"], epochs, None)
        doc["two_shared_images_per_s"] = shared
        doc["two_shared_ratio"] = [round(s / alone, 3) for s in shared]
        print(f"two at once, sharing the cores: {shared} images/s, {doc['two_shared_ratio']} of alone", flush=True)
        common.save_result(doc, name, a.out)
        if not a.no_default_threads:
            old = together(folder, ["c", "d"], epochs, cores)
            doc["two_all_cores_images_per_s"] = old
            doc["two_all_cores_ratio"] = [round(s / alone, 3) for s in old]
            print(f"two at once, each with all {cores} cores (before the fix): {old} images/s, "
                  f"{doc['two_all_cores_ratio']} of alone", flush=True)
    print(f"wrote {common.save_result(doc, name, a.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
