"""`python -m smash_engine.store --write-docs docs/schema.md`: regenerate the DDL section of the schema docs
from a freshly migrated database (a test fails when the checked-in docs drift)."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from smash_engine.errors import ResultsFileError
from smash_engine.store.files import migrate
from smash_engine.store.schema import DOCS_END, DOCS_START, schema_sql


def render_docs(text: str) -> str:
    """`text` with the DDL between the schema markers regenerated from a fresh database."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn, ":memory:")
    ddl = schema_sql(conn)
    conn.close()
    head, sep, rest = text.partition(DOCS_START)
    _, sep2, tail = rest.partition(DOCS_END)
    if not (sep and sep2):
        raise ResultsFileError(f"the docs lack the {DOCS_START} ... {DOCS_END} markers")
    return f"{head}{DOCS_START}\n```sql\n{ddl}```\n{DOCS_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smash_engine.store")
    parser.add_argument("--write-docs", metavar="PATH", required=True, help="Markdown to update")
    doc = Path(parser.parse_args(argv).write_docs)
    doc.write_text(render_docs(doc.read_text()))
    print(f"wrote the schema into {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
