"""A search within a budget (`--max-params`, `--max-mflops`): a real tiny search whose every scored, refined,
verified and final architecture fits, draws that are pure functions of (seed, stage, index), refusals."""

import json
import random
import sqlite3

import pytest

from smash_engine import store
from smash_engine.budget import Budget, BudgetError, check_space, draw_within
from smash_engine.config import RunConfig
from smash_engine.cost import arch_cost
from smash_engine.engine import Engine
from smash_engine.errors import ConfigError
from smash_engine.runs import create_run
from smash_engine.sampler import sample_architecture
from smash_engine.seeds import PERTURB, RANK, SAMPLE, rng
from smash_engine.space import Architecture
from smash_engine.train import perturbed_draw, rank_arch, rank_draw
from tests.conftest import tiny_config
from tests.engine.test_engine import _q

MAX_PARAMS, MAX_MFLOPS = 90_000, 3.0


def test_a_budgeted_search_scores_refines_verifies_and_trains_only_within_its_budget(tmp_path):
    db = tmp_path / "budget.db"
    cfg = tiny_config(name="budget", max_params=MAX_PARAMS, max_mflops=MAX_MFLOPS, verify_top=2, verify_add="flops",
                      verify_add_top=1, verify_budget=3.0, final_top=2)
    create_run(db, cfg)
    store.insert_command(db, 1, "sample", {"n": 3})  # answered during SMASH training, rescored in the rank phase

    def reporter(info):
        if info.get("stage") == "random" and info.get("done", 0) >= 3:
            engine.commands.stop_signal = 1  # stop in the middle of the rank phase (what SIGINT does)

    engine = Engine(db, reporter=reporter)
    assert engine.run() == "stopped"
    assert Engine(db).run() == "done"  # resumed: the rest of the rank phase, refine, verify, final

    def costs(table):
        return _q(db, f"select t.arch_id, a.params, a.flops from {table} t join archs a on a.id = t.arch_id")

    scored, verified, finals = costs("scores"), costs("verifications"), costs("finals")
    sources = dict(_q(db, "select source, count(*) from scores group by source"))
    assert sources == {"random": 6, "sample": 3, "rescore": 3, "perturb": 2, "hillclimb": 2}
    assert len(verified) == 3 and len(finals) == 2  # SMASH's top 2 and the largest within the budget
    for arch_id, params, flops in scored + verified + finals:
        assert params <= MAX_PARAMS and flops <= MAX_MFLOPS * 1e6, (arch_id, params, flops)
        spec = _q(db, "select spec_json from archs where id = ?", arch_id)[0][0]
        assert arch_cost(Architecture.from_json(spec)) == (params, flops)  # the stored counts are arch_cost's
    # drawn from the derived seeds by rejection: a stop and resume draws exactly what an unstopped run would
    ranked = [a for (a,) in _q(db, "select arch_id from scores where source = 'random' order by id")]
    draws = [rank_draw(cfg, RANK, i) for i in range(6)]
    assert ranked == [a.id for a, _ in draws]
    rejected = sum(r for _, r in draws)
    assert rejected > 0  # the budget did reject draws, so the check above means something
    sampled = [a for (a,) in _q(db, "select arch_id from scores where source = 'sample' order by id")]
    assert sampled == [rank_arch(cfg, SAMPLE, i).id for i in range(3)]
    base = Architecture.from_json(_q(db, "select a.spec_json from scores s join archs a on a.id = s.arch_id where "
                                         "s.source = 'random' order by s.smash_error, s.id limit 1")[0][0])
    perturbs = [a for (a,) in _q(db, "select arch_id from scores where source = 'perturb' order by id")]
    assert perturbs == [perturbed_draw(cfg, base, PERTURB, i)[0].id for i in range(2)]
    # the log says per stage how many draws the budget rejected (the rank phase's twice, the same, as it resumed)
    said = [m for (m,) in _q(db, "select message from events where message like 'budget: %' order by id")]
    rank_line = (f"budget: rank: 6 random architectures within the budget (max 90,000 params, 3 MFLOPs); "
                 f"{rejected:,} draws rejected ({rejected / (6 + rejected):.0%} of {6 + rejected:,}); the largest ")
    assert [m.startswith(rank_line) for m in said].count(True) == 2
    assert any(m.startswith("budget: sample: 3 random architectures within the budget") for m in said)
    assert any(m.startswith(f"budget: refine: 2 perturbations of {base.id} within the budget") for m in said)
    assert any(m.startswith("budget: refine: 2 hill-climbing candidates within the budget") for m in said)
    saved = json.loads(_q(db, "select config_json from runs")[0][0])["train"]
    assert (saved["max_params"], saved["max_mflops"]) == (MAX_PARAMS, MAX_MFLOPS)


