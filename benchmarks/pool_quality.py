"""Does SMASH earn its training? Its pick on a search-sized pool against successive halving alone at equal images.

    python benchmarks/pool_quality.py --epochs 3 --seed 0          # one cell, every stage (resumable)
    python benchmarks/pool_quality.py --epochs 3 --stages controls # the controls alone (they need no SMASH)
    python benchmarks/pool_quality.py --epochs 3 --stages controls --reverse   # a second one, from the other end
    python benchmarks/pool_quality.py --stages truth --follow      # the truth of each pick as other processes add it
    python benchmarks/pool_quality.py --table                      # every cell's picks so far, one table
    python benchmarks/pool_quality.py --smoke --out /tmp/pool      # every stage on digits, tiny (the test)

A cell is (SMASH epochs, SMASH seed). On Fashion-MNIST 16 px with the truth panel's space and recipe
(`benchmarks/truth/fmnist16-wide-e2/`), it takes one pool of `--pool` random architectures, drawn as the rank
phase of a run with seed `--pool-seed` draws them (`train.rank_draw`; the same pool for every method and every
cell), and picks one network from it in each of these ways:

- `smash_sh` (called `default` in files before 2026-12-08, which is still read): what a run with the engine's
  defaults did until 2026-12-04: SMASH training (the quick preset's settings, the engine's own loop), every pool
  architecture scored, the verify phase (`smash_engine.halving`: SMASH's top `verify_top`, eta, rungs, seeds and
  rung cap as in a run) and its pick. Its images: SMASH's plus the phase's ("the default's images" below). Today's
  default (`--verify-order flopsres`) is the `--extra flopsres_sh` pick, chosen by these measurements
  (docs/search-quality.md).
- with no SMASH training, the same verify phase (top, eta, rung cap, `halving.plan`) over FLOPs' top `verify_top`:
  `flops16_sh` at the phase's own images (does SMASH's residual in `flopsres_sh` matter?) and `flops16_sh_equal`
  at the default's images (SMASH's images spent on longer rungs and more seeds, as `halving.plan` spends them).
  The refine phase is left out: it adds architectures outside the pool, which no control can see.
- at the default's total images, with the same halving code and rules over the whole pool in another order:
  `random_sh_equal` (the mean of `--random-orders` random orders, each also kept under `random_sh_equal_orders`),
  `flops_sh_equal` (largest FLOPs first) and `naswot_sh_equal` (NASWOT's order). The halving plan takes the
  first candidates of the order that the budget can train for at least `halving.MIN_STEPS` steps each;
- free, for reference: `smash_top1`, `flops_top1`, `naswot_top1` (FLOPs' and NASWOT's need no SMASH);
- with `--extra`, other verify phases at the default's images: over the top 16 of SMASH blended with the free
  baselines (`rankavg_sh`, `flopsres_sh`: `pick_quality.blend_orders`), over SMASH's top 32 (`smash_sh_top32`),
  or with eta 3 (`smash_sh_eta3`).

Every pick's true error is the panel's truth recipe on it, `--truth-seeds` trainings, mean of their held-out
errors (a fraction). The rungs train on SMASH's training split less `--select-size` seeded images and choose on
those; SMASH scores on the truth's held-out images as `search_quality.py` does (they train nothing).

Everything is cached as it lands, so a killed run loses one training and any number of processes can share
the work: the pool (`<panel>/pool/pool.json`), SMASH's checkpoint (`runs/quality/pool-eE-sS.pt`) and scores
(`<panel>/pool/smash-eE-sS.json`), the short trainings (`<panel>/pool/short-trainings.jsonl`, keyed as
`pick_quality.py` keys them; the controls of two cells with equal images share them) and the truth trainings
(`<panel>/pool/truth-runs.jsonl`). The result of a cell is `benchmarks/results/pool-eE-sS.json`, rewritten as
each pick lands: a `runs` list (as `pick_quality.py` writes it) whose entry has `epochs`, `seed`,
`smash_images` and `picks`, each pick with `pick`, `images` and, once trained, `true_error`.

Those are pool seed 0's names. Another pool (`--pool-seed N`) keeps its caches in `<panel>/pool-pN/` and its cells
in `benchmarks/results/pool-pN-eE-sS.json` (`pool_seed` inside); SMASH's checkpoints are shared, as its training
does not depend on the pool.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)
import pick_quality  # noqa: E402
import truth_panel  # noqa: E402

STAGES = ("smash", "default", "controls", "truth")
# the verify phase over SMASH's own order (the engine's default until 2026-12-04); files before 2026-12-08 call it
# `default`, which is read as this name
SMASH_SH = "smash_sh"
OLD_NAMES = {"default": SMASH_SH}
CONTROLS = ("random_sh_equal", "flops_sh_equal", "naswot_sh_equal")
# the verify phase over FLOPs' top `verify_top` with no SMASH training: at the verify phase's own images, and at the
# default's total images (SMASH's spent on the same phase, `halving.plan` turning them into longer rungs and seeds)
FLOPS16 = ("flops16_sh", "flops16_sh_equal")
# the picks the controls stage makes (none needs SMASH), in the order it makes them
CONTROL_JOBS = (*FLOPS16, *CONTROLS)
FREE = ("smash_top1", "flops_top1", "naswot_top1")
EXTRAS = ("rankavg_sh", "flopsres_sh", "smash_sh_top32", "smash_sh_eta3")
# the smoke setting: the digits dataset, the quick space, a pool of 8 and a one-epoch truth on 600 images
SMOKE_RECIPE = dict(dataset="digits", space="quick", val_size=300, split_seed=0, train_size=600, epochs=1,
                    batch=50, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.0001, seeds=[0, 1])


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3, help="SMASH training epochs of the cell")
    ap.add_argument("--seed", type=int, default=0, help="SMASH's seed of the cell")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"which of {', '.join(STAGES)} to run")
    ap.add_argument("--panel", type=Path, default=truth_panel.PANEL_DIR)
    ap.add_argument("--pool", type=int, default=300, help="architectures in the pool (the fmnist preset's n_random)")
    ap.add_argument("--pool-seed", type=int, default=0, help="the run seed whose rank phase draws the pool")
    ap.add_argument("--random-orders", type=int, default=3)
    ap.add_argument("--controls", default=",".join(CONTROL_JOBS),
                    help="which picks the controls stage makes, in this order: any of " + ", ".join(CONTROL_JOBS))
    ap.add_argument("--truth-seeds", default="", help="seeds of each pick's truth (default: the panel recipe's)")
    ap.add_argument("--extra", default="", help="also, at the default's images: any of " + ", ".join(EXTRAS))
    ap.add_argument("--select-size", type=int, default=10000, help="images the rungs choose on")
    ap.add_argument("--sh-seed", type=int, default=0, help="the short trainings' seed (one for every method)")
    ap.add_argument("--worker", type=int, default=0, help="with --workers N, train the truth jobs k %% N == worker")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--reverse", action="store_true", help="run the controls last first (for a second process)")
    ap.add_argument("--follow", action="store_true",
                    help="with the truth stage: keep training the truth of picks other processes add, until stopped")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "quality", help="SMASH checkpoints")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--table", action="store_true", help="print every cell's picks and true errors, then exit")
    ap.add_argument("--smoke", action="store_true", help="every stage on digits with a pool of 8 (the test)")
    a = ap.parse_args(argv)
    bad = [s for s in a.stages.split(",") if s and s not in STAGES]
    if bad:
        ap.error(f"unknown stage {bad[0]!r}; choose from {', '.join(STAGES)}")
    bad = [s for s in a.controls.split(",") if s and s not in CONTROL_JOBS]
    if bad:
        ap.error(f"unknown --controls {bad[0]!r}; choose from {', '.join(CONTROL_JOBS)}")
    bad = [s for s in a.extra.split(",") if s and s not in EXTRAS]
    if bad:
        ap.error(f"unknown --extra {bad[0]!r}; choose from {', '.join(EXTRAS)}")
    return a


class Setup:
    """The dataset, space, recipe and folders a cell works with: the truth panel's, or the smoke setting's."""

    def __init__(self, a: argparse.Namespace):
        from smash_engine.config import make_config

        if a.smoke:
            self.recipe = dict(SMOKE_RECIPE)
            self.space = make_config("quick", dataset="digits").space
            self.dir = a.out / pool_dir(a.pool_seed)
            a.pool, a.select_size, a.work, a.random_orders = min(a.pool, 8), 200, a.out / "work", 2
        else:
            self.recipe = truth_panel.load_recipe(a.panel)
            self.space = truth_panel.load_space(a.panel)
            self.dir = a.panel / pool_dir(a.pool_seed)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.truth_seeds = [int(s) for s in a.truth_seeds.split(",") if s.strip()] or list(self.recipe["seeds"])

    def cfg(self, a: argparse.Namespace):
        """The run config SMASH trains with: search_quality's, so its checkpoints are interchangeable."""
        import search_quality

        ns = argparse.Namespace(preset="quick", seed=a.seed, epochs=a.epochs, set=["batch_size=50"] if a.smoke else [],
                                space_set=[], hyper=None, hyper_set=[])
        return search_quality.make_cfg(ns, self.recipe["dataset"], self.recipe["val_size"], self.space)


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def pool_dir(pool_seed: int) -> str:
    """The folder of a pool's caches: `pool/` for pool seed 0 (the first pool's, as it always was), `pool-pN/`."""
    return "pool" if pool_seed == 0 else f"pool-p{pool_seed}"


