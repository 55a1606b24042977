"""The paper's experiments end to end on a real tiny run (tests/conftest.py `finished_run`), 1 epoch each."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from smash_engine import store, studies
from smash_engine.data import load_dataset
from smash_engine.encoding import Layout, check_in_space, decode, encode
from smash_engine.errors import ConfigError, ResultsFileError
from smash_engine.sampler import sample_architecture
from smash_engine.seeds import rng
from smash_engine.space import Architecture, space_preset, validate
from smash_engine.transfer import transfer_final
from smash_tui.cli import app


def test_correlation_cli_stats_equal_scipy_and_resume(run_db: Path) -> None:
    args = ["study", "correlation", str(run_db), "--every", "2", "--count", "3", "--epochs", "1", "--top", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Kendall tau" in result.output and "SMASH error (x) vs true validation error" in result.output
    assert "the best baseline" in result.output and "params" in result.output and "kendall_95" in result.output
    with store.connect_reader(run_db) as conn:
        (s,) = store.studies(conn, 1, "correlation")
        rows = store.study_archs(conn, s["id"], "trained")
        by_variant = {r["variant"]: r for r in store.study_stats(conn, s["id"])}
        board = [r["arch_id"] for r in store.leaderboard(conn, 1) if r["source"] == "random"]
        quality = conn.execute("SELECT predictor, kendall_tau, tau_over_best_baseline FROM ranking_quality "
                               "WHERE study_id = ?", (s["id"],)).fetchall()
    # --source random (the default) leaves refine's near copies out
    assert [r["arch_id"] for r in rows] == board[::2][:3] and s["status"] == "done"
    assert set(by_variant) == {"run", "params", "flops", "synflow", "naswot"}
    st = by_variant["run"]
    smash, true = [r["smash_error"] for r in rows], [r["val_error"] for r in rows]
    tau, rho = stats.kendalltau(smash, true), stats.spearmanr(smash, true)
    assert st["n"] == 3 and st["top_k"] == 2
    for got, want in ((st["kendall_tau"], tau.statistic), (st["spearman_rho"], rho.statistic),
                      (st["kendall_p"], tau.pvalue), (st["spearman_p"], rho.pvalue)):
        assert (got is None and np.isnan(want)) or got == pytest.approx(want)
    assert st["regret"] == pytest.approx(true[int(np.argmin(smash))] - min(true))
    assert json.loads(st["extra_json"])["against_test_error"]["n"] == 3
    # the baselines: the same statistics of (minus) parameter count against the same true errors
    params = [store.get_arch(store.connect_reader(run_db), r["arch_id"])["params"] for r in rows]
    want = stats.kendalltau([-p for p in params], true).statistic
    got = by_variant["params"]["kendall_tau"]
    assert (got is None and np.isnan(want)) or got == pytest.approx(want)
    assert len(quality) == 5 and {q[0] for q in quality} == set(by_variant)
    # resume: a lost measurement is the only one trained again, in the same study
    w = store.connect_writer(run_db)
    w.conn.execute("DELETE FROM study_archs WHERE trial = 1")
    ctx = studies.open_run(run_db, "cpu")
    ctx.w.close()
    ctx.w = w
    lines: list[str] = []
    assert studies.correlation(ctx, 2, 3, 1, 2, report=lines.append) == s["id"]
    w.close()
    assert len(lines) == 1 and lines[0].startswith("trained 2/3")


def test_corrupt_plan_changes_only_the_field() -> None:
    space = space_preset("quick")
    for seed in range(4):
        arch = sample_architecture(space, rng(seed, 0, 0))
        plan = encode(arch, space)
        true = decode(plan.c, space)
        for field in studies.FIELDS:
            bad = studies.corrupt_plan(plan, space, field, rng(seed, 1, 0))
            if bad is None:
                continue
            assert bad.arch is plan.arch and np.array_equal(bad.op_in, plan.op_in)
            assert np.array_equal(bad.packed[:, -2:], plan.packed[:, -2:])  # rows and op of each column
            got = decode(bad.c, space)
            key = {"out": "out_channels", "read": "reads", "write": "writes"}.get(field, "convs")
            assert [o[key] for o in got] != [o[key] for o in true], field
            strip = [{k: v for k, v in o.items() if k != key} for o in got]
            assert strip == [{k: v for k, v in o.items() if k != key} for o in true], field
            if key == "convs":  # only this attribute of the convs moved
                other = {"kernel", "dilation", "groups"} - {field}
                assert [[c and {k: c[k] for k in other} for c in o["convs"]] for o in got] == \
                    [[c and {k: c[k] for k in other} for c in o["convs"]] for o in true]


def test_corrupt_and_archgrad_studies(run_db: Path) -> None:
    ctx = studies.open_run(run_db, "cpu")
    try:
        sid = studies.corrupt(ctx, every=2, count=2, fields=("kernel", "write"), report=lambda _: None)
        gid = studies.archgrad(ctx, trials=2, changes=1, report=lambda _: None)
    finally:
        ctx.close()
    with store.connect_reader(run_db) as conn:
        true = {r["trial"]: r["smash_error"] for r in store.study_archs(conn, sid, "true")}
        for st in store.study_stats(conn, sid):
            rows = [r for r in store.study_archs(conn, sid, st["variant"]) if r["smash_error"] is not None]
            gaps = [r["smash_error"] - true[r["trial"]] for r in rows]
            assert st["n"] == len(rows) and st["mean_gap"] == pytest.approx(np.mean(gaps))
            assert st["win_rate"] == pytest.approx(np.mean([g > 0 for g in gaps]))
        space = ctx.cfg.space
        g = {r["variant"]: r for r in store.study_stats(conn, gid)}
        for variant in ("guided", "random"):
            rows = store.study_archs(conn, gid, variant)
            assert len(rows) == 2 and g[variant]["best_error"] == min(r["smash_error"] for r in rows)
            for r in rows:
                arch = Architecture.from_json(store.get_arch(conn, r["arch_id"])["spec_json"])
                validate(arch)
                check_in_space(arch, space)
        assert json.loads(g["guided"]["extra_json"])["start_error"] == store.leaderboard(conn, 1)[0]["smash_error"]


def test_candidate_edits_are_valid_and_first_order_ranked() -> None:
    space = space_preset("quick")
    arch = sample_architecture(space, rng(3, 0, 0))
    g = np.random.default_rng(0).normal(size=(arch.n_ops, Layout(space).channels))
    import torch

    edits = studies.candidate_edits(arch, space, torch.tensor(g))
    assert edits and all(d < 0 for d, _ in edits) and edits == sorted(edits)
    applied = [studies.apply_edit(arch, space, e) for _, e in edits]
    assert any(a is not None for a in applied)
    for a in applied:
        if a is not None:
            validate(a)
            check_in_space(a, space)
            assert a.id != arch.id


def test_capacity_side_by_side(run_db: Path) -> None:
    ctx = studies.open_run(run_db, "cpu")
    try:
        with pytest.raises(ResultsFileError, match="correlation"):
            studies.capacity(ctx, "tiny", 1, report=lambda _: None)
        cid = studies.correlation(ctx, 3, 2, 1, 1, report=lambda _: None)
        sid = studies.capacity(ctx, "tiny", 1, report=lambda _: None)
    finally:
        ctx.close()
    assert (run_db.with_suffix("") / "capacity-tiny-e1.pt").exists()
    with store.connect_reader(run_db) as conn:
        st = {r["variant"]: r for r in store.study_stats(conn, sid)}
        run = {r["variant"]: r for r in store.study_stats(conn, cid)}["run"]  # stats come sorted by variant
        small = store.study_archs(conn, sid, "tiny")
    assert set(st) == {"run", "tiny"} and st["run"]["kendall_tau"] == run["kendall_tau"]
    assert len(small) == 2 and all(0 <= r["smash_error"] <= 1 for r in small)


def write_stl10(root: Path, n: int) -> None:
    folder, g = root / "stl10_binary", np.random.default_rng(5)
    folder.mkdir(parents=True)
    for split, k in (("train", n), ("test", 4)):
        (folder / f"{split}_X.bin").write_bytes(g.integers(0, 256, (k, 3, 96, 96), dtype=np.uint8).tobytes())
        (folder / f"{split}_y.bin").write_bytes(bytes(g.integers(1, 11, k, dtype=np.uint8)))


def write_imagenet32(root: Path, n: int) -> None:
    g = np.random.default_rng(6)
    root.mkdir(parents=True)
    for name, k in (("train_data_batch_1.npz", n), ("val_data.npz", 4)):
        np.savez(root / name, data=g.integers(0, 256, (k, 3072), dtype=np.uint8), labels=g.integers(1, 1001, k))


@pytest.mark.parametrize("dataset, writer", [("stl10", write_stl10), ("imagenet32", write_imagenet32)])
def test_transfer_final_on_another_dataset(run_db: Path, tmp_path: Path, dataset: str, writer) -> None:
    writer(tmp_path / "data", 20)
    ctx = studies.open_run(run_db, "cpu")
    arch_id = store.leaderboard(ctx.w.conn, 1)[0]["arch_id"]
    try:
        fid = transfer_final(ctx, run_db.with_suffix(""), arch_id, dataset, str(tmp_path / "data"), 1,
                             report=lambda _: None)
        # a transfer final is never queued for the engine (which would train it on the run's dataset)
        ctx.w.conn.execute("UPDATE finals SET status = 'queued' WHERE id = ?", (fid,))
        row = next(r for r in store.finals(ctx.w.conn, 1) if r["id"] == fid)
        rebuilt = Architecture.from_json(store.get_arch(ctx.w.conn, row["arch_id"])["spec_json"])
        orig = Architecture.from_json(store.get_arch(ctx.w.conn, arch_id)["spec_json"])
        again = transfer_final(ctx, run_db.with_suffix(""), arch_id, dataset, str(tmp_path / "data"), 1,
                               report=lambda _: None)
    finally:
        ctx.close()
    info = load_dataset(dataset, tmp_path / "data").info
    assert row["status"] == "done" and row["dataset"] == dataset and row["epoch"] == 1 and again == fid
    assert 0 <= row["test_error"] <= 1 and Path(row["weights_path"]).exists()
    assert (rebuilt.image_channels, rebuilt.image_size, rebuilt.num_classes) == \
        (info.channels, info.image_size, info.num_classes)
    assert rebuilt.blocks == orig.blocks


def test_correlation_source_all_keeps_refine_candidates(run_db: Path) -> None:
    ctx = studies.open_run(run_db, "cpu")
    try:
        sid = studies.correlation(ctx, 1, 20, 1, 2, report=lambda _: None, source="all")
        with pytest.raises(ConfigError, match="unknown --source 'best'"):
            studies.correlation(ctx, 1, 20, 1, 2, report=lambda _: None, source="best")
    finally:
        ctx.close()
    with store.connect_reader(run_db) as conn:
        rows = store.study_archs(conn, sid, "trained")
        sources = {store.get_arch(conn, r["arch_id"])["source"] for r in rows}
        assert len(rows) == len(store.leaderboard(conn, 1)) and sources > {"random"}


def test_rank_stats_bootstrap_interval_on_a_known_ranking() -> None:
    true = list(np.linspace(0.1, 0.3, 40))
    perfect = studies.rank_stats(true, true, 5)
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["kendall_lo"] == pytest.approx(1.0)
    noisy = list(np.asarray(true) + np.random.default_rng(0).normal(0, 0.05, 40))
    st = studies.rank_stats(noisy, true, 5)
    assert st["kendall_lo"] < st["kendall_tau"] < st["kendall_hi"] and 0 < st["kendall_lo"]
    assert st == studies.rank_stats(noisy, true, 5)  # seeded: the same interval every time
    reverse = studies.rank_stats([-t for t in true], true, 5)
    assert reverse["kendall_tau"] == pytest.approx(-1.0) and reverse["regret"] == pytest.approx(0.2)


def test_correlation_on_a_seeded_training_subset(run_db: Path) -> None:
    ctx = studies.open_run(run_db, "cpu")
    try:
        with pytest.raises(ConfigError, match="--train-size must be between 1 and the"):
            studies.correlation(ctx, 3, 2, 1, 1, report=lambda _: None, train_size=10**6)
        part = studies.subset(ctx.train, 100, 0)
        assert len(part) == 100 and torch.equal(part.x, studies.subset(ctx.train, 100, 0).x)
        assert not torch.equal(part.y, studies.subset(ctx.train, 100, 1).y)
        sid = studies.correlation(ctx, 3, 2, 1, 1, report=lambda _: None, train_size=100)
        full = studies.correlation(ctx, 3, 2, 1, 1, report=lambda _: None)
    finally:
        ctx.close()
    with store.connect_reader(run_db) as conn:
        (row,) = [s for s in store.studies(conn, 1, "correlation") if s["id"] == sid]
        assert json.loads(row["options_json"])["train_size"] == 100 and full != sid  # a separate study
        assert len(store.study_archs(conn, sid, "trained")) == 2
