"""Per-configuration convolution graphs (`conv_graphs.ConvGraphs`), checked on the CPU where the same arena
protocol runs without graphs: replaying through the shared arenas computes what eager convolutions compute, an
arena that must grow recaptures what held it, and what a graph captures is one fixed sequence of (operation,
shape) per configuration, whichever architecture reached it, on the same arena addresses for every
configuration. Capture itself and the time it saves need a GPU (`benchmarks/bench_smash.py --graphs-too`)."""

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from smash_engine.config import make_config
from smash_engine.conv_graphs import ConvGraphs
from smash_engine.encoding import encode
from smash_engine.errors import ConfigError
from smash_engine.network import ConvKey
from smash_engine.sampler import sample_architecture
from smash_engine.space import space_preset
from smash_engine.train import Smash, conv_graphs


def _smash(space):
    cfg = dataclasses.replace(make_config("quick", seed=3), space=space)
    s = Smash.create(cfg, torch.device("cpu"))
    s.net.double(), s.hyper.double()
    s.net.multiple = s.hyper.multiple = 16
    s.net.bank_state = s.hyper.fused_norm = True  # the CUDA execution the graphs would run in
    return s


def _plan(s, arch):
    plan = encode(arch, s.space)
    plan.packed = plan.packed.astype("float64")
    return plan.to("cpu")


def test_replaying_through_the_arenas_gives_the_eager_logits_and_gradients():
    space = space_preset("quick")
    s = _smash(space)
    graphs = ConvGraphs(torch.device("cpu"), torch.float64)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for t in range(8):
        plan = _plan(s, sample_architecture(space, rng, progress=t / 8))
        x = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (3,), generator=gen)
        seen = []
        for g in (None, graphs):
            s.net.graphs = g
            s.net.zero_grad(set_to_none=True), s.hyper.zero_grad(set_to_none=True)
            logits = s.net(x, plan, s.hyper.op_weights(plan))
            F.cross_entropy(logits, y).backward()
            seen.append((logits.detach(), [p.grad for p in s.params()]))
        (la, ga), (lb, gb) = seen
        torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-14)
        assert [g is None for g in ga] == [g is None for g in gb]
        for a, b in zip(ga, gb, strict=True):
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert graphs.entries and graphs.captures >= len(graphs.entries)


def test_a_growing_arena_recaptures_and_stays_right():
    graphs = ConvGraphs(torch.device("cpu"), torch.float64)
    small = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    graphs.conv(small, w, (1, 1), (1, 1), 1).sum().backward()
    assert len(graphs.entries) == 1
    big = torch.randn(2, 16, 6, 6, dtype=torch.float64, requires_grad=True)
    wb = torch.randn(8, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    out = graphs.conv(big, wb, (1, 1), (1, 1), 1)
    assert len(graphs.entries) == 1  # the small one's graph held the old arenas: dropped
    out.sum().backward()
    ref_x, ref_w = big.detach().requires_grad_(), wb.detach().requires_grad_()
    F.conv2d(ref_x, ref_w, None, 1, 1).sum().backward()
    torch.testing.assert_close(big.grad, ref_x.grad)
    torch.testing.assert_close(wb.grad, ref_w.grad)
    again = graphs.conv(small, w, (1, 1), (1, 1), 1)  # captured again, on the larger arenas
    torch.testing.assert_close(again, F.conv2d(small, w, None, 1, 1))
    with torch.no_grad():  # scoring: eager, nothing captured
        graphs.conv(torch.randn(5, 4, 6, 6, dtype=torch.float64), w, (1, 1), (1, 1), 1)
    assert len(graphs.entries) == 2


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func), tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))))
        return func(*args, **(kwargs or {}))


def test_a_configuration_captures_one_sequence_whichever_architecture_reached_it():
    """What CUDA-graph capture needs: each configuration's forward and backward dispatch the same operations on the
    same shapes every time, from any architecture, reading and writing arenas every configuration shares."""
    space = space_preset("paper", image_size=8, num_classes=10)
    s = _smash(space)
    graphs = ConvGraphs(torch.device("cpu"), torch.float64)
    s.net.graphs = graphs
    rng = random.Random(1)
    by_key: dict[ConvKey, list] = {}
    for _ in range(3):
        plan = _plan(s, sample_architecture(space, rng, progress=1.0))
        logits = s.net(torch.randn(2, 3, 8, 8, dtype=torch.float64), plan, s.hyper.op_weights(plan))
        logits.sum().backward()
        for key, e in graphs.entries.items():
            with _Recorder() as rec:
                e.forward()
                e.backward()
            by_key.setdefault(key, []).append(rec.calls)
    shared = [calls for calls in by_key.values() if len(calls) > 1]
    assert shared, "no configuration met twice: the check checks nothing"
    for calls in shared:
        assert all(c == calls[0] for c in calls)
    addresses = {e.x.data_ptr() for e in graphs.entries.values()} | {e.y.data_ptr() for e in graphs.entries.values()}
    assert len(addresses) == 2  # every configuration reads and writes the same two arenas


def test_graphs_are_opt_in(monkeypatch):
    assert conv_graphs(torch.device("cuda")) is None
    monkeypatch.setenv("SMASH_CONV_GRAPHS", "1")
    assert isinstance(conv_graphs(torch.device("cpu")), ConvGraphs)
    monkeypatch.setenv("SMASH_CONV_GRAPHS", "on")
    with pytest.raises(ConfigError, match="SMASH_CONV_GRAPHS"):
        conv_graphs(torch.device("cpu"))
