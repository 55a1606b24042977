"""docs/screenshots.py, which makes the README's pictures of the UI, run as a user runs it on a real results file:
every SVG is written, parses as XML and shows the file's leaderboard, so the script cannot rot silently."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from smash_engine import store
from smash_tui.widgets.leaderboard import ARCH_CHARS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "screenshots.py"


def shoot(db: Path, out: Path) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), "--db", str(db), "--out", str(out)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def svg_text(path: Path) -> str:
    """The text an SVG shows: every text node (Textual writes a space as a no-break space)."""
    root = ET.parse(path).getroot()  # raises on anything that is not XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
    return "".join(root.itertext()).replace("\xa0", " ")


def test_screenshots_show_the_runs_leaderboard_diagram_and_studies(db, tmp_path):
    conn = store.connect_reader(db)
    try:
        board = [r["arch_id"] for r in store.leaderboard(conn, store.get_run(conn)["id"])]
    finally:
        conn.close()
    out = tmp_path / "img"
    said = shoot(db, out)
    assert sorted(p.name for p in out.iterdir()) == ["diagram.svg", "runs.svg", "search.svg"]
    assert "skipped studies.svg" in said  # the tiny run holds no study
    search, diagram, runs = (svg_text(out / f"{n}.svg") for n in ("search", "diagram", "runs"))
    assert board[0][:ARCH_CHARS] in search and board[1][:ARCH_CHARS] in search and "DONE" in search
    assert "leaderboard" in search and "train loss" in search
    assert board[0][:ARCH_CHARS] in diagram and "memory banks" in diagram
    assert db.stem in runs and "done" in runs

    with store.connect_writer(db) as w:  # a study, as `smash-tui study` leaves one
        sid = w.create_study(1, "correlation", {"every": 2})
        w.set_study_stats(sid, [dict(variant="run", n=12, kendall_tau=0.4242, kendall_lo=-0.1, kendall_hi=0.8)])
        w.update_study(sid, status="done", message="tau 0.424 over 12 architectures")
    shoot(db, out)
    studies = svg_text(out / "studies.svg")
    assert "correlation (done)" in studies and "+0.424" in studies
