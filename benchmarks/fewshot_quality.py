"""Does splitting SMASH's weights by one field of the architecture (few-shot SMASH) rank the panel better?

    python benchmarks/fewshot_quality.py --epochs 3 --seed 0            # one cell: the split and its control
    python benchmarks/fewshot_quality.py --table                          # the cells so far, no training
    python benchmarks/fewshot_quality.py --smoke --out /tmp/fs            # digits, tiny (the test)

On the truth panel: SMASH trained as `search_quality.py` trains it (the same checkpoint as
`landmark_quality.py`'s, `runs/quality/`), then two arms of `--steps` more SMASH steps at `--lr-scale` of its
learning rate:
- `split` (`smash_engine.fewshot`): one copy of the weights per value of `--field`, each fine-tuned for
  steps / parts on the architectures of its part only; each panel architecture scored with its part's copy;
- `control`: the same steps on the whole space, one copy (the yardstick for "more training").
Both are judged on all 40 architectures (nothing here trains on the truth): Kendall tau of SMASH error against
the 3-seed truth, tau given FLOPs, and the paired difference split - control with its bootstrap 95% interval,
and within each part (the split cannot help across parts if the copies' scales differ).

Each copy's and arm's scores land in `<panel>/landmarks/scores.jsonl` as they are done (resumable per copy); the
cell's figures in `benchmarks/results/fewshot-eE-sS.json`.
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
import landmark_quality  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    from smash_engine.fewshot import FewShotConfig

    d = FewShotConfig()
    ap = landmark_quality.cell_parser(__doc__)
    ap.add_argument("--field", default=d.field)
    ap.add_argument("--steps", type=int, default=d.steps, help="fine-tuning steps of all copies together")
    ap.add_argument("--lr-scale", type=float, default=d.lr_scale)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.table:
        return table(a.out)
    from smash_engine.fewshot import FewShotConfig, choices, fine_tune, part_of
    from smash_engine.landmarks import LandmarkConfig, landmark_steps, summary
    from smash_engine.studies import partial_tau, rank_stats, tau_difference

    fs = FewShotConfig(field=a.field, steps=a.steps, lr_scale=a.lr_scale)
    c = landmark_quality.load_cell(a)
    values = choices(c.cfg.space, fs.field)
    one_shot = copy.deepcopy(c.s.state_dict())
    before = c.before()
    tag = f"e{a.epochs}|s{a.seed}|fewshot|steps{fs.steps}|lr{fs.lr_scale:g}"
    part = {x.id: part_of(x, fs.field, values) for x in c.archs}

    def arm(key: str, steps, archs: list) -> dict:
        if key not in c.cache.rows:
            c.s.load_state_dict(copy.deepcopy(one_shot))
            t0 = time.perf_counter()
            stretch = summary([m for _, m in steps()])
            t_train = time.perf_counter() - t0
            c.remember(key, dict(scores=c.score(archs), stretch=stretch, train_seconds=round(t_train, 1),
                                 seconds=round(time.perf_counter() - t0, 1)))
            print(f"{key}: SMASH loss {stretch['loss']:.3f} over {stretch['steps']} steps ({t_train:.0f} s "
                  "training)", flush=True)
        return c.cache.rows[key]["scores"]

    control = arm(f"{tag}|control", lambda: landmark_steps(
        c.s, c.cfg, c.train, [], LandmarkConfig(steps=fs.steps, weight=0.0, lr_scale=fs.lr_scale)), c.archs)
    split: dict[str, dict[str, float]] = {"error": {}, "loss": {}}
    for k, v in enumerate(values):
        mine = [x for x in c.archs if part[x.id] == k]
        got = arm(f"{tag}|{fs.field}{v}", lambda k=k: fine_tune(c.s, c.cfg, c.train, fs, k), mine)
        for what in split:
            split[what].update(got[what])

    ids = [x.id for x in c.archs if x.id in c.true_of]
    true = [c.true_of[i] for i in ids]
    neg_flops = [-c.flops[i] for i in ids]

    def stats(sc: dict, among: list[str] = ids) -> dict:
        t = [c.true_of[i] for i in among]
        e = [sc["error"][i] for i in among]
        out = dict(n=len(among), tau=rank_stats(e, t, 5)["kendall_tau"] if len(among) > 2 else None)
        if among is ids:
            out["given_flops"] = partial_tau(e, true, neg_flops)
            best = min(ids, key=lambda i: c.true_of[i])
            pick = min(ids, key=lambda i: sc["error"][i])
            out["pick"] = dict(arch_id=pick, regret=c.true_of[pick] - c.true_of[best])
        return out

    arms = {"before": before, "control": control, "split": split}
    doc = dict(epochs=a.epochs, seed=a.seed, fewshot=dataclasses.asdict(fs), parts=list(values),
               part_sizes=[sum(part[i] == k for i in ids) for k in range(len(values))],
               panel="smoke" if a.smoke else str(a.panel.relative_to(ROOT)),
               arms={name: dict(all=stats(sc), within_parts=[
                   stats(sc, [i for i in ids if part[i] == k]) for k in range(len(values))])
                     for name, sc in arms.items()},
               split_minus_control=tau_difference([split["error"][i] for i in ids],
                                                  [control["error"][i] for i in ids], true),
               smash_errors={name: sc["error"] for name, sc in arms.items()},
               train_seconds={k.rsplit("|", 1)[1]: r.get("train_seconds") for k, r in c.cache.rows.items()
                              if k.startswith(tag + "|")},
               machine=common.machine("cpu"))
    for name in arms:
        r = doc["arms"][name]["all"]
        print(f"{name:8} tau {fmt(r['tau'])}  given FLOPs {fmt(r['given_flops']['tau'])}  "
              f"regret {r['pick']['regret'] * 100:.2f} pts  within parts "
              + " / ".join(fmt(p["tau"]) for p in doc["arms"][name]["within_parts"]), flush=True)
    d = doc["split_minus_control"]
    print(f"split - control: {fmt(d['diff'])} [{fmt(d['lo'])}, {fmt(d['hi'])}]")
    path = common.save_result(doc, f"fewshot-e{a.epochs}-s{a.seed}{'' if fs == FewShotConfig() else '-' + suffix(fs)}"
                              ".json", a.out)
    print(f"wrote {path}")
    return 0


def suffix(fs) -> str:
    from smash_engine.fewshot import FewShotConfig

    d = dataclasses.asdict(FewShotConfig())
    return "-".join(f"{k.replace('_', '')}{v}" for k, v in dataclasses.asdict(fs).items() if v != d[k])


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.2f}"


def table(out: Path) -> int:
    print("cell     arm       tau    given FLOPs  regret (pts)  within parts         split - control [95%]")
    for path in sorted(out.glob("fewshot-e*-s*.json")):
        d = json.loads(path.read_text())
        m = d["split_minus_control"]
        for name, r in d["arms"].items():
            al = r["all"]
            print(f"e{d['epochs']}-s{d['seed']}  {name:8} {fmt(al['tau'])}  {fmt(al['given_flops']['tau']):>11}  "
                  f"{al['pick']['regret'] * 100:12.2f}  {' / '.join(fmt(p['tau']) for p in r['within_parts']):20} "
                  + (f"{fmt(m['diff'])} [{fmt(m['lo'])}, {fmt(m['hi'])}]" if name == "split" else ""))
        print(f"  ({path.name}: {d['fewshot']}, parts {d['parts']} of {d['part_sizes']} architectures)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
