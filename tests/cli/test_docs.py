"""The README's table of `smash-tui run` options is generated from the Typer app and cannot drift from it."""

from pathlib import Path

import pytest

from smash_engine.errors import ConfigError
from smash_tui.cli_docs import README_END, README_START, main, render_readme, run_options

ROOT = Path(__file__).resolve().parents[2]


def test_readme_lists_every_run_option_of_the_app() -> None:
    text = (ROOT / "README.md").read_text()
    assert render_readme(text) == text, "run: python -m smash_tui.cli_docs --write-readme README.md"
    table = text.split(README_START, 1)[1].split(README_END, 1)[0]
    flags = [line.split("`")[1] for line in table.splitlines()[3:]]
    assert flags == [p.opts[0] for p in run_options()]
    assert "--nproc-per-node" in flags and "--preset" in flags and "--detach" not in flags  # hidden: left out


def test_write_readme_regenerates_only_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"# Title\n\nbefore\n{README_START}\n| `--stale` | | gone |\n{README_END}\n\nafter\n")
    assert main(["--write-readme", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{README_START}\n| option | default | meaning |\n")
    assert text.endswith(f"{README_END}\n\nafter\n") and "--stale" not in text
    assert "| `--device` | `auto` | cpu \\| cuda \\| cuda:N \\| auto |" in text  # a bare | would split the cell
    with pytest.raises(ConfigError, match="lacks the"):
        render_readme("no markers")
