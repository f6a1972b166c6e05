"""Ad-hoc read-only SQL over an audit database (``policyengine query``).

Two locks keep the evidence intact: the database is opened read-only with file
access from SQL switched off (no ``COPY TO``, ``ATTACH`` or ``read_csv`` of other
files), and only read statements are accepted, so a write is refused with a
message that says so before DuckDB is even asked.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from .db import first_line, open_readonly
from .errors import ReportError
from .reports import ReportResult, ReportSpec

READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})


def run_query(db: str | Path, text: str) -> ReportResult:
    """Run one read statement on ``db`` and return its rows."""
    if not text.strip():
        raise ReportError("query: the SQL text is empty")
    con = open_readonly(db)
    try:
        try:
            statements = con.extract_statements(text)
        except duckdb.Error as e:
            raise ReportError(f"query: {first_line(e)}") from None
        if len(statements) != 1:
            raise ReportError(f"query: give exactly one statement (got {len(statements)})")
        kind = statements[0].type.name
        if kind not in READ_STATEMENTS:
            raise ReportError(
                f"query: refused, {kind} is not a read statement; query is read-only "
                "(SELECT, WITH ... SELECT, DESCRIBE, SHOW, EXPLAIN)"
            )
        try:
            cur = con.execute(text)
            columns = tuple(d[0] for d in cur.description) if cur.description else ()
            types = tuple(str(d[1]) for d in cur.description) if cur.description else ()
            rows = tuple(cur.fetchall()) if columns else ()
        except duckdb.Error as e:
            raise ReportError(f"query: {first_line(e)}") from None
    finally:
        con.close()
    spec = ReportSpec("query", "", "Ad-hoc query", text.strip(), "", (), text)
    return ReportResult(spec, {}, columns, rows, types)
