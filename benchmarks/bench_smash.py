"""SMASH throughput: training steps (a new random architecture every step) and scoring, with the static
WRN-40-4 reference (`shared/tools/bench_limit.py`) run in the same process for a same-run baseline.

What is timed, after `--warmup` untimed steps, with a device sync before and after the measured span:
- training: `sample_architecture` + `smash_step` per step, as the engine's loop does it, on batches of
  random uint8 images of the preset's shape from `DeviceData.epoch_batches` (crop + flip), drawn before
  the span as the static reference's are; `--windows W` times W consecutive spans (the warming curve:
  cuDNN/oneDNN build a plan for every convolution configuration they have not seen in the process);
- scoring: `smash_score` of one architecture on `--score-images` random images at each eval batch;
- `--breakdown N`: N steps of the engine's own `smash_step` split into phases (sample, plan = encode +
  copy, hypernet, forward, loss, backward, grad_check, optimizer, metrics) with a sync after each;
  `host_ms` is the time the Python thread spent issuing a phase (on CUDA: Python + dispatch + launch, the
  CPU-side cost), `ms` the time until the device finished it, `process_cpu_ms` the CPU time of this
  process; plus the aten kernels and views one step dispatches per phase;
- `--rank-corr K`: K architectures scored with bf16 autocast on and off (fp32), Spearman and Kendall;
- `--profile N`: cProfile of N steps grouped by where the time goes, and the top aten ops.

Run (CPU): python benchmarks/bench_smash.py --device cpu --preset quick --batches 50 --steps 30
Run (GPU): benchmarks/run_gpu.sh (see benchmarks/README.md). Needs only torch, numpy (and scipy for
`--rank-corr`); the engine package is imported from this checkout.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime
import importlib.util
import json
import os
import pstats
import re
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)

from smash_engine.config import make_config  # noqa: E402
from smash_engine.conv_graphs import ConvGraphs  # noqa: E402
from smash_engine.conv_plans import conv_keys, warm_conv_plans  # noqa: E402
from smash_engine.cost import arch_cost  # noqa: E402
from smash_engine.data import DeviceData, dataset_info  # noqa: E402
from smash_engine.encoding import encode  # noqa: E402
from smash_engine.sampler import sample_architecture  # noqa: E402
from smash_engine.seeds import ARCH, RANK, rng  # noqa: E402
from smash_engine.train import Smash, drop_masks, sandwich_archs, smash_score, smash_step  # noqa: E402

# The authors' code on one H200 (shared/reference/anchors.md, section 1), and the static WRN-40-4 on the
# same GPU and run, in images/s; scores in architectures/s on 5,000 images.
ORIGINAL_H200 = {
    "train": {("start", 50): 317.0, ("full", 50): 210.0, ("full", 256): 870.0},
    "score": {100: 1 / 1.07, 500: 1 / 0.37},
    "static": {50: {"fp32": 2895.0, "bf16_cl": 2491.0}, 256: {"fp32": 8856.0, "bf16_cl": 13165.0},
               1024: {"fp32": 9779.0, "bf16_cl": 29105.0}},
}
ENV_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "TORCH_CUDNN_V8_API_LRU_CACHE_LIMIT", "OMP_NUM_THREADS",
            "CUDA_VISIBLE_DEVICES", "SMASH_CONV_MULTIPLE")
SPACES = {"start": 0.0, "full": 1.0}  # progress of SMASH training: budget <= 0.5 and 3x3 kernels at 0


# -- environment -----------------------------------------------------------------------------------
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def random_data(cfg, n: int, dev: torch.device, seed: int) -> DeviceData:
    """n random uint8 images of the preset's shape, random labels, on the device."""
    sp, g = cfg.space, torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, sp.image_channels, sp.image_size, sp.image_size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, sp.num_classes, (n,), generator=g)
    return DeviceData(x, y, dataset_info(cfg.dataset), dev)


