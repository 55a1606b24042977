import dataclasses
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from smash_engine.cost import arch_cost
from smash_engine.encoding import Layout, decode, encode
from smash_engine.errors import ConfigError, InvalidArchitecture
from smash_engine.hypernet import HYPER_PRESETS, HyperConfig, HyperNet, make_hypernet
from smash_engine.network import FixedNet, SmashNet, fixed_from_smash
from smash_engine.sampler import sample_architecture
from smash_engine.space import space_preset


def _fields(arch):
    for i, b in enumerate(arch.blocks):
        for op in b.ops:
            convs = tuple(c and dict(kernel=c.kernel, dilation=c.dilation, groups=c.groups) for c in op.convs)
            yield dict(block=i, bank_size=b.bank_size, reads=op.reads, writes=op.writes,
                       out_channels=op.out_channels, bottleneck=op.bottleneck, convs=convs)


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_decoding_c_recovers_every_op_field(preset):
    space = space_preset(preset)
    rng = random.Random(0)
    for _ in range(20):
        arch = sample_architecture(space, rng)
        plan = encode(arch, space)
        assert decode(plan.c, space) == list(_fields(arch))


def test_c_layout_grows_with_the_architecture():
    space = space_preset("paper")
    rng = random.Random(1)
    for _ in range(10):
        arch = sample_architecture(space, rng)
        plan = encode(arch, space)
        n_in = sum(len(op.reads) * b.bank_size for b in arch.blocks for op in b.ops)
        assert plan.c.shape == (1, Layout(space).channels, 16, n_in // space.slice_channels)
        assert set(np.unique(plan.c)) == {-1.0, 1.0}
        # rows beyond an op's bottleneck are all "off"
        first, b0 = 0, arch.blocks[0].ops[0].bottleneck
        assert (plan.c[0, :, b0 // space.N:, first] == -1).all()
        assert (plan.c[0, :, : b0 // space.N, first] == 1).any(axis=0).all()


def test_position_channels_tell_an_ops_rows_and_columns_apart():
    space = space_preset("quick", encode_position=True)
    plain = space_preset("quick")
    arch = sample_architecture(space, random.Random(2))
    plan, old = encode(arch, space), encode(arch, plain)
    lay = Layout(space)
    assert lay.channels == Layout(plain).channels + 1 + lay.rows and plan.c.shape[1] == lay.channels
    assert decode(plan.c, space) == list(_fields(arch))  # the fields are where they were
    assert torch.equal(plan.c[:, :Layout(plain).channels], old.c)
    op0 = arch.blocks[0].ops[0]
    rows, cols = op0.bottleneck // space.N, len(op0.reads) * arch.blocks[0].bank_size // space.slice_channels
    tiles = plan.c[0, :, :rows, :cols].flatten(1).T  # one encoding per generated tile of op 0
    assert len({tuple(t.tolist()) for t in tiles}) == rows * cols  # all different; without position: 1 per bank
    col = plan.c[0, lay.offsets()["colpos"], 0, :cols]
    assert col[0] == -1 and (cols == 1 or col[-1] == 1)
    hyper = HyperNet(space, HYPER_PRESETS["small"])
    assert hyper.op_weights(plan).shape[0] == space.max_bottleneck_channels


def test_architecture_outside_the_space_is_refused():
    arch = sample_architecture(space_preset("paper"), random.Random(0))
    with pytest.raises(InvalidArchitecture, match="outside this run's search space"):
        encode(arch, space_preset("quick"))


def test_hypernet_output_grows_with_c_and_op_weights_have_unit_norm():
    space = space_preset("quick")
    hyper = HyperNet(space, HYPER_PRESETS["small"])
    rng = random.Random(2)
    for _ in range(5):
        plan = encode(sample_architecture(space, rng), space)
        w = hyper.op_weights(plan.to("cpu"))
        assert w.shape == (16 * space.max_bottleneck, plan.c.shape[-1] * space.slice_channels)
        for j in range(len(plan.op_in)):
            a, n, b = plan.op_start[j], plan.op_in[j], plan.op_bottleneck[j]
            assert torch.linalg.norm(w[:b, a:a + n]).item() == pytest.approx(1.0, rel=1e-5)


def test_smashnet_forward_backward_50_architectures_reach_the_hypernet():
    torch.manual_seed(0)
    space = space_preset("tiny")
    hyper, net = HyperNet(space, HYPER_PRESETS["small"]), SmashNet(space)
    rng = random.Random(0)
    x = torch.randn(8, 1, 8, 8)
    y = torch.randint(0, 10, (8,))
    seen_grad = {n: False for n, _ in hyper.named_parameters()}
    for _ in range(50):
        plan = encode(sample_architecture(space, rng), space).to("cpu")
        hyper.zero_grad()
        net.zero_grad()
        loss = F.cross_entropy(net(x, plan, hyper.op_weights(plan)), y)
        loss.backward()
        assert torch.isfinite(loss)
        for n, p in hyper.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
            seen_grad[n] |= p.grad.abs().sum().item() > 0
    assert all(seen_grad.values())


def test_fixednet_with_generated_weights_matches_smashnet():
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper, net = HyperNet(space, HYPER_PRESETS["small"]), SmashNet(space)
    rng = random.Random(5)
    x = torch.randn(16, 1, 8, 8)
    net.train()
    for _ in range(3):  # give BN running stats non-trivial values
        plan = encode(sample_architecture(space, rng), space).to("cpu")
        net(x, plan, hyper.op_weights(plan))
    net.eval()
    with torch.no_grad():
        for _ in range(10):
            plan = encode(sample_architecture(space, rng), space).to("cpu")
            w = hyper.op_weights(plan)
            fixed = fixed_from_smash(net, w, plan).eval()
            torch.testing.assert_close(fixed(x), net(x, plan, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm, dims", [("bn", 2), ("none", 2), ("bn", 3)])
def test_arch_cost_is_exact(norm, dims):
    space = space_preset("quick")
    rng = random.Random(4)
    for _ in range(5):
        arch = dataclasses.replace(sample_architecture(space, rng), spatial_dims=dims)
        net = FixedNet(arch, norm=norm)
        params, flops = arch_cost(arch, norm)
        assert params == sum(p.numel() for p in net.parameters())
        with FlopCounterMode(display=False) as counter:
            net(torch.randn(1, 1, *(8,) * dims))
        assert flops == counter.get_total_flops()


def test_3d_variant_gives_each_conv_a_depth_axis_copied_from_height():
    arch = dataclasses.replace(sample_architecture(space_preset("quick"), random.Random(5)), spatial_dims=3)
    net = FixedNet(arch)
    convs = [(op, m) for op, m in zip((op for b in arch.blocks for op in b.ops), net.ops, strict=True)]
    for op, m in convs:
        for n, conv in m.convs.items():
            c = op.convs[int(n)]
            assert isinstance(conv, torch.nn.Conv3d)
            assert conv.kernel_size == (c.kernel[0], *c.kernel) and conv.dilation == (c.dilation[0], *c.dilation)
    out = net(torch.randn(2, 1, 8, 8, 8))
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_fixednet_trains_and_every_parameter_gets_a_gradient():
    arch = sample_architecture(space_preset("quick"), random.Random(6))
    net = FixedNet(arch)
    loss = F.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for n, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, n


def test_a_step_with_non_finite_gradients_is_skipped_on_the_device():
    from smash_engine.train import Smash, smash_step
    from tests.conftest import tiny_config

    s = Smash.create(tiny_config(), torch.device("cpu"))
    arch = sample_architecture(s.space, random.Random(0))
    before = [p.detach().clone() for p in s.params()]
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    m = smash_step(s, arch, bad, y, 1e-3)
    assert m[2].item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, s.params(), strict=True))
    m = smash_step(s, arch, x, y, 1e-3)
    assert m[2].item() == 0.0 and torch.isfinite(m[0])
    assert not all(torch.equal(a, b) for a, b in zip(before, s.params(), strict=True))


def test_shared_conv_gradients_are_the_sum_of_the_ops_gradients():
    """SmashNet's one-node slicing of the shared convs gives each shared weight exactly the sum of the
    gradients its ops' convolutions get in the equivalent FixedNet."""
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper, net = HyperNet(space, HYPER_PRESETS["small"]), SmashNet(space).eval()
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    rng = random.Random(9)
    for _ in range(3):
        plan = encode(sample_architecture(space, rng), space).to("cpu")
        w = hyper.op_weights(plan).detach()
        fixed = fixed_from_smash(net, w, plan).eval()
        net.zero_grad()
        F.cross_entropy(net(x, plan, w), y).backward()
        F.cross_entropy(fixed(x), y).backward()
        expected = [torch.zeros_like(p) for p in net.convs]
        j = 0
        for i, block in enumerate(plan.arch.blocks):
            for op in block.ops:
                for n, conv in fixed.ops[j].convs.items():
                    expected[4 * i + int(n)][net.conv_index(int(n), op)] += conv.weight.grad
                j += 1
        for got, want in zip(net.convs, expected, strict=True):
            torch.testing.assert_close(got.grad if got.grad is not None else torch.zeros_like(want), want,
                                       rtol=1e-4, atol=1e-6)


def test_c_set_gains_start_at_one_and_fixednet_matches_smashnet_with_them():
    """With c-set gains the HyperNet also scales each op's output channels; a FixedNet holding the scaled
    weights computes what SmashNet does, and gains that differ per op really change the function."""
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper, net = HyperNet(space, HYPER_PRESETS["small-gains"]), SmashNet(space).eval()
    rng = random.Random(5)
    x = torch.randn(8, 1, 8, 8)
    plan = encode(sample_architecture(space, rng), space).to("cpu")
    w, gains, _ = hyper.generate(plan)
    assert gains.shape == (len(plan.op_in), space.max_bottleneck_channels + 4 * space.N_max)
    assert torch.equal(gains, torch.ones_like(gains))  # zero-initialised head: the fixed-norm HyperNet at first
    with torch.no_grad():
        torch.nn.init.normal_(hyper.gains.weight, std=0.5)
        for _ in range(5):
            plan = encode(sample_architecture(space, rng), space).to("cpu")
            w, gains, _ = hyper.generate(plan)
            assert gains.std() > 0.05
            fixed = fixed_from_smash(net, w, plan, gains).eval()
            torch.testing.assert_close(fixed(x), net(x, plan, w, gains), rtol=1e-5, atol=1e-5)
            assert not torch.allclose(net(x, plan, w, gains), net(x, plan, w), atol=1e-4)
    plan = encode(sample_architecture(space, rng), space).to("cpu")
    w, gains, _ = hyper.generate(plan)
    F.cross_entropy(net.train()(x, plan, w, gains), torch.arange(8)).backward()
    assert hyper.gains.weight.grad is not None and hyper.gains.weight.grad.abs().sum() > 0


def test_writer_context_describes_the_ops_that_wrote_each_read_bank():
    space = dataclasses.replace(space_preset("quick"), encode_writers=True)
    lay = Layout(space)
    off = lay.offsets()
    checked = 0
    for seed in range(30):
        arch = sample_architecture(space, random.Random(seed), 1.0)
        plan = encode(arch, space)
        seg = plan.packed[:, off["writers"]:off["total"]]
        col = 0
        for b in arch.blocks:
            for j, op in enumerate(b.ops):
                width = len(op.reads) * b.bank_size // space.slice_channels
                if len(op.reads) == 1:  # every column of the op holds that one bank
                    bank = op.reads[0]
                    writers = [w for w in b.ops[:j] if bank in w.writes]
                    want = np.full(seg.shape[1], -1.0, dtype=np.float32)
                    want[0] = 1.0 if bank < b.n_input_banks else -1.0
                    if len(writers) == 1:
                        w = writers[0]
                        want[1:5] = [1.0 if c is not None else -1.0 for c in w.convs]
                        want[5 + w.out_channels // space.N - 1] = 1.0
                    if len(writers) <= 1:
                        assert np.all(seg[col:col + width, :5 + space.k] == want[:5 + space.k]), (seed, j)
                        checked += 1
                col += width
    assert checked > 20
    assert Layout(space).channels == Layout(space_preset("quick")).channels + 1 + 4 + space.k + 4 * lay.conv_width


def test_graph_hypernet_generates_every_weight_and_fixednet_matches_smashnet():
    """The graph HyperNet sets an op's 1x1 tiles, gains and kxk template codes; a FixedNet holding the mixed,
    scaled weights computes what SmashNet does, and one SMASH step reaches every part of the graph model."""
    torch.manual_seed(0)
    space = space_preset("quick")
    cfg = dataclasses.replace(HYPER_PRESETS["graph"], templates=4)
    hyper, net = make_hypernet(space, cfg), SmashNet(space, cfg.templates).eval()
    assert net.convs[0].shape[0] == cfg.templates
    rng = random.Random(7)
    x = torch.randn(8, 1, 8, 8)
    for _ in range(4):
        plan = encode(sample_architecture(space, rng), space).to("cpu")
        with torch.no_grad():
            w, gains, mix = hyper.generate(plan)
            n_ops = len(plan.op_in)
            assert w.shape == hyper.op_weights(plan).shape
            assert gains.shape == (n_ops, space.max_bottleneck_channels + 4 * space.N_max)
            assert mix.shape == (n_ops, 4, cfg.templates) and mix.std() > 0  # ops get different conv codes
            fixed = fixed_from_smash(net, w, plan, gains, mix).eval()
            torch.testing.assert_close(fixed(x), net(x, plan, w, gains, mix), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="template code"):
        net(x, plan, w, gains)
    w, gains, mix = hyper.generate(plan)
    F.cross_entropy(net.train()(x, plan, w, gains, mix), torch.arange(8)).backward()
    for name, p in [*hyper.named_parameters(), *(("net." + n, p) for n, p in net.named_parameters())]:
        if name.startswith(("rounds", "norms", "embed", "tile", "gains", "mix")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(c.grad is not None and c.grad.abs().sum() > 0 for c in net.convs)


def test_graph_hypernet_reads_the_graph_from_c_not_from_the_architecture():
    """A corrupted c (same architecture, one field shuffled) must change the weights, as the corrupt study
    assumes; each op's 1x1 stays unit-norm."""
    from smash_engine.hypernet import op_weight
    from smash_engine.studies.corrupt import variant_plan

    torch.manual_seed(0)
    space = space_preset("quick")
    hyper = make_hypernet(space, HYPER_PRESETS["graph"]).eval()
    plan = encode(sample_architecture(space, random.Random(3), 1.0), space).to("cpu")
    with torch.no_grad():
        w, gains, mix = hyper.generate(plan)
        for j in range(len(plan.op_in)):
            torch.testing.assert_close(op_weight(w, plan, j).norm(), torch.tensor(1.0))
        moved = 0
        for field in ("read", "write", "kernel", "out"):
            p = variant_plan(plan, space, field, 0, 0)
            if p is not None:
                w2, g2, m2 = hyper.generate(p)
                moved += not torch.allclose(w, w2) and not torch.allclose(mix, m2)
    assert moved >= 3


def test_make_hypernet_refuses_a_kind_it_does_not_build():
    space = space_preset("quick")
    assert isinstance(make_hypernet(space, HYPER_PRESETS["small"]), HyperNet)
    with pytest.raises(ConfigError, match="not one we build"):
        make_hypernet(space, HyperConfig(kind="transformer"))
