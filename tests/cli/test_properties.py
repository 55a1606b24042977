"""Inputs that cannot break it: property-based tests (Hypothesis) over every parser a user reaches.

Each property runs the real entry point (`smash_tui.cli.main`, in this process for speed) on a real results
file and holds it to the same rule: exit 0, or one `smash-tui: error:` line on stderr and a non-zero exit, never a
traceback, and the results file unchanged (by hash) wherever the input should not change it. The engine's own
parsers (a command's arguments, an architecture spec) are held to raising only `SmashError`.
"""

import contextlib
import hashlib
import io
import itertools
import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from smash_engine import store
from smash_engine.commands import _args
from smash_engine.config import RunConfig
from smash_engine.encoding import check_in_space
from smash_engine.errors import SmashError, whole_count
from smash_engine.space import Architecture
from smash_tui import cli

# bounded so the whole file runs in about a minute on 2 cores (CI); `--hypothesis-seed` reproduces a failure
FEW = settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SOME = settings(FEW, max_examples=150)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)
numbers_as_text = st.one_of(st.integers().map(str), st.floats().map(str), st.text(max_size=12),
                            st.sampled_from(["nan", "inf", "-inf", "1e999", "-0", "0x10", " 3", "3.5", "", "-1",
                                             "99999999999999999999999999", "1_000"]))


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["smash-tui", *args])
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def held_to_the_rule(code: int, err: str) -> None:
    assert "Traceback" not in err, err
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("smash-tui: error: "), err


def digest(db: Path) -> str:
    """The hash of what the file holds: its SQL dump where it is a database (a reader's close may checkpoint the
    WAL into it, which moves bytes and changes nothing), else its bytes."""
    h = hashlib.sha256()
    try:
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            for line in conn.iterdump():
                h.update(line.encode())
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        h.update(db.read_bytes() if db.exists() else b"absent")
    return h.hexdigest()


# ------------------------------------------------------------------ architecture specs (`score FILE.json`)

def _paths(x, here=()):
    """Every place in a JSON value a mutation can land."""
    yield here
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _paths(v, (*here, k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from _paths(v, (*here, i))


def _mutate(spec, path, value):
    if not path:
        return value
    spec = json.loads(json.dumps(spec))
    node = spec
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return spec


hostile = st.one_of(json_values, st.integers(min_value=-2**70, max_value=2**70),
                    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 10**18, "3", [], {}, None, True]),
                    st.integers(1, 400).map(lambda d: json.loads("[" * d + "]" * d)))


@SOME
@given(data=st.data())
def test_any_spec_is_an_architecture_or_one_smash_error(finished_run, data):
    conn = sqlite3.connect(finished_run)
    cfg = RunConfig.from_dict(json.loads(conn.execute("select config_json from runs").fetchone()[0]))
    spec = json.loads(conn.execute("select spec_json from archs limit 1").fetchone()[0])
    conn.close()
    if data.draw(st.booleans()):
        text = json.dumps(data.draw(json_values))
    else:
        paths = list(_paths(spec))
        path = data.draw(st.sampled_from(paths))
        text = json.dumps(_mutate(spec, path, data.draw(hostile)))
    try:
        check_in_space(Architecture.from_json(text), cfg.space)
    except SmashError as e:
        assert "\n" not in str(e)


@FEW
@given(data=st.data())
def test_control_score_file_is_queued_or_refused_in_one_line(run_copy, tmp_path, data):
    spec = json.loads(sqlite3.connect(run_copy).execute("select spec_json from archs limit 1").fetchone()[0])
    path = data.draw(st.sampled_from(list(_paths(spec))))
    f = tmp_path / "spec.json"
    raw = data.draw(st.one_of(st.just(json.dumps(_mutate(spec, path, data.draw(hostile)))),
                              st.text(max_size=50), st.binary(max_size=50).map(lambda b: b.decode("latin-1"))))
    f.write_text(raw, encoding="utf-8", errors="surrogateescape")
    before = digest(run_copy)
    code, _, err = run_cli("control", str(run_copy), "score", str(f), "--wait", "0")
    held_to_the_rule(code, err)
    if code != 0:
        assert digest(run_copy) == before


