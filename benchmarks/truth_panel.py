"""The truth panel: a fixed set of architectures trained normally, twice each, kept in the repo.

Every ranking measurement (`benchmarks/search_quality.py`) is made against it, so a change to SMASH is
judged on the same architectures and the same truth. Build it once; nothing later retrains it.

    python benchmarks/truth_panel.py build                     # draw the panel (panel.json)
    python benchmarks/truth_panel.py train --worker 0 --workers 2 &   # one process per core, resumable
    python benchmarks/truth_panel.py train --worker 1 --workers 2 &
    python benchmarks/truth_panel.py summary                   # truth.json: means, spread, seed-vs-seed tau

The panel: `N_ARCHS` architectures drawn with the engine's own sampler at the end of SMASH training
(progress 1.0, the rank phase's distribution), seeded, on the `quick` search space at 16 px. The truth
recipe (`RECIPE`): FixedNet, SGD Nesterov with a cosine schedule, on a seeded subset of Fashion-MNIST's
training split at 16 px (`fashion-mnist16`), error on the engine's held-out split (5,000 images carved from
the training set with seed 0; SMASH never trains on them). Each (architecture, seed) lands as one line of
`runs.jsonl` as soon as it is trained, so a killed worker loses at most one training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)

PANEL_DIR = ROOT / "benchmarks" / "truth" / "fmnist16-wide-e2"
N_ARCHS = 40
# Architecture i of the panel is drawn from the derived seed (PANEL_SEED, seeds.PANEL, i), the batches of epoch
# e of a truth training in the order (seed, seeds.PANEL_TRAIN, e) draws; the truth's training subset is a
# permutation seeded with PANEL_SEED.
PANEL_SEED = 2026
# The default recipe of `build`; each panel folder keeps its own in panel.json, and `train` and `summary` read
# it from there: changing a recipe means a new panel folder, never an edit of a trained one.
RECIPE = dict(dataset="fashion-mnist16", space="quick", val_size=10000, split_seed=0, train_size=12000,
              epochs=2, batch=64, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, augment="crop2+flip",
              seeds=[0, 1])


def space(overrides: dict | None = None):
    from smash_engine.config import DATASET_SHAPES
    from smash_engine.space import space_preset

    c, size, classes = DATASET_SHAPES[RECIPE["dataset"]]
    return space_preset(RECIPE["space"], image_channels=c, image_size=size, num_classes=classes,
                        **(overrides or {}))


def load_space(panel_dir: Path = PANEL_DIR):
    """The search space the panel was drawn from (SMASH variants search the same one)."""
    from smash_engine.space import SpaceConfig

    return SpaceConfig.from_dict(json.loads((panel_dir / "panel.json").read_text())["space"])


def draw_panel(n: int | None = None, seed: int = PANEL_SEED, sp=None, pool: int = 0) -> list:
    """`n` distinct architectures from the sampler at progress 1.0 (what the rank phase scores).

    With `pool` > n: draw `pool`, then keep the n nearest to log-evenly spaced parameter counts over the
    pool's range. The sampler piles most architectures onto a plateau where short trainings cannot tell them
    apart (issue 12's first panels: seed noise larger than the spread); stratifying spreads the panel over
    the sizes the space holds, so the truth has differences to rank.
    """
    import math

    from smash_engine.cost import arch_cost
    from smash_engine.sampler import sample_architecture
    from smash_engine.seeds import PANEL, rng

    n = N_ARCHS if n is None else n
    sp = sp or space()
    archs: list = []
    seen: set[str] = set()
    i = 0
    while len(archs) < max(n, pool):
        a = sample_architecture(sp, rng(seed, PANEL, i), progress=1.0)
        i += 1
        if a.id not in seen:
            seen.add(a.id)
            archs.append(a)
    if pool <= n:
        return archs
    logp = [math.log(arch_cost(a)[0]) for a in archs]
    lo, hi = min(logp), max(logp)
    chosen: list[int] = []
    for k in range(n):
        target = lo + (hi - lo) * k / (n - 1)
        j = min((j for j in range(len(archs)) if j not in chosen), key=lambda j: abs(logp[j] - target))
        chosen.append(j)
    return [archs[j] for j in sorted(chosen)]


def load_panel(panel_dir: Path = PANEL_DIR) -> list:
    from smash_engine.space import Architecture

    rows = json.loads((panel_dir / "panel.json").read_text())["archs"]
    return [Architecture.from_dict(r["arch"]) for r in rows]


def load_recipe(panel_dir: Path = PANEL_DIR) -> dict:
    return json.loads((panel_dir / "panel.json").read_text())["recipe"]


def cmd_build(a) -> int:
    from smash_engine.cost import arch_cost
    from smash_engine.seeds import PANEL

    path = a.dir / "panel.json"
    if path.exists():
        print(f"{path} exists; the panel is fixed once built (use another --dir for a new one)", file=sys.stderr)
        return 1
    recipe = {**RECIPE, **{k: v for k, v in (("epochs", a.epochs), ("train_size", a.train_size),
                                              ("val_size", a.val_size)) if v}}
    overrides = {}
    for item in a.space_set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = json.loads(value)
    sp = space(overrides)
    archs = draw_panel(sp=sp, pool=a.pool)
    a.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in archs:
        params, flops = arch_cost(arch)
        rows.append(dict(id=arch.id, params=params, flops=flops, ops=arch.n_ops, arch=arch.to_dict()))
    what = "truth panel: architectures drawn by the engine's sampler at progress 1.0"
    if a.pool > N_ARCHS:
        what += f", {N_ARCHS} of {a.pool} draws kept log-evenly spread over parameter count"
    doc = dict(what=what, seed=PANEL_SEED, purpose=PANEL, pool=a.pool, recipe=recipe,
               space=sp.to_dict(), archs=rows, built_on=common.machine("cpu"))
    path.write_text(_dumps(doc))
    print(f"wrote {path}: {len(rows)} architectures, params {min(r['params'] for r in rows)}.."
          f"{max(r['params'] for r in rows)}")
    return 0


def _dumps(doc: dict) -> str:
    """JSON with one line per architecture: small in the repo, and a diff shows which entry changed."""
    rows = doc.pop("archs")
    head = json.dumps(doc, indent=1)[:-2]
    body = ",\n".join("  " + json.dumps(r) for r in rows)
    return f'{head},\n "archs": [\n{body}\n ]\n}}\n'


def _done(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.add((r["arch_id"], r["seed"]))
    return out


def train_one(arch, seed: int, train, val, epochs: int | None = None, recipe: dict | None = None) -> dict:
    """A panel recipe on one architecture: (val error, val loss, train loss, seconds), trained by the engine's
    own loop (`loops.fit`), epoch e's batches in the order `(seed, PANEL_TRAIN, e)` draws; the train loss is
    the last epoch's mean. `epochs` other than the recipe's is for shorter trainings (search_quality's
    verification), never for the truth."""
    import torch

    from smash_engine.config import TrainConfig
    from smash_engine.loops import fit
    from smash_engine.seeds import PANEL_TRAIN, torch_gen
    from smash_engine.train import Final

    r = recipe or RECIPE
    epochs = r["epochs"] if epochs is None else epochs
    t = TrainConfig(final_lr=r["lr"], final_batch=r["batch"], final_weight_decay=r["weight_decay"])
    t0 = time.perf_counter()
    f = Final.create(arch, t, seed, torch.device("cpu"))
    last = fit(f, train, epochs, t.final_batch, t.final_lr, lambda epoch: torch_gen(seed, PANEL_TRAIN, epoch))
    err, loss = f.evaluate(val, 1000)
    return dict(val_error=err, val_loss=loss, train_loss=last.loss, seconds=round(time.perf_counter() - t0, 1))


def splits(recipe: dict | None = None):
    """(truth training subset, held-out split) on the CPU; SMASH trains on the whole training split less the
    held-out images."""
    import torch

    from smash_engine.data import device_data, holdout_split, load_dataset

    r = recipe or RECIPE
    ds = load_dataset(r["dataset"])
    tr, va = holdout_split(len(ds.train_y), r["val_size"], r["split_seed"])
    sub = tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(PANEL_SEED))[:r["train_size"]]]
    cpu = torch.device("cpu")
    return (device_data(ds.train_x[sub], ds.train_y[sub], ds.info, cpu),
            device_data(ds.train_x[va], ds.train_y[va], ds.info, cpu))


def cmd_train(a) -> int:
    import torch

    torch.set_num_threads(a.threads)
    archs, recipe = load_panel(a.dir), load_recipe(a.dir)
    out = a.dir / "runs.jsonl"
    train, val = splits(recipe)
    # arch-major: with two workers, each architecture's two seeds train side by side, so a panel cut short
    # still has complete pairs
    seeds = a.seeds if a.seeds else recipe["seeds"]
    jobs = [(i, arch, s) for i, arch in enumerate(archs) for s in seeds]
    truth = a.dir / "truth.json"
    if a.seeds and truth.exists():
        # an added seed goes best-first by the truth so far: cut short, it has refined the top of the panel,
        # where picks are judged
        mean = {r["id"]: r["mean_error"] or 1.0 for r in json.loads(truth.read_text())["archs"]}
        jobs.sort(key=lambda j: mean.get(j[1].id, 1.0))
    mine = [j for k, j in enumerate(jobs) if k % a.workers == a.worker]
    for i, arch, seed in mine:
        if (arch.id, seed) in _done(out):
            continue
        r = train_one(arch, seed, train, val, recipe=recipe)
        row = dict(arch_id=arch.id, index=i, seed=seed, **r, worker=a.worker, load=round(os.getloadavg()[0], 2),
                   at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(out, "a") as fh:  # one short line per write: appends from two workers do not interleave
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        print(f"[{a.worker}] {i:2d} {arch.id} seed {seed}: val err {r['val_error']:.4f} ({r['seconds']:.0f} s)",
              flush=True)
    return 0


def summarize(panel_dir: Path = PANEL_DIR, seeds: list[int] | None = None) -> dict:
    """The truth: each architecture's mean error over `seeds` (default: the recipe's), and the ceiling, how well
    one training ranks like another. With the recipe's seeds it writes truth.json; with others (a seed being added)
    truth-seeds-A-B-C.json, over the architectures trained with all of them, so nothing that reads the truth moves
    until panel.json's recipe names the new seed."""
    import numpy as np
    from scipy import stats

    from smash_engine.studies.stats import bootstrap_ci

    panel = json.loads((panel_dir / "panel.json").read_text())
    runs: dict[str, dict[int, dict]] = {}
    lines = (panel_dir / "runs.jsonl").read_text().splitlines() if (panel_dir / "runs.jsonl").exists() else []
    for line in lines:
        if line.strip():
            r = json.loads(line)
            runs.setdefault(r["arch_id"], {})[r["seed"]] = r
    own = seeds is None or list(seeds) == panel["recipe"]["seeds"]
    seeds = panel["recipe"]["seeds"] if seeds is None else list(seeds)
    rows, complete = [], []
    for p in panel["archs"]:
        got = runs.get(p["id"], {})
        errs = [got[s]["val_error"] for s in seeds if s in got]
        row = dict(id=p["id"], params=p["params"], flops=p["flops"], ops=p["ops"],
                   errors={str(s): got[s]["val_error"] for s in seeds if s in got},
                   mean_error=float(np.mean(errs)) if len(errs) == len(seeds) else None,
                   spread=float(max(errs) - min(errs)) if len(errs) > 1 else None)
        rows.append(row)
        if len(errs) == len(seeds):
            complete.append(row)
    out: dict = dict(recipe=panel["recipe"], panel_seed=panel["seed"], n_archs=len(rows), n_complete=len(complete),
                     archs=rows)
    if len(complete) >= 3:
        e0 = [r["errors"][str(seeds[0])] for r in complete]
        e1 = [r["errors"][str(seeds[1])] for r in complete]
        means = [r["mean_error"] for r in complete]
        tau = stats.kendalltau(e0, e1).statistic
        lo, hi = bootstrap_ci(lambda idx: stats.kendalltau(np.take(e0, idx), np.take(e1, idx)).statistic,
                              len(e0))
        diffs = np.subtract(e0, e1)
        if len(seeds) >= 3:
            # with k seeds the ceiling is one training against the mean of the other k - 1 (what a method judged
            # against a k-seed truth could reach with one training of its own), averaged over which seed is left out
            e = np.array([[r["errors"][str(s)] for s in seeds] for r in complete])  # (archs, seeds)

            def vs_rest(idx) -> float:
                m = e[idx]
                return float(np.mean([stats.kendalltau(m[:, k], np.delete(m, k, 1).mean(1)).statistic
                                      for k in range(m.shape[1])]))

            rlo, rhi = bootstrap_ci(vs_rest, len(e))
            rest = dict(kendall_tau_seed_vs_rest=vs_rest(np.arange(len(e))), kendall_tau_seed_vs_rest_ci95=[rlo, rhi],
                        seed_noise_sd_pooled=float(np.sqrt(np.mean(np.var(e, axis=1, ddof=1)))))
        else:
            rest = {}
        out["ceiling"] = dict(
            **rest, seeds=seeds,
            kendall_tau_seed_vs_seed=float(tau), kendall_tau_ci95=[lo, hi],
            spearman_rho_seed_vs_seed=float(stats.spearmanr(e0, e1).statistic),
            # one seed's error = truth + noise: sd of the noise is sd(e0 - e1) / sqrt 2
            seed_noise_sd=float(np.std(diffs, ddof=1) / np.sqrt(2)),
            mean_error_sd=float(np.std(means, ddof=1)), mean_error_range=[float(min(means)), float(max(means))],
            params_tau_vs_mean=float(stats.kendalltau([r["params"] for r in complete], means).statistic))
        secs = [r["seconds"] for a in runs.values() for r in a.values()]
        out["cost"] = dict(trainings=len(secs), seconds_mean=float(np.mean(secs)), seconds_total=float(np.sum(secs)))
    name = "truth.json" if own else f"truth-seeds-{'-'.join(map(str, seeds))}.json"
    (panel_dir / name).write_text(json.dumps(out, indent=1) + "\n")
    return out


