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
reports apply to payloads, in the transaction that commits the record; and
``audit verify`` computes them again from the payloads and reports a record
whose facts differ (or are missing, or extra) as ``modified``. A path reached
through a column is therefore read exactly as from the payload, by construction.

A path appears as a column from the first batch that holds it; records written
before had no value there, so their NULL is the payload's answer too. At most
``MAX_COLUMNS`` paths get a column; a report on a path without one reads the
payloads (slower, same result).
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import orjson

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


def _paths(structure: Any, prefix: tuple[str, ...], out: dict[str, None]) -> None:
    """Every object member path of a ``json_structure`` result (objects themselves included; not into arrays)."""
    if isinstance(structure, dict):
        for key, inner in structure.items():
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


def _add_columns(con: duckdb.DuckDBPyConnection, paths: list[str], known: list[str]) -> tuple[list[str], list[str]]:
    """Columns for the ``paths`` not yet known (up to MAX_COLUMNS); return (columns, the paths to fill)."""
    new = [p for p in paths if p not in set(known)][: max(0, MAX_COLUMNS - len(known))]
    for path in new:
        con.execute(q("facts_add_column").replace("{column}", quote_ident(path)))
    known = known + new
    return known, [p for p in dict.fromkeys([*FIXED_PATHS, *paths]) if p in set(known)]


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


class FactsWriter:
    """The writer's side: the table exists (created, and filled from the payloads for an older log) and grows per batch."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        if not has_facts(con):
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(q("facts_create"))
                for path in FIXED_PATHS:
                    con.execute(q("facts_add_column").replace("{column}", quote_ident(path)))
                _insert(con, "audit_log", list(FIXED_PATHS))  # a log written before audit_facts existed
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        self._columns = columns(con)

    @staticmethod
    def wanted(rows: list[tuple[Any, ...]]) -> bool:
        """Whether the batch ``rows`` (audit_log column order) has records with facts."""
        return any(row[3] == FACT_EVENT for row in rows)

    def add(self, con: duckdb.DuckDBPyConnection, source: str, rows: list[tuple[Any, ...]]) -> None:
        """Inside the writer's transaction: facts of the batch ``rows``, registered in DuckDB as ``source``."""
        if self.wanted(rows):
            self._columns = _insert(con, source, self._columns)

    def add_rows(self, con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> None:
        """``add`` for a small batch not registered in DuckDB: its values go in the statement."""
        if self.wanted(rows):
            self._columns = _insert_rows(con, rows, self._columns)


def first_mismatch(con: duckdb.DuckDBPyConnection) -> int | None:
    """The first seq whose facts row differs from its payload's values (missing, extra, or changed); None if all agree."""
    paths = columns(con)
    if not paths:
        return None
    stored = ", ".join(quote_ident(p) for p in paths)
    row = con.execute(q("facts_mismatch").replace("{columns}", stored), {"paths": paths}).fetchone()
    return None if row is None else int(row[0])
