"""Ad-hoc read-only SQL over an audit database (``policyengine query``).

Two locks keep the evidence intact: the database is opened read-only with file
access from SQL switched off (no ``COPY TO``, ``ATTACH`` or ``read_csv`` of other
files), and only read statements are accepted, so a write is refused with a
message that says so before DuckDB is even asked.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from .db import first_line, open_readonly
from .errors import ReportError
from .reports import ReportResult, ReportSpec

READ_STATEMENTS = frozenset({"SELECT", "EXPLAIN"})  # DESCRIBE, SHOW, SUMMARIZE, UNPIVOT parse as SELECT
READ_LIST = "SELECT, WITH ... SELECT, FROM, VALUES, PIVOT, UNPIVOT, DESCRIBE, SUMMARIZE, SHOW, EXPLAIN"
# DuckDB parses a PIVOT whose columns come from the data as MULTI (it first reads the distinct
# values); so can a write wrapped around one (CREATE TABLE t AS PIVOT ..., COPY (PIVOT ...) TO).
_READ_STARTS = frozenset({"PIVOT", "UNPIVOT", "WITH", "SELECT", "FROM", "EXPLAIN", "DESCRIBE", "SUMMARIZE", "SHOW"})
_WRITE_WORDS = re.compile(
    r"\b(INSERT|UPDATE|DELETE|CREATE|COPY|ATTACH|DETACH|DROP|ALTER|EXPORT|IMPORT|INSTALL|LOAD|SET|RESET|CALL|"
    r"PRAGMA|VACUUM|CHECKPOINT|USE|TRUNCATE|MERGE)\b", re.IGNORECASE)
_NOT_CODE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)


def _multi_kind(text: str) -> str:
    """What a MULTI statement is: ``PIVOT`` when it only reads, else the write it contains."""
    code = _NOT_CODE.sub(" ", text)
    write = _WRITE_WORDS.search(code)
    if write:
        return write.group(1).upper()
    first = re.match(r"[\s(]*([A-Za-z]+)", code)
    return "PIVOT" if first and first.group(1).upper() in _READ_STARTS else (first.group(1).upper() if first else "MULTI")


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
        if kind == "MULTI":
            kind = _multi_kind(text)
        if kind not in READ_STATEMENTS and kind != "PIVOT":
            raise ReportError(f"query: refused, {kind} is not a read statement; query is read-only ({READ_LIST})")
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
