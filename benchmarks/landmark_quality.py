"""Does SMASH rank the architectures it never saw trained better after learning from those it did? (landmarks)

    python benchmarks/landmark_quality.py --epochs 3 --seed 0            # one cell: every set, both arms
    python benchmarks/landmark_quality.py --table                          # the cells so far, no training
    python benchmarks/landmark_quality.py --smoke --out /tmp/lm            # digits, tiny (the test)

On the truth panel: SMASH trained as `search_quality.py` trains it (the same checkpoint, `runs/quality/`), the 40
architectures scored, then SMASH continued for `--steps` landmark steps (`smash_engine.landmarks`) and the 40
scored again. The landmarks' real losses are the verify phase's: each architecture's held-out loss after the
3-epoch default's first rung (4,687 images, `rung_metric.py`'s cached trainings, `<panel>/rung-metric.jsonl`).

Landmark sets, each judged on the architectures NOT in it (they are the labels):
- `top16`: SMASH's 16 best before (what the verify phase's first rung trains), judged on the other 24;
- `fold0`, `fold1`: a seeded half of the panel each, judged on the other half (the ranking lens: the unseen
  half spans the whole range, where the top-16 set leaves only SMASH's worst 24 to judge).
Arms: `--weight` (the ranking loss on) and weight 0 (the same steps of plain SMASH training at the stretch's
learning rate: the control for "more training", with no pairs).

Per arm: Kendall tau of SMASH error and of SMASH loss against the 3-seed truth on the unseen architectures, before
and after, with tau given FLOPs, and the paired difference after - before with its bootstrap 95% interval. Each
arm's scores land in `<panel>/landmarks/scores.jsonl` as soon as it is done (resumable), the cell's figures in
`benchmarks/results/landmark-eE-sS.json`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)
import pick_quality  # noqa: E402
import search_quality  # noqa: E402
import truth_panel  # noqa: E402

RUNG_IMAGES = 4687  # the 3-epoch default's first rung: the landmarks' labels
SETS = ("top16", "fold0", "fold1")


def parse(argv: list[str] | None) -> argparse.Namespace:
    from smash_engine.landmarks import LandmarkConfig

    d = LandmarkConfig()
    ap = cell_parser(__doc__)
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--weight", type=float, default=d.weight)
    ap.add_argument("--margin", type=float, default=d.margin)
    ap.add_argument("--pairs", type=int, default=d.pairs)
    ap.add_argument("--lr-scale", type=float, default=d.lr_scale)
    ap.add_argument("--no-control", action="store_true", help="skip the weight-0 arm")
    return ap.parse_args(argv)


def cell_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a cell on the panel (`load_cell`), for this script and the ones that build on it."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--panel", type=Path, default=truth_panel.PANEL_DIR)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "quality")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    return ap


def landmark_config(a: argparse.Namespace, weight: float):
    from smash_engine.landmarks import LandmarkConfig

    return LandmarkConfig(steps=a.steps, weight=weight, margin=a.margin, pairs=a.pairs, lr_scale=a.lr_scale)


def arm_key(a: argparse.Namespace, name: str, weight: float) -> str:
    from smash_engine.landmarks import LandmarkConfig

    c = landmark_config(a, weight)
    if not weight:  # without the ranking loss, margin and pairs change nothing: one control serves every setting
        c = dataclasses.replace(c, margin=LandmarkConfig().margin, pairs=LandmarkConfig().pairs)
    return (f"e{a.epochs}|s{a.seed}|{name}|w{c.weight:g}|m{c.margin:g}|p{c.pairs}|lr{c.lr_scale:g}|"
            f"steps{c.steps}")


def sets(ids: list[str], before: dict[str, float], seed: int = 0) -> dict[str, list[str]]:
    """The landmark sets: SMASH's best 40% (16 of the panel's 40), and two seeded halves of the panel."""
    import random

    top = sorted(ids, key=lambda i: before[i])[:len(ids) * 2 // 5]  # 16 of the panel's 40
    perm = random.Random(seed).sample(ids, len(ids))
    half = len(ids) // 2
    return {"top16": top, "fold0": perm[:half], "fold1": perm[half:]}


def judge(unseen: list[str], before: dict, after: dict, true_of: dict, flops: dict) -> dict:
    from smash_engine.studies import partial_tau, rank_stats, tau_difference

    ids = [i for i in unseen if i in true_of]
    true = [true_of[i] for i in ids]
    f = [-flops[i] for i in ids]  # more FLOPs, lower error: the proxy's predicted order
    out: dict = dict(n=len(ids))
    for what in ("error", "loss"):
        b, af = [before[what][i] for i in ids], [after[what][i] for i in ids]
        out[what] = dict(
            tau_before=rank_stats(b, true, 5)["kendall_tau"], tau_after=rank_stats(af, true, 5)["kendall_tau"],
            after_minus_before=tau_difference(af, b, true),
            given_flops_before=partial_tau(b, true, f), given_flops_after=partial_tau(af, true, f))
    best = min(ids, key=lambda i: true_of[i])
    for when, sc in (("before", before), ("after", after)):
        pick = min(ids, key=lambda i: sc["error"][i])
        out[f"pick_{when}"] = dict(arch_id=pick, regret=true_of[pick] - true_of[best])
    return out


@dataclasses.dataclass
class Cell:
    """One (epochs, seed) cell on the panel: SMASH as trained, its data, the truth, and the scores cache that
    every stretch of further SMASH training (landmarks, the few-shot split) writes its panel scores to."""
    a: argparse.Namespace
    archs: list
    cfg: object
    train: object
    val: object
    s: object
    calib: object
    real: dict  # the landmarks' labels: each panel architecture's held-out loss after the default's first rung
    true_of: dict
    flops: dict
    cache: pick_quality.Cache

    def remember(self, key: str, row: dict) -> None:
        self.cache.add(dict(key=key, **row, at=time.strftime("%Y-%m-%dT%H:%M:%S")))

    def score(self, archs: list | None = None) -> dict[str, dict[str, float]]:
        """SMASH error and loss of `archs` (default: the panel) with the weights `s` holds now."""
        from smash_engine.train import smash_score

        t = self.cfg.train
        out: dict[str, dict[str, float]] = {"error": {}, "loss": {}}
        for arch in self.archs if archs is None else archs:
            e, loss = smash_score(self.s, arch, self.val, t.score_batch, t.score_bn, self.calib)
            out["error"][arch.id], out["loss"][arch.id] = e, loss
        return out

    def before(self) -> dict[str, dict[str, float]]:
        """The panel's scores by SMASH as trained (cached)."""
        key = f"e{self.a.epochs}|s{self.a.seed}|before"
        if key not in self.cache.rows:
            t0 = time.perf_counter()
            self.remember(key, dict(scores=self.score(), seconds=round(time.perf_counter() - t0, 1)))
            print(f"scored the panel before any further training ({self.cache.rows[key]['seconds']:.0f} s)",
                  flush=True)
        return self.cache.rows[key]["scores"]


