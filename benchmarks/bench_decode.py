"""Decode throughput of a user's image folder (`--dataset folder`, smash_engine/userdata.py), measured in one run.

    python benchmarks/bench_decode.py                 # 50,000 generated 32x32 colour PNGs, 10 classes
    python benchmarks/bench_decode.py --images 2000 --out /tmp/d

Generates the folder once (untimed), then times, each on the same files: decoding in this process (one worker,
the baseline), decoding with the process pool `prepare` uses (one spawned worker per core, up to 8), the whole
`prepare` (listing, content key, decode, statistics, writing the cache; smash_engine/imagefolder.py), and
`prepare` again (the cache hit a resume or a second search gets). Figures are images per second of wall time;
the result's `machine` says where (the load average says whether other work shared the cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import common  # noqa: E402

from smash_engine import imagefolder, userdata  # noqa: E402


def generate(root: Path, n: int, size: int = 32, classes: int = 10) -> list[str]:
    """`n` colour PNGs of smooth random blobs (compress as photos do, unlike white noise), `classes` folders."""
    rs = np.random.RandomState(0)
    files = []
    for i in range(n):
        low = rs.randint(0, 256, (4, 4, 3)).astype(np.uint8)
        img = Image.fromarray(low, "RGB").resize((size, size), Image.Resampling.BILINEAR)
        path = root / f"class{i % classes}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        files.append(str(path))
    return files


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        files = generate(root, args.images)
        cores = min(len(os.sched_getaffinity(0)), 8)
        rows = {}
        t, _ = timed(lambda: imagefolder.decode_all(files, 32, workers=1))
        rows["decode_one_process"] = dict(seconds=round(t, 2), images_per_s=round(len(files) / t))
        t, _ = timed(lambda: imagefolder.decode_all(files, 32, workers=cores))
        rows[f"decode_pool_{cores}"] = dict(seconds=round(t, 2), images_per_s=round(len(files) / t),
                                            pooled=len(files) >= imagefolder.POOL_FROM and cores > 1)
        t, spec = timed(lambda: userdata.prepare("folder", root, image_size=32, cache_dir=Path(tmp) / "runs"))
        rows["prepare_first"] = dict(seconds=round(t, 2), images_per_s=round(len(files) / t))
        t, _ = timed(lambda: userdata.prepare("folder", root, image_size=32, cache_dir=Path(tmp) / "runs"))
        rows["prepare_cached"] = dict(seconds=round(t, 2), images_per_s=round(len(files) / t))
        cache_mb = Path(spec["cache"]).stat().st_size / 2**20  # type: ignore[index]
    doc = dict(benchmark="bench_decode", images=len(files), size="32x32 RGB PNG", classes=10,
               cache_mib=round(cache_mb, 1), results=rows, machine=common.machine())
    for name, r in rows.items():
        print(f"{name:<22} {r['seconds']:>8.2f} s  {r['images_per_s']:>9,} images/s")
    print(common.save_result(doc, f"decode-{len(files)}-{common.stamp()}.json", args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
