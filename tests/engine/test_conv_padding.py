"""The CUDA execution (rounded widths, `SmashNet.multiple` and `HyperNet.multiple`, and blocks over one tensor of
all banks, `SmashNet.bank_state`) computes exactly what the CPU's exact execution computes: in float64 on the CPU,
over sampled architectures, one SMASH step after another, and the paper's ResNet, DenseNet and FractalNet blocks,
the logits, every gradient (and which are None), the BatchNorm statistics, the parameters and Adam's state agree
to float64 rounding (the bank state's backward and the fused weight norm sum in another order). And the
convolutions the networks say they run (`conv_configs`, what benchmarks/plan_cache.py counts) are the ones their
forwards dispatch."""

import dataclasses
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from smash_engine.blocks import NAMED_BLOCKS
from smash_engine.config import make_config
from smash_engine.encoding import encode
from smash_engine.errors import ConfigError
from smash_engine.network import ConvKey, SmashNet
from smash_engine.sampler import sample_architecture
from smash_engine.space import SpaceConfig, space_preset
from smash_engine.train import Smash, bank_state, conv_multiple, smash_step

TOL = dict(rtol=1e-9, atol=1e-11)  # float64 rounding; a misplaced channel differs by O(1)
# after steps: Adam divides by the root of its second moment, which lifts the rounding of near-zero gradients
STEP_TOL = dict(rtol=1e-7, atol=1e-9)
ROOT = Path(__file__).resolve().parents[2]


def _smash(space: SpaceConfig, multiple: int) -> Smash:
    """A float64 Smash on the CPU, executing as on CUDA where `multiple` > 1."""
    cfg = dataclasses.replace(make_config("quick", seed=3), space=space)
    s = Smash.create(cfg, torch.device("cpu"))
    s.net.double(), s.hyper.double()  # the same Parameter objects: the optimizer still holds them
    _execute(s, multiple)
    return s


def _execute(s: Smash, multiple: int) -> None:
    s.net.multiple = s.hyper.multiple = multiple
    s.net.bank_state = s.hyper.fused_norm = multiple > 1


def _plan(s: Smash, arch):
    plan = encode(arch, s.space)
    plan.packed = plan.packed.astype("float64")
    return plan.to("cpu")


def _step(s: Smash, arch, x, y):
    """One training step as `smash_step` takes it, keeping the logits."""
    s.hyper.train(), s.net.train()
    inner = s.inner()
    inner.plan = _plan(s, arch)
    logits = s.model(x)
    s.update(F.cross_entropy(logits, y))
    return logits.detach()


def _assert_same(a: Smash, b: Smash, la, lb, what: str) -> None:
    torch.testing.assert_close(la, lb, **STEP_TOL, msg=lambda m: f"{what} logits: {m}")
    pa = dict([*a.net.named_parameters(), *(("h." + n, p) for n, p in a.hyper.named_parameters())])
    pb = dict([*b.net.named_parameters(), *(("h." + n, p) for n, p in b.hyper.named_parameters())])
    for name, p in pa.items():
        q = pb[name]
        assert (p.grad is None) == (q.grad is None), f"{what}: {name} has a gradient in one execution only"
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, **STEP_TOL, msg=lambda m, n=name: f"{what} grad {n}: {m}")
        torch.testing.assert_close(p, q, **STEP_TOL, msg=lambda m, n=name: f"{what} param {n}: {m}")
        sa, sb = a.opt.state.get(p, {}), b.opt.state.get(q, {})
        assert sa.keys() == sb.keys(), f"{what}: {name} optimizer state differs in kind"
        for k in sa:
            torch.testing.assert_close(sa[k], sb[k], **STEP_TOL, msg=lambda m, n=name, k=k: f"{what} adam {k} {n}: {m}")
    for name, buf in a.net.named_buffers():
        torch.testing.assert_close(buf, dict(b.net.named_buffers())[name], **STEP_TOL,
                                   msg=lambda m, n=name: f"{what} BN {n}: {m}")


def _compare(space: SpaceConfig, multiple: int, archs, batch: int = 3) -> None:
    exact, padded = _smash(space, 1), _smash(space, multiple)
    padded.load_state_dict(exact.state_dict())
    gen = torch.Generator().manual_seed(0)
    for t, arch in enumerate(archs):
        x = torch.randn(batch, space.image_channels, space.image_size, space.image_size, generator=gen,
                        dtype=torch.float64)
        y = torch.randint(0, space.num_classes, (batch,), generator=gen)
        _assert_same(exact, padded, _step(exact, arch, x, y), _step(padded, arch, x, y), f"step {t} ({arch.id})")


