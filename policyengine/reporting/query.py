"""Ad-hoc read-only SQL over an audit database (``policyengine query``).

Two locks keep the evidence intact: the database is opened read-only with file
access from SQL switched off (no ``COPY TO``, ``ATTACH`` or ``read_csv`` of other
files), and only read statements are accepted, so a write is refused with a
message that says so (quoting what was typed) before DuckDB is even asked. An
``EXPLAIN [ANALYZE]`` is judged by the statement it wraps (``EXPLAIN ANALYZE``
runs it). Each query runs under a memory limit (DuckDB's ``memory_limit``, then
the configuration is locked) and a time limit (the statement is interrupted),
and at most ``max_rows`` rows are returned.
"""

from __future__ import annotations

import re
import threading
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


DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_LIMIT = "1GB"
DEFAULT_MAX_ROWS = 1_000_000
_EXPLAIN = re.compile(r"^\s*EXPLAIN\b(?:\s+ANALY[SZ]E\b)?", re.IGNORECASE)
_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def typed(text: str) -> str:
    """What was typed, on one line and shortened, for refusals to quote."""
    one_line = " ".join(text.split())
    return repr(one_line if len(one_line) <= 80 else one_line[:77] + "...")


def _statement_kind(con: duckdb.DuckDBPyConnection, text: str, depth: int = 0) -> str:
    """The kind of the one statement in ``text``; an EXPLAIN is the kind of what it wraps."""
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as e:
        raise ReportError(f"query: {first_line(e)}") from None
    if len(statements) != 1:
        raise ReportError(f"query: give exactly one statement (got {len(statements)} in {typed(text)})")
    kind = statements[0].type.name
    if kind == "MULTI":
        kind = _multi_kind(text)
    if kind == "EXPLAIN" and depth < 3:
        code = _NOT_CODE.sub(" ", text)
        uncommented = _NOT_CODE.sub(lambda m: m.group(0) if m.group(0)[0] in "'\"" else " ", text)
        wrapped = _EXPLAIN.sub("", uncommented, count=1)
        if wrapped.strip() and wrapped != uncommented:
            inner = _statement_kind(con, wrapped, depth + 1)
            return "EXPLAIN" if inner in READ_STATEMENTS or inner == "PIVOT" else f"EXPLAIN wrapping {inner}"
        if _WRITE_WORDS.search(code):
            return f"EXPLAIN wrapping {_WRITE_WORDS.search(code).group(1).upper()}"  # type: ignore[union-attr]
    return kind


def run_query(db: str | Path, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
              memory_limit: str = DEFAULT_MEMORY_LIMIT, max_rows: int = DEFAULT_MAX_ROWS) -> ReportResult:
    """Run one read statement on ``db`` within ``timeout_s``, ``memory_limit`` and ``max_rows``; return its rows."""
    if not text.strip():
        raise ReportError("query: the SQL text is empty")
    if not _MEMORY.match(memory_limit):
        raise ReportError(f"query: --memory-limit {memory_limit!r} is not a size such as 512MB or 2GB")
    if not timeout_s > 0:
        raise ReportError(f"query: --timeout {timeout_s:g} must be more than 0 seconds")
    con = open_readonly(db)
    timer: threading.Timer | None = None
    stopped = threading.Event()
    try:
        kind = _statement_kind(con, text)
        if kind not in READ_STATEMENTS and kind != "PIVOT":
            raise ReportError(f"query: refused, {kind} is not a read statement: {typed(text)}; query is read-only "
                              f"({READ_LIST})")
        try:
            con.execute(f"SET memory_limit = '{memory_limit.strip()}'")  # checked above: digits and a unit
            con.execute("SET lock_configuration = true")
        except duckdb.Error as e:
            raise ReportError(f"query: cannot apply --memory-limit {memory_limit!r}: {first_line(e)}") from None

        def stop() -> None:
            stopped.set()
            con.interrupt()

        timer = threading.Timer(timeout_s, stop)
        timer.daemon = True
        timer.start()
        try:
            cur = con.execute(text)
            columns = tuple(d[0] for d in cur.description) if cur.description else ()
            types = tuple(str(d[1]) for d in cur.description) if cur.description else ()
            rows = tuple(cur.fetchmany(max_rows + 1)) if columns else ()
        except duckdb.Error as e:
            if stopped.is_set():
                raise ReportError(f"query: stopped after {timeout_s:g} s (--timeout): {typed(text)}") from None
            raise ReportError(f"query: {first_line(e)}") from None
        if len(rows) > max_rows:
            raise ReportError(f"query: more than {max_rows:,} rows; add a LIMIT or raise --max-rows: {typed(text)}")
    finally:
        if timer is not None:
            timer.cancel()
        con.close()
    spec = ReportSpec("query", "", "Ad-hoc query", text.strip(), "", (), text)
    return ReportResult(spec, {}, columns, rows, types)
