"""What every benchmark records beside its figures, and where its result lands.

    import common                                   # benchmarks/ is not a package: a script's own folder is
    doc = dict(..., machine=common.machine("cpu"))  # on sys.path when run as `python benchmarks/X.py`
    common.save_result(doc, "score-cost-<stamp>.json")   # benchmarks/results/, or another folder

`machine()` is the one record of where and on what a figure was measured; every benchmark writes it under
the key `machine` with the same keys (`MACHINE_KEYS`). Result files committed before it keep the keys they
were written with.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MACHINE_KEYS = ("commit", "host", "cpu", "cores", "python", "torch", "threads", "load", "device", "timestamp")


def commit() -> str:
    """The checkout's commit, `-dirty` when tracked files differ from it; `$GIT_SHA` where there is no git
    (a copied working tree), else "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("GIT_SHA", "unknown")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device=None) -> str | None:
    """The accelerator's name for a CUDA device ("NVIDIA H200"), "cpu" for the CPU, None for none."""
    if device is None:
        return None
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def machine(device=None) -> dict:
    """Where and on what this was measured: commit, host, CPU model, cores, python and torch versions, torch's
    CPU threads, the 1-minute load average (other processes share the CPU when it exceeds the cores), the
    device the benchmark computes on (`device_name`; None for one that computes on none) and the UTC time."""
    import torch

    return dict(commit=commit(), host=platform.node(), cpu=cpu_model(), cores=os.cpu_count(),
                python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                load=round(os.getloadavg()[0], 2), device=device_name(device),
                timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def stamp() -> str:
    """Local date and minute for result file names: 2026-11-27-1430."""
    return time.strftime("%Y-%m-%d-%H%M")


def save_result(doc: dict, name: str, folder: Path | None = None) -> Path:
    """Write `doc` as JSON to `folder/name` (default benchmarks/results/), replacing the file whole (a
    benchmark saves after each result, so a timeout keeps what was measured); returns the path."""
    path = Path(folder or RESULTS) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    return path