def load_cell(a: argparse.Namespace) -> Cell:
    """The cell of `a.epochs`, `a.seed` (`--smoke`: digits, tiny, made-up labels); trains SMASH if its
    checkpoint (`a.work`, shared with search_quality.py) is not there yet."""
    import torch

    from smash_engine.train import bn_calibration

    torch.set_num_threads(a.threads)
    if a.smoke:
        archs, truth = search_quality.smoke_panel(a.out)
        panel = a.out / "panel"
        ns = search_quality.parse(["--epochs", "1", "--seed", str(a.seed), "--set", "batch_size=50"])
        a.work = a.out / "work"
        cfg = search_quality.make_cfg(ns, truth["recipe"]["dataset"], truth["recipe"]["val_size"])
        real = {x.id: 2.0 - 0.1 * k for k, x in enumerate(archs)}  # made-up labels, a code-path check only
    else:
        archs, truth, panel = truth_panel.load_panel(a.panel), truth_panel.summarize(a.panel), a.panel
        ns = search_quality.parse(["--epochs", str(a.epochs), "--seed", str(a.seed)])
        cfg = search_quality.make_cfg(ns, truth["recipe"]["dataset"], truth["recipe"]["val_size"],
                                      truth_panel.load_space(a.panel))
        real = {}
        for line in (a.panel / "rung-metric.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["images"] == RUNG_IMAGES:
                real[r["arch_id"]] = r["val_loss"]
    recipe = truth["recipe"]
    true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
    flops = {r["id"]: r["flops"] for r in truth["archs"]} if not a.smoke else {
        x.id: float(k) for k, x in enumerate(archs)}
    train, val = search_quality.data(recipe["dataset"], recipe["val_size"], recipe["split_seed"], None, a.seed)
    variant = f"e{a.epochs}-default" + (f"-s{a.seed}" if a.seed else "")
    got: dict = {}
    search_quality.smash_epochs(cfg, train, a.work / f"{variant}.pt", [a.epochs], lambda s, e: got.update(s=s),
                                report=lambda line: print(line, flush=True))
    (panel / "landmarks").mkdir(parents=True, exist_ok=True)
    return Cell(a, archs, cfg, train, val, got["s"], bn_calibration(cfg, train), real, true_of, flops,
                pick_quality.Cache(panel / "landmarks" / "scores.jsonl"))


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.table:
        return table(a.out)
    from smash_engine.landmarks import Landmark, LandmarkConfig, landmark_steps, summary

    c = load_cell(a)
    archs, s, cfg, train, real, true_of, flops = c.archs, c.s, c.cfg, c.train, c.real, c.true_of, c.flops
    cache, remember = c.cache.rows, c.remember
    trained = copy.deepcopy(s.state_dict())  # every arm starts from SMASH as trained (Adam's moments too)
    before = c.before()
    ids = [x.id for x in archs]
    groups = sets(ids, before["error"])
    by_id = {x.id: x for x in archs}
    results = []
    weights = [a.weight] + ([] if a.no_control else [0.0])
    for name in [n for n in a.sets.split(",") if n]:
        marks = [Landmark(by_id[i], real[i]) for i in groups[name] if i in real]
        unseen = [i for i in ids if i not in groups[name]]
        for w in weights:
            key = arm_key(a, name, w)
            if key not in cache:
                s.load_state_dict(copy.deepcopy(trained))
                t0 = time.perf_counter()
                ms = [m for _, m in landmark_steps(s, cfg, train, marks, landmark_config(a, w))]
                t_train = time.perf_counter() - t0
                stretch = summary(ms)
                remember(key, dict(scores=c.score(), stretch=stretch, train_seconds=round(t_train, 1),
                                   seconds=round(time.perf_counter() - t0, 1)))
                print(f"{key}: ranking loss {stretch['rank_loss']:.4f}, pairs out of order "
                      f"{stretch['out_of_order']:.2f} ({t_train:.0f} s training)", flush=True)
            row = cache[key]
            # how well SMASH orders the landmarks as their labels do, before and after (the fit, not a result)
            seen = judge([m.arch.id for m in marks], before, row["scores"], real, flops)
            results.append(dict(set=name, weight=w, key=key, landmarks=[m.arch.id for m in marks], unseen=unseen,
                                stretch=row.get("stretch"), train_seconds=row.get("train_seconds"),
                                unseen_stats=judge(unseen, before, row["scores"], true_of, flops),
                                landmark_fit=seen,
                                smash_errors_after=row["scores"]["error"]))
            u = results[-1]["unseen_stats"]
            e, lo = u["error"], u["loss"]
            print(f"  {name} w{w:g}: unseen n={u['n']} tau(error) {f(e['tau_before'])} -> {f(e['tau_after'])}, "
                  f"tau(loss) {f(lo['tau_before'])} -> {f(lo['tau_after'])}, given FLOPs "
                  f"{f(e['given_flops_before']['tau'])} -> {f(e['given_flops_after']['tau'])}", flush=True)
    # the measurement itself: the landmark arm against the control arm of the same set, on the same unseen ones
    from smash_engine.studies import tau_difference

    for r in results:
        ctrl = next((c for c in results if c["set"] == r["set"] and c["weight"] == 0 and c is not r), None)
        if r["weight"] and ctrl is not None:
            ids = [i for i in r["unseen"] if i in true_of]
            r["minus_control"] = tau_difference([r["smash_errors_after"][i] for i in ids],
                                                [ctrl["smash_errors_after"][i] for i in ids], [true_of[i] for i in ids])
    doc = dict(epochs=a.epochs, seed=a.seed, panel="smoke" if a.smoke else str(a.panel.relative_to(ROOT)),
               rung_images=RUNG_IMAGES, landmark=dataclasses.asdict(landmark_config(a, a.weight)),
               smash_errors=before["error"], smash_losses=before["loss"], runs=results,
               machine=common.machine("cpu"))
    # the default settings' file is the cell's; other settings write beside it, named by what differs
    d, c = dataclasses.asdict(LandmarkConfig()), dataclasses.asdict(landmark_config(a, a.weight))
    tag = "".join(f"-{k.replace('_', '')}{v:g}" for k, v in c.items() if v != d[k] and k != "min_gap")
    path = common.save_result(doc, f"landmark-e{a.epochs}-s{a.seed}{tag}.json", a.out)
    print(f"wrote {path}")
    return 0


def f(v: float | None, spec: str = "+.2f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(out: Path) -> int:
    print("cell    set    weight  n  tau(err) before -> after [after - before, 95%]  tau(loss) b -> a  "
          "given FLOPs b -> a   minus control [95%]")
    for path in sorted(out.glob("landmark-e*-s*.json")):
        d = json.loads(path.read_text())
        print(f"{path.name}: {d['landmark']}")
        for r in d["runs"]:
            u = r["unseen_stats"]
            e, lo = u["error"], u["loss"]
            dif = e["after_minus_before"]
            print(f"e{d['epochs']}-s{d['seed']}  {r['set']:6} {r['weight']:5g} {u['n']:3}  "
                  f"{f(e['tau_before'])} -> {f(e['tau_after'])} [{f(dif['diff'])} {f(dif['lo'])},{f(dif['hi'])}]  "
                  f"{f(lo['tau_before'])} -> {f(lo['tau_after'])}  "
                  f"{f(e['given_flops_before']['tau'])} -> {f(e['given_flops_after']['tau'])}   " + (
                      f"{f(r['minus_control']['diff'])} [{f(r['minus_control']['lo'])}, "
                      f"{f(r['minus_control']['hi'])}]" if r.get("minus_control") else ""))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
