"""`smash-tui study` and `smash-tui final`: the paper's experiments and transfer, run here and now on a
finished results file (`smash_engine.studies`, `smash_engine.transfer`), printed as tables and a scatter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from smash_engine import store
from smash_engine.errors import ConfigError, ResultsFileError

from .cli_common import BIG, check_threads, pct, require_db, term_width
from .cli_data import USER_KINDS, check_user_options, user_data

# -- studies and transfer (smash_engine.studies) --------------------------------------------------------
STUDY_KINDS = ("correlation", "capacity", "corrupt", "archgrad")


def register(app: typer.Typer) -> None:
    """Add `study` and `final` to the command line `app` (cli.py's)."""
    app.command()(study)
    app.command()(final)


def study(
    kind: Annotated[str, typer.Argument(help="correlation | capacity | corrupt | archgrad")],
    db: Path,
    every: Annotated[int, typer.Option(max=BIG, help="correlation/corrupt: take every K-th leaderboard rank")] = 5,
    count: Annotated[int, typer.Option(max=BIG, help="correlation/corrupt: at most N architectures")] = 20,
    epochs: Annotated[int | None, typer.Option(max=BIG, help="correlation: normal-training epochs per arch (default "
                                                    "10); capacity: SMASH epochs (default: the run's)")] = None,
    top: Annotated[int, typer.Option(max=BIG, help="correlation: k of the top-k overlap")] = 5,
    train_size: Annotated[int | None, typer.Option(max=BIG, help="correlation: normal-train on a seeded subset of this "
                                                        "many training images (default: all)")] = None,
    source: Annotated[str, typer.Option(help="correlation: pick from the rank phase's random architectures "
                                             "(random) or from every scored one, refine's near copies too (all)")]
    = "random",
    hyper: Annotated[str | None, typer.Option(help="capacity: small | tiny (default: smaller than the run's)")]
    = None,
    fields: Annotated[str, typer.Option(help="corrupt: comma-separated fields to shuffle")]
    = "dilation,kernel,out,groups,read,write",
    arch: Annotated[str | None, typer.Option(help="archgrad: start architecture (default: the best)")] = None,
    trials: Annotated[int, typer.Option(max=BIG, help="archgrad: scored trials per walk")] = 20,
    changes: Annotated[int, typer.Option(max=BIG, help="archgrad: gradient-guided edits per trial")] = 2,
    new: Annotated[bool, typer.Option(help="start a new study instead of continuing the last one")] = False,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N (default: the run's)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the stored statistics as JSON")] = False,
    threads: Annotated[int | None, typer.Option(max=BIG,
            help="torch threads (default: this study's share of the cores, "
                                                     "shrinking while other searches or studies run)")] = None,
) -> None:
    """Run one of the paper's experiments on a finished run; results go to the results file (docs/studies.md)."""
    if kind not in STUDY_KINDS:
        raise ConfigError(f"unknown study {kind!r}; choose one of {', '.join(STUDY_KINDS)}")
    check_threads(threads)
    require_db(db)
    from smash_engine import studies
    from smash_engine.cpu_share import CpuShare

    ctx = studies.open_run(db, device)

    def say(line: str) -> None:
        typer.echo(line, err=True)

    try:
        with CpuShare(threads):  # next to a search, each takes its share of the cores (cpu_share.py)
            if kind == "correlation":
                sid = studies.correlation(ctx, every, count, epochs or 10, top, new, say, train_size, source)
            elif kind == "capacity":
                sid = studies.capacity(ctx, hyper, epochs, new, say)
            elif kind == "corrupt":
                fs = tuple(f.strip() for f in fields.split(",") if f.strip())
                sid = studies.corrupt(ctx, every, count, fs, new, say)
            else:
                sid = studies.archgrad(ctx, arch, trials, changes, new, say)
    finally:
        ctx.close()
    _print_study(db, sid, as_json)


def _print_study(db: Path, sid: int, as_json: bool) -> None:
    with store.connect_reader(db) as conn:
        s, stats = store.get_study(conn, sid), store.study_stats(conn, sid)
        rows = store.study_archs(conn, sid)
        if s and s["kind"] == "capacity":
            source = json.loads(s["options_json"])["correlation_study"]
            rows += [r | {"variant": "run"} for r in store.study_archs(conn, source, "trained")]
    if s is None:
        raise ResultsFileError(f"no study #{sid} in {db}")
    if as_json:
        typer.echo(json.dumps({"study": s, "stats": stats}, indent=2, default=str))
        return
    typer.echo(f"study #{sid} ({s['kind']}): {s['message']}")
    stats = sorted(stats, key=lambda r: (r["variant"] not in ("run", "trained"), r["variant"] in BASELINE_NAMES))
    stats = [r | {"kendall_95": _ci(r, "kendall"), "spearman_95": _ci(r, "spearman")} for r in stats]
    cols = ("variant", "n", "kendall_tau", "kendall_95", "kendall_p", "spearman_rho", "spearman_95", "spearman_p",
            "top_k_overlap", "regret", "win_rate", "mean_gap", "mean_error", "best_error")
    shown = [c for c in cols if any(r[c] is not None for r in stats)]
    width = {c: 15 if c.endswith("_95") else 12 for c in shown}
    typer.echo("  ".join(f"{c:>{width[c]}}" for c in shown))
    for r in stats:
        typer.echo("  ".join(f"{_fmt(r[c]):>{width[c]}}" for c in shown))
    if any(r["variant"] in BASELINE_NAMES for r in stats):
        typer.echo("params, flops, synflow: what ranking by parameter count, FLOPs or synflow at initialisation "
                   "gives over the same architectures (bigger = predicted better); _95: bootstrap 95% interval")
    if s["kind"] in ("correlation", "capacity"):
        typer.echo(_scatter(rows))


BASELINE_NAMES = ("params", "flops", "synflow", "naswot")


def _ci(r: dict, name: str) -> str | None:
    lo, hi = r.get(f"{name}_lo"), r.get(f"{name}_hi")
    return None if lo is None or hi is None else f"[{lo:+.2f},{hi:+.2f}]"


def _fmt(x) -> str:
    return "-" if x is None else x if isinstance(x, str) else f"{x}" if isinstance(x, int) else f"{x:.4f}"


def _scatter(rows: list[dict]) -> str:
    """plotext 6 scatter of SMASH error (x) against true validation error (y), one signal per HyperNet."""
    import plotext

    f = plotext.figure
    f.clear()
    f.theme("colorless" if not sys.stdout.isatty() else "default")
    for variant in sorted({r["variant"] for r in rows}):
        pts = [(r["smash_error"], r["val_error"]) for r in rows if r["variant"] == variant
               and r["smash_error"] is not None and r["val_error"] is not None]
        if pts:
            sig = f.signal([p[0] for p in pts], [p[1] for p in pts])
            sig.label(f"{variant} ({len(pts)} archs)")
            f.draw(sig)
    f.title("SMASH error (x) vs true validation error after normal training (y)")
    f.plot_size(min(term_width(), 100), 20)
    return str(f.build())


def final(
    db: Path,
    arch: Annotated[str, typer.Option(help="architecture id (or unique prefix) from this run")],
    dataset: Annotated[str, typer.Option(
        help="stl10 | imagenet32 | modelnet10 (3-D) | cifar10 | ... (default: the run's)")] = "",
    data_dir: Annotated[str | None, typer.Option(help="folder holding the dataset's files (folder: the class "
                                                      "folders; npz: the .npz file)")] = None,
    image_size: Annotated[int | None, typer.Option(max=BIG, help="--dataset folder: resize images to N px "
                                                   "(default: the run's image size)")] = None,
    test_fraction: Annotated[float | None, typer.Option(help="--dataset folder without train/ and test/: the "
                                                        "fraction of each class held out (default 0.2)")] = None,
    skip_bad: Annotated[bool, typer.Option(help="--dataset folder: leave out unreadable images (said)")] = False,
    epochs: Annotated[int | None, typer.Option(max=BIG, help="epochs (default: the run's final epochs)")] = None,
    batch: Annotated[int | None, typer.Option(max=BIG, help="training batch (default: the run's final batch)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N (default: the run's)")] = None,
    threads: Annotated[int | None, typer.Option(max=BIG, help="torch threads (default: a share of the cores)")] = None,
) -> None:
    """Final-train an architecture of this run on another dataset (transfer), here and now; resumable."""
    require_db(db)
    check_threads(threads)
    check_user_options(dataset, image_size, test_fraction, skip_bad)
    from smash_engine import studies
    from smash_engine.cpu_share import CpuShare
    from smash_engine.runs import run_dir
    from smash_engine.transfer import transfer_final

    ctx = studies.open_run(db, device)
    try:
        data = ctx.cfg.extra.get("data") if not dataset else None  # the run's own images, as it recorded them
        if dataset in USER_KINDS:
            data = user_data(dataset, data_dir, image_size, ctx.cfg.space.image_size, test_fraction, skip_bad,
                             db.parent, threads)[0]
        with CpuShare(threads):
            fid = transfer_final(ctx, run_dir(db), arch, dataset or ctx.cfg.dataset, data_dir, epochs,
                                 lambda line: typer.echo(line, err=True), batch, data)
        row = next(r for r in store.finals(ctx.w.conn, ctx.run_id) if r["id"] == fid)
    finally:
        ctx.close()
    typer.echo(f"final #{fid} of {row['arch_id']} on {row['dataset']}: test error {pct(row['test_error'])}, "
               f"best val error {pct(row['best_val_error'])} after {row['epoch']} epochs")
