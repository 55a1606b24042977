"""What should a verify rung rank its candidates by? Held-out loss, training loss (TSE) or late held-out losses.

    python benchmarks/rung_metric.py --images 4687           # the 3-epoch default's rung 0, all 40 panel archs
    python benchmarks/rung_metric.py --images 18750 --images 4687 --table   # the figures so far, no training
    python benchmarks/rung_metric.py --smoke --out /tmp/rung  # six digits architectures, tiny (the test)

Trains every truth-panel architecture as a verify rung of `--images` training images would
(`halving.train_rung`: the quick preset's final-training recipe on SMASH's training split less the
`--select-size` images the rungs choose on; `pick_quality.rung_data`) and records, per candidate:
- `val_loss`, `val_error`: held-out loss and error on the select images after the rung (the engine's metric);
- `tse`: the mean training loss over the whole rung (the sum of training losses, Ru et al. 2021, "Speedy
  Performance Estimation for Neural Architecture Search", divided by the steps every candidate shares);
- `tse_late`: the mean training loss over the rung's second half of steps (their TSE-E, the late epochs);
- `late_loss`: the held-out loss averaged over `--evals` evaluations evenly spread over the second half.
Each metric's Kendall tau against the panel's 3-seed truth, with a bootstrap 95% interval over architectures,
lands in `benchmarks/results/rung-metric-<images>.json`. Each training is one line of
`<panel>/rung-metric.jsonl` as soon as it is done (resumable; the held-out figures match
`short-trainings.jsonl`'s for the same rung, as evaluating between steps changes nothing in training).
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
import truth_panel  # noqa: E402

METRICS = ("val_loss", "val_error", "tse", "tse_late", "late_loss")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, action="append", required=True,
                    help="training images of the rung (repeatable): 4687 and 18750 are the 3-epoch default's rungs")
    ap.add_argument("--panel", type=Path, default=truth_panel.PANEL_DIR)
    ap.add_argument("--evals", type=int, default=4, help="held-out evaluations over the second half of the rung")
    ap.add_argument("--select-size", type=int, default=10000)
    ap.add_argument("--sh-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="report what is cached; train nothing")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--smoke", action="store_true")
    return ap.parse_args(argv)


def train_one(arch, t, train, select, rung, seed: int, evals: int) -> dict:
    """One rung's training of `arch` with its training losses and `evals` held-out losses in its second half."""
    import torch

    from smash_engine import halving

    n = rung.subset(len(train))
    steps = rung.epochs(len(train)) * (n // min(t.final_batch, n))  # as loops.fit counts them (last batch dropped)
    at = {steps // 2 + round(k * (steps - steps // 2) / evals) for k in range(1, evals + 1)}
    losses: list[float] = []
    late: list[float] = []

    def on_step(f, m) -> None:
        losses.append(float(m[0]))
        if len(losses) in at and len(losses) < steps:  # the last one is the final evaluation below
            late.append(f.evaluate(select, t.score_batch)[1])

    t0 = time.perf_counter()
    f = halving.train_rung(arch, t, train, rung, seed, torch.device("cpu"), on_step=on_step)
    err, loss = f.evaluate(select, t.score_batch)
    late.append(loss)
    half = losses[len(losses) // 2:]
    return dict(val_error=err, val_loss=loss, tse=sum(losses) / len(losses), tse_late=sum(half) / len(half),
                late_loss=sum(late) / len(late), steps=len(losses), evals=len(late),
                seconds=round(time.perf_counter() - t0, 1))


def stats_of(rows: list[dict], true_of: dict[str, float]) -> dict:
    import numpy as np
    from scipy import stats

    from smash_engine.studies.stats import bootstrap_ci

    rows = [r for r in rows if r["arch_id"] in true_of]
    true = [true_of[r["arch_id"]] for r in rows]
    out: dict = {"n": len(rows)}
    for m in METRICS:
        x = [r[m] for r in rows]
        tau = stats.kendalltau(x, true).statistic
        lo, hi = bootstrap_ci(lambda idx, x=x: stats.kendalltau(np.take(x, idx), np.take(true, idx)).statistic,
                              len(rows))
        out[m] = dict(kendall_tau=float(tau), ci95=[lo, hi])
        if m != "val_loss":  # against the engine's metric, paired: the same resampled architectures for both
            base = [r["val_loss"] for r in rows]

            def diff(idx, x=x, base=base) -> float:
                t = np.take(true, idx)
                return float(stats.kendalltau(np.take(x, idx), t).statistic
                             - stats.kendalltau(np.take(base, idx), t).statistic)

            dlo, dhi = bootstrap_ci(diff, len(rows))
            out[m]["minus_val_loss"] = dict(value=diff(np.arange(len(rows))), ci95=[dlo, dhi])
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import pick_quality
    import torch

    from smash_engine.config import make_config
    from smash_engine.halving import Rung

    torch.set_num_threads(a.threads)
    if a.smoke:
        import random

        from smash_engine.sampler import sample_architecture

        cfg = make_config("quick", dataset="digits", device="cpu")
        archs = [sample_architecture(cfg.space, random.Random(i), 1.0) for i in range(6)]
        true_of = {x.id: 0.1 + 0.01 * i for i, x in enumerate(archs)}
        recipe = dict(dataset="digits", val_size=300, split_seed=0)
        a.select_size, cache = 200, a.out / "rung-metric.jsonl"
        a.out.mkdir(parents=True, exist_ok=True)
    else:
        archs = truth_panel.load_panel(a.panel)
        truth = truth_panel.summarize(a.panel)
        true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
        recipe, cache = truth["recipe"], a.panel / "rung-metric.jsonl"
    t = make_config("quick", dataset=recipe["dataset"], device="cpu").train
    if a.smoke:
        import dataclasses

        t = dataclasses.replace(t, final_batch=10)
    done: dict[str, dict] = {}
    for line in cache.read_text().splitlines() if cache.exists() else []:
        if line.strip():
            r = json.loads(line)
            done[r["key"]] = r
    data = None
    for images in a.images:
        rung = Rung(0, len(archs), images)
        rows = []
        for arch in archs:
            key = f"{arch.id}|{images}|seed{a.sh_seed}|sel{a.select_size}|evals{a.evals}"
            if key not in done and not a.table:
                data = data or pick_quality.rung_data(recipe, a.select_size)
                r = dict(key=key, arch_id=arch.id, images=images, **train_one(arch, t, *data, rung, a.sh_seed, a.evals),
                         at=time.strftime("%Y-%m-%dT%H:%M:%S"))
                with open(cache, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
                done[key] = r
                print(f"{arch.id} on {images} images: loss {r['val_loss']:.4f}, tse {r['tse']:.4f}, late loss "
                      f"{r['late_loss']:.4f} ({r['seconds']:.0f} s)", flush=True)
            if key in done:
                rows.append(done[key])
        if len(rows) < 3:
            print(f"{images} images: {len(rows)} trained, too few to rank")
            continue
        doc = dict(images=images, evals=a.evals, select_size=a.select_size, sh_seed=a.sh_seed,
                   truth_seeds=None if a.smoke else truth["recipe"]["seeds"], stats=stats_of(rows, true_of),
                   rows=rows, machine=common.machine("cpu"))
        common.save_result(doc, f"rung-metric-{images}.json", a.out)
        st = doc["stats"]
        print(f"{images} images, {st['n']} architectures: " + ", ".join(
            f"{m} tau {st[m]['kendall_tau']:+.2f} [{st[m]['ci95'][0]:+.2f}, {st[m]['ci95'][1]:+.2f}]"
            + (f" (vs val_loss {st[m]['minus_val_loss']['value']:+.2f} [{st[m]['minus_val_loss']['ci95'][0]:+.2f}, "
               f"{st[m]['minus_val_loss']['ci95'][1]:+.2f}])" if "minus_val_loss" in st[m] else "")
            for m in METRICS), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
