"""How well does a SMASH setting rank? Scored against the truth panel, beside what a user gets for free.

    python benchmarks/search_quality.py --variant default --epochs 3          # ~35-45 min on a 2-core CPU
    python benchmarks/search_quality.py --variant hyper-paper --hyper paper --epochs 3
    python benchmarks/search_quality.py --variant e1-2-4 --epochs 4 --score-at 1,2,4   # tau against epochs
    python benchmarks/search_quality.py --smoke --out /tmp/q                  # every stage, tiny (the test)

Trains SMASH with the engine's own loop (`loops.smash_steps`: the run config's schedule and seeds) on the panel's
dataset, on the training split *less* the truth's held-out images, then scores every panel architecture on
those held-out images (`train.smash_score`: the rank phase's score). Reports, against the panel's mean true
error (`benchmarks/truth/<panel>/truth.json`):
- Kendall tau and Spearman rho, each with a bootstrap 95% interval over architectures, top-5 overlap, and the
  regret of the pick (its true error minus the panel's best), for SMASH and for the free baselines
  (parameter count, FLOPs, synflow and NASWOT at initialisation: `smash_engine.proxies`), and for SMASH's
  held-out loss (`smash_loss`) beside its error;
- each predictor's partial tau with FLOPs held fixed (`tau|FLOPs`): what it knows beyond the network's size;
- the truth ceiling (seed vs seed tau of the panel's two trainings).
The JSON lands in `benchmarks/results/quality-<variant>-<stamp>.json` with the settings, the commit, the
machine and its load. SMASH's checkpoint is kept per epoch under `--work`, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
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
import truth_panel  # noqa: E402

PREDICTORS = ("smash", "smash_loss", "params", "flops", "synflow", "naswot")


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", default="default", help="name of this setting (goes in the file name)")
    ap.add_argument("--panel", type=Path, default=truth_panel.PANEL_DIR, help="truth panel folder")
    ap.add_argument("--epochs", type=int, default=3, help="SMASH training epochs")
    ap.add_argument("--score-at", default="", help="also score the panel after these epochs, e.g. 1,2")
    ap.add_argument("--train-size", type=int, default=None, help="SMASH trains on a seeded subset of this size")
    ap.add_argument("--hyper", default=None, help="HyperNet size (paper | small | tiny); default: the preset's")
    ap.add_argument("--hyper-set", action="append", default=[], metavar="KEY=VALUE",
                    help="HyperNet setting on top of --hyper, e.g. templates=1 (hypernet.HyperConfig)")
    ap.add_argument("--preset", default="quick", help="run preset whose settings are measured")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override, e.g. --set lr=0.002 --set batch_size=64 (repeatable)")
    ap.add_argument("--space-set", action="append", default=[], metavar="KEY=VALUE",
                    help="SpaceConfig override, e.g. --space-set kernel_anneal=original (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="SMASH's seed (the held-out split stays the panel's)")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1)))
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "quality", help="checkpoints")
    ap.add_argument("--from", dest="from_variant", default=None, metavar="VARIANT",
                    help="start from that variant's SMASH checkpoint when only scoring settings differ "
                         "(e.g. --set score_bn=recal on the default's trained HyperNet: no retraining)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--verify", type=int, default=0, metavar="K",
                    help="also measure the verify phase on the panel: train the top K of SMASH (and of parameter "
                         "count) briefly and take the best; reports the regret of each pick")
    ap.add_argument("--verify-images", type=int, default=4000, help="training images of each short training")
    ap.add_argument("--verify-epochs", type=int, default=1)
    ap.add_argument("--corrupt", type=int, default=0, metavar="N",
                    help="also run the corrupted-encoding study on the first N panel architectures after the last "
                         "epoch: does the HyperNet use c? (each field of c shuffled across ops, as `study corrupt`)")
    ap.add_argument("--corrupt-images", type=int, default=2000, help="held-out images per corrupted score")
    ap.add_argument("--ablate", action="store_true",
                    help="after the last epoch, also score the panel with each op's generated 1x1 replaced by its "
                         "own mean tile, and by random weights of the same norm (smash_engine/probes.py)")
    ap.add_argument("--restat", type=Path, default=None, metavar="RESULT.json",
                    help="recompute a stored result's statistics against the panel's current truth (no training)")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny: digits, 6 panel architectures with made-up truth; checks the code path only")
    return ap.parse_args(argv)


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def make_cfg(a: argparse.Namespace, dataset: str, val_size: int, base_space=None):
    """The preset's config on the panel's dataset; SMASH searches the space the panel was drawn from
    (`base_space`), with `--space-set` on top."""
    from smash_engine.config import make_config
    from smash_engine.errors import ConfigError
    from smash_engine.hypernet import hyper_preset

    def pairs(items: list[str], flag: str) -> dict:
        out = {}
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
            out[key.strip()] = _value(value.strip())
        return out

    cfg = make_config(a.preset, dataset=dataset, seed=a.seed, device="cpu", epochs=a.epochs, val_size=val_size,
                      **pairs(a.set, "--set"))
    space = pairs(a.space_set, "--space-set")
    cfg = dataclasses.replace(cfg, space=dataclasses.replace(base_space or cfg.space, **space))
    if a.hyper:
        cfg = dataclasses.replace(cfg, hyper=hyper_preset(a.hyper))
    if a.hyper_set:
        cfg = dataclasses.replace(cfg, hyper=dataclasses.replace(cfg.hyper, **pairs(a.hyper_set, "--hyper-set")))
    return cfg


def data(dataset: str, val_size: int, split_seed: int, train_size: int | None, seed: int):
    """(SMASH training images, the truth's held-out images): disjoint, both from the training split."""
    import torch

    from smash_engine.data import device_data, holdout_split, load_dataset

    ds = load_dataset(dataset)
    tr, va = holdout_split(len(ds.train_y), val_size, split_seed)
    cpu = torch.device("cpu")
    train = device_data(ds.train_x[tr], ds.train_y[tr], ds.info, cpu)
    if train_size is not None:
        train = train.subset(train_size, torch.Generator().manual_seed(seed))
    return train, device_data(ds.train_x[va], ds.train_y[va], ds.info, cpu)


def smash_epochs(cfg, train, ckpt: Path, stops: list[int], on_stop, report=print, on_epoch=None) -> float:
    """SMASH training by the engine's own loop (`loops.smash_steps`), checkpointed per epoch (resumed from
    `ckpt` when it was trained with the same settings); `on_stop(s, epoch)` after each epoch in `stops`, and
    after the last one; `on_epoch(s, epoch)` after every epoch, and with epoch 0 before a training from
    scratch. Returns the seconds spent training in this call (hooks not included)."""
    import torch

    from smash_engine.loops import smash_steps
    from smash_engine.runs import save_atomic
    from smash_engine.train import Smash

    s, t, step = Smash.create(cfg, torch.device("cpu")), cfg.train, 0
    if ckpt.exists():
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)
        if _trained_by(sd.get("config") or {}) == _trained_by(cfg.to_dict()):
            s.load_state_dict(sd)
            step = int(sd["step"])
        else:
            report(f"{ckpt} was trained with other settings: training from scratch")
    seconds, scored, images, out = 0.0, set(), 0, []
    if on_epoch is not None and step == 0:
        on_epoch(s, 0)
    t0 = time.perf_counter()
    for st in smash_steps(s, cfg, train, step):
        out.append(st.metrics)
        if not st.epoch_end:
            continue
        seconds += time.perf_counter() - t0
        images += len(out) * t.batch_size
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_atomic({**s.state_dict(), "step": st.step, "config": cfg.to_dict()}, ckpt)
        loss, err, _ = torch.stack(out).mean(0).tolist()
        report(f"SMASH epoch {st.epoch + 1}/{t.epochs}: train loss {loss:.3f}, error {err:.3f} "
               f"({images / max(seconds, 1e-9):.0f} img/s so far)")
        if on_epoch is not None:
            on_epoch(s, st.epoch + 1)
        if st.epoch + 1 in stops:
            on_stop(s, st.epoch + 1)
            scored.add(st.epoch + 1)
        out = []
        t0 = time.perf_counter()
    if t.epochs not in scored:  # resumed from a finished checkpoint: score it
        on_stop(s, t.epochs)
    return seconds