def endless_batches(data: DeviceData, batch: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield from data.epoch_batches(batch, gen)


def mean_fwd_gflop(cfg, progress: float, n: int) -> float:
    """Mean forward GFLOP per image of the architectures a run at `progress` trains (FixedNet, no BN)."""
    return float(np.mean([arch_cost(arch_at(cfg, t, progress), norm="none")[1] for t in range(n)])) / 1e9


def arch_at(cfg, t: int, progress: float):
    return sample_architecture(cfg.space, rng(cfg.seed, ARCH, t), progress)


# -- training throughput ---------------------------------------------------------------------------
def bench_train(s: Smash, cfg, data: DeviceData, batch: int, space: str, steps: int, warmup: int,
                windows: int = 1, sandwich: int = 0, drop_path: float = 0.0) -> dict:
    """Images/s over `windows` consecutive spans of `steps` steps; the headline is the last span.

    Each window also says how many of its convolutions had a configuration (shapes, kernel, dilation,
    groups) this process had not run before: cuDNN and oneDNN build a plan or primitive for each new one,
    so the first hundreds of steps of a run are slower than its steady state.

    `sandwich` K: each step also trains the largest and smallest of K more draws (`TrainConfig.sandwich`).
    `drop_path` R: each step drops ops' outputs at rate R, the end of its ramp (`TrainConfig.drop_path`).
    """
    progress = SPACES[space]
    if sandwich or drop_path:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, sandwich=sandwich, drop_path=drop_path))
    it = endless_batches(data, batch, cfg.seed)
    for t in range(warmup):
        arch = arch_at(cfg, 10**6 + t, progress)
        smash_step(s, arch, *next(it), 1e-3)
        new_conv_configs(s, arch, batch)
    spans = [_train_window(s, cfg, it, batch, progress, range(w * steps, (w + 1) * steps)) for w in range(windows)]
    last = spans[-1]
    gflop = mean_fwd_gflop(cfg, progress, steps)
    tflops = 3 * gflop * last["images_per_s"] / 1e3  # training ~ 3x the forward FLOPs; HyperNet left out
    return {"space": space, "batch": batch, "steps": steps, "warmup": warmup, "sandwich": sandwich,
            "conv_multiple": s.net.multiple, "bank_state": s.net.bank_state,
            "drop_path": drop_path, **last,
            "fwd_gflop_per_image": round(gflop, 3), "train_tflops_est": round(tflops, 3),
            "windows": spans if windows > 1 else None}


