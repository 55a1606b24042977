"""`python -m smash_tui.cli_docs --write-readme README.md`: regenerate the README's table of `smash-tui run`
options from the Typer app (a test fails when the checked-in README drifts from `smash-tui run --help`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import typer
from typer.core import TyperOption

from smash_engine.errors import ConfigError

from .cli import app

README_START, README_END = "<!-- run-options:start -->", "<!-- run-options:end -->"


def run_options() -> list[TyperOption]:
    """The options `smash-tui run --help` shows, in its order (hidden ones left out)."""
    run = typer.main.get_group(app).commands["run"]
    return [p for p in run.params if isinstance(p, TyperOption) and not p.hidden]


def run_options_table() -> str:
    """`run`'s options as a Markdown table: the flag, its default, its help."""
    lines = ["| option | default | meaning |", "| --- | --- | --- |"]
    for p in run_options():
        default = ("on" if p.default else "off") if p.is_flag else "" if p.default is None else f"`{p.default}`"
        meaning = (p.help or "").replace("|", "\\|")  # a bare | would end the table cell
        cells = (f"`{p.opts[0]}`", default, meaning)
        lines.append("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|")
    return "\n".join(lines) + "\n"


def render_readme(text: str) -> str:
    """`text` with the table between the run-options markers regenerated."""
    head, sep, rest = text.partition(README_START)
    _, sep2, tail = rest.partition(README_END)
    if not (sep and sep2):
        raise ConfigError(f"the README lacks the {README_START} ... {README_END} markers")
    return f"{head}{README_START}\n{run_options_table()}{README_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smash_tui.cli_docs")
    parser.add_argument("--write-readme", metavar="PATH", required=True, help="Markdown to update")
    doc = Path(parser.parse_args(argv).write_readme)
    doc.write_text(render_readme(doc.read_text()))
    print(f"wrote the run options into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
