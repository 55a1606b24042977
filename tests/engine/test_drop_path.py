"""Path dropout (`TrainConfig.drop_path`): during SMASH training each op's output is dropped from the banks
it writes, per image, at a rate ramped from 0 to drop_path over the schedule."""

import random

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.errors import ConfigError
from smash_engine.sampler import sample_architecture
from smash_engine.train import Smash, drop_masks
from tests.conftest import digits_smash_steps


def test_masks_ramp_with_the_schedule_and_are_a_function_of_the_step():
    cfg = make_config("quick", drop_path=0.5)
    arch = sample_architecture(cfg.space, random.Random(1), 1.0)
    n_ops = sum(len(b.ops) for b in arch.blocks)
    assert drop_masks(make_config("quick"), 50, 100, arch, 8) is None  # off unless asked for
    assert drop_masks(cfg, 0, 100, arch, 8) is None  # the ramp starts at 0
    keep = drop_masks(cfg, 100, 100, arch, 4000)
    assert keep.shape == (n_ops, 4000)
    assert set(keep.unique().tolist()) == {0.0, 2.0}  # dropped, or scaled by 1 / (1 - 0.5)
    assert abs(float((keep == 0).float().mean()) - 0.5) < 0.02
    quarter = drop_masks(cfg, 50, 100, arch, 4000)
    assert abs(float((quarter == 0).float().mean()) - 0.25) < 0.02
    assert torch.equal(quarter, drop_masks(cfg, 50, 100, arch, 4000))  # a resumed run drops the same
    assert not torch.equal(quarter, drop_masks(cfg, 51, 100, arch, 4000))


def test_a_dropped_op_contributes_nothing_and_a_kept_one_is_unchanged():
    torch.manual_seed(0)
    cfg = make_config("quick", device="cpu")
    s = Smash.create(cfg, torch.device("cpu"))
    arch = sample_architecture(cfg.space, random.Random(3), 1.0)
    plan = s.plan(arch)
    x = torch.randn(6, cfg.space.image_channels, cfg.space.image_size, cfg.space.image_size)
    n_ops = sum(len(b.ops) for b in arch.blocks)
    w, *rest = s.hyper.generate(plan)
    s.net.train()
    with torch.no_grad():
        whole = s.net(x, plan, w, *rest)
        s.net.keep = torch.ones(n_ops, 6)
        assert torch.allclose(s.net(x, plan, w, *rest), whole)
        s.net.keep = torch.zeros(n_ops, 6)  # every op dropped: the generated 1x1 weights no longer matter
        a, b = s.net(x, plan, w, *rest), s.net(x, plan, 3 * w + 1, *rest)
        assert torch.allclose(a, b) and not torch.allclose(a, whole)
        s.net.eval()  # scoring never drops
        assert not torch.allclose(s.net(x, plan, w, *rest), s.net(x, plan, 3 * w + 1, *rest))
    s.net.keep = None


def test_smash_training_with_path_dropout_runs_in_the_engines_loop():
    s, steps = digits_smash_steps(150, drop_path=0.3)
    assert len(steps) == 3 and all(torch.isfinite(st.metrics[:2]).all() for st in steps)
    assert s.net.keep is None  # nothing left behind for the scoring forwards


def test_drop_path_option_is_checked():
    with pytest.raises(ConfigError, match="--drop-path is a rate"):
        make_config("quick", drop_path=1.0)


def test_path_dropout_applies_to_the_steps_own_architecture_beside_a_sandwich():
    _, steps = digits_smash_steps(100, drop_path=0.5, sandwich=3)  # the extras have other op counts: run whole
    assert len(steps) == 2 and all(torch.isfinite(st.metrics[:2]).all() for st in steps)