def _train_window(s: Smash, cfg, it, batch: int, progress: float, ts: range) -> dict:
    xs = [next(it) for _ in ts]  # batches drawn before the span: the static reference has none either
    metrics = []
    sync(s.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for t, (x, y) in zip(ts, xs, strict=True):
        arch = arch_at(cfg, t, progress)
        metrics.append(smash_step(s, arch, x, y, 1e-3, also=sandwich_archs(cfg, t, progress),
                                  keep=drop_masks(cfg, t + 1, t + 1, arch, batch)))
    sync(s.device)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    new = [new_conv_configs(s, arch_at(cfg, t, progress), batch) for t in ts]
    m = torch.stack(metrics)  # (steps, 3): loss, error, skipped (non-finite gradients)
    return {"images_per_s": round(batch * len(ts) / dt, 1), "ms_per_step": round(1e3 * dt / len(ts), 2),
            "process_cpu_ms_per_step": round(1e3 * cpu / len(ts), 2),
            "new_conv_configs_per_step": round(float(np.mean([n for n, _ in new])), 1),
            "convs_per_step": round(float(np.mean([c for _, c in new])), 1),
            "loss_finite": bool(torch.isfinite(m[:, 0]).all()),
            "skipped_steps": int(m[:, 2].sum().item()) if m.shape[1] > 2 else None}


_SEEN_CONVS: set = set()


def new_conv_configs(s: Smash, arch, batch: int) -> tuple[int, int]:
    """(configurations not seen before in this process, convolutions) of one training step's main network, as
    the network itself says it runs them (`SmashNet.conv_configs`, at its widths)."""
    keys = s.net.conv_configs(arch, batch)
    new = len(set(keys) - _SEEN_CONVS)
    _SEEN_CONVS.update(keys)
    return new, len(keys)


# -- phase breakdown -------------------------------------------------------------------------------
class OpCounter(TorchDispatchMode):
    """Counts aten calls below autograd (forward and backward): kernels and views, per phase."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = "plan"
        self.kernels: Counter = Counter()
        self.views: Counter = Counter()
        self.by_op: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if getattr(func, "is_view", False):
            self.views[self.phase] += 1
        else:
            self.kernels[self.phase] += 1
            self.by_op[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


_PHASES = ["sample", "plan", "hypernet", "forward", "loss", "backward", "grad_check", "optimizer", "metrics"]


@contextmanager
def instrumented(s: Smash, tick):
    """Call `tick(phase)` at the end of each phase of the engine's own `smash_step`, by wrapping the calls it
    makes (`s.plan`, `s.hyper.generate`, `s.net.forward`, `Tensor.backward`, `s.opt.step`); nothing of
    the step is copied here, so the breakdown follows the engine as it changes."""
    plan, generate, forward, step = s.plan, s.hyper.generate, s.net.forward, s.opt.step
    backward = torch.Tensor.backward

    def after(fn, phase):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            tick(phase)
            return out
        return wrapped

    def around(fn, before, phase):
        def wrapped(*args, **kwargs):
            tick(before)
            out = fn(*args, **kwargs)
            tick(phase)
            return out
        return wrapped

    s.plan = after(plan, "plan")  # type: ignore[method-assign]
    s.hyper.generate = after(generate, "hypernet")  # type: ignore[method-assign]
    s.net.forward = after(forward, "forward")  # type: ignore[method-assign]
    torch.Tensor.backward = around(backward, "loss", "backward")  # type: ignore[method-assign]
    s.opt.step = around(step, "grad_check", "optimizer")  # type: ignore[method-assign]
    try:
        yield
    finally:
        del s.plan, s.hyper.generate, s.net.forward, s.opt.step
        torch.Tensor.backward = backward  # type: ignore[method-assign]


def bench_breakdown(s: Smash, cfg, data: DeviceData, batch: int, space: str, steps: int, warmup: int) -> dict:
    """Per-phase time of `smash_step` (sync after each phase) and the aten calls each phase dispatches."""
    progress, dev = SPACES[space], s.device
    it = endless_batches(data, batch, cfg.seed + 1)
    host, done, cpu = defaultdict(float), defaultdict(float), defaultdict(float)
    clock = {"t": 0.0, "cpu": 0.0}

    def tick(phase: str) -> None:
        t1 = time.perf_counter()
        sync(dev)
        t2, c2 = time.perf_counter(), time.process_time()
        host[phase] += t1 - clock["t"]
        done[phase] += t2 - clock["t"]
        cpu[phase] += c2 - clock["cpu"]
        clock["t"], clock["cpu"] = time.perf_counter(), time.process_time()

    with instrumented(s, tick):
        for t in range(warmup + steps):
            if t == warmup:
                host.clear(), done.clear(), cpu.clear()
            x, y = next(it)
            sync(dev)
            clock["t"], clock["cpu"] = time.perf_counter(), time.process_time()
            arch = arch_at(cfg, 2 * 10**6 + t, progress)
            tick("sample")
            smash_step(s, arch, x, y, 1e-3)
            tick("metrics")
            new_conv_configs(s, arch, batch)
    archs = [arch_at(cfg, 2 * 10**6 + t, progress) for t in range(warmup, warmup + steps)]
    t0 = time.perf_counter()
    for arch in archs:
        encode(arch, s.space)
    encode_ms = 1e3 * (time.perf_counter() - t0) / steps
    counts = count_kernels(s, [arch_at(cfg, 3 * 10**6 + t, progress) for t in range(3)], it)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        s.hyper.generate(s.plan(arch_at(cfg, 3 * 10**6, progress)))
    phases = [p for p in _PHASES if p in done]
    return {"space": space, "batch": batch, "steps": steps, "hypernet_fwd_gflop": round(fc.get_total_flops() / 1e9, 3),
            "ms": {p: round(1e3 * done[p] / steps, 3) for p in phases},
            "host_ms": {p: round(1e3 * host[p] / steps, 3) for p in phases},
            "process_cpu_ms": {p: round(1e3 * cpu[p] / steps, 3) for p in phases},
            "encode_only_ms": round(encode_ms, 3),
            "total_ms": round(1e3 * sum(done.values()) / steps, 2),
            "host_total_ms": round(1e3 * sum(host.values()) / steps, 2),
            "process_cpu_total_ms": round(1e3 * sum(cpu.values()) / steps, 2), **counts}


def count_kernels(s: Smash, archs: list, it) -> dict:
    """aten kernels and views one step dispatches, per phase (forward and backward, below autograd),
    as the mean over `archs`."""
    counter = OpCounter()

    def tick(phase: str) -> None:
        counter.phase = _PHASES[min(_PHASES.index(phase) + 1, len(_PHASES) - 1)]

    with instrumented(s, tick), counter:
        for arch in archs:
            counter.phase = "data"  # the batch (crop, flip, normalise) is not part of the step
            x, y = next(it)
            tick("sample")
            smash_step(s, arch, x, y, 1e-3)
    n = len(archs)
    return {"kernels": {k: round(v / n, 1) for k, v in counter.kernels.items()},
            "views": {k: round(v / n, 1) for k, v in counter.views.items()},
            "kernels_total": round(sum(v for k, v in counter.kernels.items() if k != "data") / n, 1),
            "top_kernels": {k: round(v / n, 1) for k, v in counter.by_op.most_common(12)},
            "ops_per_arch": round(float(np.mean([a.n_ops for a in archs])), 1)}


# -- cProfile and torch.profiler -------------------------------------------------------------------
def bench_profile(s: Smash, cfg, data: DeviceData, batch: int, space: str, steps: int) -> dict:
    progress = SPACES[space]
    it = endless_batches(data, batch, cfg.seed + 2)
    smash_step(s, arch_at(cfg, 4 * 10**6, progress), *next(it), 1e-3)
    prof = cProfile.Profile()
    prof.enable()
    for t in range(steps):
        smash_step(s, arch_at(cfg, 4 * 10**6 + 1 + t, progress), *next(it), 1e-3)
    sync(s.device)
    prof.disable()
    st = pstats.Stats(prof)
    groups: dict[str, float] = defaultdict(float)
    for (file, _, name), (_, _, tottime, _, _) in st.stats.items():  # type: ignore[attr-defined]
        groups[_where(file, name)] += tottime
    total = sum(groups.values())
    out = {k: round(1e3 * v / steps, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
    print(f"\ncProfile, {cfg.preset} batch {batch} {space} space: {1e3 * total / steps:.1f} ms/step, by self time")
    for k, v in out.items():
        print(f"  {v:9.2f} ms  {k}")
    st.sort_stats("tottime").print_stats(15)
    return {"space": space, "batch": batch, "steps": steps, "self_ms_per_step": out,
            "total_ms_per_step": round(1e3 * total / steps, 2),
            "aten": aten_profile(s, cfg, data, batch, space, steps)}


def _where(file: str, name: str) -> str:
    if "smash_engine" in file:
        return "python: smash_engine/" + Path(file).name
    if file == "~":
        if "run_backward" in name:
            return "torch: backward engine (all backward kernels + autograd)"
        if re.search(r"conv2d|convolution", name):
            return "torch: conv2d forward calls (dispatch + kernel)"
        if re.search(r"torch|Tensor|_C\.|_VariableFunctions", name):
            return "torch: other op calls (dispatch + kernel)"
        if "numpy" in name:
            return "numpy C calls"
        return "other builtins"
    if "/torch/" in file:
        return "python: torch (" + ("optim" if "/optim/" in file else "nn" if "/nn/" in file else "other") + ")"
    if "/numpy/" in file:
        return "python: numpy"
    if "dataclasses" in file or "<string>" in file:
        return "python: dataclass __init__/eq"
    return "python: other"


def aten_profile(s: Smash, cfg, data: DeviceData, batch: int, space: str, steps: int) -> dict:
    """torch.profiler over `steps` steps: self time per aten op (CPU side; on CUDA also device time)."""
    from torch.profiler import ProfilerActivity, profile

    progress = SPACES[space]
    it = endless_batches(data, batch, cfg.seed + 3)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for t in range(steps):
            smash_step(s, arch_at(cfg, 5 * 10**6 + t, progress), *next(it), 1e-3)
        sync(s.device)
    rows = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    dev_attr = "self_device_time_total" if s.device.type == "cuda" else None
    top = sorted(rows, key=lambda e: -e.self_cpu_time_total)[:15]
    out = {e.key: {"self_cpu_ms": round(e.self_cpu_time_total / 1e3 / steps, 3), "calls": e.count // steps,
                   **({"self_device_ms": round(getattr(e, dev_attr) / 1e3 / steps, 3)} if dev_attr else {})}
           for e in top}
    total = sum(e.self_cpu_time_total for e in rows) / 1e3 / steps
    conv = sum(e.self_cpu_time_total for e in rows if "convolution" in e.key) / 1e3 / steps
    print(f"torch.profiler: aten self CPU {total:.1f} ms/step, of which convolution ops {conv:.1f}")
    for k, v in out.items():
        print(f"  {k:40} {v}")
    return {"aten_self_cpu_ms": round(total, 2), "convolution_self_cpu_ms": round(conv, 2), "top": out}


# -- scoring and bf16 rank correlation ---------------------------------------------------------------
def bench_score(s: Smash, cfg, data: DeviceData, batch: int, n_archs: int, warmup: int) -> dict:
    archs = [sample_architecture(cfg.space, rng(cfg.seed, RANK, i), 1.0) for i in range(n_archs + warmup)]
    for a in archs[:warmup]:
        smash_score(s, a, data, batch)
    sync(s.device)
    t0 = time.perf_counter()
    for a in archs[warmup:]:
        smash_score(s, a, data, batch)
    sync(s.device)
    dt = time.perf_counter() - t0
    return {"eval_batch": batch, "images": len(data), "archs": n_archs, "archs_per_s": round(n_archs / dt, 3),
            "s_per_arch": round(dt / n_archs, 4)}


def score_precision(s: Smash, arch, data: DeviceData, batch: int, bf16: bool) -> tuple[float, float]:
    """The engine's `smash_score` with bf16 autocast forced on or off (on the CPU too)."""
    s.autocast = lambda: torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=bf16)  # type: ignore[method-assign]
    try:
        return smash_score(s, arch, data, batch)
    finally:
        del s.autocast


