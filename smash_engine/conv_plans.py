"""cuDNN's plans for the convolutions a SMASH run will meet, built before its first step (CUDA only).

cuDNN builds a plan the first time it meets a convolution configuration (shapes, kernel, dilation, groups,
dtype): ~2.6 ms of host time each on an H200 (benchmarks/conv_plan_probe.py). At rounded widths (`SmashNet.multiple`)
the paper space has ~3,500 configurations (benchmarks/plan_cache.py), so a run's first thousands of steps still
build a few plans each. `warm_conv_plans` builds them all at once, from the configurations the networks say they
run (`conv_configs`) over a stream of draws, by running each once, forward and backward, on zeros under the
autocast the training step uses. A benchmark calls it to measure the warm step in a short call; a search needs
none of it (the cache warms by itself), which is why the engine does not call it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F

from .encoding import encode
from .hypernet import HyperNet
from .network import ConvKey, SmashNet
from .space import Architecture


def conv_keys(net: SmashNet, hyper: HyperNet, archs: Iterable[Architecture], batch: int) -> set[ConvKey]:
    """Every configuration the SMASH step runs for these architectures at this batch, HyperNet's included."""
    keys: set[ConvKey] = set()
    for arch in archs:
        keys.update(net.conv_configs(arch, batch))
        for b, cin, h, w, cout, k, pad in hyper.conv_configs(encode(arch, net.space).packed.shape[0]):
            keys.add(ConvKey(b, cin, h, w, cout, tuple(k), (1, 1), 1, tuple(pad)))
    return keys


def warm_conv_plans(keys: Iterable[ConvKey], device: torch.device, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Run each configuration once, forward and both gradients, as the step runs it; returns the count and the time."""
    t0, n = time.perf_counter(), 0
    for k in keys:
        x = torch.zeros(k.batch, k.cin, k.height, k.width, device=device, requires_grad=True)
        w = torch.zeros(k.cout, k.cin // k.groups, *k.kernel, device=device, requires_grad=True)
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            y = F.conv2d(x, w, None, 1, k.padding, k.dilation, k.groups)
        y.float().sum().backward()
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"configurations": n, "seconds": round(time.perf_counter() - t0, 2)}
