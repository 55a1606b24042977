"""Landmark training (smash_engine/landmarks.py): SMASH learns the order of networks whose real loss it is told."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.data import device_data, load_dataset
from smash_engine.landmarks import Landmark, LandmarkConfig, landmark_steps, summary, usable_pairs
from smash_engine.sampler import sample_architecture
from smash_engine.train import Smash, smash_step

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    cfg = make_config("quick", device="cpu")
    ds = load_dataset("digits")
    train = device_data(ds.train_x[:500], ds.train_y[:500], ds.info, torch.device("cpu"))
    s = Smash.create(cfg, torch.device("cpu"))
    for i, (x, y) in enumerate(train.epoch_batches(50, torch.Generator().manual_seed(0))):
        smash_step(s, sample_architecture(cfg.space, random.Random(i), 1.0), x, y, 1e-3)
    return cfg, train, s.state_dict()


def fresh(cfg, sd) -> Smash:
    import copy

    s = Smash.create(cfg, torch.device("cpu"))
    s.load_state_dict(copy.deepcopy(sd))
    return s


def batch_loss(s: Smash, arch, x, y) -> float:
    s.hyper.train()
    s.net.train()
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(s.net(x, s.plan(arch), *s.hyper.generate(s.plan(arch))), y))


def test_pairs_go_from_lower_to_higher_real_loss_and_skip_near_ties():
    cfg = make_config("quick", device="cpu")
    a, b, c = (sample_architecture(cfg.space, random.Random(i), 1.0) for i in range(3))
    marks = [Landmark(a, 1.00), Landmark(b, 1.005), Landmark(c, 1.20)]
    assert usable_pairs(marks, 0.01) == [(0, 2), (1, 2)]
    assert usable_pairs(marks, 0.0) == [(0, 1), (0, 2), (1, 2)]


def test_the_ranking_loss_teaches_smash_an_order_it_did_not_have(setup):
    """Two architectures, labelled the other way round from how SMASH ranks them on a fixed batch: with the ranking
    loss, their SMASH losses change places; the same steps without it (weight 0) leave them as they were."""
    cfg, train, sd = setup
    s = fresh(cfg, sd)
    x, y = next(iter(train.epoch_batches(200, torch.Generator().manual_seed(9), augment=False)))
    archs = [sample_architecture(cfg.space, random.Random(100 + i), 1.0) for i in range(2)]
    first, second = sorted(archs, key=lambda a: batch_loss(s, a, x, y))  # SMASH thinks `first` is better
    marks = [Landmark(first, 2.0), Landmark(second, 1.0)]  # the truth says the opposite
    lm = LandmarkConfig(steps=40, weight=5.0, margin=0.5, lr_scale=1.0)
    got = [m for _, m in landmark_steps(s, cfg, train, marks, lm)]
    assert len(got) == 40
    assert batch_loss(s, second, x, y) < batch_loss(s, first, x, y)
    stretch = summary(got)
    assert stretch["steps"] == 40 and stretch["rank_loss"] > 0
    control = fresh(cfg, sd)
    list(landmark_steps(control, cfg, train, marks, LandmarkConfig(steps=40, weight=0.0, margin=0.5, lr_scale=1.0)))
    assert batch_loss(control, second, x, y) > batch_loss(control, first, x, y)


def test_a_stretch_resumed_partway_is_the_stretch_that_never_stopped(setup):
    cfg, train, sd = setup
    marks = [Landmark(sample_architecture(cfg.space, random.Random(i), 1.0), float(i)) for i in range(4)]
    lm = LandmarkConfig(steps=12, weight=1.0, pairs=2)
    whole = fresh(cfg, sd)
    list(landmark_steps(whole, cfg, train, marks, lm, round_=1))
    parts = fresh(cfg, sd)
    for step, _ in landmark_steps(parts, cfg, train, marks, lm, round_=1):
        if step == 5:
            break
    resumed = fresh(cfg, sd)
    resumed.load_state_dict(parts.state_dict())
    list(landmark_steps(resumed, cfg, train, marks, lm, round_=1, step=5))
    for a, b in zip(whole.params(), resumed.params(), strict=True):
        assert torch.equal(a, b)


def test_landmark_benchmark_smoke_judges_only_unseen_architectures_and_resumes(tmp_path):
    """benchmarks/landmark_quality.py on digits: every landmark set and arm is scored, each judged on the
    architectures outside its set; a second run reads every arm from the cache and trains nothing."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "landmark_quality.py"), "--smoke", "--steps", "3",
           "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    doc = json.loads((tmp_path / "landmark-e3-s0-steps3.json").read_text())  # named by what differs from the default
    ids = list(doc["smash_errors"])
    assert len(doc["runs"]) == 6 and {(r["set"], r["weight"]) for r in doc["runs"]} == {
        (s, w) for s in ("top16", "fold0", "fold1") for w in (1.0, 0.0)}
    for r in doc["runs"]:
        assert set(r["landmarks"]) | set(r["unseen"]) == set(ids) and not set(r["landmarks"]) & set(r["unseen"])
        assert r["unseen_stats"]["n"] == len(r["unseen"])
    top = [r for r in doc["runs"] if r["set"] == "top16"][0]["landmarks"]
    assert top == sorted(ids, key=lambda i: doc["smash_errors"][i])[:len(top)]
    cached = (tmp_path / "panel" / "landmarks" / "scores.jsonl").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "panel" / "landmarks" / "scores.jsonl").read_text() == cached
    assert "ranking loss" not in second.stdout  # no arm trained again
