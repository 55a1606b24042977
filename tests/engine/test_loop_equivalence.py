"""One training loop: benchmarks/search_quality.py trains SMASH exactly as the engine does.

A search-quality figure speaks for what a user's search trains only if both train the same HyperNet. Same
config, same seed, same training split: after the same steps the engine's checkpoint and search_quality's
hold identical weights, search_quality's training interrupted after an epoch and resumed included."""

import sys
from pathlib import Path

import torch

from smash_engine.config import RunConfig
from smash_engine.engine import Engine
from smash_engine.runs import create_run, load_splits, run_dir
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import search_quality  # noqa: E402

# digits: 1,500 training images less 1,300 held out = 4 steps of 50 per epoch; two epochs, so the batch order
# of each epoch and the schedule across the epoch boundary count; the rest of the search as small as it goes
SMALL = dict(epochs=2, val_size=1300, n_random=1, n_perturb=1, n_hillclimb=1, final_top=0, val_archs=1,
             device="cpu")


class Interrupted(Exception):
    pass


def _assert_same(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{what}: {len(differ)} of {len(want)} tensors differ, e.g. {differ[:3]}"


def test_search_quality_trains_the_engines_hypernet(tmp_path):
    db = tmp_path / "loop.db"
    create_run(db, tiny_config(name="loop", **SMALL))
    assert Engine(db).run() == "done"
    engine = torch.load(run_dir(db) / "checkpoint.pt", map_location="cpu", weights_only=True)
    cfg = RunConfig.from_dict(engine["config"])  # the config the engine trained with
    train, _, _ = load_splits(cfg, torch.device("cpu"))
    steps = cfg.train.epochs * train.num_batches(cfg.train.batch_size)
    assert engine["step"] == steps == 8

    ckpt, scored = tmp_path / "quality" / "loop.pt", []

    def stop_after_first(s, epoch):
        raise Interrupted(epoch)

    def keep(s, epoch):
        scored.append((epoch, {k: v.clone() for k, v in s.hyper.state_dict().items()}))

    try:  # interrupted after epoch 1 (its checkpoint written), then resumed from that checkpoint
        search_quality.smash_epochs(cfg, train, ckpt, [1], stop_after_first, report=lambda line: None)
    except Interrupted:
        pass
    assert torch.load(ckpt, weights_only=True)["step"] == steps // 2
    seconds = search_quality.smash_epochs(cfg, train, ckpt, [], keep, report=lambda line: None)
    assert seconds > 0 and [e for e, _ in scored] == [2]

    quality = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert quality["step"] == engine["step"]
    _assert_same(quality["hyper"], engine["hyper"], "HyperNet")
    _assert_same(quality["net"], engine["net"], "SmashNet")
    _assert_same(scored[0][1], engine["hyper"], "HyperNet handed to on_stop")
