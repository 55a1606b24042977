"""Engines sharing a CPU size their torch threads to their share of the cores (issue 22 item 6)."""

import os
import subprocess
import sys

import pytest
import torch

from smash_engine import cpu_share
from smash_engine.cpu_share import CpuShare


@pytest.fixture
def threads_back():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_process_alone_takes_every_core_and_shrinks_while_another_holds_a_claim(tmp_path, monkeypatch,
                                                                                   threads_back):
    monkeypatch.setattr(cpu_share, "cores", lambda: 4)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with CpuShare(folder=tmp_path) as share:
            assert (tmp_path / str(os.getpid())).exists()
            assert torch.get_num_threads() == 4
            (tmp_path / str(other.pid)).write_text("0")  # a second engine starts
            share.tick(force=True)
            assert share.live_claims() == 2 and torch.get_num_threads() == 2
            other.kill()
            other.wait()
            share.tick(force=True)  # it ended without removing its claim: the claim goes, the cores come back
            assert torch.get_num_threads() == 4 and not (tmp_path / str(other.pid)).exists()
        assert not (tmp_path / str(os.getpid())).exists()
    finally:
        other.kill()


def test_the_loops_resize_through_the_current_claim_and_a_fixed_count_stays(tmp_path, monkeypatch, threads_back):
    monkeypatch.setattr(cpu_share, "cores", lambda: 2)
    with CpuShare(threads=1, folder=tmp_path):
        assert torch.get_num_threads() == 1
        (tmp_path / "999999999").write_text("0")  # no such process: ignored and removed
        cpu_share.tick()
        assert torch.get_num_threads() == 1
    cpu_share.tick()  # no claim held: nothing happens
    with pytest.raises(ValueError):
        CpuShare(threads=0, folder=tmp_path)
