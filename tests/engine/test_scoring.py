"""BatchNorm statistics when scoring (train.arch_bn): shared, re-estimated per architecture, batch."""

import random

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.data import device_data, load_dataset
from smash_engine.errors import ConfigError
from smash_engine.sampler import sample_architecture
from smash_engine.train import Smash, arch_bn, bn_calibration, smash_score, smash_step


@pytest.fixture(scope="module")
def trained():
    """A SMASH model after a few real steps on digits (its shared BN statistics are not the defaults)."""
    cfg = make_config("quick", device="cpu", score_bn="recal", bn_batches=2, score_batch=100)
    ds = load_dataset("digits")
    train = device_data(ds.train_x[:400], ds.train_y[:400], ds.info, torch.device("cpu"))
    val = device_data(ds.train_x[400:600], ds.train_y[400:600], ds.info, torch.device("cpu"))
    s = Smash.create(cfg, torch.device("cpu"))
    for i, (x, y) in enumerate(train.epoch_batches(50, torch.Generator().manual_seed(0))):
        smash_step(s, sample_architecture(cfg.space, random.Random(i), 1.0), x, y, 1e-3)
    return cfg, s, train, val


def shared(s):
    return [(bn.running_mean.clone(), bn.running_var.clone(), bn.momentum) for bn in [*s.net.trans_bn, s.net.head_bn]]


def same(a, b):
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b, strict=True))


def test_calibration_batches_are_fixed_training_images(trained):
    cfg, _, train, _ = trained
    calib = bn_calibration(cfg, train)
    assert len(calib) == 2 and all(x.shape == (100, 1, 8, 8) for x in calib)
    assert all(torch.equal(a, b) for a, b in zip(calib, bn_calibration(cfg, train), strict=True))
    off = make_config("quick", device="cpu")
    assert off.train.score_bn == "shared" and bn_calibration(off, train) is None
    with pytest.raises(ConfigError, match="unknown --score-bn 'running'"):
        make_config("quick", score_bn="running")


def test_recal_averages_batch_statistics_exactly_and_restores_the_shared_ones(trained):
    cfg, s, train, val = trained
    arch = sample_architecture(cfg.space, random.Random(7), 1.0)
    plan = s.plan(arch)
    w = s.hyper.op_weights(plan).detach()

    def forward(x):
        return s.net(x, plan, w)

    x1, x2 = bn_calibration(cfg, train)
    before = shared(s)
    means = []
    with torch.no_grad():
        for x in (x1, x2):
            with arch_bn(s, forward, "recal", [x]):
                means.append(s.net.head_bn.running_mean.clone())
        assert same(shared(s), before)
        with arch_bn(s, forward, "recal", [x1, x2]) as training:
            assert training is False and not s.net.training
            assert torch.allclose(s.net.head_bn.running_mean, (means[0] + means[1]) / 2, atol=1e-6)
    assert same(shared(s), before)


def test_recal_on_the_evaluation_images_matches_batch_statistics(trained):
    cfg, s, _, val = trained
    arch = sample_architecture(cfg.space, random.Random(3), 1.0)
    x_all = next(val.eval_batches(len(val)))[0]
    before = shared(s)
    recal = smash_score(s, arch, val, len(val), "recal", [x_all])
    batch = smash_score(s, arch, val, len(val), "batch")
    # the same statistics up to the unbiased/biased variance factor n / (n - 1) over 200 x H x W values
    assert recal[1] == pytest.approx(batch[1], rel=1e-3)
    assert same(shared(s), before)
    assert smash_score(s, arch, val, 100, "shared") != recal  # the shared statistics score otherwise


def test_validation_curve_scores_the_same_architectures_every_epoch(trained):
    from smash_engine.train import validation_archs, validation_error

    cfg, s, train, val = trained
    archs = validation_archs(cfg)
    assert len(archs) == cfg.train.val_archs == 10 and [a.id for a in archs] == [a.id for a in validation_archs(cfg)]
    calib = bn_calibration(cfg, train)
    err, loss = validation_error(s, cfg, val, calib)
    each = [smash_score(s, a, val, cfg.train.score_batch, "recal", calib) for a in archs]
    assert err == pytest.approx(sum(e for e, _ in each) / len(each))
    assert validation_error(s, cfg, val, calib) == (err, loss)  # deterministic: comparable between epochs


def test_an_architecture_without_ops_trains_and_scores(trained):
    """A space whose block budgets reach 0 (min_budget near 0) draws whole architectures with no ops."""
    import dataclasses

    cfg, s, train, val = trained
    space = dataclasses.replace(cfg.space, min_budget=0.0)
    arch = next(a for a in (sample_architecture(space, random.Random(i), 1.0) for i in range(20_000)) if a.n_ops == 0)
    x, y = next(train.epoch_batches(50, torch.Generator().manual_seed(1)))
    loss, err, skipped = smash_step(s, arch, x, y, 1e-3).tolist()
    assert skipped == 0 and loss == loss
    assert 0.0 <= smash_score(s, arch, val, 100, "recal", [x])[0] <= 1.0


def test_a_recal_score_does_not_depend_on_what_ran_before(trained):
    """Order independence: the shared BN statistics that the last training steps left (here: train-mode
    forwards of other architectures, which move them and nothing else) change a `shared` score, never a
    `recal` one; and scoring itself leaves nothing behind."""
    import copy

    cfg, s, train, val = trained
    calib = bn_calibration(cfg, train)
    a = sample_architecture(cfg.space, random.Random(11), 1.0)
    others = [sample_architecture(cfg.space, random.Random(i), 1.0) for i in (12, 13, 14)]
    first = {mode: smash_score(s, a, val, 100, mode, calib) for mode in ("recal", "shared")}
    for b in others:  # scoring other architectures in between changes nothing
        smash_score(s, b, val, 100, "recal", calib)
        smash_score(s, b, val, 100, "shared", calib)
    assert {mode: smash_score(s, a, val, 100, mode, calib) for mode in first} == first
    moved = copy.deepcopy(s)
    moved.net.train()
    with torch.no_grad():
        for b, x in zip(others, calib * 2, strict=False):
            plan = moved.plan(b)
            moved.net(x * 3 + 1, plan, moved.hyper.op_weights(plan))  # shifted images: other statistics
    assert smash_score(moved, a, val, 100, "recal", calib) == first["recal"]
    assert smash_score(moved, a, val, 100, "shared", calib) != first["shared"]