# ------------------------------------------------------------------ command arguments, both ends

@SOME
@given(kind=st.sampled_from([*store.COMMAND_KINDS, "bogus", ""]), args=st.lists(numbers_as_text, max_size=3))
def test_control_arguments(run_copy, kind, args):
    before = digest(run_copy)
    code, _, err = run_cli("control", str(run_copy), kind, *args, "--wait", "0")
    held_to_the_rule(code, err)
    if code != 0:
        assert digest(run_copy) == before


@SOME
@given(text=st.one_of(json_values.map(json.dumps), st.text(max_size=30), st.just("[" * 5000)),
       count=st.one_of(json_values, numbers_as_text))
def test_the_engine_reads_any_args_json_as_arguments_or_one_error(text, count):
    """Anyone can write the commands table; the engine's readers of it raise a SmashError or give a value."""
    for parse in (lambda: _args(text), lambda: whole_count(count, "a count")):
        try:
            got = parse()
        except SmashError as e:
            assert "\n" not in str(e)
        else:
            assert isinstance(got, dict | int)


# ------------------------------------------------------------------ every option that takes a number or a path

NUMERIC_RUN_OPTIONS = ["--epochs", "--archs", "--final-top", "--final-epochs", "--batch-size", "--val-size",
                       "--verify-top", "--verify-eta", "--verify-budget", "--verify-add-top", "--max-params",
                       "--max-mflops", "--seed", "--nproc-per-node", "--threads"]


NAMES = itertools.count()


@SOME
@given(option=st.sampled_from(NUMERIC_RUN_OPTIONS), value=numbers_as_text)
def test_run_options_make_a_run_or_refuse_it_whole(tmp_path, option, value):
    """Only parsing is under test: a run the options allow is created, then not started."""
    db = tmp_path / f"r{next(NAMES)}.db"  # not `random`: Hypothesis seeds it the same for every example
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_start", lambda *a, **k: None)
        code, _, err = run_cli("run", "--headless", "--db", str(db), option, value)
    held_to_the_rule(code, err)
    assert db.exists() == (code == 0)  # refused: no half-made results file


