"""The `smash-tui` command line (Typer). The only place a SmashError becomes a one-line message and an
exit code; anything else keeps its traceback (a bug to report).

Training code is imported only by `run`/`resume --headless` (in this process) and by the detached engine;
`ls`, `show`, `query`, `export` and `control` read the results file and start in a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from smash_engine import store
from smash_engine.budget import Budget, BudgetError
from smash_engine.cost import arch_cost
from smash_engine.errors import ConfigError, ResultsFileError, SmashError, whole_count
from smash_engine.report import data_line, hyper_label, pick_summary
from smash_engine.space import Architecture

from . import cli_studies
from .cli_common import BIG, check_threads, pct, require_db, term_width
from .cli_data import USER_KINDS, check_user_options, user_data
from .diagram import LEGEND, diagram, summary_lines
from .launch import engine_command, spawn_engine

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Run and watch SMASH architecture searches. Bare `smash-tui` opens the runs in runs/.")

RUNS_DIR = Path("runs")


def main() -> None:
    try:
        rv = app(standalone_mode=False)
    except SmashError as e:
        _fail(str(e), e.exit_code)
    except Exception as e:
        # Typer's (click's) usage errors, a mistyped option or a value of the wrong type: one line like ours, not
        # its boxed usage text; these classes move between Typer versions, so they are known by their methods
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):
            where = getattr(getattr(e, "ctx", None), "command_path", None) or "smash-tui"
            _fail(f"{e.format_message()} (see `{where} --help`)", e.exit_code)
        if type(e).__name__ == "Abort":
            _fail("aborted", 1)
        raise
    raise SystemExit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"smash-tui: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code) from None


@app.callback(invoke_without_command=True)
def _root(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        _open_ui(None)


def _open_ui(db: Path | None) -> None:
    try:
        from .app import SmashApp
    except ImportError:  # the UI module is optional until it exists
        raise ConfigError("the interactive UI is not available in this build; use --headless, "
                          "`smash-tui show` or `smash-tui ls`") from None
    SmashApp(db=db, runs_dir=RUNS_DIR).run()


# -- run / resume ------------------------------------------------------------------------------------
@app.command()
def run(
    preset: Annotated[str, typer.Option(help="quick (digits, CPU, minutes) | fmnist (GPU, ~10 min) | paper")] = "quick",
    dataset: Annotated[str | None, typer.Option(help="digits, mnist, fashion-mnist, fashion-mnist16 (16 px), "
                                                     "cifar10, cifar100, stl10, imagenet32, or your own images: "
                                                     "folder (one folder per class) | npz (default: the preset's)")]
    = None,
    data_dir: Annotated[str | None, typer.Option(help="folder holding the dataset's files (folder: the class "
                                                      "folders; npz: the .npz file)")] = None,
    image_size: Annotated[int | None, typer.Option(max=BIG, help="--dataset folder: resize images to N px "
                                                   "(default: the preset's size)")] = None,
    test_fraction: Annotated[float | None, typer.Option(help="--dataset folder without train/ and test/: the "
                                                        "fraction of each class held out as the test split "
                                                        "(default 0.2)")] = None,
    skip_bad: Annotated[bool, typer.Option(help="--dataset folder: leave out unreadable images (said) instead of "
                                                "stopping")] = False,
    download: Annotated[bool, typer.Option(help="let torchvision download a missing dataset")] = False,
    epochs: Annotated[int | None, typer.Option(max=BIG, help="SMASH training epochs")] = None,
    archs: Annotated[int | None, typer.Option(max=BIG, help="random architectures to score in the rank phase")] = None,
    final_top: Annotated[int | None, typer.Option(max=BIG, help="final-train the best K (0 = none)")] = None,
    final_epochs: Annotated[int | None, typer.Option(max=BIG, help="epochs of final training")] = None,
    batch_size: Annotated[int | None, typer.Option(max=BIG, help="SMASH training batch")] = None,
    val_size: Annotated[int | None, typer.Option(max=BIG,
            help="held-out images the SMASH score is measured on")] = None,
    score_bn: Annotated[str | None, typer.Option(help="BatchNorm statistics when scoring: shared (SMASH training's "
                                                      "running ones) | recal (re-estimated per architecture) | "
                                                      "batch (default: the preset's)")] = None,
    verify_top: Annotated[int | None, typer.Option(max=BIG,
            help="verify phase: successive halving over the first K of --verify-order, "
                                                        "final training takes the last one standing (0 = off; "
                                                        "default 16)")] = None,
    verify_eta: Annotated[int | None, typer.Option(max=BIG,
            help="each verify rung keeps the best 1/ETA, on ETA times the "
                                                        "images (default 4)")] = None,
    verify_budget: Annotated[float | None, typer.Option(help="the verify phase's training images, as a fraction of "
                                                             "SMASH training's (default 1.0)")] = None,
    verify_add: Annotated[str | None, typer.Option(help="also verify the best of a free baseline: flops | naswot "
                                                        "(default: none)")] = None,
    verify_add_top: Annotated[int | None, typer.Option(max=BIG, help="how many --verify-add adds (default 4)")] = None,
    verify_order: Annotated[str | None, typer.Option(help="the order the verify phase takes its candidates from: "
                                                          "smash | flopsres (FLOPs', SMASH breaking near-ties) | "
                                                          "rankavg (default flopsres)")] = None,
    max_params: Annotated[int | None, typer.Option(max=BIG,
            help="budget: every architecture the search scores has at most N "
                                                        "parameters (0 = no limit)")] = None,
    max_mflops: Annotated[float | None, typer.Option(help="budget: every architecture the search scores has at most "
                                                          "X million forward FLOPs per image, counted 2 per "
                                                          "multiply-add as the leaderboard's MFLOPs (0 = no limit)")]
    = None,
    db: Annotated[Path | None, typer.Option(help="results file (default runs/NAME.db)")] = None,
    name: Annotated[str | None, typer.Option(help="run name (default: the preset, made unique)")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | auto")] = "auto",
    seed: Annotated[int, typer.Option(max=BIG, help="seed for everything random")] = 0,
    headless: Annotated[bool, typer.Option(help="run here with progress on the terminal, no UI")] = False,
    nproc_per_node: Annotated[int, typer.Option(max=BIG,
            help="processes (GPUs) on this machine, through torchrun")] = 1,
    threads: Annotated[int | None, typer.Option(max=BIG,
            help="torch threads per process (default: its share of the cores, "
                                                     "shrinking while other searches or studies run)")] = None,
    hyper: Annotated[str | None, typer.Option(help="HyperNet: small | paper | small-gains | graph | tiny (default: "
                                                   "the preset's; docs/search-quality.md)")] = None,
    detach: Annotated[bool, typer.Option(hidden=True, help="start the engine detached, print the results file, "
                                         "open no UI (the UI's new-search form)")] = False,
) -> None:
    """Start a new search."""
    from smash_engine.config import make_config

    _check_nproc(nproc_per_node)
    check_threads(threads)
    check_user_options(dataset, image_size, test_fraction, skip_bad)
    db = db or _unique_db(name or preset)
    train: dict[str, Any] = dict(
        epochs=epochs, n_random=archs, final_top=final_top, final_epochs=final_epochs, batch_size=batch_size,
        val_size=val_size, score_bn=score_bn, verify_top=verify_top, verify_eta=verify_eta,
        verify_budget=verify_budget, verify_add=verify_add, verify_add_top=verify_add_top,
        verify_order=verify_order, max_params=max_params, max_mflops=max_mflops)
    data: dict | None = None
    notes: list[str] = []
    if dataset in USER_KINDS:
        from smash_engine.config import preset_image_size
        from smash_engine.runs import resolve_device

        # every option is checked before an image is decoded (the preset's own dataset standing in for them)
        make_config(preset, None, seed, device, None, False, name or "", hyper=hyper, **train)
        resolve_device(device)
        if db.exists():
            raise ResultsFileError(f"{db} already exists: resume it with `smash-tui resume {db}`, or pick another "
                                   "--name or --db")
        data, notes = user_data(dataset, data_dir, image_size, preset_image_size(preset), test_fraction, skip_bad,
                                db.parent, threads)
    cfg = make_config(preset, dataset, seed, device, data_dir, download, name or "", hyper=hyper, data=data,
                      **train)
    if name is None:
        import dataclasses

        cfg = dataclasses.replace(cfg, name=db.stem)
    from smash_engine.runs import create_run

    create_run(db, cfg, notes)
    if detach:
        spawn_engine(db, nproc_per_node, threads)
        typer.echo(str(db))
        return
    typer.echo(f"results file: {db}", err=True)
    _start(db, headless or not sys.stdout.isatty(), nproc_per_node, threads)


@app.command()
def resume(
    db: Path,
    headless: Annotated[bool, typer.Option(help="run here, no UI")] = False,
    nproc_per_node: Annotated[int, typer.Option(max=BIG,
            help="processes (GPUs) on this machine, through torchrun")] = 1,
    threads: Annotated[int | None, typer.Option(max=BIG,
            help="torch threads per process (default: a share of the cores)")]
    = None,
) -> None:
    """Continue a stopped, paused or crashed search (or answer commands queued on a finished one)."""
    _check_nproc(nproc_per_node)
    check_threads(threads)
    require_db(db)
    # with stdout redirected or piped (nohup, a script) there is no one to show a UI to
    _start(db, headless or not sys.stdout.isatty(), nproc_per_node, threads)


def _check_nproc(n: int) -> None:
    if n < 1:
        raise ConfigError(f"--nproc-per-node must be 1 or more, got {n}")


def _unique_db(name: str) -> Path:
    """runs/NAME.db, or NAME-2, -3...: a name whose results file or run folder (left by a deleted results
    file) exists is taken."""
    path, n = RUNS_DIR / f"{name}.db", 1
    while path.exists() or path.with_suffix("").exists():
        n += 1
        path = RUNS_DIR / f"{name}-{n}.db"
    return path


def _start(db: Path, headless: bool, nproc: int = 1, threads: int | None = None) -> None:
    if headless and nproc > 1:
        # torchrun in the foreground: Ctrl-C reaches it and every rank; rank 0 prints plain progress
        code = subprocess.call(engine_command(db, nproc, progress=True, threads=threads))
        with store.connect_reader(db) as conn:
            run = store.get_run(conn)  # rank 0 printed how it ended already
        status = run["status"] if run else "crashed"
        if status == "done":
            _print_found(db)
        if status == "stopped":
            typer.echo(f"continue with: smash-tui resume {db} --nproc-per-node {nproc}", err=True)
        if code and status not in ("stopped", "done"):
            raise typer.Exit(1)
        return
    if not headless:
        try:
            from . import app as _ui  # noqa: F401
        except ImportError:
            headless = True
    if headless:
        from smash_engine.engine import Engine

        from .progress import headless_reporter

        with headless_reporter() as report:
            status = Engine(db, reporter=report, threads=threads).run()
        typer.echo(f"{status}: {db}", err=True)
        if status == "done":
            _print_found(db)
        if status == "stopped":
            typer.echo(f"continue with: smash-tui resume {db}", err=True)
        return
    spawn_engine(db, nproc, threads)
    _open_ui(db)


def _print_found(db: Path) -> None:
    """What the search found (stderr, like the progress lines): the pick, its errors, where it is, what next."""
    with store.connect_reader(db) as conn:
        run_id = _run(conn, db)["id"]
        board = store.leaderboard(conn, run_id)
        lines = pick_summary(str(db), store.pick(conn, run_id), board[0] if board else None, len(board))
    for line in lines:
        typer.echo(line, err=True)


# -- plain-text tools --------------------------------------------------------------------------------
def _reader(db: Path):
    require_db(db)
    return store.connect_reader(db)


def _run(conn, db: Path) -> dict:
    run = store.get_run(conn)
    if run is None:
        raise ResultsFileError(f"{db} holds no run yet")
    return run


@app.command("ls")
def ls_(directory: Annotated[Path, typer.Argument(help="folder of results files")] = RUNS_DIR) -> None:
    """List the runs in a folder: status (crashed if the engine's heartbeat is stale), phase, best scores."""
    if not directory.is_dir():
        raise ResultsFileError(f"no folder {directory}/; start a search with: smash-tui run --preset quick "
                               "(results files go to runs/)")
    files = sorted(directory.glob("*.db"))
    if not files:
        typer.echo(f"no results files in {directory}/; start one with: smash-tui run --preset quick")
        return
    # the pick's errors (README "What a search gives you"), and SMASH's first place, which is not the same thing
    typer.echo(f"{'run':<20} {'status':<8} {'phase':<7} {'step':>11} {'scored':>6} {'top SMASH':>9} "
               f"{'pick val/test':>13}  updated")
    for path in files:
        try:
            conn = store.connect_reader(path)
        except SmashError as e:
            typer.echo(f"{path.stem:<20} unreadable: {e}")
            continue
        with conn:
            s = store.run_summary(conn)
        if s is None:
            continue
        step = f"{s['step']:>5}/{s['total_steps'] or 0:<5}"
        p = s["pick"]
        picked = "-" if p is None else f"{pct(p['val_error'])[:-1]}/{pct(p['test_error'])}"
        best = f"{pct(s['top_smash']):>9} {picked:>13}"
        name = f"{path.stem[:20]:<20} {s['state']:<8} {s['phase']:<7}"
        typer.echo(f"{name} {step} {s['n_scored']:>6} {best}  {s['updated_at'][:19]}")


@app.command()
def show(
    db: Path,
    arch: Annotated[str | None, typer.Option(help="one architecture (id or unique prefix), with its diagram")] = None,
    top: Annotated[int, typer.Option(min=1, max=BIG, help="leaderboard rows")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    ascii_only: Annotated[bool, typer.Option("--ascii", help="ASCII-only diagram")] = False,
) -> None:
    """The run's status and leaderboard, or one architecture."""
    conn = _reader(db)
    run = _run(conn, db)
    if arch == "best":
        p = store.pick(conn, run["id"])
        first = store.leaderboard(conn, run["id"], limit=1)
        if p is None and not first:
            raise ResultsFileError(f"{db} has no scored architecture yet, so no best one")
        arch = p["arch_id"] if p else first[0]["arch_id"]
        if not as_json:
            typer.echo(f"best = {'the pick' if p else 'SMASH first place (no final training has finished)'}: {arch}")
    if arch:
        row = store.get_arch(conn, arch)
        if row is None:
            raise ResultsFileError(f"no architecture {arch!r} in {db}; see `smash-tui show {db}` for ids")
        a = Architecture.from_json(row["spec_json"])
        if as_json:
            from dataclasses import asdict

            from smash_engine.cost import summary

            typer.echo(json.dumps({**row, "spec": json.loads(row["spec_json"]),
                                   "summary": [asdict(p) for p in summary(a)]}, indent=2))
            return
        typer.echo(f"{row['id']}  source {row['source']}  params {row['params']:,}  FLOPs {row['flops']:,}")
        for line in diagram(a, width=max(80, term_width()), ascii_only=ascii_only):
            typer.echo(line)
        typer.echo(LEGEND)
        typer.echo("")
        for line in summary_lines(a):
            typer.echo(line)
        return
    rows = store.leaderboard(conn, run["id"], limit=top)
    if as_json:
        typer.echo(json.dumps({"run": _public_run(run), "leaderboard": rows}, indent=2, default=str))
        return
    typer.echo(f"run {run['name']}: {store.engine_state(run)}, phase {run['phase']}, step {run['step']}/"
               f"{run['total_steps'] or '?'}, dataset {run['dataset']}, device {run['device']}, "
               f"HyperNet {hyper_label(run)}")
    data = json.loads(run["config_json"]).get("extra", {}).get("data")
    if data:
        typer.echo(f"  {data_line(data)}")
    for line in _budget_lines(conn, run):
        typer.echo(f"  {line}")
    if run.get("message") and not str(run["message"]).startswith("pick "):  # the pick comes whole below
        typer.echo(f"  {run['message']}")
    for c in reversed(store.commands(conn, run["id"])):  # what is still asked of the engine, oldest first
        if c["status"] in ("pending", "running"):
            said = f": {c['message']}" if c["message"] else ""
            typer.echo(f"  command #{c['id']} {c['kind']} {c['status']}{said}")
    for line in pick_summary(str(db), store.pick(conn, run["id"]), rows[0] if rows else None,
                             len(store.leaderboard(conn, run["id"]))):
        typer.echo(line)
    typer.echo(f"{'rank':>4} {'arch':<16} {'smash err':>9} {'params':>9} {'MFLOPs':>8} {'ops':>4} {'verify':<14} "
               f"{'source':<9} final (val / test error)")
    for r in rows:
        final = "" if r["final_status"] is None else \
            f"{r['final_status']} {pct(r['final_val_error'])} / {pct(r['final_test_error'])}"
        verify = verify_cell(r)
        typer.echo(f"{r['rank']:>4} {r['arch_id']:<16} {pct(r['smash_error']):>9} {r['params'] or 0:>9,} "
                   f"{(r['flops'] or 0) / 1e6:>8.1f} {r['n_ops'] or 0:>4} {verify:<14} {r['source']:<9} {final}")


def verify_cell(r: dict) -> str:
    """The verify phase as `show` prints it: the error at the highest rung finished, that rung (1-based), and
    whether the candidate is out ('21.30% r2', '45.20% r1 out', 'queued r2')."""
    if r.get("verify_rung") is None:
        return "-"
    err = pct(r["verify_error"]) if r["verify_status"] == "done" else r["verify_status"]
    return f"{err} r{r['verify_rung'] + 1}{'' if r['verify_in'] else ' out'}"


def _budget(run: dict) -> Budget:
    return Budget.of(json.loads(run["config_json"]).get("train", {}))


def _budget_lines(conn, run: dict) -> list[str]:
    """The run's budget, the range of what it scored, and the engine's word on the draws the budget rejected
    (once each: a resumed rank phase says the same again)."""
    budget = _budget(run)
    if not budget:
        return []
    sql = ("SELECT min(a.params), max(a.params), min(a.flops), max(a.flops) FROM archs a"
           " WHERE a.id IN (SELECT arch_id FROM scores WHERE run_id = ?)")
    lo_p, hi_p, lo_f, hi_f = conn.execute(sql, (run["id"],)).fetchone()
    scored = "" if lo_p is None else \
        f"; scored: {lo_p:,}-{hi_p:,} params, {lo_f / 1e6:.2f}-{hi_f / 1e6:.2f} MFLOPs"
    lines = [f"budget: {budget.describe()} (FLOPs 2 per multiply-add){scored}"]
    sql = "SELECT message FROM events WHERE run_id = ? AND message LIKE 'budget: %' ORDER BY id"
    said = dict.fromkeys(m.removeprefix("budget: ").replace(f" ({budget.describe()})", "")
                         for (m,) in conn.execute(sql, (run["id"],)))
    return lines + [f"  {m}" for m in said]


def _which(db: Path, asked: str, arch_id: str) -> str:
    """What `--arch best` resolved to, for the line naming the file written."""
    if asked != "best":
        return ""
    with store.connect_reader(db) as conn:
        p = store.pick(conn, _run(conn, db)["id"])
    if p is None or p["arch_id"] != arch_id:
        return ": best = SMASH's first place, as no final training has finished"
    return f": best = the pick, final #{p['final_id']}, validation error {pct(p['val_error'])}"


def _public_run(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "config_json"} | {"config": json.loads(run["config_json"])}


@app.command()
def query(
    db: Path,
    sql: str,
    as_csv: Annotated[bool, typer.Option("--csv")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    table: Annotated[bool, typer.Option("--table", help="aligned columns (default)")] = False,
) -> None:
    """Run a read-only SQL statement on a results file."""
    require_db(db)
    cols, rows = store.run_readonly_query(db, sql)
    if as_json:
        typer.echo(json.dumps([dict(zip(cols, r, strict=True)) for r in rows], indent=2, default=str))
    elif as_csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
    else:
        text = [[("" if v is None else str(v)) for v in r] for r in rows]
        widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(cols)]
        typer.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
        for r in text:
            typer.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@app.command()
def export(
    db: Path,
    arch: Annotated[str, typer.Option(help="architecture id or unique prefix, or 'best' (the run's pick: the finished "
                                           "final with the lowest validation error; else SMASH's first place)")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="file (default: stdout, for json)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="json (the architecture), onnx or pt2 (the trained "
                                                              "network); default: from -o's suffix, else json")] = None,
    weights: Annotated[bool, typer.Option(help="json: also copy its final-trained weights (.safetensors) beside -o")
                       ] = False,
) -> None:
    """Write an architecture's JSON (with --weights, its trained weights), or the trained network as ONNX or .pt2."""
    from smash_engine import api

    require_db(db)
    fmt = fmt or {".onnx": "onnx", ".pt2": "pt2"}.get(output.suffix if output else "", "json")
    if fmt not in ("json", "onnx", "pt2"):
        raise ConfigError(f"unknown --format {fmt!r}; choose json, onnx or pt2")
    a = api.load_architecture(db, arch)
    if fmt != "json":
        if output is None:
            raise ConfigError(f"--format {fmt} needs -o FILE")
        if weights:
            raise ConfigError(f"--weights is for json: a .{fmt} file holds the weights already")
        from smash_engine.export import export_model

        export_model(api.load_model(db, a.id), a, output, fmt)
        typer.echo(f"wrote {output} ({a.id}{_which(db, arch, a.id)}, trained weights, batch size free)", err=True)
        return
    text = a.to_json(indent=2) + "\n"
    if output is None:
        if weights:
            raise ConfigError("--weights needs -o FILE (the weights go beside it)")
        sys.stdout.write(text)
        return
    # the file load_model would load: the finished own-dataset final with the lowest validation error; found
    # before anything is written, so a missing one leaves no JSON without its weights
    src = api.weights_path(db, a.id) if weights else None
    _write_atomic(output, text.encode())
    typer.echo(f"wrote {output} ({a.id}{_which(db, arch, a.id)})", err=True)
    if src is not None:
        dest = output.with_suffix(".safetensors")
        _write_atomic(dest, src.read_bytes())
        typer.echo(f"wrote {dest}", err=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@app.command()
def control(
    db: Path,
    kind: Annotated[str, typer.Argument(help="pause | continue | stop | sample | final | score")],
    args: Annotated[list[str] | None,
                    typer.Argument(help="sample: N; final: ARCH_ID [EPOCHS]; score: FILE.json")] = None,
    wait: Annotated[float, typer.Option(help="seconds to wait for the engine's answer")] = 10.0,
) -> None:
    """Send a command to the engine of a run (it answers between steps)."""
    args = args or []
    payload = _command_args(kind, args)
    conn = _reader(db)
    run = _run(conn, db)
    if payload.get("arch") and store.get_arch(conn, payload["arch"]) is None:
        raise ResultsFileError(f"no architecture {payload['arch']!r} in {db}; see `smash-tui show {db}` for ids")
    _check_budget(run, payload, conn)
    state = store.engine_state(run)
    if kind in ("pause", "continue", "stop") and state == "done":
        # queued, a pause would wait for the next `resume` and leave that engine idle and paused
        raise ConfigError(f"the search in {db} is done, so there is nothing to {kind}; `sample N` or `final ARCH` "
                          "queue more work")
    cid = store.insert_command(db, run["id"], kind, payload)
    if state not in ("running", "paused"):
        typer.echo(f"command #{cid} queued; the engine is {state}: it runs when you `smash-tui resume {db}`")
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        row = next((c for c in store.commands(conn, run["id"]) if c["id"] == cid), None)
        # sample and score stay running, with a count, until every architecture is scored: accepted is an answer
        if row and (row["status"] in ("done", "error") or row.get("total") is not None):
            typer.echo(f"command #{cid} {row['status']}: {row['message']}")
            if row["status"] == "error":
                raise typer.Exit(1)
            return
        time.sleep(0.2)
    typer.echo(f"command #{cid} pending: the engine answers between steps")


def _check_budget(run: dict, payload: dict, conn) -> None:
    """`score` and `final` of an architecture outside the run's budget are refused here, before they are queued
    (the engine refuses them too)."""
    budget = _budget(run)
    row = store.get_arch(conn, payload["arch"]) if payload.get("arch") else None
    spec = payload.get("spec") or (row or {}).get("spec_json")
    if not budget or not spec:
        return
    a = Architecture.from_json(spec)
    why = budget.refusal(a.id, *arch_cost(a))
    if why:
        raise BudgetError(why)


def _command_args(kind: str, args: list[str]) -> dict:
    if kind in ("pause", "continue", "stop") and not args:
        return {}
    if kind == "sample" and len(args) <= 1:
        return {"n": whole_count(args[0], "the number of architectures") if args else 100}
    if kind == "final" and 1 <= len(args) <= 2:
        return {"arch": args[0], **({"epochs": whole_count(args[1], "epochs")} if len(args) == 2 else {})}
    if kind == "score" and len(args) == 1:
        path = Path(args[0])
        if not path.is_file():
            raise ConfigError(f"no architecture file {path}; export one with `smash-tui export DB --arch ID -o FILE`")
        return {"spec": Architecture.from_json(path.read_text()).to_json()}  # refuse an invalid one here
    got = " ".join([kind, *args])
    raise ConfigError(f"usage: control DB pause|continue|stop|sample [N]|final ARCH [EPOCHS]|score FILE.json "
                      f"(got {got!r})")


@app.command()
def watch(db: Annotated[Path | None, typer.Argument(help="results file (default: pick from runs/)")] = None) -> None:
    """Open the UI on a results file, whether its engine is alive or not."""
    if db is not None:
        _reader(db).close()
    _open_ui(db)


cli_studies.register(app)  # `study` and `final`, listed after the commands above

if __name__ == "__main__":
    main()
