"""Each convolution configuration as two CUDA graphs (forward; data and weight gradients), replayed instead of
dispatched. Opt-in (`SMASH_CONV_GRAPHS=1`, CUDA): not yet timed on a GPU.

Why: with the widths rounded (`SmashNet.multiple`) cuDNN's plans stay cached, but a convolution it has seen still
costs the host 0.65-0.9 ms forward and backward on an H200 (benchmarks/conv_plan_probe.py: the plan lookup,
autocast, dispatch, autograd), and a SMASH step runs ~150. A graph replay is one launch, whatever the
convolution. The architectures change every step; their convolutions come from ~3,500 configurations
(benchmarks/plan_cache.py), so a graph per configuration is replayed thousands of times.

How: every configuration's graphs read and write the same arenas (one per role: input, weight, output gradient,
output, input gradient, weight gradient; each as large as the largest configuration seen, and every graph is
dropped and recaptured lazily if one must grow), and all share one memory pool for their temporaries. A
convolution copies its input and weight into the arenas, replays, and copies the result out before the next
replay; the inputs it saves for backward are its own, as an eager convolution's are. So memory does not grow with
the number of configurations, beyond the graphs themselves.

On the CPU the same class runs the same arena protocol and calls the captured functions directly ("emulated"):
that is how the tests check, without a GPU, that replaying through the arenas computes what the eager convolution
computes, and that what a graph would capture is one fixed sequence of operations and shapes per configuration.
What only a GPU can check: capture itself, the time saved, and the graphs' memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .network import ConvKey


@dataclass
class _Entry:
    forward: Callable[[], None]
    backward: Callable[[], None]
    x: torch.Tensor
    w: torch.Tensor
    gy: torch.Tensor
    y: torch.Tensor
    gx: torch.Tensor
    gw: torch.Tensor


class ConvGraphs:
    """The graphs of every configuration met so far, on one device; `conv` is `F.conv2d` through them."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.bfloat16):
        self.device, self.dtype = device, dtype
        self.emulated = device.type != "cuda"
        self.entries: dict[ConvKey, _Entry] = {}
        self.arenas: dict[str, torch.Tensor] = {}
        self.pool = None if self.emulated else torch.cuda.graph_pool_handle()
        self.captures = 0

    def conv(self, x: torch.Tensor, w: torch.Tensor, padding: tuple[int, int], dilation: tuple[int, int],
             groups: int) -> torch.Tensor:
        """`F.conv2d(x, w, None, 1, padding, dilation, groups)`, by replay where gradients are recorded (training),
        eagerly elsewhere (scoring runs under no_grad at another batch size)."""
        if not torch.is_grad_enabled():
            return F.conv2d(x, w, None, 1, padding, dilation, groups)
        x, w = x.to(self.dtype), w.to(self.dtype)  # what autocast would have given the convolution
        key = ConvKey(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0], tuple(w.shape[2:]),
                      tuple(dilation), groups, tuple(padding))
        return _Replayed.apply(x, w, self, key)

    def entry(self, key: ConvKey) -> _Entry:
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = self._capture(key)
        return e

    def warm(self, keys) -> int:
        """Capture the graphs of these configurations now (a benchmark's warm-up); returns how many are held."""
        for k in keys:
            self.entry(ConvKey(*k))
        return len(self.entries)

    def _arena(self, role: str, shape: tuple[int, ...]) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        a = self.arenas.get(role)
        if a is None or a.numel() < n:
            self.entries.clear()  # a graph holds its arenas' addresses: each is captured again when next used
            size = max(n, 2 * (0 if a is None else a.numel()))
            self.arenas[role] = a = torch.zeros(size, device=self.device, dtype=self.dtype)
        return a[:n].view(shape)

    def _capture(self, k: ConvKey) -> _Entry:
        x_shape = (k.batch, k.cin, k.height, k.width)
        w_shape = (k.cout, k.cin // k.groups, *k.kernel)
        oh = k.height + 2 * k.padding[0] - k.dilation[0] * (k.kernel[0] - 1)
        ow = k.width + 2 * k.padding[1] - k.dilation[1] * (k.kernel[1] - 1)
        y_shape = (k.batch, k.cout, oh, ow)
        x, w, gy = self._arena("x", x_shape), self._arena("w", w_shape), self._arena("gy", y_shape)
        y, gx, gw = self._arena("y", y_shape), self._arena("gx", x_shape), self._arena("gw", w_shape)

        def forward() -> None:
            y.copy_(F.conv2d(x, w, None, 1, k.padding, k.dilation, k.groups))

        def backward() -> None:
            dx, dw, _ = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], list(k.padding),
                                                            list(k.dilation), False, [0, 0], k.groups,
                                                            [True, True, False])
            gx.copy_(dx)
            gw.copy_(dw)

        self.captures += 1
        if self.emulated:
            return _Entry(forward, backward, x, w, gy, y, gx, gw)
        side = torch.cuda.Stream(self.device)  # cuDNN chooses and builds its plan outside the capture
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            forward()
            backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graphs = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(graphs[0], pool=self.pool):
            forward()
        with torch.cuda.graph(graphs[1], pool=self.pool):
            backward()
        return _Entry(graphs[0].replay, graphs[1].replay, x, w, gy, y, gx, gw)


class _Replayed(torch.autograd.Function):
    """One convolution through its configuration's graphs: copy in, replay, copy out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, graphs: ConvGraphs, key: ConvKey) -> torch.Tensor:
        e = graphs.entry(key)
        e.x.copy_(x)
        e.w.copy_(w)
        e.forward()
        ctx.save_for_backward(x, w)
        ctx.graphs, ctx.key = graphs, key
        return e.y.clone()

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, w = ctx.saved_tensors
        e = ctx.graphs.entry(ctx.key)  # captured again if an arena grew since the forward
        e.x.copy_(x)
        e.w.copy_(w)
        e.gy.copy_(gy)
        e.backward()
        return e.gx.clone(), e.gw.clone(), None, None
