"""Search-quality instruments on tiny inputs: the free baselines (proxies.py), the truth panel's builder and
summary, and benchmarks/search_quality.py end to end (--smoke). The real panel and variant runs are
benchmarks, not tests (benchmarks/README.md); that search_quality trains the engine's HyperNet is
test_loop_equivalence.py."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from smash_engine.config import make_config
from smash_engine.cost import arch_cost
from smash_engine.data import device_data, load_dataset
from smash_engine.proxies import naswot, predicted_errors, synflow
from smash_engine.sampler import sample_architecture

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import common  # noqa: E402
import truth_panel  # noqa: E402


@pytest.fixture(scope="module")
def archs():
    cfg = make_config("quick")
    return [sample_architecture(cfg.space, random.Random(i), 1.0) for i in range(4)]


@pytest.fixture(scope="module")
def digits():
    ds = load_dataset("digits")
    return device_data(ds.train_x[:256], ds.train_y[:256], ds.info, torch.device("cpu"))


def test_baselines_are_negated_scores_and_reproducible(archs, digits):
    x, _ = next(digits.eval_batches(32))
    pred = predicted_errors(archs, x)
    assert pred["params"] == [-arch_cost(a)[0] for a in archs]
    assert pred["flops"] == [-arch_cost(a)[1] for a in archs]
    assert pred == predicted_errors(archs, x)  # seeded initialisation: the same figures every time
    assert all(np.isfinite(v).all() for v in pred.values())
    with pytest.raises(ValueError, match="naswot needs a batch"):
        predicted_errors(archs, None, ("naswot",))


def test_synflow_grows_with_a_wider_network():
    narrow = make_config("quick").space
    wide = make_config("quick", dataset="digits").space.__class__(**{**narrow.to_dict(), "N": 8, "N_max": 32,
                                                                     "kernels": (3, 5), "groups": (1, 2, 4)})
    a, b = (sample_architecture(s, random.Random(0), 1.0) for s in (narrow, wide))
    assert arch_cost(b)[0] > arch_cost(a)[0] and synflow(b) > synflow(a)


def test_naswot_cannot_tell_identical_images_apart(archs, digits):
    x, _ = next(digits.eval_batches(16))
    assert np.isfinite(naswot(archs[0], x))
    twins = torch.cat([x[:8], x[:8]])  # K has equal rows: singular, log|det| = -inf
    assert naswot(archs[0], twins) == -np.inf


def test_truth_panel_build_train_and_summary(tmp_path, monkeypatch, archs, digits):
    monkeypatch.setattr(truth_panel, "N_ARCHS", 5)
    assert truth_panel.main(["--dir", str(tmp_path), "build"]) == 0
    assert truth_panel.main(["--dir", str(tmp_path), "build"]) == 1  # fixed once built
    panel = truth_panel.load_panel(tmp_path)
    assert len(panel) == 5 and len({a.id for a in panel}) == 5
    assert [a.id for a in panel] == [a.id for a in truth_panel.draw_panel(5)]  # seeded
    doc = json.loads((tmp_path / "panel.json").read_text())
    assert doc["purpose"] == 201 and set(doc["built_on"]) == set(common.MACHINE_KEYS)
    assert all(a.image_size == 16 for a in panel)
    # one real (tiny) training of the recipe on digits-sized data
    r = truth_panel.train_one(archs[0], 0, digits, digits)
    assert 0 <= r["val_error"] <= 1 and r["seconds"] > 0 and np.isfinite(r["train_loss"])
    # a summary from made-up runs: the ceiling is scipy's tau of seed 0 against seed 1
    gen = np.random.default_rng(0)
    e0 = gen.uniform(0.1, 0.3, 5)
    e1 = e0 + gen.normal(0, 0.01, 5)
    with open(tmp_path / "runs.jsonl", "w") as fh:
        for a, x0, x1 in zip(panel, e0, e1, strict=True):
            for seed, err in ((0, x0), (1, x1)):
                fh.write(json.dumps(dict(arch_id=a.id, seed=seed, val_error=err, seconds=1.0)) + "\n")
        fh.write(json.dumps(dict(arch_id="not-in-panel", seed=0, val_error=0.5, seconds=1.0)) + "\n")
    out = truth_panel.summarize(tmp_path)
    assert out["n_complete"] == 5
    assert out["ceiling"]["kendall_tau_seed_vs_seed"] == pytest.approx(stats.kendalltau(e0, e1).statistic)
    lo, hi = out["ceiling"]["kendall_tau_ci95"]
    assert lo <= out["ceiling"]["kendall_tau_seed_vs_seed"] <= hi
    assert [r["mean_error"] for r in out["archs"]] == pytest.approx(list((e0 + e1) / 2))
    assert json.loads((tmp_path / "truth.json").read_text())["n_complete"] == 5
    # a third seed being added: its own file, over the architectures that have it, one seed against the other two
    e2 = e0 + gen.normal(0, 0.01, 5)
    with open(tmp_path / "runs.jsonl", "a") as fh:
        for a, x2 in list(zip(panel, e2, strict=True))[:4]:
            fh.write(json.dumps(dict(arch_id=a.id, seed=2, val_error=x2, seconds=1.0)) + "\n")
    three = truth_panel.summarize(tmp_path, [0, 1, 2])
    assert three["n_complete"] == 4 and json.loads((tmp_path / "truth.json").read_text())["n_complete"] == 5
    e = np.stack([e0, e1, e2], 1)[:4]
    want = np.mean([stats.kendalltau(e[:, k], np.delete(e, k, 1).mean(1)).statistic for k in range(3)])
    assert three["ceiling"]["kendall_tau_seed_vs_rest"] == pytest.approx(want)
    assert (tmp_path / "truth-seeds-0-1-2.json").exists()


def test_the_committed_panels_are_drawn_again_exactly():
    """Every panel in benchmarks/truth/ is what draw_panel gives for its seed, space and pool: the panel's
    derived seeds (seeds.PANEL) are those it was built with."""
    for d in sorted((ROOT / "benchmarks" / "truth").iterdir()):
        doc = json.loads((d / "panel.json").read_text())
        drawn = truth_panel.draw_panel(len(doc["archs"]), doc["seed"], truth_panel.load_space(d), doc.get("pool") or 0)
        assert [a.id for a in drawn] == [r["id"] for r in doc["archs"]], d.name


def test_search_quality_smoke_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "--smoke", "--out",
                           str(tmp_path), "--threads", "2", "--verify", "2", "--verify-images", "100",
                           "--corrupt", "2", "--corrupt-images", "50"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("quality-default-*.json")
    doc = json.loads(path.read_text())
    assert set(doc["stats"]) == {"smash", "smash_loss", "params", "flops", "synflow", "naswot"}
    assert "tau_given_flops" in doc["stats"]["params"] and "tau_given_flops" not in doc["stats"]["flops"]
    assert len(doc["by_epoch"][-1]["smash_losses"]) == 6 and "tau|FLOPs" in proc.stdout
    assert doc["n_with_truth"] == 6 and "ceiling" in proc.stdout
    smash = doc["stats"]["smash"]
    errs = list(doc["by_epoch"][-1]["smash_errors"].values())
    true = [0.1 + 0.01 * i for i in range(6)]
    assert smash["kendall_tau"] == pytest.approx(stats.kendalltau(errs, true).statistic, nan_ok=True)
    assert doc["machine"]["cores"] and doc["config"]["dataset"] == "digits"
    assert set(doc["machine"]) == set(common.MACHINE_KEYS) and doc["machine"]["device"] == "cpu"
    picks = doc["picks"]
    ids = list(doc["by_epoch"][-1]["smash_errors"])
    assert picks["smash_top1"] == pytest.approx(true[int(np.argmin(errs))] - min(true))
    assert picks["random_expected"] == pytest.approx(np.mean(true) - min(true))
    detail = doc["by_epoch"][-1]["verified"]["smash_verify2"]
    assert detail["candidates"] == [ids[i] for i in np.argsort(errs, kind="stable")[:2]]
    assert detail["picked"] == detail["candidates"][int(np.argmin(detail["short_errors"]))]
    assert picks["smash_verify2"] == pytest.approx(true[ids.index(detail["picked"])] - min(true))
    corrupt = doc["by_epoch"][-1]["corrupt"]
    assert corrupt["images"] == 50 and len(corrupt["archs"]) == 2 and len(corrupt["true"]) == 2
    assert {r["variant"] for r in corrupt["stats"]} == {"dilation", "kernel", "out", "groups", "read", "write"}
    assert all(r["n"] + r["extra_json"]["unchanged"] == 2 for r in corrupt["stats"])
    # recomputing against the truth gives the same figures
    assert subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_quality.py"), "--smoke", "--restat",
                           str(path)], capture_output=True, text=True, timeout=300).returncode == 0
    again = json.loads(path.read_text())
    assert again["stats"]["smash"]["kendall_tau"] == pytest.approx(smash["kendall_tau"], nan_ok=True)
    assert again["picks"]["smash_verify2"] == picks["smash_verify2"]


def test_score_cost_smoke(tmp_path):
    import score_cost

    assert score_cost.main(["--smoke", "--out", str(tmp_path), "--bn-batches", "1"]) == 0
    (path,) = tmp_path.glob("score-cost-smoke-*.json")
    doc = json.loads(path.read_text())
    assert set(doc["seconds_per_arch"]) == {"shared", "recal", "batch"} and doc["ratio_to_shared"]["shared"] == 1.0
    assert set(doc["machine"]) == set(common.MACHINE_KEYS)


def test_paired_tau_difference_and_its_interval():
    from smash_engine.studies import tau_difference

    rng = random.Random(3)
    true = [rng.random() for _ in range(30)]
    noisy = [t + rng.gauss(0, 0.15) for t in true]
    same = tau_difference(noisy, noisy, true)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0
    better = tau_difference(true, noisy, true)
    assert better["diff"] > 0 and 0 < better["lo"] <= better["diff"] <= better["hi"]
    assert tau_difference(noisy, true, true)["hi"] < 0


def test_partial_tau_removes_what_the_control_explains():
    from smash_engine.studies import partial_tau

    rng = random.Random(5)
    size = [rng.random() for _ in range(60)]
    extra = [rng.random() for _ in range(60)]
    true = [s + e for s, e in zip(size, extra, strict=True)]
    # knows only size: its plain tau is high, but nothing is left once size is held fixed
    only_size = partial_tau(size, true, size)
    assert only_size["tau"] is None or abs(only_size["tau"]) < 1e-9
    assert stats.kendalltau(size, true).statistic > 0.3
    # knows the part size does not explain: the partial tau is positive, its interval above 0
    knows_extra = partial_tau(extra, true, size)
    assert knows_extra["tau"] > stats.kendalltau(extra, true).statistic and knows_extra["lo"] > 0
    # noise knows nothing either way
    noise = partial_tau([rng.random() for _ in range(60)], true, size)
    assert noise["lo"] < 0 < noise["hi"]


def test_search_quality_hyper_is_a_preset_name():
    import search_quality

    from smash_engine.errors import ConfigError
    from smash_engine.hypernet import hyper_preset

    cfg = search_quality.make_cfg(search_quality.parse(["--hyper", "small"]), "digits", 300)
    assert cfg.hyper == hyper_preset("small")
    with pytest.raises(ConfigError, match="huge"):
        search_quality.make_cfg(search_quality.parse(["--hyper", "huge"]), "digits", 300)


def test_hyper_cost_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "hyper_cost.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (path,) = tmp_path.glob("hyper-cost-smoke-*.json")
    doc = json.loads(path.read_text())
    assert set(doc["options"]) == {"default", "gains", "writers", "gains+writers", "graph"}
    assert doc["options"]["default"]["step_ratio"] == 1.0 and set(doc["machine"]) == set(common.MACHINE_KEYS)
    assert doc["options"]["writers"]["hyper_params"] > doc["options"]["default"]["hyper_params"]


def test_pool_quality_smoke_every_stage_then_resumes_without_training(tmp_path):
    """benchmarks/pool_quality.py end to end on digits: the verify phase over SMASH's order (`smash_sh`), the
    same phase over FLOPs' top 16 with no SMASH (`flops16_sh` at its own images, `flops16_sh_equal` at the
    default's) and the equal-image controls pick from one pool with the engine's halving, every pick is judged by
    its truth trainings, and a second run over the same caches trains nothing and writes the same picks (a killed
    benchmark resumes). A second pool (`--pool-seed 1`) keeps its own caches and cell file, and `--table` reads
    both, and an old file's `default` as `smash_sh`."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "pool_quality.py"), "--smoke", "--epochs", "1",
           "--extra", "rankavg_sh,smash_sh_eta3", "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    doc = json.loads((tmp_path / "pool-e1-s0.json").read_text())
    (entry,) = doc["runs"]
    p, total = entry["picks"], entry["total_images"]
    pool = json.loads((tmp_path / "pool" / "pool.json").read_text())
    ids = [r["id"] for r in pool["archs"]]
    assert doc["pool"] == len(ids) == 8 and entry["epochs"] == 1 and entry["seed"] == 0
    smash = json.loads((tmp_path / "pool" / "smash-e1-s0.json").read_text())
    assert p["smash_top1"]["pick"] == min(ids, key=lambda i: (smash["errors"][i], i))
    assert p["flops_top1"]["pick"] == max(pool["archs"], key=lambda r: (r["flops"], [-ord(c) for c in r["id"]]))["id"]
    assert "default" not in p and doc["pool_seed"] == 0
    assert total == entry["smash_images"] + p["smash_sh"]["verify_images"] == p["smash_sh"]["images"]
    from smash_engine import halving

    flops_order = [r["id"] for r in sorted(pool["archs"], key=lambda r: (-r["flops"], r["id"]))]
    # the default's verify phase without SMASH: its rungs over FLOPs' first 16 (all 8 here) at its images, and the
    # engine's plan of the same candidates at the default's total
    cfg = make_config("quick", dataset="digits", device="cpu").train
    cap = 600  # the smoke truth recipe's images: 1 epoch of 600
    for name, budget in (("flops16_sh", entry["verify_budget"]), ("flops16_sh_equal", total)):
        plan = halving.plan(8, cfg.verify_eta, budget, halving.MIN_STEPS * 10, cap)
        assert p[name]["candidates"] == flops_order[:plan[0].candidates] and p[name]["top"] == cfg.verify_top
        assert p[name]["rungs"] == [dict(candidates=r.candidates, images=r.images, seeds=r.seeds) for r in plan]
        assert p[name]["images"] == p[name]["verify_images"] == halving.cost(plan) <= budget
        assert p[name]["true_error"] is not None
    assert p["flops16_sh"]["rungs"] == p["smash_sh"]["rungs"]
    assert p["flops16_sh_equal"]["images"] >= p["flops16_sh"]["images"]
    for name in ("flops_sh_equal", "naswot_sh_equal"):
        assert 0 < p[name]["images"] <= total and p[name]["pick"] in p[name]["candidates"]
    assert p["flops_sh_equal"]["candidates"] == [r["id"] for r in sorted(pool["archs"], key=lambda r: -r["flops"])][
        :len(p["flops_sh_equal"]["candidates"])]
    for name, eta in (("rankavg_sh", 4), ("smash_sh_eta3", 3)):
        assert p[name]["eta"] == eta and p[name]["images"] == entry["smash_images"] + p[name]["verify_images"] <= total
        assert p[name]["true_error"] is not None
    orders = p["random_sh_equal_orders"]
    assert [r["order"] for r in orders] == [0, 1] and orders[0]["candidates"] != orders[1]["candidates"]
    runs = [json.loads(line) for line in (tmp_path / "pool" / "truth-runs.jsonl").read_text().splitlines()]
    errors: dict = {}
    for r in runs:
        errors.setdefault(r["arch_id"], {})[r["seed"]] = r["val_error"]
    for name in ("smash_sh", "flops16_sh", "flops16_sh_equal", "flops_sh_equal", "naswot_sh_equal", "smash_top1",
                 "flops_top1", "naswot_top1"):
        assert p[name]["true_error"] == pytest.approx(np.mean([errors[p[name]["pick"]][s] for s in (0, 1)]))
    assert p["random_sh_equal"]["true_error"] == pytest.approx(np.mean([r["true_error"] for r in orders]))
    short = (tmp_path / "pool" / "short-trainings.jsonl").read_text()
    assert all(len(json.loads(line)["train_losses"]) >= 1 for line in short.splitlines())

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "trained" not in again.stdout and "truth " not in again.stdout and "SMASH epoch" not in again.stdout
    assert (tmp_path / "pool" / "short-trainings.jsonl").read_text() == short
    assert json.loads((tmp_path / "pool-e1-s0.json").read_text())["runs"] == doc["runs"]

    # another pool: its own caches and cell file; pool 0's stay as they were
    other = subprocess.run(cmd[:-2] + ["--pool-seed", "1", "--stages", "controls,truth", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "pool" / "short-trainings.jsonl").read_text() == short
    assert json.loads((tmp_path / "pool" / "pool.json").read_text()) == pool
    doc1 = json.loads((tmp_path / "pool-p1-e1-s0.json").read_text())
    pool1 = json.loads((tmp_path / "pool-p1" / "pool.json").read_text())
    assert doc1["pool_seed"] == pool1["pool_seed"] == 1 and pool1["archs"] != pool["archs"]
    p1 = doc1["runs"][0]["picks"]
    assert {"flops16_sh", "flops16_sh_equal", "flops_sh_equal", "flops_top1"} <= set(p1) and "smash_top1" not in p1
    assert p1["flops_top1"]["true_error"] is not None and (tmp_path / "pool-p1" / "truth-runs.jsonl").exists()
    # a file from before the rename: its `default` is read as smash_sh
    old = json.loads((tmp_path / "pool-e1-s0.json").read_text())
    old["runs"][0]["picks"]["default"] = old["runs"][0]["picks"].pop("smash_sh")
    (tmp_path / "pool-e1-s0.json").write_text(json.dumps(old))
    table = subprocess.run(cmd[:2] + ["--table", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line[:2] in ("p0", "p1")]
    assert len(rows) >= 2 and rows[0].startswith("p0") and rows[1].startswith("p1")
    assert "smash_sh minus flops16_sh" in table.stdout and "flopsres_sh minus" not in table.stdout


def test_rung_metric_smoke_records_what_the_engine_measures(tmp_path):
    """benchmarks/rung_metric.py on digits: every metric ranked against the truth, and the held-out loss it
    records after evaluating between steps is exactly a plain verify-rung training's (the evaluations change
    nothing in the training they watch)."""
    import dataclasses

    import pick_quality

    from smash_engine import halving

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rung_metric.py"), "--smoke", "--images", "400",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "rung-metric-400.json").read_text())
    assert doc["stats"]["n"] == 6 and set(doc["stats"]) == {"n", "val_loss", "val_error", "tse", "tse_late",
                                                            "late_loss"}
    row = doc["rows"][0]
    assert row["evals"] == 4 and row["steps"] == 40 and row["tse"] > row["tse_late"]
    cfg = make_config("quick", dataset="digits", device="cpu")
    arch = sample_architecture(cfg.space, random.Random(0), 1.0)
    assert arch.id == row["arch_id"]
    train, select = pick_quality.rung_data(dict(dataset="digits", val_size=300, split_seed=0), 200)
    t = dataclasses.replace(cfg.train, final_batch=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark ran: another thread count sums in another order
    try:
        f = halving.train_rung(arch, t, train, halving.Rung(0, 6, 400), 0, torch.device("cpu"))
        assert f.evaluate(select, t.score_batch) == (row["val_error"], row["val_loss"])
    finally:
        torch.set_num_threads(threads)


def test_pool_comparison_counts_a_pick_shared_between_cells_once():
    """`pool_quality.versus`: the default minus a control over cells, and the truth-noise interval of that mean,
    where two cells' controls picked the same network (as equal-image controls do): that network's noise enters
    once, with twice the weight, so the interval is wider than if the picks were independent."""
    import pool_quality

    def cell(default, ctrl, d, c):
        return dict(picks=dict(default=dict(pick=default, true_error=d), flops_sh_equal=dict(pick=ctrl, true_error=c)))

    got = pool_quality.versus([cell("a", "x", 0.20, 0.19), cell("b", "x", 0.22, 0.19)], "flops_sh_equal", 0.006, 3)
    assert got["cells"] == 2 and got["mean"] == pytest.approx(0.02) and got["per_cell"] == pytest.approx([0.01, 0.03])
    # weights a: 1/2, b: 1/2, x: -1, so the variance is (1/4 + 1/4 + 1) sd^2 / 3
    assert got["ci95"] == pytest.approx(1.96 * 0.006 * (1.5 / 3) ** 0.5)
    apart = pool_quality.versus([cell("a", "x", 0.20, 0.19), cell("b", "y", 0.22, 0.19)], "flops_sh_equal", 0.006, 3)
    assert apart["ci95"] < got["ci95"]
    assert pool_quality.versus([cell("a", "x", 0.20, None)], "flops_sh_equal", 0.006, 3) is None


def test_benchmark_scripts_answer_help_and_refuse_a_missing_file_in_one_line():
    """`--help` of every benchmark script prints its usage (argparse fails on a bare % in a help string), and
    quality_table.py given a file that is not there says so in one line, with no traceback."""
    for script in ("pool_quality.py", "quality_table.py", "search_quality.py", "fewshot_quality.py", "plan_cache.py"):
        got = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                             text=True, timeout=120)
        assert got.returncode == 0 and "usage" in got.stdout.lower(), (script, got.stderr)
    got = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality_table.py"), "nope.json"],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and got.stderr.count("\n") == 1 and "no result file nope.json" in got.stderr