@pytest.mark.timeout(1800)  # ~1 minute alone; a loaded 2-core machine has made it ten
def test_rounded_widths_give_the_exact_logits_gradients_and_statistics_on_200_architectures():
    space = space_preset("tiny")  # groups 1 and 2 (padding inside each group), small enough for 200 of them
    s = _smash(space, 1)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    for t in range(200):
        arch = sample_architecture(space, rng, progress=t / 200)
        plan = _plan(s, arch)
        x = torch.randn(2, space.image_channels, space.image_size, space.image_size, generator=gen,
                        dtype=torch.float64)
        y = torch.randint(0, space.num_classes, (2,), generator=gen)
        before = [b.clone() for b in s.net.buffers()]
        seen = []
        for multiple in (1, 8):
            for b, saved in zip(s.net.buffers(), before, strict=True):
                b.copy_(saved)
            _execute(s, multiple)
            s.net.zero_grad(set_to_none=True), s.hyper.zero_grad(set_to_none=True)
            logits = s.net(x, plan, s.hyper.op_weights(plan))
            F.cross_entropy(logits, y).backward()
            seen.append((logits.detach(), [p.grad for p in s.params()], [b.clone() for b in s.net.buffers()]))
        (la, ga, ba), (lb, gb, bb) = seen
        torch.testing.assert_close(la, lb, **TOL)
        assert [g is None for g in ga] == [g is None for g in gb], f"step {t}: which gradients exist differs"
        for a, b in [*zip(ba, bb, strict=True), *((a, b) for a, b in zip(ga, gb, strict=True) if a is not None)]:
            torch.testing.assert_close(a, b, **TOL)


def test_rounded_widths_train_exactly_as_exact_ones_step_after_step():
    space = space_preset("quick")
    rng = random.Random(3)
    _compare(space, 16, [sample_architecture(space, rng, progress=t / 12) for t in range(12)])


@pytest.mark.timeout(1800)
def test_rounded_widths_exact_in_the_paper_space():
    # groups up to 8, kernels to 7, c wide enough that padding it to 32 adds columns
    space = space_preset("paper", image_size=8, num_classes=10)
    rng = random.Random(1)
    _compare(space, 32, [sample_architecture(space, rng, progress=1.0) for _ in range(6)], batch=2)


@pytest.mark.parametrize("name", sorted(NAMED_BLOCKS))
def test_rounded_widths_exact_on_the_papers_blocks(name):
    arch = NAMED_BLOCKS[name]()
    block = arch.blocks[0]
    # a one-block space these blocks lie in: their widths, a 3x3 kernel, the block's input as the stem's output
    space = SpaceConfig(N=4, N_max=16, depth=2, width=block.in_channels // 8, dc=1, n_blocks=1, kernels=(3,),
                        groups=(1, 2, 4), stem_kernel=3, image_channels=1, image_size=8, num_classes=10)
    arch = dataclasses.replace(arch, blocks=(dataclasses.replace(block, out_channels=space.skeleton_out(0)),))
    encode(arch, space)  # in the space, or this test tests nothing
    _compare(space, 16, [arch, arch])


