import os

import pytest
import torch

# Tests must give the same numbers on any 2-core machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# verify_top=0: the verify phase has its own tests (test_halving.py); the rest stay quick
TINY = dict(epochs=2, n_random=6, n_perturb=2, n_hillclimb=2, final_epochs=1, log_every=4, val_archs=3, val_every=1,
            verify_top=0)


def tiny_config(**overrides):
    """The quick preset (real digits data) cut to a run of ~15 s on 2 cores."""
    from smash_engine.config import make_config

    return make_config("quick", **{**TINY, **overrides})


def digits_smash_steps(images: int, **overrides):
    """One epoch of SMASH training at batch 50 on the first `images` digits, by the engine's own loop, with
    TrainConfig `overrides`: (the trained Smash, its steps)."""
    from smash_engine.config import make_config
    from smash_engine.data import device_data, load_dataset
    from smash_engine.loops import smash_steps
    from smash_engine.train import Smash

    torch.set_num_threads(1)
    cfg = make_config("quick", dataset="digits", device="cpu", epochs=1, batch_size=50, **overrides)
    ds = load_dataset("digits")
    data = device_data(ds.train_x[:images], ds.train_y[:images], ds.info, torch.device("cpu"))
    s = Smash.create(cfg, torch.device("cpu"))
    return s, list(smash_steps(s, cfg, data))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A real, finished tiny search: path of its results file (copy it before writing to it)."""
    from smash_engine.engine import Engine
    from smash_engine.runs import create_run

    db = tmp_path_factory.mktemp("finished") / "tiny.db"
    create_run(db, tiny_config(name="tiny"))
    assert Engine(db).run() == "done"
    return db


@pytest.fixture
def run_db(finished_run, tmp_path):
    """A writable copy of the finished tiny run: results file and run folder (checkpoint)."""
    import shutil

    db = tmp_path / finished_run.name
    shutil.copy(finished_run, db)
    shutil.copytree(finished_run.with_suffix(""), db.with_suffix(""))
    return db