def cell_name(pool_seed: int, epochs: int, seed: int) -> str:
    """A cell's result file: `pool-eE-sS.json` on pool seed 0 (as it always was), `pool-pN-eE-sS.json`."""
    return f"pool-e{epochs}-s{seed}.json" if pool_seed == 0 else f"pool-p{pool_seed}-e{epochs}-s{seed}.json"


def renamed(picks: dict) -> dict:
    """`picks` with a pick under an old name (`OLD_NAMES`) moved to its present one."""
    for old, new in OLD_NAMES.items():
        if old in picks and new not in picks:
            picks[new] = picks.pop(old)
    return picks


def draw_pool(a: argparse.Namespace, setup: Setup) -> dict:
    """The pool, with each member's cost and free baselines; drawn once and kept (`pool.json`)."""
    path = setup.dir / "pool.json"
    doc = load_json(path)
    if doc and doc["pool_seed"] == a.pool_seed and doc["n_drawn"] == a.pool:
        return doc
    import search_quality

    from smash_engine.cost import arch_cost
    from smash_engine.seeds import RANK
    from smash_engine.train import rank_draw

    cfg = dataclasses.replace(setup.cfg(a), seed=a.pool_seed)
    archs, seen = [], set()
    for i in range(a.pool):  # the rank phase's draws 0 .. pool - 1; a repeat is scored once
        arch = rank_draw(cfg, RANK, i)[0]
        if arch.id not in seen:
            seen.add(arch.id)
            archs.append(arch)
    train, _ = search_quality.data(setup.recipe["dataset"], setup.recipe["val_size"], setup.recipe["split_seed"],
                                   None, 0)
    base = search_quality.baselines(archs, train)
    doc = dict(pool_seed=a.pool_seed, n_drawn=a.pool, what="the rank phase's draws 0..n-1 of a run with this seed "
               "(train.rank_draw), repeats dropped; naswot is its predicted error (the score negated: lower is better)",
               archs=[dict(id=x.id, params=arch_cost(x)[0], flops=arch_cost(x)[1], naswot=base["naswot"][j],
                           spec=x.to_json()) for j, x in enumerate(archs)])
    common.save_result(doc, path.name, path.parent)
    return doc