class _ConvRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvKey] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            x, w, _, stride, padding, dilation, _, _, groups = args
            self.calls.append(ConvKey(x.shape[0], x.shape[1], x.shape[2], x.shape[3], w.shape[0],
                                      tuple(w.shape[2:]), tuple(dilation), groups, tuple(padding)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("multiple", [1, 32])
def test_conv_configs_are_what_the_forward_runs(multiple):
    space = space_preset("paper", image_size=8, num_classes=10)
    s = _smash(space, multiple)
    rng = random.Random(2)
    for _ in range(3):
        arch = sample_architecture(space, rng, progress=1.0)
        plan = _plan(s, arch)
        with torch.no_grad(), _ConvRecorder() as rec:
            w = s.hyper.op_weights(plan)
            hyper_calls = len(rec.calls)
            s.net(torch.zeros(2, 3, 8, 8, dtype=torch.float64), plan, w)
        hyper = [(1, *k[1:5], k[5], k[8]) for k in rec.calls[:hyper_calls]]
        assert hyper == [(b, ci, h, w_, co, tuple(k), tuple(p)) for b, ci, h, w_, co, k, p
                         in s.hyper.conv_configs(plan.c.shape[-1])]
        assert rec.calls[hyper_calls:] == s.net.conv_configs(arch, 2)
        if multiple > 1:  # every op width the library sees is a multiple: the point of padding
            assert all(k.cout % multiple == 0 for k in s.net.conv_configs(arch, 2)[1:] if k.kernel != (1, 1))
            assert all(k.width % multiple == 0 for k in rec.calls[:hyper_calls])


def test_the_device_decides_the_execution(monkeypatch):
    assert conv_multiple(torch.device("cpu")) == 1  # exact widths where padding is arithmetic
    assert conv_multiple(torch.device("cuda")) == 32
    assert not bank_state(torch.device("cpu")) and bank_state(torch.device("cuda"))
    monkeypatch.setenv("SMASH_CONV_MULTIPLE", "1")
    monkeypatch.setenv("SMASH_BANK_STATE", "0")
    assert conv_multiple(torch.device("cuda")) == 1 and not bank_state(torch.device("cuda"))
    monkeypatch.setenv("SMASH_CONV_MULTIPLE", "x")
    with pytest.raises(ConfigError, match="SMASH_CONV_MULTIPLE"):
        conv_multiple(torch.device("cpu"))
    monkeypatch.setenv("SMASH_BANK_STATE", "yes")
    with pytest.raises(ConfigError, match="SMASH_BANK_STATE"):
        bank_state(torch.device("cpu"))


def test_a_cpu_run_keeps_exact_widths_and_its_step_is_unchanged():
    cfg = make_config("quick", seed=0)
    s = Smash.create(cfg, torch.device("cpu"))
    assert s.net.multiple == 1 and s.hyper.multiple == 1 and not s.net.bank_state
    arch = sample_architecture(cfg.space, random.Random(0))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    assert torch.isfinite(smash_step(s, arch, x, y, 1e-3)).all()
    assert isinstance(SmashNet(cfg.space).multiple, int)


def test_plan_cache_benchmark_replays_the_stream_and_rounding_bounds_the_plans(tmp_path):
    """benchmarks/plan_cache.py through its command line: every setting reported with the keys the issue names,
    the engine's CUDA default marked once, and rounding holding fewer configurations than exact widths."""
    got = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_cache.py"), "--steps", "40", "--window",
                          "20", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    doc = json.loads(next(tmp_path.glob("plan-cache-paper-*.json")).read_text())
    rows = {r["name"]: r for r in doc["settings"]}
    for r in rows.values():
        assert {"name", "engine_default", "builds_per_step_last_1000", "plans_held"} <= r.keys()
        # a plan per configuration forward, and one per gradient (data and weight) backward
        assert len(r["windows"]) == 2 and r["plans_held"] <= 3 * r["distinct_configurations"]
    assert sum(r["engine_default"] for r in rows.values()) == 1
    exact = next(r for r in rows.values() if r["multiple"] == 1 and r["cap_per_thread"] == 0)
    default = next(r for r in rows.values() if r["engine_default"])
    assert default["distinct_configurations"] < exact["distinct_configurations"]
    assert default["main_flops_ratio"] > 1.0 == exact["main_flops_ratio"]


class _Kernels(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not getattr(func, "is_view", False):
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def _kernels(s: Smash, archs, autocast: bool = False) -> Counter:
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    with _Kernels() as k:
        for arch in archs:
            plan = encode(arch, s.space).to("cpu")
            with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                logits = s.net(x, plan, s.hyper.op_weights(plan))
            F.cross_entropy(logits.float(), y).backward()
    return k.ops


def test_the_cuda_execution_dispatches_fewer_kernels_and_casts_each_bank_once():
    space = space_preset("paper", image_size=8, num_classes=10)
    cfg = dataclasses.replace(make_config("quick", seed=3), space=space)
    s = Smash.create(cfg, torch.device("cpu"))
    rng = random.Random(4)
    archs = [sample_architecture(space, rng, progress=1.0)]
    exact = _kernels(s, archs)
    s.net.bank_state = s.hyper.fused_norm = True  # (padding trades a copy for a pad: the count is these two's)
    state = _kernels(s, archs)
    # one gradient accumulation an op instead of one per bank read: most of the backward's adds go
    assert state["aten.add"] < exact["aten.add"] / 2
    # every HyperNet conv's weight norm in one call, not one each (nor their backward)
    assert state["aten.linalg_vector_norm"] == 0 < exact["aten.linalg_vector_norm"]
    assert sum(state.values()) < sum(exact.values())
    # under autocast: a shared bank and the generated matrix cast once a forward (and once back), not once per op
    # and convolution (~325 casts a step before); the few more are activations (c, BatchNorm's inputs, the loss)
    casts = _kernels(s, archs, autocast=True)["aten._to_copy"] / len(archs)
    tensors = len([*s.net.parameters(), *s.hyper.parameters()])
    assert casts <= 2 * (tensors + 8) < len(s.net.conv_configs(archs[0], 2))
