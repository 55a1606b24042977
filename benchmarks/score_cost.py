"""What per-architecture BatchNorm statistics cost: seconds per scored architecture in each `score_bn` mode,
measured in one process, modes interleaved per architecture, so machine load hits them alike.

    python benchmarks/score_cost.py --archs 8 --threads 2            # quick space, Fashion-MNIST 16 px
    python benchmarks/score_cost.py --smoke                          # digits, 2 archs (checks the script)

Scores on the 5,000 held-out images of the truth panel's split with a HyperNet at initialisation (cost does
not depend on training). Writes `benchmarks/results/score-cost-<stamp>.json` with the ratios to `shared`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)

MODES = ("shared", "recal", "batch")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bn-batches", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args(argv)
    import dataclasses
    import random

    import torch

    from smash_engine.config import make_config
    from smash_engine.sampler import sample_architecture
    from smash_engine.train import Smash, bn_calibration, smash_score

    torch.set_num_threads(a.threads)
    dataset, n_val = ("digits", 300) if a.smoke else ("fashion-mnist16", 5000)
    cfg = make_config("quick", dataset=dataset, device="cpu", val_size=n_val, bn_batches=a.bn_batches)
    from search_quality import data

    train, val = data(dataset, n_val, 0, None, 0)
    s = Smash.create(cfg, torch.device("cpu"))
    archs = [sample_architecture(cfg.space, random.Random(i), 1.0) for i in range(2 if a.smoke else a.archs)]
    secs = {m: 0.0 for m in MODES}
    for arch in archs:
        for mode in MODES:
            c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, score_bn=mode))
            t0 = time.perf_counter()
            calib = bn_calibration(c, train)  # part of the cost: the engine makes it once per run, we per arch
            smash_score(s, arch, val, c.train.score_batch, mode, calib)
            secs[mode] += time.perf_counter() - t0
    per = {m: secs[m] / len(archs) for m in MODES}
    doc = dict(what="seconds per scored architecture by score_bn mode", dataset=dataset, held_out=len(val),
               score_batch=cfg.train.score_batch, bn_batches=a.bn_batches, archs=len(archs),
               seconds_per_arch=per, ratio_to_shared={m: per[m] / per["shared"] for m in MODES},
               machine=common.machine("cpu"))
    path = common.save_result(doc, f"score-cost-{'smoke-' if a.smoke else ''}{common.stamp()}.json", a.out)
    print(" ".join(f"{m} {per[m]:.2f} s ({per[m] / per['shared']:.2f}x)" for m in MODES), f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