SCORING_ONLY = ("score_bn", "bn_batches", "score_batch", "n_random", "n_perturb", "n_hillclimb", "final_top",
                "final_epochs", "final_batch", "final_lr", "final_weight_decay", "log_every", "val_size",
                "val_archs", "val_every", "verify_top", "verify_eta", "verify_budget", "verify_add", "verify_add_top")


def _trained_by(cfg: dict) -> dict:
    """The part of a config that decides SMASH's trained weights (what scoring settings leave alone); a
    checkpoint's config from before a field existed gets that field's default, as a resumed run does."""
    from smash_engine.config import RunConfig

    try:
        cfg = RunConfig.from_dict(cfg).to_dict()
    except (TypeError, KeyError):
        return cfg
    train = {k: v for k, v in cfg.get("train", {}).items() if k not in SCORING_ONLY}
    return {**{k: v for k, v in cfg.items() if k not in ("train", "name")}, "train": train}


def quality_table(pred: dict[str, list[float]], true: list[float], top_k: int = 5) -> dict[str, dict]:
    """rank_stats per predictor; SMASH's row also gets `tau_minus`: its tau minus each baseline's, with a
    paired bootstrap interval (the test of "SMASH beats counting parameters"). Every predictor but FLOPs gets
    `tau_given_flops`, its partial tau with FLOPs held fixed: what it knows that FLOPs does not."""
    from smash_engine.studies import partial_tau, rank_stats, tau_difference

    rows = {name: rank_stats(values, true, top_k) for name, values in pred.items()}
    if "smash" in pred and len(true) >= 3:
        rows["smash"]["tau_minus"] = {name: tau_difference(pred["smash"], values, true)
                                      for name, values in pred.items() if name not in ("smash", "smash_loss")}
    if "flops" in pred and len(true) >= 3:
        for name, values in pred.items():
            if name != "flops":
                rows[name]["tau_given_flops"] = partial_tau(values, true, pred["flops"])
    return rows


