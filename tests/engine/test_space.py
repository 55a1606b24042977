import json
import random

import numpy as np
import pytest

from smash_engine.errors import ConfigError, InvalidArchitecture
from smash_engine.sampler import anneal, perturb, sample_architecture
from smash_engine.space import Architecture, space_preset, validate


@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_samples_validate_and_round_trip_with_stable_id(preset):
    space = space_preset(preset)
    rng = random.Random(0)
    ids = set()
    n = 1000 if preset == "quick" else 200
    for _ in range(n):
        arch = sample_architecture(space, rng, progress=float(rng.random()))
        validate(arch)
        again = Architecture.from_json(arch.to_json())
        assert again == arch and again.id == arch.id
        assert Architecture.from_json(arch.to_json(indent=2)).id == arch.id
        ids.add(arch.id)
    assert len(ids) == n  # the space is large: no repeats in this many draws


def test_sampling_is_reproducible_and_seed_dependent():
    space = space_preset("quick")
    a = [sample_architecture(space, random.Random(7)).id for _ in range(2)]
    b = sample_architecture(space, random.Random(8)).id
    assert a[0] == a[1] != b


def test_ops_vary_their_active_convolutions_and_fields():
    space = space_preset("paper")
    rng = random.Random(1)
    ops = [op for _ in range(50) for b in sample_architecture(space, rng).blocks for op in b.ops]
    assert {op.pattern for op in ops} == {(1, 0, 0, 0), (1, 0, 1, 0), (1, 1, 0, 0), (1, 1, 1, 0), (1, 1, 1, 1)}
    convs = [c for op in ops for c in op.convs if c]
    assert {c.kernel[0] for c in convs} == {3, 5, 7}
    assert {c.groups for c in convs} == {1, 2, 4, 8}
    assert {c.dilation[0] for c in convs if c.kernel[0] == 3} == {1, 2, 3}
    assert {c.dilation[0] for c in convs if c.kernel[0] == 7} == {1}


def test_annealing_opens_budget_and_kernels_over_first_half():
    space = space_preset("paper")
    assert anneal(space, 0.0) == (0.5, (3,))
    assert anneal(space, 0.3) == (pytest.approx(0.8), (3, 5))
    assert anneal(space, 0.5) == (1.0, (3, 5, 7))
    rng = random.Random(0)
    early = [sample_architecture(space, rng, 0.0) for _ in range(30)]
    late = [sample_architecture(space, rng, 1.0) for _ in range(30)]
    assert all(c.kernel == (3, 3) for a in early for b in a.blocks for op in b.ops for c in op.convs if c)
    assert np.mean([a.n_ops for a in late]) > np.mean([a.n_ops for a in early])


def test_bank_sizes_divide_block_inputs():
    space = space_preset("paper")
    for i in range(space.n_blocks):
        assert all(space.in_channels[i] % bs == 0 for bs in space.bank_sizes(i))
    assert space.in_channels == (64, 96, 112) and space.widths == (192, 224, 256)


def test_perturbation_keeps_validity_bank_sizes_and_op_counts():
    space = space_preset("quick")
    rng = random.Random(3)
    for _ in range(200):
        arch = sample_architecture(space, rng)
        new = perturb(arch, space, rng, p=0.2)
        validate(new)
        assert new.id != arch.id
        assert [b.bank_size for b in new.blocks] == [b.bank_size for b in arch.blocks]
        assert [len(b.ops) for b in new.blocks] == [len(b.ops) for b in arch.blocks]


def _arch_dict():
    return json.loads(sample_architecture(space_preset("quick"), random.Random(0)).to_json())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["blocks"][0]["ops"][0].update(reads=[99]), "reads bank 99, which nothing has written yet"),
    (lambda d: d["blocks"][0].update(bank_size=5), "bank size 5 does not divide the block input width 16"),
    (lambda d: d["blocks"][0].update(n_banks=40), "is never written"),
    (lambda d: d["blocks"][0]["ops"][0].update(convs=[{"kernel": [3, 3], "dilation": [1, 1], "groups": 3},
                                                       None, None, None]), "groups do not divide"),
    (lambda d: d["blocks"][0]["ops"][0].update(convs=[None, None, None, None]), "is not one of the 2-branch"),
    (lambda d: d["blocks"][0]["ops"][0].update(out_channels=6), "not a multiple of the bank size"),
    (lambda d: d["blocks"][0].update(out_channels=7), "block 0 outputs 7 channels but block 1 takes"),
    (lambda d: d["blocks"][0]["ops"][0].pop("reads"), "malformed architecture JSON"),
])
def test_invalid_architectures_raise_precise_errors(edit, message):
    d = _arch_dict()
    edit(d)
    with pytest.raises(InvalidArchitecture, match=message):
        Architecture.from_dict(d)


def test_not_json_and_unknown_preset():
    with pytest.raises(InvalidArchitecture, match="not valid JSON"):
        Architecture.from_json("{nope")
    with pytest.raises(ConfigError, match="unknown search-space preset 'huge'"):
        space_preset("huge")


def test_the_authors_kernel_schedule_opens_kernels_earlier():
    space = space_preset("paper", kernel_anneal="original")
    assert anneal(space, 0.1)[1] == (3,)  # f = 0.2
    assert anneal(space, 0.125)[1] == (3, 5) and anneal(space, 0.3)[1] == (3, 5)  # f = 0.25 .. 0.6
    assert anneal(space, 0.375)[1] == (3, 5, 7)  # f = 0.75
    small = space_preset("quick", kernel_anneal="original")
    assert anneal(small, 0.125)[1] == (3, 5) and anneal(space_preset("quick"), 0.4)[1] == (3,)
    with pytest.raises(ConfigError, match="unknown kernel schedule 'fast'"):
        space_preset("quick", kernel_anneal="fast")