def smash_scores(a: argparse.Namespace, setup: Setup, archs: list) -> dict:
    """SMASH trained for the cell (resumed from its checkpoint) and its score of every pool architecture."""
    path = setup.dir / f"smash-e{a.epochs}-s{a.seed}.json"
    doc = load_json(path)
    if doc and len(doc["errors"]) == len(archs):
        return doc
    import search_quality

    from smash_engine.train import bn_calibration, smash_score

    cfg = setup.cfg(a)
    train, val = search_quality.data(setup.recipe["dataset"], setup.recipe["val_size"], setup.recipe["split_seed"],
                                     None, a.seed)
    out: dict = {}

    def on_stop(s, epoch: int) -> None:
        t0, t = time.perf_counter(), cfg.train
        calib = bn_calibration(cfg, train)
        scores = [smash_score(s, x, val, t.score_batch, t.score_bn, calib) for x in archs]
        out.update(epochs=epoch, seed=a.seed, smash_images=epoch * len(train), held_out_images=len(val),
                   errors={x.id: e for x, (e, _) in zip(archs, scores, strict=True)},
                   losses={x.id: loss for x, (_, loss) in zip(archs, scores, strict=True)},
                   score_seconds=round(time.perf_counter() - t0, 1), config=cfg.to_dict())

    seconds = search_quality.smash_epochs(cfg, train, a.work / f"pool-e{a.epochs}-s{a.seed}.pt", [a.epochs], on_stop,
                                          report=lambda line: print(line, flush=True))
    out["smash_train_seconds"] = round(seconds, 1)  # 0 when resumed from a finished checkpoint
    common.save_result(out, path.name, path.parent)
    print(f"scored {len(archs)} pool architectures in {out['score_seconds']:.0f} s", flush=True)
    return out