def baselines(archs, train) -> dict[str, list[float]]:

    from smash_engine.proxies import naswot_batch, predicted_errors

    return predicted_errors(archs, naswot_batch(train))


def print_table(rows: dict[str, dict], ceiling: dict | None, head: str) -> None:
    def f(v, spec=".3f"):
        return "   n/a" if v is None else format(v, spec)

    print(head)
    print(f"{'predictor':<10} {'tau':>7} {'tau 95%':>16} {'rho':>7} {'rho 95%':>16} {'top-5':>6} {'regret':>7} "
          f"{'tau|FLOPs':>9} {'95%':>12}")
    for name, r in rows.items():
        tau_ci = f"{f(r.get('kendall_lo'), '+.2f')}..{f(r.get('kendall_hi'), '+.2f')}"
        rho_ci = f"{f(r.get('spearman_lo'), '+.2f')}..{f(r.get('spearman_hi'), '+.2f')}"
        regret = f(100 * r["regret"] if "regret" in r else None, ".2f")
        given = r.get("tau_given_flops") or {}
        given_ci = f"{f(given.get('lo'), '+.2f')}..{f(given.get('hi'), '+.2f')}" if given else ""
        print(f"{name:<10} {f(r.get('kendall_tau'), '+.3f'):>7} {tau_ci:>16} {f(r.get('spearman_rho'), '+.3f'):>7} "
              f"{rho_ci:>16} {f(r.get('top_k_overlap'), '.2f'):>6} {regret:>6}p "
              f"{f(given.get('tau'), '+.3f') if given else '':>9} {given_ci:>12}")
    for name, d in (rows.get("smash", {}).get("tau_minus") or {}).items():
        print(f"  smash - {name:<8} tau {f(d['diff'], '+.3f')}  paired 95% {f(d['lo'], '+.2f')}..{f(d['hi'], '+.2f')}")
    if ceiling:
        lo, hi = ceiling["kendall_tau_ci95"]
        print(f"{'ceiling':<10} {ceiling['kendall_tau_seed_vs_seed']:>+7.3f} {lo:+.2f}..{hi:+.2f}   "
              "(seed vs seed: the best any predictor can do against a once-trained truth)")


