import shutil

import pytest


@pytest.fixture
def run_copy(tmp_path, finished_run):
    """A writable copy of the finished tiny run, in a runs/ folder of its own."""
    db = tmp_path / "runs" / "tiny.db"
    db.parent.mkdir()
    shutil.copy(finished_run, db)
    shutil.copytree(finished_run.with_suffix(""), db.with_suffix(""))
    return db
