"""What one convolution call costs the host on CUDA, and why: a plan per new configuration, per alignment?

    python benchmarks/conv_plan_probe.py --out DIR     # CUDA, under a minute

SMASH runs ~100-160 convolutions a step whose shapes change every step, with weights that are slices of
the HyperNet's output and of the shared weight bank. bench_smash.py on an H200 (2026-12-04) found the
host spending ~4 ms per backward convolution and ~1 ms per forward one (device time: 0.1 and 0.04 ms).
This times forward + backward of one 3x3 and one 1x1 convolution under bf16 autocast (as train.py) in
four cases: one configuration over and over; the same with the weight a view at a moving offset (cuDNN's
plan cache key includes the pointers' alignment); a new channel count every call; and each again with
cuDNN off; and the host memory a plan holds (resident memory over 300 new configurations).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def timed(fn, n: int, dev: torch.device) -> dict:
    fn(0)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, n + 1):
        fn(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return {"ms_per_call": round(1e3 * (time.perf_counter() - t0) / n, 3),
            "cpu_ms_per_call": round(1e3 * (time.process_time() - c0) / n, 3)}


def cases(dev: torch.device, batch: int, k: int, n: int) -> dict:
    cin, cout, size = 64, 64, 16
    x = torch.randn(batch, cin, size, size, device=dev, requires_grad=True)
    bank = torch.randn(cout * (cin + 64) * k * k + 64, device=dev, requires_grad=True)
    cast = torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda")

    def run(w, inp):
        with cast:
            y = F.conv2d(inp, w, padding=k // 2)
        y.float().sum().backward()

    def same(i):
        run(bank[: cout * cin * k * k].view(cout, cin, k, k), x)

    def moving(i):  # a view at an offset of i % 16 elements: the pointer's alignment changes
        o = i % 16
        run(bank[o: o + cout * cin * k * k].view(cout, cin, k, k), x)

    def new_channels(i):  # in-channels 1..64 cycling: a configuration not seen in the first 64 calls
        c = 1 + (i % 64)
        run(bank[: cout * c * k * k].view(cout, c, k, k), x[:, :c])

    out = {}
    for name, fn in (("same", same), ("moving_offset", moving), ("new_channels_first_pass", new_channels)):
        torch.backends.cudnn.enabled = True
        out[name] = timed(fn, n if name != "new_channels_first_pass" else 63, dev)
        if name == "new_channels_first_pass":
            out["new_channels_second_pass"] = timed(fn, 63, dev)
        torch.backends.cudnn.enabled = False
        out[name + "_cudnn_off"] = timed(fn, n if name != "new_channels_first_pass" else 63, dev)
    torch.backends.cudnn.enabled = True
    return out


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def plan_memory(dev: torch.device, batch: int, n: int) -> dict:
    """Host memory a plan holds: resident memory before and after `n` new 3x3 configurations (forward and both
    gradients: 3n plans), what benchmarks/plan_cache.py's `plans_held` is multiplied by."""
    x = torch.randn(batch, 8 + n, 16, 16, device=dev, requires_grad=True)
    cast = torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda")

    def run(c: int) -> None:
        w = torch.randn(64, c, 3, 3, device=dev, requires_grad=True)
        with cast:
            y = F.conv2d(x[:, :c], w, padding=1)
        y.float().sum().backward()

    for c in range(1, 8):  # libraries loaded, first allocations made
        run(c)
    before = rss_mib()
    for c in range(8, 8 + n):
        run(c)
    after = rss_mib()
    return {"new_configurations": n, "plans": 3 * n, "rss_mib_before": round(before, 1),
            "rss_mib_after": round(after, 1), "kib_per_plan": round((after - before) * 1024 / (3 * n), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--calls", type=int, default=64)
    ap.add_argument("--memory-configs", type=int, default=300, help="new configurations for the plan memory probe")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu to check the script", file=sys.stderr)
        return 1
    res = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None, "batch": a.batch,
           "kernel_3": cases(dev, a.batch, 3, a.calls), "kernel_1": cases(dev, a.batch, 1, a.calls),
           "plan_memory": plan_memory(dev, a.batch, a.memory_configs)}
    print(json.dumps(res, indent=1))
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
    (a.out / f"conv-plan-probe-{dev.type}-{stamp}.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