def cmd_summary(a) -> int:
    out = summarize(a.dir, a.seeds)
    c = out.get("ceiling")
    print(f"{out['n_complete']}/{out['n_archs']} architectures trained with every seed")
    if c and "kendall_tau_seed_vs_rest" in c:
        lo, hi = c["kendall_tau_seed_vs_rest_ci95"]
        print(f"one seed against the mean of the other {len(c['seeds']) - 1}: Kendall tau "
              f"{c['kendall_tau_seed_vs_rest']:.3f} (95% CI {lo:.3f}..{hi:.3f}); pooled seed noise sd "
              f"{c['seed_noise_sd_pooled'] * 100:.2f} pts")
    if c:
        print(f"seed-vs-seed Kendall tau {c['kendall_tau_seed_vs_seed']:.3f} "
              f"(95% CI {c['kendall_tau_ci95'][0]:.3f}..{c['kendall_tau_ci95'][1]:.3f}), "
              f"rho {c['spearman_rho_seed_vs_seed']:.3f}; mean errors sd {c['mean_error_sd'] * 100:.2f} pts "
              f"(range {c['mean_error_range'][0] * 100:.2f}-{c['mean_error_range'][1] * 100:.2f}%), "
              f"seed noise sd {c['seed_noise_sd'] * 100:.2f} pts; params tau {c['params_tau_vs_mean']:+.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=PANEL_DIR, help="panel folder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--epochs", type=int, default=None, help=f"truth epochs (default {RECIPE['epochs']})")
    b.add_argument("--train-size", type=int, default=None,
                   help=f"truth training images (default {RECIPE['train_size']})")
    b.add_argument("--val-size", type=int, default=None,
                   help=f"held-out images of the truth (default {RECIPE['val_size']})")
    b.add_argument("--space-set", action="append", default=[], metavar="KEY=JSON",
                   help="search-space override, e.g. --space-set min_budget=0.02 (repeatable)")
    b.add_argument("--pool", type=int, default=0,
                   help="draw this many and keep N log-evenly spread over parameter count (0: the first N)")
    t = sub.add_parser("train")
    t.add_argument("--worker", type=int, default=0)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="train these truth seeds (default: the recipe's); a seed past the recipe's adds to the "
                        "truth once `summary --seeds` counts it")
    su = sub.add_parser("summary")
    su.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="the truth over these seeds (default: the recipe's); others write truth-seeds-*.json")
    a = ap.parse_args(argv)
    return {"build": cmd_build, "train": cmd_train, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
