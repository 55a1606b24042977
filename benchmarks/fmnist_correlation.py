"""Issue 8's GPU measurement in one call: an `fmnist` search, then the correlation study on >= 30 archs.

    python benchmarks/fmnist_correlation.py --data-dir DIR --out DIR          # CUDA: about 6-9 minutes
    python benchmarks/fmnist_correlation.py --smoke --out /tmp/x              # the same stages, tiny, on the CPU

Three stages. The first two run in their own process under a time limit, so an overrun still leaves
results behind (the engine checkpoints on SIGTERM; the study stores each trained architecture as it goes):
1. search: `python -m smash_engine.engine DB --progress` (SMASH training, rank, refine; no final training);
2. study: `studies.correlation` on every K-th architecture of the leaderboard, normal training on a seeded
   subset of the training split;
3. report: Kendall tau, Spearman rho (scipy.stats), top-k overlap and regret over whatever stage 2 trained,
   with every (SMASH error, true error) pair and the stage timings, to
   `OUT/fmnist-correlation-<device>-<stamp>.json`; the results file is copied to OUT as well.
Needs torch, numpy and scipy only (no textual, plotext or sqlite-utils): the scatter plot is drawn
afterwards with `smash-tui study correlation OUT/run.db --json` or from the pairs in the JSON.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402  (benchmarks/ is not a package)


def _stage(args: list[str], timeout_s: float) -> dict:
    """Run one stage; past `timeout_s` send SIGTERM (checkpointed stop), then SIGKILL after 60 s more."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    cut = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        cut = True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return dict(seconds=round(time.perf_counter() - t0, 1), returncode=proc.returncode, cut_short=cut)


def study_main(argv: list[str]) -> int:
    """Stage 2, in its own process: the correlation study on the finished search."""
    from smash_engine import studies
    from smash_engine.errors import ResultsFileError

    ap = argparse.ArgumentParser()
    for name in ("db", "every", "count", "epochs", "train_size", "top"):
        ap.add_argument(f"--{name.replace('_', '-')}", required=True, type=str if name == "db" else int)
    a = ap.parse_args(argv)
    ctx = studies.open_run(Path(a.db))
    try:
        studies.correlation(ctx, a.every, a.count, a.epochs, a.top, train_size=a.train_size,
                            report=lambda line: print(line, flush=True))
    except ResultsFileError as e:  # the search stage ran out of time before its rank phase (2026-12-04, an H200)
        print(f"study: {e} (give the search stage more --search-timeout, or fewer --epochs)", file=sys.stderr)
        return 1
    finally:
        ctx.close()
    return 0


def report(db: Path, top: int) -> dict:
    """Statistics over the trained rows of the latest correlation study (complete or not)."""
    from smash_engine import store
    from smash_engine.studies import rank_stats

    with store.connect_reader(db) as conn:
        run = store.get_run(conn)
        board = store.leaderboard(conn, run["id"])
        found = store.studies(conn, run["id"], "correlation")
        rows = store.study_archs(conn, found[-1]["id"], "trained") if found else []
    rows = [r for r in rows if r["val_error"] is not None]
    smash = [r["smash_error"] for r in rows]
    return dict(
        phase=run["phase"], step=run["step"], total_steps=run["total_steps"], scored=len(board),
        study_status=found[-1]["status"] if found else None,
        against_val=rank_stats(smash, [r["val_error"] for r in rows], top),
        against_test=rank_stats(smash, [r["test_error"] for r in rows], top),
        pairs=[dict(arch_id=r["arch_id"], trial=r["trial"], smash_error=r["smash_error"],
                    val_error=r["val_error"], test_error=r["test_error"]) for r in rows],
    )


def main() -> int:
    if sys.argv[1:2] == ["--stage-study"]:
        return study_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the JSON and the results file")
    ap.add_argument("--data-dir", help="folder holding Fashion-MNIST's four idx .gz files")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=4, help="SMASH epochs (the preset has 10)")
    ap.add_argument("--archs", type=int, default=150, help="random architectures ranked")
    ap.add_argument("--refine", type=int, default=10, help="perturbation and hill-climbing steps each")
    ap.add_argument("--every", type=int, default=5, help="train every K-th of the leaderboard")
    ap.add_argument("--count", type=int, default=30, help="architectures trained normally")
    ap.add_argument("--study-epochs", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=20000, help="training images of the normal training")
    ap.add_argument("--top", type=int, default=5, help="k of the top-k overlap")
    ap.add_argument("--search-timeout", type=float, default=270)
    ap.add_argument("--study-timeout", type=float, default=240)
    ap.add_argument("--smoke", action="store_true", help="quick preset on digits, tiny, on the CPU")
    a = ap.parse_args()

    import torch

    from smash_engine.config import make_config
    from smash_engine.runs import create_run

    preset, dataset = ("quick", "digits") if a.smoke else ("fmnist", "fashion-mnist")
    if a.smoke:
        a.device, a.epochs, a.archs, a.refine, a.count, a.every, a.study_epochs, a.train_size = \
            "cpu", 1, 6, 1, 3, 2, 1, 300
    a.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
    db = a.out / f"run-{stamp}.db"
    cfg = make_config(preset, dataset, device=a.device, data_dir=a.data_dir, name="correlation", epochs=a.epochs,
                      n_random=a.archs, n_perturb=a.refine, n_hillclimb=a.refine, final_top=0)
    create_run(db, cfg)
    gpu = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    search = _stage(["-m", "smash_engine.engine", str(db), "--progress"], a.search_timeout)
    study = _stage([__file__, "--stage-study", "--db", str(db), "--every", str(a.every), "--count", str(a.count),
                    "--epochs", str(a.study_epochs), "--train-size", str(a.train_size), "--top", str(a.top)],
                   a.study_timeout)
    result = dict(machine=common.machine(a.device), preset=preset, dataset=dataset,
                  options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
                  search=search, study=study, **report(db, a.top))
    name = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    out = common.save_result(result, f"fmnist-correlation-{name}-{stamp}.json", a.out)
    with sqlite3.connect(db) as src, sqlite3.connect(a.out / "run.db") as dst:
        src.backup(dst)  # one self-contained file, whatever is still in the WAL
    s = result["against_val"]
    print(f"{out}: n={s['n']}, tau {s.get('kendall_tau')}, rho {s.get('spearman_rho')}, "
          f"search {search['seconds']} s, study {study['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
