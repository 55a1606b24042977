"""The shuffled-encoding contrast (train.smash_step's `contrast`): a SMASH loss term that pays for reading `c`."""

import random

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.data import device_data, load_dataset
from smash_engine.encoding import FIELDS, corrupt_plan
from smash_engine.errors import ConfigError
from smash_engine.sampler import sample_architecture
from smash_engine.train import Smash, smash_step


def step_from(sd, cfg, arch, x, y, contrast):
    import copy

    s = Smash.create(cfg, torch.device("cpu"))
    s.load_state_dict(copy.deepcopy(sd))
    smash_step(s, arch, x, y, 1e-3, contrast)
    return s


def test_the_contrast_reaches_the_hypernet_through_the_shuffled_encoding():
    """One step from the same state on the same batch: with the contrast, the HyperNet moves differently than
    without (the shuffled c's loss is in the gradient), and the same draw gives the same step."""
    torch.set_num_threads(1)
    cfg = make_config("quick", device="cpu")
    ds = load_dataset("digits")
    data = device_data(ds.train_x[:50], ds.train_y[:50], ds.info, torch.device("cpu"))
    x, y = next(iter(data.eval_batches(50)))
    arch = sample_architecture(cfg.space, random.Random(3), 1.0)
    sd = Smash.create(cfg, torch.device("cpu")).state_dict()
    plain = step_from(sd, cfg, arch, x, y, None)
    a = step_from(sd, cfg, arch, x, y, (random.Random(1), 5.0, 1.0))
    b = step_from(sd, cfg, arch, x, y, (random.Random(1), 5.0, 1.0))
    moved = [float((p - q).abs().max()) for p, q in zip(plain.hyper.parameters(), a.hyper.parameters(), strict=True)]
    assert max(moved) > 1e-6
    assert all(torch.equal(p, q) for p, q in zip(a.params(), b.params(), strict=True))
    # the shuffled c really is another encoding of the same network
    plan = plain.plan(arch)
    bad = corrupt_plan(plan, cfg.space, FIELDS[0], random.Random(0))
    assert bad is not None and bad.arch == plan.arch and not torch.equal(bad.c, plan.c)


def test_contrast_options_are_checked():
    with pytest.raises(ConfigError, match="--contrast must be 0 or more"):
        make_config("quick", contrast=-1.0)
    with pytest.raises(ConfigError, match="--contrast-margin must be positive"):
        make_config("quick", contrast_margin=0.0)
    assert make_config("quick").train.contrast == 0.0  # off unless asked for
