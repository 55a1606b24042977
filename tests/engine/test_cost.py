"""The torch-free counts the UI draws (`smash_engine.cost`) are those of the modules final training builds."""

import dataclasses
import random

import pytest

from smash_engine import cost, network
from smash_engine.sampler import sample_architecture
from smash_engine.space import space_preset


@pytest.mark.parametrize("norm, dims", [("bn", 2), ("none", 2), ("bn", 3)])
def test_cost_summary_matches_the_network_and_its_parameters(norm, dims):
    space = space_preset("quick")
    rng = random.Random(7)
    for _ in range(5):
        arch = dataclasses.replace(sample_architecture(space, rng), spatial_dims=dims)
        parts = cost.summary(arch, norm)
        params, _ = cost.arch_cost(arch, norm)
        assert params == sum(p.numel() for p in network.FixedNet(arch, norm=norm).parameters())
        assert params == sum(p.params for p in parts)
        assert parts[-1].out_shape == (arch.num_classes,)