def restat(path: Path, truth: dict) -> int:
    """Recompute every epoch's statistics of a stored result against `truth` and rewrite the file."""
    doc = json.loads(path.read_text())
    true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
    ids = [i for i in doc["by_epoch"][-1]["smash_errors"] if i in true_of]
    true = [true_of[i] for i in ids]
    for entry in doc["by_epoch"]:
        losses = {"smash_loss": [entry["smash_losses"][i] for i in ids]} if "smash_losses" in entry else {}
        pred = {"smash": [entry["smash_errors"][i] for i in ids], **losses,
                **{k: [v[i] for i in ids] for k, v in doc["baselines_by_arch"].items()}}
        entry["stats"] = quality_table(pred, true)
        if "verified" in entry or entry is doc["by_epoch"][-1]:
            pred_all = {"smash": list(entry["smash_errors"].values()),
                        **{k: list(v.values()) for k, v in doc["baselines_by_arch"].items()}}
            entry["picks"] = doc["picks"] = pick_regrets(list(entry["smash_errors"]), pred_all, true_of,
                                                         entry.get("verified") or {})
        print_table(entry["stats"], truth.get("ceiling"), f"{doc['variant']} after SMASH epoch {entry['epoch']} "
                                                          f"(n = {len(ids)} with truth)")
    doc.update(stats=doc["by_epoch"][-1]["stats"], n_with_truth=len(ids), ceiling=truth.get("ceiling"),
               truth_complete=truth.get("n_complete"))
    print(f"rewrote {common.save_result(doc, path.name, path.parent)}")
    return 0


def verify(a: argparse.Namespace, archs, pred_all: dict[str, list[float]], train, val) -> dict:
    """The verify phase applied to the panel: for SMASH and for parameter count, their top K (of all panel
    architectures) each trained briefly on the same seeded images with the same seed, as the engine's verify
    phase does; the pick is the best of them by held-out error."""
    import numpy as np
    import torch

    sub = train.take(torch.randperm(len(train), generator=torch.Generator().manual_seed(7))[:a.verify_images])
    out = {}
    for name in ("smash", "params"):
        tried = []
        for j in np.argsort(pred_all[name], kind="stable")[:a.verify]:
            r = truth_panel.train_one(archs[int(j)], 0, sub, val, a.verify_epochs)
            tried.append((r["val_error"], archs[int(j)].id, r["seconds"]))
        out[f"{name}_verify{a.verify}"] = dict(
            candidates=[i for _, i, _ in tried], short_errors=[e for e, _, _ in tried], picked=min(tried)[1],
            seconds=round(sum(s for _, _, s in tried), 1), images=len(sub), epochs=a.verify_epochs)
    return out


def corrupt_panel(a: argparse.Namespace, cfg, s, archs, val, calib) -> dict:
    """`study corrupt` on the panel's trained HyperNet: each of the first N panel architectures scored with
    its true encoding and with each field of c shuffled across ops (the network run stays the true one), on
    the first `--corrupt-images` held-out images, BatchNorm as the scores above. If the HyperNet uses a
    field, the true c scores better (win rate above 50%, positive gap)."""
    import torch

    from smash_engine.studies import FIELDS, corrupt_summary, variant_plan
    from smash_engine.train import score_plan

    n = min(a.corrupt_images, len(val))
    sub = val.take(torch.arange(n))
    t = cfg.train
    true: dict[int, float] = {}
    shuffled: dict[str, list[tuple[int, float | None]]] = {f: [] for f in FIELDS}
    t0 = time.perf_counter()
    for i, arch in enumerate(archs[:a.corrupt]):
        plan = s.plan(arch)
        true[i] = score_plan(s, plan, sub, t.score_batch, t.score_bn, calib)[0]
        for field in FIELDS:
            p = variant_plan(plan, cfg.space, field, cfg.seed, i)
            shuffled[field].append((i, None if p is None else score_plan(s, p, sub, t.score_batch, t.score_bn,
                                                                           calib)[0]))
    rows = corrupt_summary(true, shuffled)
    for r in rows:
        if r["n"]:
            print(f"corrupt {r['variant']:<9} true c wins {r['win_rate']:.0%} of {r['n']}, gap "
                  f"{100 * r['mean_gap']:+.2f} pts, Wilcoxon p {r['extra_json'].get('wilcoxon_p')}", flush=True)
    return dict(archs=[x.id for x in archs[:a.corrupt]], images=n, stats=rows,
                seconds=round(time.perf_counter() - t0, 1), true=true, shuffled=shuffled)


def collapse_panel(cfg, s, archs) -> dict:
    """Does the HyperNet read c, without images: for the panel's architectures, how far shuffling each field of
    c moves the generated 1x1s, and how alike each op's tiles are (`smash_engine.probes.collapse`)."""
    from smash_engine.encoding import FIELDS
    from smash_engine.probes import collapse

    t0 = time.perf_counter()
    m = collapse(s.hyper, [s.plan(arch) for arch in archs], cfg.space, cfg.seed, FIELDS)
    return {**m, "seconds": round(time.perf_counter() - t0, 1)}