@FEW
@given(data=st.data())
def test_read_commands_with_any_number_or_path(run_copy, tmp_path, data):
    """(`study`'s numbers are left out: a valid draw would run a real study here; Typer bounds them.)"""
    before = digest(run_copy)
    n = data.draw(numbers_as_text)
    p = str(tmp_path / data.draw(st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=12)))
    args = data.draw(st.sampled_from([
        ["show", str(run_copy), "--top", n], ["show", str(run_copy), "--arch", n], ["show", p],
        ["query", p, "select 1"], ["export", str(run_copy), "--arch", n, "-o", p], ["ls", p],
        ["control", str(run_copy), "sample", n, "--wait", "0"], ["control", str(run_copy), "final", n, n],
        ["resume", str(run_copy), "--nproc-per-node", n], ["resume", str(run_copy), "--threads", n]]))
    if args[0] == "resume":
        args = [*args, "--headless"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_start", lambda *a, **k: None)
        code, _, err = run_cli(*args)
    held_to_the_rule(code, err)
    if code != 0 or args[0] in ("show", "query", "ls"):
        assert digest(run_copy) == before


# ------------------------------------------------------------------ the query guard

WRITES = [
    "ATTACH DATABASE '{p}' AS x", "ATTACH '{p}' AS x; CREATE TABLE x.t(a)", "VACUUM INTO '{p}'", "VACUUM",
    "PRAGMA writable_schema = ON", "PRAGMA writable_schema = 1; UPDATE sqlite_master SET sql = ''",
    "PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = OFF", "PRAGMA query_only = OFF",
    "PRAGMA user_version = 7", "SELECT load_extension('{p}')", "SELECT load_extension('/lib/x.so', 'init')",
    "WITH t AS (SELECT 1) INSERT INTO events (run_id, at, level, message) SELECT 1, 'x', 'info', 'x' FROM t",
    "WITH t AS (SELECT 1) DELETE FROM runs", "SELECT 1; DELETE FROM runs", "DELETE FROM runs; SELECT 1",
    "UPDATE runs SET name = 'x'", "DROP VIEW leaderboard", "CREATE TABLE t (a)", "REINDEX", "ANALYZE",
    "INSERT INTO commands (run_id, kind, created_at) VALUES (1, 'stop', 'x')", "BEGIN IMMEDIATE",
    "SELECT * FROM runs; ", "select writefile('{p}', 'x')", "PRAGMA wal_checkpoint(TRUNCATE)",
    "CREATE TEMP TABLE t AS SELECT 1", "SAVEPOINT a", "DETACH x", "PRAGMA foreign_keys = OFF",
]


@SOME
@given(template=st.sampled_from(WRITES), case=st.booleans(),
       pad=st.sampled_from(["", " ", "\n", "/* c */ ", "  -- c\n"]),
       tail=st.sampled_from(["", ";", "; ;", "; SELECT 1"]))
def test_query_never_writes(run_copy, tmp_path, template, case, pad, tail):
    target = tmp_path / "out.db"
    sql = pad + template.format(p=target) + tail
    sql = sql.upper() if case else sql
    before = digest(run_copy)
    code, _, err = run_cli("query", str(run_copy), sql)
    held_to_the_rule(code, err)
    assert digest(run_copy) == before
    assert not target.exists() and not Path(str(target).upper()).exists()


# ------------------------------------------------------------------ results files that are not what they seem

def _truncated(src: Path, n: int, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[:n])


@FEW
@given(kind=st.sampled_from(["truncated", "random", "foreign", "newer", "empty"]), n=st.integers(0, 200_000),
       blob=st.binary(max_size=4096), command=st.sampled_from(["show", "query", "ls", "export", "control", "resume"]))
def test_results_files_that_are_not_one(finished_run, tmp_path, kind, n, blob, command):
    db = tmp_path / "runs" / "x.db"
    db.parent.mkdir(exist_ok=True)
    for p in db.parent.iterdir():
        p.unlink() if p.is_file() else shutil.rmtree(p)
    if kind == "truncated":
        _truncated(finished_run, n, db)
    elif kind == "random":
        db.write_bytes(blob)
    elif kind == "empty":
        db.write_bytes(b"")
    elif kind == "foreign":
        c = sqlite3.connect(db)
        c.execute("create table notes (id integer primary key, body text)")
        c.execute("insert into notes (body) values (?)", (blob.hex(),))
        c.commit()
        c.close()
    else:
        shutil.copy(finished_run, db)
        c = sqlite3.connect(db)
        c.execute("insert into schema_version values (?, 'x')", (store.SCHEMA_VERSION + 1 + n,))
        c.commit()
        c.close()
    before = digest(db)
    args = {"show": ["show", str(db)], "query": ["query", str(db), "select * from runs"], "ls": ["ls", str(db.parent)],
            "export": ["export", str(db), "--arch", "best", "-o", str(tmp_path / "o.json")],
            "control": ["control", str(db), "stop", "--wait", "0"], "resume": ["resume", str(db), "--headless"]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_start", lambda *a, **k: None)
        code, _, err = run_cli(*args[command])
    held_to_the_rule(code, err)
    if command != "ls":
        assert code != 0 or kind == "truncated" and n >= finished_run.stat().st_size
    assert digest(db) == before


def test_a_locked_results_file_is_one_line_and_untouched(run_copy, monkeypatch):
    monkeypatch.setattr("smash_engine.store.files.BUSY_TIMEOUT_S", 0.2)  # a lock is held for good here
    holder = sqlite3.connect(run_copy, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE").fetchone()
    holder.execute("BEGIN EXCLUSIVE")
    try:
        before = digest(run_copy)
        for args in (["control", str(run_copy), "stop", "--wait", "0"], ["show", str(run_copy)]):
            code, _, err = run_cli(*args)
            assert code != 0, err
            held_to_the_rule(code, err)
            assert digest(run_copy) == before
    finally:
        holder.execute("ROLLBACK")
        holder.close()

