"""The pick a user takes home, on the truth panel: its regret for each way of choosing, with its cost (issue 23).

    python benchmarks/pick_quality.py benchmarks/results/quality-e3-default-*.json ...   # SMASH runs to judge
    python benchmarks/pick_quality.py RESULTS... --within median                            # a budgeted search

For every `search_quality.py` result given (a SMASH run's scores of the 40 panel architectures), the pick of:
- SMASH's first place, FLOPs' first place (the largest), NASWOT's first place, and a random pick (expected);
- the engine's verify phase (`smash_engine.halving`, the same rungs, seeds and short-training recipe as a run
  with the quick preset's defaults): successive halving over SMASH's top `--top`, alone and with the best
  `--add-top` of NASWOT or of FLOPs added.
Regret is the pick's mean true error minus the best true error among the architectures allowed (all, or with
`--within` those with at most that many parameters). The verify phase trains on the panel's SMASH training
split less `--select-size` seeded images, and chooses each rung's survivors on those: the truth's held-out
images never choose anything. Its budget is `--verify-budget` times the images that SMASH run trained on.

Each short training lands as one line of `<panel>/short-trainings.jsonl` as soon as it is done, keyed by
everything that decides it, so a killed run loses at most one training and later runs reuse them. The short
trainings use one seed (`--sh-seed`) whatever SMASH's seed, so two SMASH seeds share the verify phase's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)
import truth_panel  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    from smash_engine.config import TrainConfig

    t = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="search_quality.py result files")
    ap.add_argument("--panel", type=Path, default=truth_panel.PANEL_DIR)
    ap.add_argument("--top", type=int, default=t.verify_top, help="SMASH's candidates (the run's verify_top)")
    ap.add_argument("--eta", type=int, default=t.verify_eta)
    ap.add_argument("--verify-budget", type=float, default=t.verify_budget,
                    help="the phase's training images as a fraction of SMASH's")
    ap.add_argument("--add-top", type=int, default=t.verify_add_top)
    ap.add_argument("--within", default="", help="a parameter budget: a count, or 'median' (half the panel)")
    ap.add_argument("--select-size", type=int, default=10000,
                    help="images the rungs choose on (as many as the panel's SMASH scores use)")
    ap.add_argument("--sh-seed", type=int, default=0)
    ap.add_argument("--methods", default="smash_sh,smash_naswot_sh,smash_flops_sh",
                    help="smash_sh (the default), smash_naswot_sh, smash_flops_sh, rankavg_sh, flopsres_sh")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-cap", action="store_true", help="let rungs train longer than the truth recipe")
    ap.add_argument("--by", choices=("loss", "error"), default="loss",
                    help="what each rung ranks by: held-out loss (the engine's) or error")
    ap.add_argument("--reverse", action="store_true",
                    help="train each rung's candidates last first: a second process on the same results shares the "
                         "trainings through the cache instead of repeating them")
    ap.add_argument("--restat", action="store_true",
                    help="RESULTS are pick files: judge their picks again against the panel's truth as it is now "
                         "(the picks do not depend on it) and rewrite them")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--variant", default="", help="goes in the output file's name")
    return ap.parse_args(argv)


class Cache:
    """Short trainings by key, read at start and appended as each lands (several processes may share it)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        self.reload()

    def reload(self) -> None:
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    self.rows[r["key"]] = r

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = row
        with open(self.path, "a") as fh:  # one short line per write: appends from two processes do not interleave
            fh.write(json.dumps(row) + "\n")