def ablate_panel(cfg, s, archs, val, calib, kept: list[int], true: list[float], flops: list[float]) -> dict:
    """The panel scored with each op's 1x1 replaced by its own mean tile, and by random weights of the same
    norm: how much the generated 1x1s' content matters to the score and to its ranking."""
    from smash_engine import probes
    from smash_engine.train import score_plan

    t = cfg.train
    out = {}
    for name, transform in (("mean_tile", probes.mean_tile), ("random", probes.random_weights(cfg.seed))):
        errs = [score_plan(s, s.plan(arch), val, t.score_batch, t.score_bn, calib, transform)[0] for arch in archs]
        rows = quality_table({"smash": [errs[i] for i in kept], "flops": flops}, true) if len(kept) >= 3 else {}
        out[name] = dict(mean_error=sum(errs) / len(errs), smash_errors=dict(zip([x.id for x in archs], errs,
                                                                                 strict=True)),
                         stats=rows.get("smash", {}))
        st = out[name]["stats"]
        print(f"ablate {name:<9} mean SMASH error {100 * out[name]['mean_error']:.2f}%, tau "
              f"{st.get('kendall_tau', float('nan')):+.3f}, tau|FLOPs "
              f"{(st.get('tau_given_flops') or {}).get('tau') or float('nan'):+.3f}", flush=True)
    return out


def pick_regrets(ids: list[str], pred_all: dict[str, list[float]], true_of: dict[str, float],
                 verified: dict) -> dict:
    """The regret (true error minus the panel's best, over the architectures with a truth) of the architecture
    each way of choosing hands to final training: each predictor's top pick, the verified picks, and a random
    pick (its expectation). None where the pick has no truth yet."""
    import numpy as np

    known = [true_of[i] for i in ids if i in true_of]
    if not known:
        return {}
    best = min(known)

    def regret(arch_id: str) -> float | None:
        return None if arch_id not in true_of else float(true_of[arch_id] - best)

    out: dict = {"random_expected": float(np.mean(known) - best)}
    for name, values in pred_all.items():
        out[f"{name}_top1"] = regret(ids[int(np.argmin(values))])
    for name, detail in verified.items():
        out[name] = regret(detail["picked"])
    return out


