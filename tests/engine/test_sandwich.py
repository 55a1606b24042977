"""The sandwich rule (`TrainConfig.sandwich`): each SMASH step also trains the largest and the smallest of
further draws on the same batch."""

import copy
import random

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.cost import arch_cost
from smash_engine.data import device_data, load_dataset
from smash_engine.errors import ConfigError
from smash_engine.sampler import sample_architecture
from smash_engine.seeds import SANDWICH, rng
from smash_engine.train import Smash, sandwich_archs, smash_step
from tests.conftest import digits_smash_steps


def test_the_sandwich_is_the_largest_and_smallest_of_the_steps_own_draws():
    assert sandwich_archs(make_config("quick"), 5, 0.05) == []  # off unless asked for
    cfg = make_config("quick", sandwich=6)
    got = sandwich_archs(cfg, 5, 0.05)
    r = rng(cfg.seed, SANDWICH, 5)
    flops = sorted(arch_cost(sample_architecture(cfg.space, r, progress=0.05))[1] for _ in range(6))
    assert [arch_cost(a)[1] for a in got] == [flops[-1], flops[0]]
    assert [a.id for a in sandwich_archs(cfg, 5, 0.05)] == [a.id for a in got]  # a function of (seed, step)
    assert [a.id for a in sandwich_archs(cfg, 6, 0.05)] != [a.id for a in got]


def test_a_sandwich_step_trains_the_extremes_and_reports_its_own_architecture():
    torch.set_num_threads(1)
    cfg = make_config("quick", device="cpu", sandwich=4)
    ds = load_dataset("digits")
    data = device_data(ds.train_x[:50], ds.train_y[:50], ds.info, torch.device("cpu"))
    x, y = next(iter(data.eval_batches(50)))
    arch = sample_architecture(cfg.space, random.Random(3), 1.0)
    sd = Smash.create(cfg, torch.device("cpu")).state_dict()
    runs = []
    for also in ([], sandwich_archs(cfg, 0, 1.0), sandwich_archs(cfg, 0, 1.0)):
        s = Smash.create(cfg, torch.device("cpu"))
        s.load_state_dict(copy.deepcopy(sd))
        runs.append((s, smash_step(s, arch, x, y, 1e-3, also=also)))
    (plain, m0), (a, m1), (b, _) = runs
    assert torch.equal(m0, m1)  # the curve shows the step's own architecture, as without the sandwich
    assert any(not torch.equal(p, q) for p, q in zip(plain.hyper.parameters(), a.hyper.parameters(), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(a.params(), b.params(), strict=True))


def test_smash_training_with_the_sandwich_runs_in_the_engines_loop():
    _, steps = digits_smash_steps(150, sandwich=3)
    assert len(steps) == 3 and all(torch.isfinite(st.metrics[:2]).all() for st in steps)


def test_sandwich_option_is_checked():
    with pytest.raises(ConfigError, match="--sandwich is how many"):
        make_config("quick", sandwich=1)
    with pytest.raises(ConfigError, match="--sandwich must be 0 or more"):
        make_config("quick", sandwich=-2)