def orders(a: argparse.Namespace, pool: dict, smash: dict | None) -> dict[str, list[str]]:
    """Each method's order of the pool, best first (ties by id)."""
    rows = pool["archs"]
    ids = [r["id"] for r in rows]
    out = {"flops": [r["id"] for r in sorted(rows, key=lambda r: (-r["flops"], r["id"]))],
           "naswot": [r["id"] for r in sorted(rows, key=lambda r: (r["naswot"], r["id"]))]}
    for k in range(a.random_orders):
        out[f"random{k}"] = random.Random(1000 + k).sample(ids, len(ids))
    if smash:
        out["smash"] = sorted(ids, key=lambda i: (smash["errors"][i], i))
    return out


def picks(a: argparse.Namespace, setup: Setup, pool: dict, smash: dict | None, stages: set[str],
          entry: dict, save) -> None:
    """The cell's picks, each saved as it lands (a pick already in `entry` is kept)."""
    from smash_engine import halving
    from smash_engine.config import make_config
    from smash_engine.space import Architecture

    t = make_config("quick", dataset=setup.recipe["dataset"], device="cpu").train  # the verify phase's settings
    if a.smoke:  # 20 steps of 10 images: a pool of 8 on digits still gets a halving
        t = dataclasses.replace(t, final_batch=10)
    archs = {r["id"]: Architecture.from_json(r["spec"]) for r in pool["archs"]}
    train, select = pick_quality.rung_data(setup.recipe, a.select_size)
    cap = setup.recipe["epochs"] * setup.recipe["train_size"]  # no rung trains longer than final training
    cache = pick_quality.Cache(setup.dir / "short-trainings.jsonl")
    short = pick_quality.ShortTrainings(archs, t, train, select, cache, a.sh_seed, a.select_size, cap, t.verify_eta)
    smash_images = a.epochs * (len(train) + len(select))  # SMASH trains on the rungs' images and the select images
    assert smash is None or smash["smash_images"] == smash_images, "SMASH's split is not the rungs' and select's"
    verify_budget = int(t.verify_budget * smash_images)
    verify_images = halving.cost(halving.plan(min(t.verify_top, len(archs)), t.verify_eta, verify_budget,
                                              halving.MIN_STEPS * t.final_batch, cap))
    total = smash_images + verify_images
    entry.update(smash_images=smash_images, verify_budget=verify_budget, total_images=total)
    p = entry["picks"]
    order = orders(a, pool, smash)
    for name, key in (("smash_top1", "smash"), ("flops_top1", "flops"), ("naswot_top1", "naswot")):
        if key in order:  # the free first places; SMASH's once it has scored the pool
            p.setdefault(name, dict(pick=order[key][0], images=0))
    save()  # takes in what other processes on this cell have saved
    if "default" in stages and smash is not None and SMASH_SH not in p:
        board = [dict(arch_id=i, rank=k + 1, flops=None) for k, i in enumerate(order["smash"])]
        got = short.halve(halving.candidates(board, t.verify_top), verify_budget)
        p[SMASH_SH] = dict(got, images=smash_images + got["images"], verify_images=got["images"])
        print(f"{SMASH_SH}: pick {got['pick']} after {p[SMASH_SH]['images']:,} images", flush=True)
        save()
    if "default" in stages and smash is not None:
        # the verify phase over other orders or in another shape, at the default's images (issue: the default,
        # decided by measurement): SMASH blended with the free baselines, a wider first rung, a gentler eta
        blends = pick_quality.blend_orders(smash["errors"], {r["id"]: r["flops"] for r in pool["archs"]},
                                           {r["id"]: r["naswot"] for r in pool["archs"]})
        for name in [m for m in a.extra.split(",") if m]:
            save()
            if name in p:
                continue
            top, eta = t.verify_top, t.verify_eta
            if name in ("rankavg_sh", "flopsres_sh"):
                ids = blends[name.removesuffix("_sh")]
            else:
                ids = order["smash"]
                top, eta = {"smash_sh_top32": (32, eta), "smash_sh_eta3": (top, 3)}[name]
            got = short.halve([(i, k + 1, name) for k, i in enumerate(ids[:top])], verify_budget, eta=eta)
            p[name] = dict(got, images=smash_images + got["images"], verify_images=got["images"], top=top, eta=eta)
            print(f"{name}: pick {got['pick']} after {p[name]['images']:,} images", flush=True)
            save()
    if "controls" in stages:
        runs = p.setdefault("random_sh_equal_orders", [])
        want = [c for c in a.controls.split(",") if c]
        jobs = [(name, None) for name in FLOPS16 if name in want]
        jobs += [(f"random{k}", k) for k in range(a.random_orders) if "random_sh_equal" in want]
        jobs += [(key, None) for key in ("flops", "naswot") if f"{key}_sh_equal" in want]
        for key, k in (jobs[::-1] if a.reverse else jobs):  # --reverse: a second process starts at the other end
            save()
            name = key if key in FLOPS16 else f"{key}_sh_equal"
            if (k is None and name in p) or any(r["order"] == k for r in runs):
                continue
            if key in FLOPS16:
                # the default's verify phase (its top, eta, rungs, seeds, cap) over FLOPs' first verify_top, no SMASH:
                # at the phase's own budget, or at the default's total (the engine's plan spends the rest)
                budget = verify_budget if key == "flops16_sh" else total
                got = short.halve([(i, j + 1, "flops") for j, i in enumerate(order["flops"][:t.verify_top])], budget)
                p[name] = dict(got, verify_images=got["images"], budget=budget, top=t.verify_top, eta=t.verify_eta)
                print(f"{name}: pick {got['pick']} after {got['images']:,} images", flush=True)
                save()
                continue
            got = short.halve([(i, j + 1, key) for j, i in enumerate(order[key])], total)
            if k is None:
                p[name] = got
            else:
                runs.append(dict(got, order=k))
            print(f"{name if k is None else f'random order {k}'}: pick {got['pick']} after {got['images']:,} images",
                  flush=True)
            save()


