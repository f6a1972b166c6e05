"""Connections, packaged SQL and CSV loading shared by every report.

All reporting SQL lives in ``.sql`` files beside this module and is run with
bound parameters. Audit databases are always opened read-only, with file access
from SQL switched off, so neither a report nor an ad-hoc query can change the
evidence it reads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb

from ..store.files import StoreError, open_duckdb, open_duckdb_set, packaged_sql
from .errors import ReportError

ColumnKind = Literal["numeric", "categorical", "mixed", "empty"]


def sql(name: str) -> str:
    """The text of ``policyengine/reporting/sql/<name>.sql``."""
    return packaged_sql(__package__, name)


def first_line(error: BaseException) -> str:
    """DuckDB messages span lines (candidates, carets): keep the part a person needs."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def memory() -> duckdb.DuckDBPyConnection:
    """A private in-memory database for offline (CSV) metrics."""
    return open_duckdb(":memory:")


def check_db_path(path: str | Path) -> Path:
    """``path`` as a Path; a ``ReportError`` if it is missing or a directory."""
    p = Path(path)
    if p.is_dir():
        raise ReportError(f"{p}: is a directory, not a DuckDB database file")
    if not p.exists():
        raise ReportError(f"{p}: database file not found (pass --db FILE)")
    return p


def open_readwrite(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open an existing audit database for writing (monitor, unblock); clear errors as ``open_readonly``."""
    try:
        return open_duckdb(check_db_path(path), create=False)
    except StoreError as e:
        raise ReportError(str(e)) from None


AUDIT_TABLES = ("audit_log", "audit_checkpoints", "audit_meta")


def open_readonly(path: str | Path, *, external_access: bool = False,
                  skipped: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """Open an audit database read-only; a clear ``ReportError`` if it is missing or not DuckDB.

    A folder is read as one database: every ``*.duckdb`` file in it (rolled
    segments, one series per worker), its audit tables the union of theirs. A
    file its writer holds (the live segment) is left out, with a ``note:`` on
    stderr, or, given ``skipped``, a note there (for a page to say so).
    """
    p = Path(path)
    files = sorted(p.glob("*.duckdb")) if p.is_dir() else []
    if files:  # a folder without any is refused below as a directory
        try:
            con, notes = open_duckdb_set(files, AUDIT_TABLES, skip_in_use=True)
        except StoreError as e:
            raise ReportError(str(e)) from None
        if skipped is not None:
            skipped.extend(notes)
        else:
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
        return con
    try:
        return open_duckdb(check_db_path(path), read_only=True, external_access=external_access)
    except StoreError as e:
        raise ReportError(str(e)) from None


def one(con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None) -> tuple[Any, ...]:
    """The single row of an aggregate query (DuckDB always returns one)."""
    row = con.execute(query, params or {}).fetchone()
    if row is None:
        raise ReportError("internal error: an aggregate query returned no row")
    return row


@contextmanager
def unordered_inserts(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Let DuckDB insert in parallel without keeping row order (restored afterwards).

    Only for inputs whose rows carry their own position (the audit ``seq``); CSV
    loads keep the order, because their line numbers are ``rowid + 2``.
    """
    before = one(con, "SELECT current_setting('preserve_insertion_order')")[0]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute("SET preserve_insertion_order = " + ("true" if before else "false"))


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(one(con, sql("has_table"), {"name": name})[0] > 0)


def require_audit_log(con: duckdb.DuckDBPyConnection, path: str | Path) -> None:
    if not has_table(con, "audit_log"):
        raise ReportError(f"{path}: has no audit_log table (is this a policyengine audit database?)")


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    """What a CSV column holds: its kind and, for mixed columns, the first offender."""

    name: str
    kind: ColumnKind
    values: int  # non-empty cells
    empty: int  # empty cells
    first_empty_line: int | None
    first_text: str | None  # first non-numeric value, when the column also holds numbers
    first_text_line: int | None


@dataclass(frozen=True, slots=True)
class CsvTable:
    """A CSV file loaded (as text) into the temp table ``csv_raw``."""

    path: str
    columns: tuple[str, ...]
    rows: int

    def require(self, column: str, role: str) -> None:
        if column not in self.columns:
            shown = ", ".join(self.columns[:12]) + (" ..." if len(self.columns) > 12 else "")
            raise ReportError(f"{self.path}: no column {column!r} for {role} (columns: {shown})")


def load_csv(con: duckdb.DuckDBPyConnection, path: str | Path) -> CsvTable:
    """Load ``path`` into ``csv_raw`` with every cell as text; typing is decided per column."""
    p = Path(path)
    if not p.is_file():
        raise ReportError(f"{p}: CSV file not found")
    if p.stat().st_size == 0:
        raise ReportError(f"{p}: is empty (expected a header line and data rows)")
    try:
        con.execute(sql("csv_load"), {"path": str(p)})
    except duckdb.Error as e:
        if "not utf-8 encoded" in str(e):
            raise ReportError(f"{p}: is not UTF-8 text ({first_line(e)}); save it as UTF-8") from None
        raise ReportError(f"{p}: cannot read as CSV ({first_line(e)})") from None
    columns = tuple(r[0] for r in con.execute(sql("csv_columns")).fetchall())
    if len(columns) == 1 and any(sep in columns[0] for sep in (",", ";", "\t", "|")):
        raise ReportError(
            f"{p}: could not split the header {columns[0]!r} into columns "
            "(do all rows have the same number of fields?)"
        )
    rows = one(con, "SELECT count(*) FROM csv_raw")[0]
    if rows == 0:
        raise ReportError(f"{p}: has a header but no data rows")
    return CsvTable(str(p), columns, rows)


def profile(con: duckdb.DuckDBPyConnection, table: CsvTable, column: str) -> ColumnProfile:
    """Decide whether a loaded CSV column is numeric, categorical, mixed or empty."""
    row = one(con, sql("csv_profile"), {"column": column})
    values, numeric, empty, first_empty, first_text, first_text_line = row
    if values == 0:
        kind: ColumnKind = "empty"
    elif numeric == values:
        kind = "numeric"
    elif numeric == 0:
        kind = "categorical"
    else:
        kind = "mixed"
    return ColumnProfile(column, kind, values, empty, first_empty, first_text, first_text_line)
