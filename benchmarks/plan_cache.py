"""How many cuDNN plans a SMASH run builds per step, with each setting the engine can use; CPU only, no GPU.

    python benchmarks/plan_cache.py                     # paper preset, 10,000 steps, batch 50 (~2 minutes)
    python benchmarks/plan_cache.py --steps 500 --out /tmp/p   # a short check

cuDNN (v8 API, as PyTorch calls it) builds an execution plan for every convolution configuration it has not seen,
costing 8.3-8.6 ms of host time on an H200 against 0.65-0.9 ms for a seen one (`conv_plan_probe.py`). PyTorch
keeps the plans in an LRU cache per thread, capped at `TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT` plans (10,000 by
default, 0 = no cap): forward plans on the Python thread, data- and weight-gradient plans on autograd's device
thread. A SMASH step draws a new architecture, so what a step costs depends on how many of its configurations
are still in those caches.

This replays the sampler's stream as the engine's training loop draws it (`train.smash_arch`, start to full space
as `progress` moves over `--steps`) and asks the networks themselves which convolutions they run for each drawn
architecture (`SmashNet.conv_configs`, `HyperNet.conv_configs`, which a test holds to what their forwards
dispatch), then feeds the keys through a model of the two caches: forward keys in execution order, then data-
gradient (every convolution whose input needs a gradient: all but the two stems) and weight-gradient keys in reverse.
For each setting it reports distinct configurations, plan builds per step by window of 1,000 steps, plans
held at the end, and the FLOPs the padding adds. The result lands in `benchmarks/results/plan-cache-<stamp>.json`,
its `settings` each with `name`, `engine_default` (what the engine does on CUDA), `builds_per_step_last_1000`
(forward plus backward, over the last 1,000 steps) and `plans_held`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)

from smash_engine.config import make_config  # noqa: E402
from smash_engine.encoding import encode  # noqa: E402
from smash_engine.hypernet import HyperNet  # noqa: E402
from smash_engine.network import SmashNet  # noqa: E402
from smash_engine.train import CUDA_MULTIPLE, DEFAULT_PLAN_CACHE, smash_arch  # noqa: E402

TORCH_DEFAULT_CAP = 10_000  # PyTorch's TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT when the variable is unset


@dataclass(frozen=True)
class Setting:
    name: str
    multiple: int  # SmashNet.multiple: op widths rounded up to it (1: exact)
    hyper_multiple: int  # HyperNet.multiple: c's width rounded up to it
    cap: int  # plans per thread (0: no cap)


def settings() -> list[Setting]:
    out = [Setting("exact widths, cache 10,000 a thread (the engine until 2026-12-08)", 1, 1, TORCH_DEFAULT_CAP),
           Setting("exact widths, no cap", 1, 1, 0),
           Setting("round 16, c to 32, cache 10,000", 16, 32, TORCH_DEFAULT_CAP),
           Setting("round 32, c to 32, cache 10,000", 32, 32, TORCH_DEFAULT_CAP),
           Setting("round 64, c to 64, cache 10,000", 64, 64, TORCH_DEFAULT_CAP)]
    if DEFAULT_PLAN_CACHE != TORCH_DEFAULT_CAP:  # the engine's own cap, where it is not torch's
        out.append(Setting(f"round {CUDA_MULTIPLE}, c to {CUDA_MULTIPLE}, cache {DEFAULT_PLAN_CACHE:,}", CUDA_MULTIPLE,
                           CUDA_MULTIPLE, DEFAULT_PLAN_CACHE))
    return out


class LRU:
    """One thread's plan cache as PyTorch keeps it: a hit moves the key to the back, a miss builds a plan and
    evicts the front once the cap is passed."""

    def __init__(self, cap: int):
        self.cap, self.keys, self.builds = cap, OrderedDict(), 0

    def use(self, key) -> None:
        if key in self.keys:
            self.keys.move_to_end(key)
            return
        self.builds += 1
        self.keys[key] = None
        if self.cap and len(self.keys) > self.cap:
            self.keys.popitem(last=False)


def conv_flops(key) -> int:
    """Forward multiply-adds x 2 of one convolution per image (the batch is the key's first field)."""
    _, cin, h, w, cout, kernel, *rest = key
    groups = rest[1] if len(rest) == 3 else 1
    return 2 * h * w * cout * cin // groups * math.prod(kernel)


def replay(a: argparse.Namespace) -> dict:
    cfg = make_config(a.preset)
    net, hyper = SmashNet(cfg.space), HyperNet(cfg.space, cfg.hyper)
    runs = [(s, LRU(s.cap), LRU(s.cap), set(), [0, 0]) for s in settings()]
    windows: list[dict] = [{s.name: [0, 0] for s in settings()} for _ in range(math.ceil(a.steps / a.window))]
    flops = {s.name: [0, 0] for s in settings()}  # main, hyper (per image and step) summed over steps
    exact_flops = [0, 0]
    t0 = time.perf_counter()
    for step in range(a.steps):
        arch = smash_arch(cfg, step, a.steps)
        S = encode(arch, cfg.space).packed.shape[0]
        for s, fwd, bwd, seen, _ in runs:
            net.multiple, hyper.multiple = s.multiple, s.hyper_multiple
            main = [("main", k) for k in net.conv_configs(arch, a.batch)]
            hyp = [("hyper", k) for k in hyper.conv_configs(S)]
            keys = hyp + main  # the HyperNet runs first, and its backward last
            f0, b0 = fwd.builds, bwd.builds
            for k in keys:
                fwd.use(("fwd", k))
            stems = {main[0], hyp[0]}  # their inputs (images, c) need no gradient
            for k in reversed(keys):
                if k not in stems:
                    bwd.use(("dgrad", k))
                bwd.use(("wgrad", k))
            seen.update(keys)
            w = windows[step // a.window][s.name]
            w[0] += fwd.builds - f0
            w[1] += bwd.builds - b0
            flops[s.name][0] += sum(conv_flops(k) for _, k in main)
            flops[s.name][1] += sum(conv_flops(k) for _, k in hyp)
            if s.multiple == 1 and s.hyper_multiple == 1 and s.cap == TORCH_DEFAULT_CAP:
                exact_flops[0] += sum(conv_flops(k) for _, k in main)
                exact_flops[1] += sum(conv_flops(k) for _, k in hyp)
        if a.progress and (step + 1) % a.window == 0:
            print(f"step {step + 1:,}: {time.perf_counter() - t0:.0f} s", flush=True)
    out = []
    for s, fwd, bwd, seen, _ in runs:
        per_window = []
        for i, w in enumerate(windows):
            n = min(a.window, a.steps - i * a.window)
            per_window.append({"steps": [i * a.window, i * a.window + n], "forward": round(w[s.name][0] / n, 2),
                               "backward": round(w[s.name][1] / n, 2)})
        last = per_window[-1]
        main_ratio = flops[s.name][0] / exact_flops[0]
        out.append(dict(
            name=s.name, engine_default=(s.multiple, s.hyper_multiple, s.cap) == (CUDA_MULTIPLE, CUDA_MULTIPLE,
                                                                                   DEFAULT_PLAN_CACHE),
            multiple=s.multiple, hyper_multiple=s.hyper_multiple, cap_per_thread=s.cap,
            distinct_configurations=len(seen),
            distinct_main=sum(1 for k in seen if k[0] == "main"),
            distinct_hyper=sum(1 for k in seen if k[0] == "hyper"),
            builds_per_step_last_1000=round(last["forward"] + last["backward"], 2),
            builds_per_step_first_1000=round(per_window[0]["forward"] + per_window[0]["backward"], 2),
            builds_total=fwd.builds + bwd.builds,
            plans_held=len(fwd.keys) + len(bwd.keys), plans_held_forward=len(fwd.keys),
            plans_held_backward=len(bwd.keys),
            main_flops_ratio=round(main_ratio, 4),
            hyper_flops_ratio=round(flops[s.name][1] / exact_flops[1], 4),
            main_fwd_gflop_per_image=round(flops[s.name][0] / a.steps / 1e9, 3),
            hyper_fwd_gflop=round(flops[s.name][1] / a.steps / 1e9, 3),
            windows=per_window))
    return {"settings": out, "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=["quick", "fmnist", "paper"])
    ap.add_argument("--steps", type=int, default=10_000, help="SMASH steps replayed (the run's whole schedule)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--window", type=int, default=1000, help="steps per window of the builds-per-step curve")
    ap.add_argument("--progress", action="store_true", help="print the time after each window")
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON (default benchmarks/results/)")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.window < 1 or a.batch < 1:
        ap.error("--steps, --window and --batch must be positive")
    res = replay(a)
    doc = dict(benchmark="plan-cache", preset=a.preset, steps=a.steps, batch=a.batch, window=a.window,
               machine=common.machine(None), **res)
    path = common.save_result(doc, f"plan-cache-{a.preset}-{common.stamp()}.json", a.out)
    print(f"{'setting':58} {'distinct':>8} {'builds/step':>12} {'first 1k':>9} {'held':>7} {'FLOPs':>6}")
    for s in res["settings"]:
        mark = "*" if s["engine_default"] else " "
        print(f"{mark}{s['name']:57} {s['distinct_configurations']:8,} {s['builds_per_step_last_1000']:12.2f} "
              f"{s['builds_per_step_first_1000']:9.2f} {s['plans_held']:7,} {s['main_flops_ratio']:6.3f}")
    print(f"(* the engine's default on CUDA; builds/step: forward + backward over the last {a.window:,} steps)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
