"""The UI never imports torch: opening a run and drawing its diagram is arithmetic on the results file
(issue 22: importing torch took a watching UI from 85 MB to 578 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("torch_free_probe.py")


def test_opening_a_run_and_its_diagram_never_imports_torch(db):
    done = subprocess.run([sys.executable, str(PROBE), str(db)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # the diagram was drawn, per-part summary included (its last line is the totals), for two architectures
    assert len({arch for arch, _ in out["drawn"]}) == 2
    assert all(last.startswith("total") for _, last in out["drawn"])
    assert out["torch"] == []
