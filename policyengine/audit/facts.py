"""audit_facts: the payload values the reports read, as columns, derived from the signed payload.

Bias and drift reports read a few values of each ``model_call`` payload (the
model, the outcome, the label, a group or drift path). Parsing a million JSON
payloads per report costs about a second; reading columns costs a few
hundredths. So the writer keeps, next to ``audit_log``, one ``audit_facts`` row
per ``model_call`` record: ``seq``, ``ts`` and one VARCHAR column per JSON path
met in those payloads, named by the path exactly as the reports spell it
(``$."subject"."vendor_region"``: ``reporting.audit_source.json_path``).

The payload stays the source of truth: every value is computed from the
record's own payload by DuckDB's ``json_extract_string``, the very function the
reports apply to payloads (or printed by Python exactly as it prints them); and
``audit verify`` computes them again from the payloads and reports a record
whose facts differ (or are missing, or extra) as ``modified``. A path reached
through a column is therefore read exactly as from the payload, by construction.

Facts are written in the transaction that commits their records, except behind
a server's answers (the gateway's ``model_call`` records), where they follow in
a later one, on a connection of their own beside the records' transactions: the
answer waits for the records and their checkpoint only, and a facts row costs
DuckDB as much as the record itself (its cost grows with the columns a
transaction touches). So the last records may have no facts yet,
never a record before a facts row. Readers use the facts only when none is
behind (``behind``); otherwise they read the payloads; the next writer to open
the log fills them in.

A path appears as a column from the first batch that holds it; records written
before had no value there, so their NULL is the payload's answer too. At most
``MAX_COLUMNS`` paths get a column; a report on a path without one reads the
payloads (slower, same result).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import duckdb
import orjson

from .canonical import canonical_number
from .sql import q

FACT_EVENT = "model_call"
FIXED_PATHS = ('$."model"', '$."outcome"', '$."label"')  # always columns: every report filters on them
MAX_COLUMNS = 200


def path_of(keys: tuple[str, ...]) -> str:
    """The JSON path of nested ``keys``, quoted as ``reporting.audit_source.json_path`` quotes a dotted path."""
    return "$." + ".".join('"' + k.replace('"', '\\"') + '"' for k in keys)


def quote_ident(name: str) -> str:
    """A column name as a quoted SQL identifier (identifiers cannot be bound parameters)."""
    return '"' + name.replace('"', '""') + '"'


def has_facts(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(q("facts_table")).fetchone()[0])


def columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The path columns of ``audit_facts`` in table order (empty when there is no such table)."""
    return [r[0] for r in con.execute(q("facts_columns")).fetchall()]


def columnable(key: str) -> bool:
    """Whether DuckDB's JSON paths can name member ``key``: not the empty key, nor one with a backslash (their
    paths are errors, which would fail the writer's transaction); such members and what is below get no column."""
    return bool(key) and "\\" not in key


def _paths(structure: Any, prefix: tuple[str, ...], out: dict[str, None]) -> None:
    """Every object member path of a ``json_structure`` result (objects themselves included; not into arrays)."""
    if isinstance(structure, dict):
        for key, inner in structure.items():
            if not columnable(key):
                continue
            keys = (*prefix, key)
            out[path_of(keys)] = None
            _paths(inner, keys, out)


def _discover(con: duckdb.DuckDBPyConnection, source: str) -> list[str]:
    """The paths of the ``model_call`` payloads in ``source`` (a table or registered view), in first-seen order."""
    found: dict[str, None] = {}
    for (structure,) in con.execute(q("facts_structures").replace("{source}", source)).fetchall():
        _paths(json.loads(structure), (), found)
    return list(found)


def payload_paths(payload: str) -> list[str]:
    """The member paths of one payload's JSON text, as ``_discover`` finds them with ``json_structure``."""
    found: dict[str, None] = {}
    _paths(orjson.loads(payload), (), found)
    return list(found)


class _Unsure(Exception):
    """A value whose ``json_extract_string`` text Python does not reproduce for certain: DuckDB computes it."""