def smoke_panel(out: Path):
    """Six panel architectures of the `tiny` space with a made-up truth: exercises every stage in seconds."""
    import random

    from smash_engine.config import make_config
    from smash_engine.sampler import sample_architecture

    cfg = make_config("quick", dataset="digits")
    archs = [sample_architecture(cfg.space, random.Random(i), 1.0) for i in range(6)]
    truth = dict(archs=[dict(id=a.id, mean_error=0.1 + 0.01 * i) for i, a in enumerate(archs)],
                 ceiling=dict(kendall_tau_seed_vs_seed=1.0, kendall_tau_ci95=[1.0, 1.0]),
                 recipe=dict(dataset="digits", val_size=300, split_seed=0))
    return archs, truth


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.smoke:
        archs, truth = smoke_panel(a.out)
        a.epochs, a.set = 1, [*a.set, "batch_size=50"]
        a.work = a.out / "work"
    else:
        # the truth as trained so far: a variant may run while the panel's last trainings still land
        archs, truth = truth_panel.load_panel(a.panel), truth_panel.summarize(a.panel)
    if a.restat:
        return restat(a.restat, truth)
    recipe = truth["recipe"]
    true_of = {r["id"]: r["mean_error"] for r in truth["archs"] if r.get("mean_error") is not None}
    cfg = make_cfg(a, recipe["dataset"], recipe["val_size"], None if a.smoke else truth_panel.load_space(a.panel))
    train, val = data(recipe["dataset"], recipe["val_size"], recipe["split_seed"], a.train_size, a.seed)
    stops = sorted({int(e) for e in a.score_at.split(",") if e.strip()} | {a.epochs})
    print(f"{a.variant}: SMASH on {len(train)} {recipe['dataset']} images, {a.epochs} epochs, scoring "
          f"{len(archs)} panel architectures on {len(val)} held-out images after epochs {stops}", flush=True)

    t0 = time.perf_counter()
    base = baselines(archs, train)
    t_base = time.perf_counter() - t0
    kept = [i for i, arch in enumerate(archs) if arch.id in true_of]
    true = [true_of[archs[i].id] for i in kept]
    results: dict[int, dict] = {}
    collapse_by_epoch: dict[int, dict] = {}
    timing: dict = {"baseline_seconds": round(t_base, 1)}
    name = f"quality-{a.variant}-{common.stamp()}.json"

    def save(results: dict[int, dict]) -> Path:
        last = results[max(results)]
        doc = dict(variant=a.variant, panel=str(a.panel.relative_to(ROOT)) if not a.smoke else "smoke",
                   argv=sys.argv[1:] if argv is None else argv, config=cfg.to_dict(),
                   smash_train_images=len(train), held_out_images=len(val), n_with_truth=len(kept),
                   ceiling=truth.get("ceiling"), truth_complete=truth.get("n_complete"), **timing,
                   baselines_by_arch={k: dict(zip([x.id for x in archs], v, strict=True)) for k, v in base.items()},
                   by_epoch=[results[e] for e in sorted(results)], stats=last["stats"], picks=last.get("picks"),
                   collapse_by_epoch=[collapse_by_epoch[e] for e in sorted(collapse_by_epoch)],
                   machine=common.machine("cpu"))
        return common.save_result(doc, name, a.out)

    def on_stop(s, epoch: int) -> None:
        from smash_engine.train import bn_calibration, smash_score

        t1 = time.perf_counter()
        t = cfg.train
        calib = bn_calibration(cfg, train)
        scores = [smash_score(s, arch, val, t.score_batch, t.score_bn, calib) for arch in archs]
        errs, losses = [e for e, _ in scores], [loss for _, loss in scores]
        secs = time.perf_counter() - t1
        pred = {"smash": [errs[i] for i in kept], "smash_loss": [losses[i] for i in kept],
                **{k: [v[i] for i in kept] for k, v in base.items()}}
        rows = quality_table(pred, true) if len(kept) >= 3 else {}
        results[epoch] = dict(epoch=epoch, smash_errors=dict(zip([x.id for x in archs], errs, strict=True)),
                              smash_losses=dict(zip([x.id for x in archs], losses, strict=True)),
                              score_seconds=round(secs, 1), score_seconds_per_arch=round(secs / len(archs), 2),
                              stats=rows)
        if epoch == a.epochs:
            save(results)  # the scores are safe before the verification trainings start
            pred_all = {"smash": errs, **base}
            if a.corrupt:
                results[epoch]["corrupt"] = corrupt_panel(a, cfg, s, archs, val, calib)
                save(results)
            if a.ablate:
                flops = [base["flops"][i] for i in kept]
                results[epoch]["ablate"] = ablate_panel(cfg, s, archs, val, calib, kept, true, flops)
                save(results)
            verified = verify(a, archs, pred_all, train, val) if a.verify else {}
            picks = pick_regrets([x.id for x in archs], pred_all, true_of, verified)
            results[epoch].update(verified=verified, picks=picks)
            print("regret of the pick (points): " + ", ".join(
                f"{k} {'n/a' if v is None else f'{100 * v:.2f}'}" for k, v in picks.items()), flush=True)
        if rows:
            print_table(rows, truth.get("ceiling"), f"after SMASH epoch {epoch} (n = {len(kept)} with truth; "
                                                    f"scoring took {secs / len(archs):.2f} s per architecture)")

    ckpt = a.work / f"{a.variant}.pt"
    if a.from_variant and not ckpt.exists():
        import shutil

        a.work.mkdir(parents=True, exist_ok=True)
        shutil.copy(a.work / f"{a.from_variant}.pt", ckpt)
    def on_epoch(s, epoch: int) -> None:
        m = collapse_panel(cfg, s, archs)
        collapse_by_epoch[epoch] = {"epoch": epoch, **m}
        moved = ", ".join(f"{f} {v:.3f}" for f, v in m["shuffle_distance"].items() if v is not None)
        print(f"collapse after epoch {epoch}: shuffle distance {moved}; tile cosine {m['tile_cosine']:.3f}",
              flush=True)

    t_train = smash_epochs(cfg, train, ckpt, stops, on_stop, report=lambda line: print(line, flush=True),
                           on_epoch=on_epoch)
    timing["smash_train_seconds"] = round(t_train, 1)
    if t_train > 0:  # this call's training speed (a resumed run counts only what it trained)
        spe = train.num_batches(cfg.train.batch_size)
        done = len([e for e in collapse_by_epoch if e > 0])  # on_epoch runs once per epoch trained here
        timing["smash_images_per_s"] = round(done * spe * cfg.train.batch_size / t_train, 1)
    path = save(results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