def test_without_a_budget_the_draws_are_the_first_of_their_seeds():
    cfg = tiny_config()
    for i in range(5):
        assert rank_draw(cfg, RANK, i) == (sample_architecture(cfg.space, rng(cfg.seed, RANK, i), 1.0), 0)
    budgeted = tiny_config(max_params=MAX_PARAMS)
    for i in range(5):  # with one: the first draw of that one generator that fits
        r = rng(0, RANK, i)
        drawn = [sample_architecture(cfg.space, r, 1.0)]
        while arch_cost(drawn[-1])[0] > MAX_PARAMS:
            drawn.append(sample_architecture(cfg.space, r, 1.0))
        assert rank_draw(budgeted, RANK, i) == (drawn[-1], len(drawn) - 1)


def test_a_draw_that_never_fits_is_a_clear_error():
    space = tiny_config().space
    r = random.Random(0)
    with pytest.raises(BudgetError, match=r"perturbation 3: 10,000 draws in a row were outside the budget \(max 1 "
                                          r"params\); start a new search with a larger --max-params"):
        draw_within(Budget(max_params=1), lambda: sample_architecture(space, r, 1.0), "perturbation 3")


def test_an_impossible_budget_names_the_smallest_architecture_drawn():
    with pytest.raises(BudgetError, match=r"^no architecture of the quick preset's search space fits the budget "
                                          r"\(max 1,000 params\): the smallest of 2,000 drawn has [\d,]+ params and "
                                          r"[\d.]+ MFLOPs"):
        tiny_config(max_params=1000)
    with pytest.raises(BudgetError, match=r"^only \d of 2,000 architectures drawn .* too few to draw a search from"):
        check_space(tiny_config().space, Budget(max_params=40_000), name="the quick preset's")
    for bad in (dict(max_params=-1), dict(max_mflops=-0.5)):
        with pytest.raises(ConfigError, match=r"must be 0 or more, got -"):
            tiny_config(**bad)


def test_a_config_from_before_budgets_loads_without_one():
    d = tiny_config(max_params=MAX_PARAMS).to_dict()
    for key in ("max_params", "max_mflops"):
        del d["train"][key]
    cfg = RunConfig.from_dict(json.loads(json.dumps(d)))
    assert (cfg.train.max_params, cfg.train.max_mflops) == (0, 0.0) and not Budget.of(cfg.train)


def test_score_and_final_commands_outside_the_budget_are_refused_by_the_engine(run_db):
    """An unbudgeted finished run given a budget its leaderboard's top architecture exceeds (as a budgeted run
    never would have, the test's shortcut to an architecture outside it in the file)."""
    top = _q(run_db, "select l.arch_id, a.params, a.spec_json from leaderboard l join archs a on a.id = l.arch_id "
                     "order by l.rank limit 1")[0]
    config = json.loads(_q(run_db, "select config_json from runs")[0][0])
    config["train"]["max_params"] = top[1] - 1
    conn = sqlite3.connect(run_db)
    conn.execute("update runs set config_json = ?", (json.dumps(config),))
    conn.commit()
    conn.close()
    final = store.insert_command(run_db, 1, "final", {"arch": top[0], "epochs": 1})
    score = store.insert_command(run_db, 1, "score", {"spec": top[2]})
    finals_before = _q(run_db, "select count(*) from finals")
    assert Engine(run_db).run() == "done"
    rows = {r["id"]: r for r in store.commands(store.connect_reader(run_db), 1)}
    why = f"architecture {top[0]} has {top[1]:,} params and "
    for cid in (final, score):
        assert rows[cid]["status"] == "error", rows[cid]
        assert rows[cid]["message"].startswith(why) and f"outside this run's budget (max {top[1] - 1:,} params)" \
            in rows[cid]["message"]
    assert _q(run_db, "select count(*) from finals") == finals_before
    assert _q(run_db, "select count(*) from scores where source = 'user'") == [(0,)]