def real_rank_data(s: Smash, cfg, a, notes: list[str]) -> DeviceData:
    """Train `--rank-train-steps` SMASH steps on the preset's real dataset; return its test split."""
    from smash_engine.data import load_dataset

    try:
        ds = load_dataset(cfg.dataset)
    except Exception as e:  # noqa: BLE001 - any reason the dataset is absent: fall back, say why
        notes.append(f"--rank-train-steps: {cfg.dataset} not available ({type(e).__name__}); random data used")
        return random_data(cfg, a.score_images, s.device, a.seed + 1)
    train = DeviceData(ds.train_x, ds.train_y, ds.info, s.device)
    it = endless_batches(train, cfg.train.batch_size, cfg.seed)
    for t in range(a.rank_train_steps):
        smash_step(s, arch_at(cfg, 6 * 10**6 + t, 1.0), *next(it), cfg.train.lr)
    n = min(a.score_images, len(ds.test_y))
    return DeviceData(ds.test_x[:n], ds.test_y[:n], ds.info, s.device)


def rank_corr(s: Smash, cfg, data: DeviceData, batch: int, k: int) -> dict:
    from scipy.stats import kendalltau, spearmanr

    archs = [sample_architecture(cfg.space, rng(cfg.seed, RANK, 1000 + i), 1.0) for i in range(k)]
    t0 = time.perf_counter()
    fp32 = np.array([score_precision(s, a, data, batch, False) for a in archs])
    t1 = time.perf_counter()
    bf16 = np.array([score_precision(s, a, data, batch, True) for a in archs])
    t2 = time.perf_counter()
    out = {"archs": k, "images": len(data), "eval_batch": batch, "s_fp32": round(t1 - t0, 2),
           "s_bf16": round(t2 - t1, 2), "note": "bf16 autocast vs fp32 on " + s.device.type
           + (" (cuDNN may use TF32 for the fp32 convolutions)" if torch.backends.cudnn.allow_tf32 and
              s.device.type == "cuda" else "")}
    for j, name in enumerate(("error", "loss")):
        a, b = fp32[:, j], bf16[:, j]
        out[name] = {"spearman": _finite(spearmanr(a, b).statistic),  # None where scores tie (untrained)
                     "kendall": _finite(kendalltau(a, b).statistic),
                     "max_abs_diff": round(float(np.abs(a - b).max()), 5),
                     "fp32_range": [round(float(a.min()), 4), round(float(a.max()), 4)]}
    return out