def truth_trainings(a: argparse.Namespace, setup: Setup, pool: dict, want: list[str]) -> None:
    """Train the truth recipe on every architecture in `want` (in that order) with every truth seed, skipping
    what `truth-runs.jsonl` holds; with `--workers N`, this process takes jobs k % N == worker."""
    from smash_engine.space import Architecture

    specs = {r["id"]: r["spec"] for r in pool["archs"]}
    path = setup.dir / "truth-runs.jsonl"
    jobs = [(i, s) for i in dict.fromkeys(want) for s in setup.truth_seeds]
    mine = [j for k, j in enumerate(jobs) if k % a.workers == a.worker]
    data = None
    for arch_id, seed in mine:
        if (arch_id, seed) in truth_panel._done(path):
            continue
        data = data or truth_panel.splits(setup.recipe)
        r = truth_panel.train_one(Architecture.from_json(specs[arch_id]), seed, *data, recipe=setup.recipe)
        row = dict(arch_id=arch_id, seed=seed, **r, worker=a.worker, load=round(os.getloadavg()[0], 2),
                   at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(path, "a") as fh:  # one short line per write: appends from two processes do not interleave
            fh.write(json.dumps(row) + "\n")
        print(f"truth {arch_id} seed {seed}: {r['val_error']:.4f} ({r['seconds']:.0f} s)", flush=True)


def merge(mine: dict, theirs: dict) -> None:
    """Take into `mine` the picks another process saved: a method `mine` lacks, and random orders it lacks."""
    for k, v in theirs.items():
        if k == "random_sh_equal_orders":
            have = {r["order"] for r in mine.setdefault(k, [])}
            mine[k] += [r for r in v if r["order"] not in have]
            mine[k].sort(key=lambda r: r["order"])
        elif k not in mine:
            mine[k] = v


def true_errors(setup: Setup) -> dict[str, dict[int, float]]:
    path = setup.dir / "truth-runs.jsonl"
    out: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            r = json.loads(line)
            out.setdefault(r["arch_id"], {})[r["seed"]] = r["val_error"]
    return out


def judge(entry: dict, truth: dict[str, dict[int, float]], seeds: list[int]) -> None:
    """Each pick's `true_error` where every truth seed has landed; random_sh_equal as the mean of its orders."""
    import numpy as np

    def true_of(arch_id: str) -> float | None:
        got = truth.get(arch_id, {})
        return float(np.mean([got[s] for s in seeds])) if all(s in got for s in seeds) else None

    p = entry["picks"]
    for pick in p.values():
        if isinstance(pick, dict) and "pick" in pick:
            pick["true_error"] = true_of(pick["pick"])
    runs = p.get("random_sh_equal_orders", [])
    for r in runs:
        r["true_error"] = true_of(r["pick"])
    errs = [r["true_error"] for r in runs if r["true_error"] is not None]
    if runs:  # the mean only once every order's pick is judged; until then how many are
        done = len(errs) == len(runs)
        p["random_sh_equal"] = dict(true_error=float(np.mean(errs)) if done else None,
                                    spread=[min(errs), max(errs)] if done else None,
                                    images=int(np.mean([r["images"] for r in runs])), orders=len(runs),
                                    judged=len(errs))


def wanted(entry: dict) -> list[str]:
    """The picks to train, the methods under comparison first and the free references (the largest network
    among them) last."""
    p = entry["picks"]
    first = [p[k]["pick"] for k in (SMASH_SH, "flopsres_sh", *FLOPS16, "flops_sh_equal", "naswot_sh_equal", *EXTRAS)
             if k in p]
    first += [r["pick"] for r in p.get("random_sh_equal_orders", [])]
    return first + [p[k]["pick"] for k in ("smash_top1", "naswot_top1", "flops_top1") if k in p]


def table(out: Path, panel: Path) -> int:
    """Every cell of every pool (`pool-e*-s*.json` is pool seed 0's, `pool-pN-*` pool seed N's), then today's default
    (`flopsres_sh`) and SMASH's own order (`smash_sh`) minus each other way, over each pool's cells and all."""
    names = [SMASH_SH, "flopsres_sh", *FLOPS16, *CONTROLS, *FREE, "rankavg_sh", "smash_sh_top32", "smash_sh_eta3"]
    print("pool cell  " + "".join(f"{n:>17}" for n in names) + "   images (default / controls)")
    docs = sorted((json.loads(path.read_text()) for path in out.glob("pool-*.json")),
                  key=lambda d: (d.get("pool_seed", 0), d["runs"][0]["epochs"], d["runs"][0]["seed"]))
    entries = [dict(d["runs"][0], pool_seed=d.get("pool_seed", 0)) for d in docs]
    for e in entries:
        renamed(e["picks"])
        cells = []
        for n in names:
            v = e["picks"].get(n, {}).get("true_error")
            cells.append(f"{100 * v:16.2f}%" if v is not None else f"{'-':>17}")
        print(f"p{e['pool_seed']:<3} e{e['epochs']:<2} s{e['seed']:<2}" + "".join(cells)
              + f"   {e.get('total_images') or 0:,}")
    truth = load_json(panel / "truth.json")
    sd = truth["ceiling"]["seed_noise_sd_pooled"] if truth else None
    seeds = min((len(doc.get("truth_seeds", [0, 1, 2])) for doc in docs), default=3)
    pools = sorted({e["pool_seed"] for e in entries})
    groups = [(f"pool {q}", [e for e in entries if e["pool_seed"] == q]) for q in pools]
    if len(pools) > 1:
        groups.append(("all pools", entries))
    for base in ("flopsres_sh", SMASH_SH):
        for n in [m for m in names if m != base]:
            for label, group in groups:
                d = versus(group, n, sd, seeds, base)
                if d:
                    print(f"{label}: {base} minus {n}: {100 * d['mean']:+.2f} points over {d['cells']} cells "
                          f"(per cell {', '.join(f'{100 * x:+.2f}' for x in d['per_cell'])})"
                          + (f", 95% +-{100 * d['ci95']:.2f} from the truth's seed noise" if d["ci95"] is not None
                             else ""))
    return 0


def versus(entries: list[dict], name: str, seed_sd: float | None, seeds: int = 3, base: str = SMASH_SH) -> dict | None:
    """`base`'s true error (SMASH's own order, by default) minus `name`'s, each cell where both are judged, and its
    mean over them, with the half-width of a 95% interval from the truth's seed noise alone (`seed_sd` per
    training): the mean is a weighted sum of per-architecture means of `seeds` trainings, and a pick that several
    cells share (the controls do) counts once with its summed weight. Which SMASH seed a cell has is a further
    source of spread this leaves out. A pick under an old name (`default`) is read as its present one."""
    weights: dict[str, float] = {}
    per_cell = []
    picks = [renamed(dict(e["picks"])) for e in entries]
    used = [p for p in picks if p.get(base, {}).get("true_error") is not None
            and p.get(name, {}).get("true_error") is not None]
    for p in used:
        per_cell.append(p[base]["true_error"] - p[name]["true_error"])
        minus = [(r["pick"], 1 / len(p["random_sh_equal_orders"])) for r in p["random_sh_equal_orders"]] \
            if name == "random_sh_equal" else [(p[name]["pick"], 1.0)]
        weights[p[base]["pick"]] = weights.get(p[base]["pick"], 0.0) + 1 / len(used)
        for arch_id, w in minus:
            weights[arch_id] = weights.get(arch_id, 0.0) - w / len(used)
    if not used:
        return None
    ci = 1.96 * seed_sd * (sum(w * w for w in weights.values()) / seeds) ** 0.5 if seed_sd else None
    return dict(cells=len(used), per_cell=per_cell, mean=sum(per_cell) / len(used), ci95=ci)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.table:
        return table(a.out, a.panel)
    import torch

    torch.set_num_threads(a.threads)
    setup = Setup(a)
    stages = {s for s in a.stages.split(",") if s}
    pool = draw_pool(a, setup)
    from smash_engine.space import Architecture

    archs = [Architecture.from_json(r["spec"]) for r in pool["archs"]]
    name = cell_name(a.pool_seed, a.epochs, a.seed)
    doc = load_json(a.out / name) or dict(runs=[dict(epochs=a.epochs, seed=a.seed, picks={})])
    entry = doc["runs"][0]
    renamed(entry["picks"])

    def save() -> None:
        """Merge with what other processes saved for this cell (under a lock), judge, write."""
        a.out.mkdir(parents=True, exist_ok=True)
        with open(a.out / (name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = load_json(a.out / name)
            if disk:
                merge(entry["picks"], renamed(disk["runs"][0]["picks"]))
                for k in ("smash_images", "verify_budget", "total_images"):
                    entry.setdefault(k, disk["runs"][0].get(k))
            judge(entry, true_errors(setup), setup.truth_seeds)
            doc.update(panel="smoke" if a.smoke else str(a.panel.relative_to(ROOT)), pool=len(archs),
                       pool_seed=a.pool_seed, select_size=a.select_size, sh_seed=a.sh_seed,
                       truth_seeds=setup.truth_seeds, truth_recipe=setup.recipe, machine=common.machine("cpu"))
            common.save_result(doc, name, a.out)

    smash = smash_scores(a, setup, archs) if "smash" in stages else load_json(
        setup.dir / f"smash-e{a.epochs}-s{a.seed}.json")
    picks(a, setup, pool, smash, stages, entry, save)
    save()
    if "truth" in stages:
        truth_trainings(a, setup, pool, wanted(entry))
        save()
        while a.follow:  # beside processes still picking: train each pick's truth as it lands
            time.sleep(60)
            save()
            truth_trainings(a, setup, pool, wanted(entry))
    print("  " + ", ".join(f"{k} {v.get('pick', '')[:8]} {100 * v['true_error']:.2f}%" if v.get("true_error")
                           is not None else f"{k} {v.get('pick', '')[:8]}" for k, v in entry["picks"].items()
                           if isinstance(v, dict)), flush=True)
    print(f"wrote {a.out / name}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