# DuckDB prints JSON with yyjson: RFC 8785's escapes, but \u00XX in upper case (and DEL, / and non-ASCII as is).
_YY_ESCAPES = {c: f"\\u{c:04X}" for c in range(0x20)} | {
    0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_YY_PLAIN = re.compile(r'[\x00-\x1f"\\]')  # a string without these prints as it is, between quotes
_MAX_EXACT_INT = 2**53


def _yy_number(value: int | float) -> str:
    """A canonical payload's number as yyjson prints it back: integers as they are, other doubles as RFC 8785
    prints them but with no ``+`` in the exponent (``1e21``). Integers beyond 2**53 (canonical text writes
    those below 1e21 as long integer literals, which yyjson may read as integers or doubles) are left to DuckDB."""
    if type(value) is int:
        if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
            return str(value)
        raise _Unsure
    if value.is_integer() and abs(value) < 1e21:
        raise _Unsure
    return canonical_number(value).replace("e+", "e")


def _yy_text(value: Any) -> str:
    """``value`` (parsed from canonical text) printed as DuckDB's ``json_extract_string`` prints a nested value."""
    if isinstance(value, str):
        return '"' + (value if _YY_PLAIN.search(value) is None else value.translate(_YY_ESCAPES)) + '"'
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict):
        return "{" + ",".join(_yy_text(k) + ":" + _yy_text(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_yy_text(v) for v in value) + "]"
    return _yy_number(value)


def _facts_of(value: dict[str, Any], path: str, out: dict[str, str | None], text: bool) -> str | None:
    """Fill ``out`` with the member paths of object ``value`` (at JSON path ``path``) and their facts; with
    ``text``, return ``value`` printed as ``_yy_text`` prints it.

    One pass, bottom up: a nested object's text is joined from its members' texts as they are found, so no
    value is printed twice (printing each nested object from scratch, then its members again, cost ~85 µs a
    gateway ``model_call`` payload: 256 of them held a server's next answer for 20-60 ms).
    """
    parts: list[str] | None = [] if text else None
    for key, inner in value.items():
        if columnable(key):
            inner_path = path + '."' + key.replace('"', '\\"') + '"'  # as path_of quotes each key
            if isinstance(inner, str):
                out[inner_path] = inner
                inner_text = _yy_text(inner) if text else ""
            elif inner is None:
                out[inner_path] = None
                inner_text = "null"
            elif isinstance(inner, dict):
                out[inner_path] = None  # its place: an object's path comes before its members'
                out[inner_path] = inner_text = _facts_of(inner, inner_path, out, True)  # type: ignore[assignment]
            else:
                out[inner_path] = inner_text = _yy_text(inner)
        elif text:
            inner_text = _yy_text(inner)
        else:
            continue  # no column for it or below it, and no text wanted of this object
        if parts is not None:
            parts.append(_yy_text(key) + ":" + inner_text)
    return None if parts is None else "{" + ",".join(parts) + "}"


def payload_facts(payload: str) -> dict[str, str | None] | None:
    """Every member path of a canonical payload (``payload_paths``) with its value as ``json_extract_string``
    reads it; None when some value is one Python cannot print exactly as DuckDB does (then DuckDB computes them).

    The facts must be the very text the reports would read from the payload (``audit verify`` compares them),
    so this mirrors DuckDB's printing only where it is certain; a property test holds it to DuckDB's output.
    """
    found: dict[str, str | None] = {}
    try:
        _facts_of(orjson.loads(payload), "$", found, False)
    except _Unsure:
        return None
    return found


def _add_columns(con: duckdb.DuckDBPyConnection, paths: list[str], known: list[str]) -> tuple[list[str], list[str]]:
    """Columns for the ``paths`` not yet known (up to MAX_COLUMNS); return (columns, the paths to fill)."""
    have = set(known)  # once: in the comprehensions, set(known) was built again for every path of every commit
    new = [p for p in paths if p not in have][: max(0, MAX_COLUMNS - len(known))]
    for path in new:
        con.execute(q("facts_add_column").replace("{column}", quote_ident(path)))
    have.update(new)
    return known + new, [p for p in dict.fromkeys([*FIXED_PATHS, *paths]) if p in have]


def _filled(query: str, wanted: list[str]) -> str:
    targets = ", ".join(quote_ident(p) for p in wanted)
    values = ", ".join(f"v[{i}]" for i in range(1, len(wanted) + 1))
    return q(query).replace("{columns}", targets).replace("{values}", values)


def _insert(con: duckdb.DuckDBPyConnection, source: str, known: list[str]) -> list[str]:
    """Add columns for new paths of ``source``'s model_call records and insert their facts; return the columns."""
    known, wanted = _add_columns(con, _discover(con, source), known)
    con.execute(_filled("facts_insert", wanted).replace("{source}", source), {"paths": wanted})
    return known


def _insert_rows(con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], known: list[str]) -> list[str]:
    """``_insert`` for a few records passed as values: paths found in Python, one statement, nothing registered."""
    facts = [row for row in rows if row[3] == FACT_EVENT]
    paths = list(dict.fromkeys(p for row in facts for p in payload_paths(row[7])))
    known, wanted = _add_columns(con, paths, known)
    con.execute(_filled("facts_insert_values", wanted), {
        "paths": wanted, "seqs": [r[0] for r in facts], "tss": [r[1] for r in facts], "payloads": [r[7] for r in facts],
    })
    return known


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