def _finite(x) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


# -- the static reference --------------------------------------------------------------------------
def find_bench_limit(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else []
    candidates += [REPO.parent / "shared" / "tools" / "bench_limit.py", REPO / "shared" / "tools" / "bench_limit.py"]
    return next((p for p in candidates if p.is_file()), None)


def bench_static(path: Path, dev: torch.device, batch: int, modes: list[str], steps: int, warmup: int) -> list:
    spec = importlib.util.spec_from_file_location("bench_limit", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as bench_limit's main() and the anchors' figures
    try:
        return [mod.run(dev, batch, mode, steps, warmup, 0.0) for mode in modes]
    finally:
        torch.backends.cudnn.benchmark = old


# -- report ----------------------------------------------------------------------------------------
def ratios(res: dict, dev: torch.device) -> dict:
    """SMASH / static (same run), and, on CUDA, against the original code on the H200."""
    out: dict = {}
    static = {(r["batch"], r["mode"]): r["images_per_s"] for r in res.get("static", [])}
    exact = [r for r in res["train"] if r.get("exact_too") or r.get("graphs_too")]
    rows = [r for r in res["train"] if not r.get("exact_too") and not r.get("graphs_too")]
    plain = {(r["space"], r["batch"]): r["ms_per_step"] for r in rows
             if not r.get("sandwich") and not r.get("drop_path")}
    for r in exact:  # how much faster the step at rounded widths is than at exact ones, same process
        if (r["space"], r["batch"]) in plain:
            base = plain[(r["space"], r["batch"])]
            if r.get("graphs_too"):
                out[f"graphs_speedup_{r['space']}_b{r['batch']}"] = round(base / r["ms_per_step"], 3)
            else:
                out[f"speedup_over_exact_execution_{r['space']}_b{r['batch']}"] = round(r["ms_per_step"] / base, 3)
    for r in rows:
        key = f"{r['space']}_b{r['batch']}"
        option = f"sandwich{r['sandwich']}" if r.get("sandwich") else \
            f"drop_path{r['drop_path']:g}" if r.get("drop_path") else None
        if option:  # a step's cost with the option against a plain step, same run
            if (r["space"], r["batch"]) in plain:
                base = plain[(r["space"], r["batch"])]
                out[f"{option}_step_cost_{key}"] = round(r["ms_per_step"] / base, 3)
            continue
        for mode in ("fp32", "bf16_cl"):
            if (r["batch"], mode) in static:
                out[f"smash_over_static_{mode}_{key}"] = round(r["images_per_s"] / static[(r["batch"], mode)], 4)
        orig = ORIGINAL_H200["train"].get((r["space"], r["batch"]))
        if dev.type == "cuda" and orig:
            out[f"smash_over_original_h200_{key}"] = round(r["images_per_s"] / orig, 3)
            ref = ORIGINAL_H200["static"].get(r["batch"], {}).get("fp32")
            here = static.get((r["batch"], "fp32"))
            if ref and here:  # ratios carry between machines: (ours/static here) / (original/static H200)
                out[f"normalised_speedup_vs_original_{key}"] = round((r["images_per_s"] / here) / (orig / ref), 3)
    for r in res.get("score", []):
        orig = ORIGINAL_H200["score"].get(r["eval_batch"])
        if dev.type == "cuda" and orig:
            out[f"score_over_original_h200_b{r['eval_batch']}"] = round(r["archs_per_s"] / orig, 3)
    return out


def summary(doc: dict) -> str:
    m = doc["machine"]
    where = m["device"] if m["device"] != "cpu" else f"{m['cpu']} ({m['cores']} cores, {m['threads']} torch threads)"
    lines = [f"SMASH benchmark: {where}, torch {m['torch']}, git {m['commit'][:12]}, preset {doc['preset']}"]
    for r in doc["results"]["train"]:
        lines.append(f"  train {r['space']:5} batch {r['batch']:4} widths x{r.get('conv_multiple', 1):<2}: "
                     f"{r['images_per_s']:9.1f} img/s  "
                     f"{r['ms_per_step']:9.2f} ms/step ({r['process_cpu_ms_per_step']:.1f} CPU)  "
                     f"{r['fwd_gflop_per_image']:.3f} GFLOP/img fwd  ~{r['train_tflops_est']:.3f} TFLOP/s, "
                     f"{r['new_conv_configs_per_step']:.0f}/{r['convs_per_step']:.0f} conv configs new")
    for r in doc["results"].get("prewarm", []):
        lines.append(f"  plans prewarmed at batch {r['batches'][0]}: {r['configurations']:,} configurations of "
                     f"{r['draws']:,} draws in {r['seconds']} s")
    for r in doc["results"].get("static", []):
        lines.append(f"  static WRN-40-4 {r['mode']:7} batch {r['batch']:4}: {r['images_per_s']:9.1f} img/s")
    for r in doc["results"].get("score", []):
        lines.append(f"  score eval batch {r['eval_batch']:4} ({r['images']} images): {r['archs_per_s']:.3f} archs/s "
                     f"({r['s_per_arch']:.3f} s/arch)")
    for r in doc["results"].get("breakdown", []):
        parts = ", ".join(f"{p} {v:.1f}" for p, v in r["ms"].items())
        lines.append(f"  breakdown {r['space']} batch {r['batch']} (ms/step): {parts}; total {r['total_ms']:.1f}, "
                     f"host {r['host_total_ms']:.1f}, process CPU {r['process_cpu_total_ms']:.1f}; "
                     f"{r['kernels_total']:.0f} kernels/step ({r['ops_per_arch']:.0f} ops)")
    rc = doc["results"].get("rank_corr")
    if rc:
        lines.append(f"  bf16 vs fp32 on {rc['archs']} archs: Spearman loss {rc['loss']['spearman']}, "
                     f"error {rc['error']['spearman']} (max |d loss| {rc['loss']['max_abs_diff']})")
    for k, v in doc["ratios"].items():
        lines.append(f"  {k}: {v}")
    for n in doc["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="paper", choices=["quick", "fmnist", "paper"])
    ap.add_argument("--dataset", help="image shape of another dataset (e.g. digits: 1x8x8, an overhead probe)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--batches", help="comma list of training batch sizes (overrides --batch)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--windows", type=int, default=1, help="consecutive timed spans of --steps (warming curve)")
    ap.add_argument("--drop-path", type=float, default=0.0,
                    help="also time steps with path dropout at rate R (TrainConfig.drop_path)")
    ap.add_argument("--sandwich", type=int, default=0,
                    help="also time steps with the sandwich rule over K more draws (TrainConfig.sandwich)")
    ap.add_argument("--full-space", action="store_true", help="only the end-of-training space (progress 1)")
    ap.add_argument("--start-space", action="store_true", help="only the start-of-training space (progress 0)")
    ap.add_argument("--score-archs", type=int, default=0, help="architectures timed per eval batch (0: skip)")
    ap.add_argument("--score-images", type=int, default=5000)
    ap.add_argument("--score-batch", default="500", help="eval batch, or a comma list")
    ap.add_argument("--rank-corr", type=int, default=0, help="score K archs with bf16 on and off (0: skip)")
    ap.add_argument("--rank-train-steps", type=int, default=0,
                    help="first train this many SMASH steps on the preset's real dataset, score its test split")
    ap.add_argument("--breakdown", type=int, default=0, help="steps of the per-phase breakdown (0: skip)")
    ap.add_argument("--profile", type=int, default=0, help="steps under cProfile (0: skip)")
    ap.add_argument("--baseline", action="store_true", help="static WRN-40-4 in the same process, same batch")
    ap.add_argument("--baseline-modes", default=None, help="default fp32,bf16_cl on CUDA, fp32 on CPU")
    ap.add_argument("--baseline-steps", type=int, default=None, help="default 30 on CUDA, 2 on CPU")
    ap.add_argument("--bench-limit", help="path of bench_limit.py (default ../shared/tools/ from the repo)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--cudnn", choices=("on", "off"), default="on",
                    help="cuDNN for the SMASH steps (off: PyTorch's own convolution kernels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prewarm", type=int, default=0,
                    help="build the convolution plans of N draws of a whole run's stream first (conv_plans.py)")
    ap.add_argument("--exact-too", action="store_true",
                    help="also train as the CPU does (exact widths, no bank state): first batch, full space")
    ap.add_argument("--graphs-too", action="store_true",
                    help="also train with per-configuration CUDA graphs (SMASH_CONV_GRAPHS): first batch, full space")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/smash-<device>-<date>.json)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cfg = make_config(a.preset, dataset=a.dataset, seed=a.seed)
    batches = [int(b) for b in (a.batches or str(a.batch)).split(",")]
    spaces = ["full"] if a.full_space else ["start"] if a.start_space else ["start", "full"]
    out = Path(a.out) if a.out else default_out(dev)
    notes = [] if dev.type == "cuda" else ["CPU: fp32 throughout (train.py autocasts to bf16 on CUDA only)"]
    load0 = os.getloadavg()[0]
    res: dict = {"train": [], "breakdown": []}
    doc = {"benchmark": "smash", "machine": common.machine(dev), "device_type": dev.type,
           "preset": a.preset, "dataset_shape": cfg.dataset,
           "settings": {**vars(a), "cudnn_benchmark_smash": torch.backends.cudnn.benchmark,
                        "cudnn_smash": a.cudnn,
                        "autocast_bf16": dev.type == "cuda", "spaces": spaces,
                        "env": {k: os.environ.get(k) for k in ENV_VARS}},
           "results": res, "ratios": {}, "notes": notes}
    if dev.type == "cuda":
        doc["original_h200"] = {
            "train_images_per_s": {f"{k[0]}_b{k[1]}": v for k, v in ORIGINAL_H200["train"].items()},
            "score_archs_per_s": {f"b{k}": round(v, 3) for k, v in ORIGINAL_H200["score"].items()},
            "static_same_run_images_per_s": ORIGINAL_H200["static"]}

    def save(r: dict | None = None) -> None:  # after every result, so a timeout keeps what was measured
        if r is not None:
            print(json.dumps(r), flush=True)
        doc["ratios"] = ratios(res, dev)
        common.save_result(doc, out.name, out.parent)

    if a.baseline:
        run_baseline(a, dev, batches, res, notes, save)
    # cuDNN off sends convolutions to PyTorch's own kernels: no per-configuration plan to build
    torch.backends.cudnn.enabled = a.cudnn == "on"
    s = Smash.create(cfg, dev)
    doc["settings"]["conv_multiple"], doc["settings"]["bank_state"] = s.net.multiple, s.net.bank_state
    data = random_data(cfg, max(4096, 8 * max(batches)), dev, a.seed)
    for b in batches:
        if a.prewarm:  # per batch: the plans of two batches overflow a thread's cache (10,000)
            res.setdefault("prewarm", []).append(prewarm(s, cfg, [b], a.prewarm))
            save(res["prewarm"][-1])
        for sp in spaces:
            res["train"].append(bench_train(s, cfg, data, b, sp, a.steps, a.warmup, a.windows))
            save(res["train"][-1])
            if a.sandwich:
                res["train"].append(bench_train(s, cfg, data, b, sp, a.steps, a.warmup, a.windows, a.sandwich))
                save(res["train"][-1])
            if a.drop_path:
                res["train"].append(bench_train(s, cfg, data, b, sp, a.steps, a.warmup, a.windows,
                                                drop_path=a.drop_path))
                save(res["train"][-1])
            if a.breakdown:
                res["breakdown"].append(bench_breakdown(s, cfg, data, b, sp, a.breakdown, min(a.warmup, 2)))
                save(res["breakdown"][-1])
    if a.exact_too and (s.net.multiple > 1 or s.net.bank_state):
        exact = Smash.create(cfg, dev)
        exact.net.multiple = exact.hyper.multiple = 1
        exact.net.bank_state = False
        r = bench_train(exact, cfg, data, batches[0], "full", a.steps, a.warmup, a.windows)
        res["train"].append({**r, "exact_too": True})
        save(res["train"][-1])
        del exact
    if a.graphs_too:
        res["train"].append(bench_graphs(cfg, dev, data, batches[0], a))
        save(res["train"][-1])
    if a.score_archs or a.rank_corr:
        val = random_data(cfg, a.score_images, dev, a.seed + 1)
        eval_batches = [int(b) for b in a.score_batch.split(",")]
        res["score"] = []
        for eb in eval_batches if a.score_archs else []:
            res["score"].append(bench_score(s, cfg, val, eb, a.score_archs, 1))
            save(res["score"][-1])
        if a.rank_corr:
            rank_val = real_rank_data(s, cfg, a, notes) if a.rank_train_steps else val
            res["rank_corr"] = rank_corr(s, cfg, rank_val, eval_batches[0], a.rank_corr)
            res["rank_corr"]["data"] = "random" if rank_val is val else f"{cfg.dataset} test split"
            res["rank_corr"]["trained_steps_before"] = a.rank_train_steps if rank_val is not val else 0
            save(res["rank_corr"])
    if a.profile:
        res["profile"] = bench_profile(s, cfg, data, batches[0], spaces[-1], a.profile)
    notes.append(f"1-minute load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end, "
                 f"on {os.cpu_count()} CPUs (other processes share the CPU when it exceeds the cores)")
    save()
    print(summary(doc))
    print(f"wrote {out}")


def prewarm(s: Smash, cfg, batches: list[int], n: int) -> dict:
    """Build the plans of the configurations in `n` draws of a run's stream (progress 0 to 1, seeds apart from the
    measured steps'), at each batch: the cache a long run has, in a short call."""
    archs = [arch_at(cfg, 5 * 10**6 + t, t / max(n - 1, 1)) for t in range(n)]
    keys = set().union(*(conv_keys(s.net, s.hyper, archs, b) for b in batches))
    r = warm_conv_plans(keys, s.device)
    return {"draws": n, "batches": batches, **r}


def bench_graphs(cfg, dev: torch.device, data: DeviceData, batch: int, a) -> dict:
    """The whole space with the ops' convolutions through per-configuration graphs (conv_graphs.py), their graphs
    captured first from `--prewarm` draws (else as training meets them)."""
    g = Smash.create(cfg, dev)
    g.net.graphs = graphs = ConvGraphs(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
    t0, held = time.perf_counter(), 0
    if a.prewarm:
        archs = [arch_at(cfg, 5 * 10**6 + t, t / max(a.prewarm - 1, 1)) for t in range(a.prewarm)]
        held = graphs.warm({k for arch in archs for k in g.net.conv_configs(arch, batch)})
    capture_s = time.perf_counter() - t0
    r = bench_train(g, cfg, data, batch, "full", a.steps, a.warmup, a.windows)
    return {**r, "graphs_too": True, "graphs_captured_first": held, "capture_seconds": round(capture_s, 1),
            "graphs_held": len(graphs.entries), "captures": graphs.captures}


def run_baseline(a, dev: torch.device, batches: list[int], res: dict, notes: list[str], save) -> None:
    path = find_bench_limit(a.bench_limit)
    if path is None:
        notes.append("--baseline skipped: bench_limit.py not found (../shared/tools/ from the repo, or --bench-limit)")
        return
    modes = (a.baseline_modes or ("fp32,bf16_cl" if dev.type == "cuda" else "fp32")).split(",")
    steps = a.baseline_steps or (30 if dev.type == "cuda" else 2)
    res["static"] = []
    for b in batches:
        for r in bench_static(path, dev, b, modes, steps, min(a.warmup, 5) if dev.type == "cuda" else 1):
            res["static"].append(r)
            save(r)


def default_out(dev: torch.device) -> Path:
    name = "cpu" if dev.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(dev).lower())
    name = name.strip("-")
    return common.RESULTS / f"smash-{name}-{datetime.date.today().isoformat()}.json"


if __name__ == "__main__":
    main()
