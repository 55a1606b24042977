"""What a HyperNet option costs: a SMASH step and a scored architecture, against the default, in one process.

    python benchmarks/hyper_cost.py                 # the truth panel's space, Fashion-MNIST 16 px, 1 thread
    python benchmarks/hyper_cost.py --smoke --out /tmp/c

Each option (`--hyper small` as the baseline, `small-gains`, `encode_writers`, both, `graph`) trains a fresh
SMASH on the same batches and scores the same panel architectures; the options take turns in rounds, so machine load
falls on all of them alike, and the figure reported is each option's median time over rounds divided by
the baseline's. Issue 21's budget: at most 1.5x the default for both.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import truth_panel  # noqa: E402

OPTIONS = {"default": ("small", False), "gains": ("small-gains", False), "writers": ("small", True),
           "gains+writers": ("small-gains", True), "graph": ("graph", False)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="SMASH steps per option per round")
    ap.add_argument("--archs", type=int, default=4, help="panel architectures scored per option per round")
    ap.add_argument("--images", type=int, default=2000, help="held-out images per score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--options", default=",".join(OPTIONS), help="comma-separated, from: " + ", ".join(OPTIONS))
    ap.add_argument("--smoke", action="store_true", help="digits, tiny: checks the code path only")
    ap.add_argument("--out", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    import torch

    from smash_engine.config import make_config
    from smash_engine.data import device_data, load_dataset
    from smash_engine.hypernet import hyper_preset
    from smash_engine.loops import smash_steps
    from smash_engine.train import Smash, smash_score

    torch.set_num_threads(a.threads)
    if a.smoke:
        a.rounds, a.steps, a.archs, a.images = 2, 2, 1, 100
        dataset, base_space, archs = "digits", None, None
    else:
        dataset, base_space, archs = "fashion-mnist16", truth_panel.load_space(), truth_panel.load_panel()
    cfg0 = make_config("quick", dataset=dataset, device="cpu", epochs=100)  # a schedule longer than the rounds
    space0 = base_space or cfg0.space
    ds = load_dataset(dataset)
    cpu = torch.device("cpu")
    train = device_data(ds.train_x[:5000], ds.train_y[:5000], ds.info, cpu)
    val = device_data(ds.train_x[-a.images:], ds.train_y[-a.images:], ds.info, cpu)
    if archs is None:
        from smash_engine.sampler import sample_architecture
        from smash_engine.seeds import RANK, rng

        archs = [sample_architecture(space0, rng(0, RANK, i), 1.0) for i in range(a.archs)]
    runs = {}
    chosen = ["default", *(o for o in a.options.split(",") if o and o != "default")]
    unknown = [o for o in chosen if o not in OPTIONS]
    if unknown:
        raise SystemExit(f"unknown option(s) {', '.join(unknown)}; choose from {', '.join(OPTIONS)}")
    for name in chosen:
        hyper, writers = OPTIONS[name]
        cfg = dataclasses.replace(cfg0, hyper=hyper_preset(hyper), space=dataclasses.replace(space0,
                                                                                              encode_writers=writers))
        s = Smash.create(cfg, cpu)
        runs[name] = dict(s=s, steps=smash_steps(s, cfg, train), step_s=[], score_s=[], cfg=cfg)
    for r in runs.values():  # warm-up: first steps allocate
        next(r["steps"])
    for _ in range(a.rounds):
        for r in runs.values():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                float(next(r["steps"]).metrics[0])  # wait for the step
            r["step_s"].append((time.perf_counter() - t0) / a.steps)
            t0 = time.perf_counter()
            for arch in archs[:a.archs]:
                smash_score(r["s"], arch, val, r["cfg"].train.score_batch)
            r["score_s"].append((time.perf_counter() - t0) / a.archs)
    base = runs["default"]
    out = {}
    for name, r in runs.items():
        step, score = statistics.median(r["step_s"]), statistics.median(r["score_s"])
        out[name] = dict(step_seconds=step, score_seconds=score,
                         step_ratio=step / statistics.median(base["step_s"]),
                         score_ratio=score / statistics.median(base["score_s"]),
                         hyper_params=sum(p.numel() for p in r["s"].hyper.parameters()))
        print(f"{name:<14} step {1000 * step:7.1f} ms ({out[name]['step_ratio']:.2f}x)  score "
              f"{score:6.2f} s/arch ({out[name]['score_ratio']:.2f}x)  HyperNet {out[name]['hyper_params']} params")
    doc = dict(benchmark="hyper_cost", dataset=dataset, rounds=a.rounds, steps=a.steps, archs=a.archs,
               images=a.images, options=out, machine=common.machine("cpu"))
    path = common.save_result(doc, f"hyper-cost-{'smoke-' if a.smoke else ''}{common.stamp()}.json", a.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