class ShortTrainings:
    """The verify phase's rungs, outside the engine: `halving.train_rung` on `train`, each candidate judged on
    `select` (images carved out of SMASH's training split, so the truth's held-out images never choose), every
    training cached in `cache` under a key that names everything deciding it. `by`: what a rung ranks by (the
    engine's `halving._key`). A new row also keeps the training loss of each epoch (`train_losses`, the step
    mean: at equal steps it orders candidates as the sum of training losses, TSE, does)."""

    def __init__(self, archs: dict, t, train, select, cache: Cache, sh_seed: int, select_size: int,
                 final_images: int | None, eta: int, by: str = "loss", reverse: bool = False):
        self.archs, self.t, self.train, self.select, self.cache = archs, t, train, select, cache
        self.sh_seed, self.select_size, self.final_images = sh_seed, select_size, final_images
        self.eta, self.by, self.reverse = eta, by, reverse

    def key(self, arch_id: str, rung, trial: int) -> str:
        """Trial 0's key is the one every earlier measurement used."""
        t, n = self.t, len(self.train)
        return (f"{arch_id}|r{rung.index}|{rung.images}|{rung.subset(n)}x{rung.epochs(n)}|seed{self.sh_seed}|"
                f"sel{self.select_size}|lr{t.final_lr}|b{t.final_batch}|wd{t.final_weight_decay}"
                + (f"|trial{trial}" if trial else ""))

    def measure(self, arch_id: str, rung) -> tuple[float, float | None, float]:
        """The mean held-out error and loss of the candidate's `rung.seeds` trainings at this rung, and their
        seconds."""
        import torch

        from smash_engine import halving

        out = []
        for trial in range(rung.seeds):
            key = self.key(arch_id, rung, trial)
            self.cache.reload()
            if key not in self.cache.rows:
                t0, losses = time.perf_counter(), []
                f = halving.train_rung(self.archs[arch_id], self.t, self.train, rung, self.sh_seed,
                                       torch.device("cpu"), trial=trial,
                                       on_epoch=lambda e, into=losses: into.append(e.loss))
                err, loss = f.evaluate(self.select, self.t.score_batch)
                self.cache.add(dict(key=key, arch_id=arch_id, rung=rung.index, images=rung.images, trial=trial,
                                    val_error=err, val_loss=loss, train_losses=[round(x, 5) for x in losses],
                                    seconds=round(time.perf_counter() - t0, 1), at=time.strftime("%Y-%m-%dT%H:%M:%S")))
                print(f"  trained {arch_id} rung {rung.index} trial {trial} on {rung.images} images: select error "
                      f"{err:.4f}, loss {loss:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            out.append(self.cache.rows[key])
        losses = [r.get("val_loss") for r in out]
        loss = None if None in losses else sum(losses) / len(losses)
        return sum(r["val_error"] for r in out) / len(out), loss, sum(r["seconds"] for r in out)

    def halve(self, cands: list[tuple[str, int, str]], budget_images: int,
              regret: Callable[[str], float] | None = None, eta: int | None = None) -> dict:
        """The engine's successive halving (`halving.plan`, `survivors`, `order`) over `cands` (arch id, place in
        the order they come in, why) within `budget_images`: its pick, images, seconds and each rung's results."""
        from smash_engine import halving

        rungs = halving.plan(len(cands), eta or self.eta, budget_images, halving.MIN_STEPS * self.t.final_batch,
                             self.final_images)
        cands = cands[:rungs[0].candidates] if rungs else cands
        rows = [dict(arch_id=i, smash_rank=rank, via=via, rung=0) for i, rank, via in cands]
        seconds, history = 0.0, []
        for rung in rungs:
            here = [r for r in rows if r["rung"] == rung.index]
            for r in (here[::-1] if self.reverse else here):
                r["val_error"], r["val_loss"], sec = self.measure(r["arch_id"], rung)
                r["status"] = "done"
                seconds += sec
            history.append([dict(arch_id=r["arch_id"], via=r["via"], val_error=r["val_error"], val_loss=r["val_loss"],
                                 **({"true_regret": regret(r["arch_id"])} if regret else {})) for r in here])
            if rung.index + 1 < len(rungs):
                rows += [{**r, "rung": rung.index + 1, "status": "queued"}
                         for r in halving.survivors(here, rungs[rung.index + 1].candidates, self.by)]
        pick = halving.order(rows, self.by)[0] if rungs else cands[0][0]
        return dict(pick=pick, **({"regret": regret(pick)} if regret else {}), images=halving.cost(rungs),
                    seconds=round(seconds, 1),
                    rungs=[dict(candidates=r.candidates, images=r.images, seeds=r.seeds) for r in rungs],
                    history=history, candidates=[c[0] for c in cands], via=[c[2] for c in cands])


# orders that mix SMASH with the free baselines (the verify phase over their top `--top` is method `<name>_sh`)
BLENDS = ("rankavg", "flopsres")
# SMASH blended with FLOPs and NASWOT: the engine's own orders (`--verify-order`), kept there
from smash_engine.halving import blend_orders  # noqa: E402,F401


def rung_data(recipe: dict, select_size: int):
    """(rung training images, selection images): SMASH's training split (the panel's, less the truth's held-out
    images) split by a fixed draw."""
    import search_quality
    import torch

    train_all, _ = search_quality.data(recipe["dataset"], recipe["val_size"], recipe["split_seed"], None, 0)
    perm = torch.randperm(len(train_all), generator=torch.Generator().manual_seed(11))
    return train_all.take(perm[select_size:].sort().values), train_all.take(perm[:select_size].sort().values)


def restat(path: Path, true_of: dict[str, float], truth_seeds: list[int]) -> dict:
    """Every regret in a pick file again, against `true_of`; returns {run: {pick: (before, after)}} in points."""
    import numpy as np

    doc = json.loads(path.read_text())
    limit = doc.get("within_params")
    if limit is not None:
        from smash_engine.cost import arch_cost

        archs = {x.id: x for x in truth_panel.load_panel(ROOT / doc["panel"])}
        allowed = [i for i in true_of if i in archs and arch_cost(archs[i])[0] <= limit]
    else:
        allowed = list(true_of)
    best = min(true_of[i] for i in allowed)
    moved: dict = {}
    for run in doc["runs"]:
        here = moved[f"{run['variant']} seed {run['seed']}"] = {}
        for name, pick in run["picks"].items():
            before = pick["regret"]
            pick["regret"] = (float(np.mean([true_of[i] for i in allowed]) - best) if "pick" not in pick
                              else float(true_of[pick["pick"]] - best))
            for rung in pick.get("history", []):
                for row in rung:
                    row["true_regret"] = float(true_of[row["arch_id"]] - best)
            here[name] = (round(100 * before, 2), round(100 * pick["regret"], 2))
    doc.update(n_allowed=len(allowed), truth_seeds=truth_seeds)
    common.save_result(doc, path.name, path.parent)
    return moved


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.restat:
        truth = truth_panel.summarize(a.panel)
        true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
        seeds = truth["recipe"]["seeds"]
        for path in a.results:
            for run, picks in restat(path, true_of, seeds).items():
                print(f"{path.name} {run}: " + ", ".join(f"{k} {b:.2f} -> {x:.2f}" for k, (b, x) in picks.items()))
        return 0
    import numpy as np
    import torch

    from smash_engine import halving
    from smash_engine.config import make_config

    torch.set_num_threads(a.threads)
    archs = {x.id: x for x in truth_panel.load_panel(a.panel)}
    truth = truth_panel.summarize(a.panel)
    true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
    recipe = truth["recipe"]
    cfg = make_config("quick", dataset=recipe["dataset"], device="cpu")  # what a user's run trains with
    t = cfg.train

    train, select = rung_data(recipe, a.select_size)
    # the panel's "final training" is its truth recipe: no rung trains longer, as the engine caps rungs at
    # final_epochs over its training split
    final_images = None if a.no_cap else recipe["epochs"] * recipe["train_size"]
    short = ShortTrainings(archs, t, train, select, Cache(a.panel / "short-trainings.jsonl"), a.sh_seed,
                           a.select_size, final_images, a.eta, a.by, a.reverse)
    from smash_engine.cost import arch_cost

    params_of = {i: arch_cost(x)[0] for i, x in archs.items()}
    allowed = [i for i in archs if i in true_of]
    if a.within:
        limit = int(np.median([params_of[i] for i in allowed])) if a.within == "median" else int(a.within)
        allowed = [i for i in allowed if params_of[i] <= limit]
    else:
        limit = None
    best = min(true_of[i] for i in allowed)

    def regret(arch_id: str) -> float:
        return float(true_of[arch_id] - best)

    out: dict = dict(panel=str(a.panel.relative_to(ROOT)), within_params=limit, n_allowed=len(allowed),
                     argv=sys.argv[1:] if argv is None else argv, top=a.top, eta=a.eta,
                     verify_budget=a.verify_budget, add_top=a.add_top, select_size=a.select_size, by=a.by,
                     rung_cap_images=None if a.no_cap else recipe["epochs"] * recipe["train_size"],
                     sh_seed=a.sh_seed, train_recipe=dict(final_lr=t.final_lr, final_batch=t.final_batch,
                                                          final_weight_decay=t.final_weight_decay),
                     runs=[], machine=common.machine("cpu"))
    name = f"pick-{a.variant or 'panel'}-{common.stamp()}.json"
    for path in a.results:
        doc = json.loads(path.read_text())
        last = doc["by_epoch"][-1]
        smash = last["smash_errors"]
        epochs = doc["config"]["train"]["epochs"]
        smash_images = epochs * doc["smash_train_images"]
        base = doc["baselines_by_arch"]
        order = sorted(allowed, key=lambda i: (smash[i], i))
        board = [dict(arch_id=i, rank=k + 1, flops=-base["flops"][i]) for k, i in enumerate(order)]
        naswot = {i: -base["naswot"][i] for i in allowed}
        entry: dict = dict(result=str(path.relative_to(ROOT)) if path.is_absolute() and ROOT in path.parents
                           else str(path), variant=doc["variant"], seed=doc["config"]["seed"], epochs=epochs,
                           smash_images=smash_images, picks={})
        p = entry["picks"]
        p["random_expected"] = dict(regret=float(np.mean([true_of[i] for i in allowed]) - best), images=0)
        p["smash_top1"] = dict(pick=order[0], regret=regret(order[0]), images=0)
        for name_, key in (("flops_top1", "flops"), ("naswot_top1", "naswot")):
            i = min(allowed, key=lambda j: (base[key][j], j))
            p[name_] = dict(pick=i, regret=regret(i), images=0)
        budget_images = int(a.verify_budget * smash_images)
        print(f"{doc['variant']} (seed {entry['seed']}, {epochs} epochs, {len(allowed)} allowed): verify budget "
              f"{budget_images:,} images", flush=True)
        blends = blend_orders({i: smash[i] for i in allowed}, {i: -base["flops"][i] for i in allowed},
                              {i: base["naswot"][i] for i in allowed})
        for method in [m for m in a.methods.split(",") if m]:
            if method.removesuffix("_sh") in BLENDS:
                cands = [(i, k + 1, method) for k, i in enumerate(blends[method.removesuffix("_sh")][:a.top])]
            else:
                add = {"smash_sh": "", "smash_naswot_sh": "naswot", "smash_flops_sh": "flops"}[method]
                cands = halving.candidates(board, a.top, add, a.add_top if add else 0,
                                           lambda rows, nas=naswot: [nas[r["arch_id"]] for r in rows])
            p[method] = short.halve(cands, budget_images, regret)
            print(f"  {method}: pick {p[method]['pick']}, regret {100 * p[method]['regret']:.2f} pts, "
                  f"{p[method]['images']:,} images", flush=True)
        print("  " + ", ".join(f"{k} {100 * v['regret']:.2f}" for k, v in p.items()), flush=True)
        out["runs"].append(entry)
        common.save_result(out, name, a.out)
    print(f"wrote {a.out / name}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
