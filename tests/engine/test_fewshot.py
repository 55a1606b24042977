"""Few-shot SMASH (smash_engine/fewshot.py): copies of the weights, each fine-tuned on one part of the space."""

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from smash_engine.config import make_config
from smash_engine.data import device_data, load_dataset
from smash_engine.errors import ConfigError
from smash_engine.fewshot import FewShotConfig, choices, fine_tune, part_of, split
from smash_engine.sampler import sample_architecture
from smash_engine.train import Smash

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    cfg = make_config("quick", device="cpu")
    ds = load_dataset("digits")
    train = device_data(ds.train_x[:300], ds.train_y[:300], ds.info, torch.device("cpu"))
    return cfg, train, Smash.create(cfg, torch.device("cpu")).state_dict()


def test_the_part_is_what_most_convs_take_and_every_part_gets_draws():
    cfg = make_config("quick", device="cpu")
    values = choices(cfg.space, "groups")
    assert values == (1, 2, 4)
    parts = Counter()
    for i in range(90):
        arch = sample_architecture(cfg.space, random.Random(i), 1.0)
        k = part_of(arch, "groups", values)
        seen = Counter(c.groups for b in arch.blocks for op in b.ops for c in op.convs if c is not None)
        assert seen[values[k]] == max(seen.values())
        parts[k] += 1
    assert all(parts[k] >= 10 for k in range(3)), parts  # a fair share each: no copy trains on a sliver
    with pytest.raises(ConfigError, match="few-shot split takes one of groups, kernel"):
        choices(cfg.space, "depth")


def test_each_copy_trains_only_on_its_part_and_resumes_exactly(setup, monkeypatch):
    cfg, train, sd = setup
    fs = FewShotConfig(steps=12)  # 4 steps per copy over 3 parts
    import smash_engine.landmarks as lm

    seen = []
    real_step = lm.landmark_step
    monkeypatch.setattr(lm, "landmark_step", lambda s, arch, *a, **k: seen.append(arch) or real_step(s, arch, *a, **k))
    s = Smash.create(cfg, torch.device("cpu"))
    s.load_state_dict(sd)
    got = list(fine_tune(s, cfg, train, fs, 2))
    assert [n for n, _ in got] == [1, 2, 3, 4]
    assert {part_of(a, "groups", (1, 2, 4)) for a in seen} == {2}
    # stopped after 2 steps and resumed: the copy that never stopped
    part = Smash.create(cfg, torch.device("cpu"))
    part.load_state_dict(sd)
    for n, _ in fine_tune(part, cfg, train, fs, 2):
        if n == 2:
            break
    resumed = Smash.create(cfg, torch.device("cpu"))
    resumed.load_state_dict(part.state_dict())
    list(fine_tune(resumed, cfg, train, fs, 2, step=2))
    for a, b in zip(s.params(), resumed.params(), strict=True):
        assert torch.equal(a, b)


def test_split_gives_one_distinct_copy_per_part_and_leaves_the_one_shot_weights(setup):
    cfg, train, sd = setup
    s = Smash.create(cfg, torch.device("cpu"))
    s.load_state_dict(sd)
    before = [p.detach().clone() for p in s.params()]
    copies = split(s, cfg, train, FewShotConfig(steps=6))
    assert len(copies) == 3
    for a, b in zip(s.params(), before, strict=True):
        assert torch.equal(a, b)
    w = [c["hyper"][next(iter(c["hyper"]))] for c in copies]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_fewshot_benchmark_smoke_scores_every_architecture_once_and_resumes(tmp_path):
    """benchmarks/fewshot_quality.py on digits: the control scores the panel, the split scores each architecture
    with its part's copy; a second run reads every arm from the cache and trains nothing."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fewshot_quality.py"), "--smoke", "--steps", "6",
           "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    doc = json.loads((tmp_path / "fewshot-e3-s0-steps6.json").read_text())
    errors = doc["smash_errors"]
    assert set(errors["split"]) == set(errors["control"]) == set(errors["before"])
    assert sum(doc["part_sizes"]) == len(errors["split"]) == doc["arms"]["split"]["all"]["n"]
    assert doc["split_minus_control"]["diff"] is not None
    cached = (tmp_path / "panel" / "landmarks" / "scores.jsonl").read_text()
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "panel" / "landmarks" / "scores.jsonl").read_text() == cached
    assert "SMASH loss" not in second.stdout  # no arm trained again