class FactsWriter:
    """The writer's side: the table exists (created, and filled from the payloads for an older log) and grows per batch.

    A small batch whose values ``payload_facts`` prints goes through an appender (no SQL statement to parse
    and bind: that statement was most of a one-record ``model_call`` commit); any other through DuckDB's
    ``json_extract_string``. Facts are always written in seq order, so the records without them (a server
    writes them when no answer waits: server/audit_writer.py) are a tail, which opening the log fills in.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection):
        if not has_facts(con):
            with _transaction(con):
                con.execute(q("facts_create"))
                for path in FIXED_PATHS:
                    con.execute(q("facts_add_column").replace("{column}", quote_ident(path)))
                _insert(con, "audit_log", list(FIXED_PATHS))  # a log written before audit_facts existed
        else:
            missing, high = con.execute(q("facts_behind")).fetchone()
            if missing:  # its writer stopped between answering and writing them: the payloads say what they are
                with _transaction(con):
                    _insert(con, f"(SELECT * FROM audit_log WHERE seq > {int(high)})", columns(con))
        self._columns = columns(con)
        # per connection (the writer's records cursor, and its facts cursor): (appender, the columns it was made for)
        self._appenders: dict[int, tuple[Any, list[str]]] = {}

    @staticmethod
    def wanted(rows: list[tuple[Any, ...]]) -> bool:
        """Whether the batch ``rows`` (audit_log column order) has records with facts."""
        return any(row[3] == FACT_EVENT for row in rows)

    def add(self, con: duckdb.DuckDBPyConnection, source: str, rows: list[tuple[Any, ...]]) -> None:
        """Inside the writer's transaction: facts of the batch ``rows``, registered in DuckDB as ``source``."""
        if self.wanted(rows):
            self._columns = _insert(con, source, self._columns)

    def add_rows(self, con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]],
                 prepared: Mapping[int, dict[str, str | None] | None] | None = None) -> None:
        """``add`` for a small batch not registered in DuckDB: appended as values where Python prints them all
        (``prepared``: ``payload_facts`` of some of them by seq, computed before the transaction)."""
        records = [row for row in rows if row[3] == FACT_EVENT]
        if not records:
            return
        values = [payload_facts(row[7]) if prepared is None or row[0] not in prepared else prepared[row[0]]
                  for row in records]
        if any(found is None for found in values):
            self._columns = _insert_rows(con, records, self._columns)
            return
        self._columns, _ = _add_columns(con, list(dict.fromkeys(p for found in values for p in found)), self._columns)
        appender, made_for = self._appenders.get(id(con), (None, None))
        if appender is None or made_for != self._columns:
            appender = con.appender("audit_facts", columns=["seq", "ts", *self._columns])
            self._appenders[id(con)] = (appender, self._columns)
        appender.append_rows([(row[0], row[1], *map(found.get, self._columns))  # type: ignore[union-attr]
                              for row, found in zip(records, values)])
        appender.flush()

    def clear(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drop rows a failed flush left buffered in ``con``'s appender (its transaction rolled back)."""
        appender, _ = self._appenders.get(id(con), (None, None))
        if appender is not None:
            appender.clear()


def behind(con: duckdb.DuckDBPyConnection) -> int:
    """How many ``model_call`` records lie past the last facts row (their facts are not written yet: see
    ``FactsWriter``); a reader uses the facts only when this is 0, and reads the payloads otherwise."""
    return int(con.execute(q("facts_behind")).fetchone()[0])


def first_mismatch(con: duckdb.DuckDBPyConnection) -> int | None:
    """The first seq whose facts row differs from its payload's values (missing, extra, or changed); None if all
    agree. Records past the last facts row (``behind``) are not yet written, not missing."""
    paths = columns(con)
    if not paths:
        return None
    stored = ", ".join(quote_ident(p) for p in paths)
    row = con.execute(q("facts_mismatch").replace("{columns}", stored), {"paths": paths}).fetchone()
    return None if row is None else int(row[0])
