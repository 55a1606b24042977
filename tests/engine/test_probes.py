import random

import torch

from smash_engine import probes
from smash_engine.encoding import encode
from smash_engine.hypernet import HYPER_PRESETS, HyperNet, op_weight
from smash_engine.sampler import sample_architecture
from smash_engine.space import space_preset
from smash_engine.studies import FIELDS


def _plans(space, n=4, seed=0):
    rng = random.Random(seed)
    return [encode(sample_architecture(space, rng, 1.0), space).to("cpu") for _ in range(n)]


def test_collapse_measures_an_untrained_hypernet_reading_c():
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper = HyperNet(space, HYPER_PRESETS["small"])
    m = probes.collapse(hyper, _plans(space), space, 0, FIELDS)
    assert set(m["shuffle_distance"]) == set(FIELDS)
    moved = [v for v in m["shuffle_distance"].values() if v is not None]
    assert moved and all(0 < v < 1.5 for v in moved)  # unit-norm weights: at most 2 apart
    assert -1 < m["tile_cosine"] < 0.99


def test_mean_tile_makes_every_tile_of_an_op_the_same_and_keeps_unit_norm():
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper = HyperNet(space, HYPER_PRESETS["small"])
    for plan in _plans(space, 3, seed=1):
        w = hyper.op_weights(plan).detach()
        for transform in (probes.mean_tile, probes.random_weights(0)):
            t = transform(w, plan)
            for j in range(len(plan.op_in)):
                torch.testing.assert_close(op_weight(t, plan, j).norm(), torch.tensor(1.0))
        flat = probes.mean_tile(w, plan)
        for j in range(len(plan.op_in)):
            tiles = probes.op_tiles(flat, plan, j)
            assert torch.allclose(tiles, tiles[:1].expand_as(tiles), atol=1e-6)
        assert not torch.allclose(probes.random_weights(0)(w, plan), probes.random_weights(1)(w, plan))


def test_collapse_measures_how_c_moves_the_gains():
    torch.manual_seed(0)
    space = space_preset("quick")
    hyper = HyperNet(space, HYPER_PRESETS["small-gains"])
    still = probes.collapse(hyper, _plans(space), space, 0, FIELDS)
    assert still["gain_spread"] == 0 and all(v in (0, None) for v in still["gain_shuffle"].values())
    torch.nn.init.normal_(hyper.gains.weight, std=0.5)
    m = probes.collapse(hyper, _plans(space), space, 0, FIELDS)
    assert m["gain_spread"] > 0 and max(v for v in m["gain_shuffle"].values() if v is not None) > 0
    assert "log-gains moved" in probes.describe(m) and "log-gains" not in probes.describe(
        probes.collapse(HyperNet(space, HYPER_PRESETS["small"]), _plans(space), space, 0, FIELDS))


def test_the_engine_records_the_collapse_measures_each_validated_epoch(finished_run):
    from smash_engine import store

    with store.connect_reader(finished_run) as conn:
        lines = [e["message"] for e in store.events_since(conn, store.get_run(conn)["id"], 0)]
    collapse = [m for m in lines if "generated 1x1s: moved by a shuffled field of c" in m]
    assert [m.split(":")[0] for m in collapse] == ["epoch 1", "epoch 2"]  # val_every=1, 2 epochs
    assert all("tile cosine 0." in m and "kernel 0." in m for m in collapse)
