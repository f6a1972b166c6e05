"""Reading an audit database, and exports that verify on their own.

An export carries every column, the log's meta row and all checkpoints, so
``verify_export`` can rebuild the tables in an in-memory DuckDB and run the same
checks as on the database. JSON Lines: a header line, one line per record (the
payload embedded as its canonical JSON), one line per checkpoint. Parquet: the
records as rows, the header and checkpoints as JSON in the file's key-value
metadata under ``policyengine_audit``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb

from ..jsontext import key_repeated_in, repeated_key
from .canonical import CanonicalJSONError, canonical_text
from .errors import AuditError
from .keys import PublicKey
from .log import Checkpoint, connect
from .sql import q
from .verify import VerifyReport, verify_connection

EXPORT_FORMAT = 1
RECORD_COLUMNS = ("seq", "ts", "origin", "event", "actor", "workflow", "run_id", "payload", "policy_hash",
                  "key_id", "leaf_hash")
_PARQUET_KEY = "policyengine_audit"
_CHUNK = 50_000
# Parquet columns by name, with the types DuckDB reads back from an export: nothing else is accepted.
PARQUET_SCHEMA = {"seq": ("BIGINT",), "ts": ("TIMESTAMP WITH TIME ZONE",), "payload": ("JSON", "VARCHAR")} | {
    name: ("VARCHAR",) for name in RECORD_COLUMNS if name not in ("seq", "ts", "payload")}
# The exact keys of each JSON Lines line: a key more (unsigned, unverified) or less is refused.
HEADER_KEYS = frozenset({"type", "format", "origin", "leaf_format", "first_key_id", "checkpoints"})
RECORD_KEYS = frozenset({"type", *RECORD_COLUMNS})
CHECKPOINT_KEYS = frozenset({"type", "origin", "tree_size", "root", "ts", "key_id", "signature"})


class _DuplicateKey(ValueError):
    pass


def strict_json(text: str | bytes) -> Any:
    """Parse JSON, refusing a repeated object key at any depth: which of the two values was signed would
    be the reader's guess."""
    try:
        value = json.loads(text)
    except ValueError:  # not JSON, or a number past int()'s digit limit: a repeated key is still named first
        if (key := _repeated_key_if_json(text)) is not None:
            raise _DuplicateKey(f"duplicate key {key!r}") from None
        raise
    if (key := key_repeated_in(text, value)) is not None:
        raise _DuplicateKey(f"duplicate key {key!r}")
    return value


def _repeated_key_if_json(text: str | bytes) -> str | None:
    try:
        return repeated_key(text)
    except ValueError:
        return None


@contextmanager
def open_readonly(path: str | os.PathLike[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to an audit database (one with the audit tables), with one-line errors."""
    con = connect(path, read_only=True)
    try:
        try:
            tables = {r[0] for r in con.execute(q("tables")).fetchall()}
        except duckdb.Error as err:
            raise AuditError(f"{path}: cannot read the database ({str(err).splitlines()[0]})") from None
        if not {"audit_log", "audit_checkpoints"} <= tables:
            raise AuditError(f"{path}: has no audit_log/audit_checkpoints tables; not a policyengine audit log")
        yield con
    finally:
        con.close()


def verify_database(
    path: str | os.PathLike[str], trusted: Sequence[PublicKey], *, anchor: Checkpoint | None = None,
) -> VerifyReport:
    with open_readonly(path) as con:
        return verify_connection(con, str(path), trusted, anchor=anchor)


def _header(con: duckdb.DuckDBPyConnection, source: str) -> dict[str, Any]:
    try:
        meta = con.execute(q("read_meta")).fetchone()
        checkpoints = [Checkpoint.from_row(r).to_json() for r in con.execute(q("checkpoints")).fetchall()]
    except duckdb.Error as err:
        raise AuditError(f"{source}: not a policyengine audit database ({str(err).splitlines()[0]})") from None
    if meta is None:
        raise AuditError(f"{source}: audit_meta is empty; nothing to export")
    return {"type": "header", "format": EXPORT_FORMAT, "origin": meta[0], "leaf_format": meta[1],
            "first_key_id": meta[2], "checkpoints": checkpoints}


def export_jsonl(db: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write the log as JSON Lines; returns the number of records."""
    count = 0
    with open_readonly(db) as con, open(out, "w", encoding="utf-8") as fh:
        header = _header(con, str(db))
        checkpoints = header.pop("checkpoints")
        fh.write(json.dumps(header, ensure_ascii=False) + "\n")
        first = 1
        while True:
            rows = con.execute(q("records_from"), {"first": first, "limit": _CHUNK}).fetchall()
            for row in rows:
                record = dict(zip(RECORD_COLUMNS, row, strict=True))
                payload = record.pop("payload")
                fh.write(json.dumps({"type": "record", **record}, ensure_ascii=False)[:-1] + f',"payload":{payload}}}\n')
            count += len(rows)
            if len(rows) < _CHUNK:
                break
            first = rows[-1][0] + 1
        fh.writelines(json.dumps({"type": "checkpoint", **cp}) + "\n" for cp in checkpoints)
    return count


def export_parquet(db: str | os.PathLike[str], out: str | os.PathLike[str]) -> int:
    """Write the records as Parquet with the header and checkpoints in its metadata."""
    with open_readonly(db) as con:
        header = json.dumps(_header(con, str(db)))
        try:
            con.execute(
                q("export_parquet"),
                {"out": str(out), "meta": header},
            )
            state = con.execute(q("log_state")).fetchone()
            return int(state[0]) if state else 0
        except duckdb.Error as err:
            raise AuditError(f"{out}: cannot write Parquet ({str(err).splitlines()[0]})") from None


def verify_export(
    path: str | os.PathLike[str], trusted: Sequence[PublicKey], *, anchor: Checkpoint | None = None,
) -> VerifyReport:
    """Verify a ``.jsonl`` or ``.parquet`` export without the database."""
    path = Path(path)
    started = time.perf_counter()  # the time reported covers loading the export, not only the checks
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as err:
        raise AuditError(f"{path}: cannot read export ({err.strerror})") from None
    con = duckdb.connect()
    try:
        con.execute(q("create_schema"))
        if magic == b"PAR1":
            _load_parquet(con, path)
        else:
            _load_jsonl(con, path)
        report = verify_connection(con, str(path), trusted, anchor=anchor)
        return replace(report, seconds=time.perf_counter() - started)
    finally:
        con.close()


def _load_header(con: duckdb.DuckDBPyConnection, header: Any, where: str) -> None:
    if not isinstance(header, dict) or header.get("type") != "header" or header.get("format") != EXPORT_FORMAT:
        raise AuditError(f"{where}: not a policyengine audit export (missing header)")
    _exact_keys(header, HEADER_KEYS, "header", where, optional=frozenset({"checkpoints"}))  # JSONL: own lines
    try:
        con.execute(q("import_meta"),
                    {"origin": header["origin"], "format": header["leaf_format"], "key_id": header["first_key_id"]})
        for cp in header.get("checkpoints", []):
            _insert_checkpoint(con, cp, where)
    except (KeyError, duckdb.Error) as err:
        raise AuditError(f"{where}: malformed export header ({err})") from None


def _exact_keys(item: dict[str, Any], expected: frozenset[str], what: str, where: str,
                optional: frozenset[str] = frozenset()) -> None:
    extra, missing = set(item) - expected, expected - optional - set(item)
    if extra:
        raise AuditError(f"{where}: {what} has unsigned field(s) {', '.join(sorted(extra))}; refusing it")
    if missing:
        raise AuditError(f"{where}: {what} lacks {', '.join(sorted(missing))}")


def _insert_checkpoint(con: duckdb.DuckDBPyConnection, cp: Any, where: str,
                       keys: frozenset[str] = CHECKPOINT_KEYS - {"type"}) -> None:
    if not isinstance(cp, dict):
        raise AuditError(f"{where}: malformed checkpoint (not an object)")
    _exact_keys(cp, keys, "checkpoint", where)
    problem = _typed_problem(cp, "tree_size")
    if problem is not None:
        raise AuditError(f"{where}: checkpoint {problem}; refusing the export")
    try:
        con.execute(q("insert_checkpoint"), {k: cp[k] for k in ("origin", "tree_size", "root", "ts", "key_id", "signature")})
    except (KeyError, TypeError, duckdb.Error) as err:
        raise AuditError(f"{where}: malformed checkpoint ({err})") from None


def _load_parquet(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    if any(c in str(path) for c in "*?["):  # read_parquet globs: 'audit[1].parquet' reads audit1.parquet if it exists
        raise AuditError(f"{path}: DuckDB reads '*', '?' and '[' in a Parquet file's path as a pattern, so other "
                         "files would be verified; copy it to a path without them")
    try:
        pairs = con.execute(q("parquet_meta"), {"path": str(path)}).fetchall()
        meta = dict(pairs)
        if _PARQUET_KEY not in meta:
            raise AuditError(f"{path}: Parquet file has no {_PARQUET_KEY} metadata; not an audit export")
        if sum(key == _PARQUET_KEY for key, _ in pairs) > 1:  # which header was meant would be the reader's guess
            raise AuditError(f"{path}: Parquet file has its {_PARQUET_KEY} metadata more than once; refusing the export")
        _load_header(con, strict_json(meta[_PARQUET_KEY]), str(path))
        _check_parquet_schema(con, path)
        con.execute(q("import_parquet"), {"path": str(path)})
    except _DuplicateKey as err:
        raise AuditError(f"{path}: export metadata has a {err}; refusing the export") from None
    except (duckdb.Error, ValueError) as err:
        raise AuditError(f"{path}: unreadable Parquet export ({str(err).splitlines()[0]})") from None


def _check_parquet_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """The records' columns, by name and type, exactly: columns are imported by name, never by position."""
    columns = con.execute(q("parquet_schema"), {"path": str(path)}).fetchall()
    names = [c[0] for c in columns]
    if len(set(names)) != len(names) or set(names) != set(PARQUET_SCHEMA):
        extra = sorted(set(names) - set(PARQUET_SCHEMA))
        missing = sorted(set(PARQUET_SCHEMA) - set(names))
        detail = "; ".join(part for part in (
            f"unexpected column(s) {', '.join(extra)}" if extra else "",
            f"missing column(s) {', '.join(missing)}" if missing else "",
            "a column name repeats" if len(set(names)) != len(names) else "") if part)
        raise AuditError(f"{path}: not the audit export schema ({detail})")
    for name, kind in columns:
        if kind not in PARQUET_SCHEMA[name]:
            raise AuditError(f"{path}: column {name} is {kind}, expected {PARQUET_SCHEMA[name][0]}")


def _load_jsonl(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    rows: list[tuple[Any, ...]] = []
    header_seen = False
    with open(path, encoding="utf-8", errors="strict") as fh:
        try:
            for number, line in enumerate(fh, 1):
                where = f"{path}:{number}"
                try:
                    item = strict_json(line)
                except _DuplicateKey as err:
                    raise AuditError(f"{where}: {err}; refusing the export") from None
                except ValueError as err:
                    raise AuditError(f"{where}: not JSON ({err})") from None
                if not header_seen:
                    _load_header(con, item, where)
                    header_seen = True
                elif isinstance(item, dict) and item.get("type") == "record":
                    rows.append(_record_row(item, where))
                elif isinstance(item, dict) and item.get("type") == "checkpoint":
                    _insert_checkpoint(con, item, where, CHECKPOINT_KEYS)
                else:
                    raise AuditError(f"{where}: expected a record or checkpoint line")
        except UnicodeDecodeError:
            raise AuditError(f"{path}: not a UTF-8 JSON Lines export") from None
    if not header_seen:
        raise AuditError(f"{path}: empty export")
    try:
        appender = con.appender("audit_log")
        appender.append_rows(rows)
        appender.flush()
    except duckdb.Error as err:
        raise AuditError(f"{path}: malformed record values ({str(err).splitlines()[0]})") from None


_TS_TEXT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")  # utc_now_text's form, the one signed
_NULLABLE = frozenset({"actor", "workflow", "run_id", "policy_hash"})


def _typed_problem(item: dict[str, Any], integer: str) -> str | None:
    """Which field of a record or checkpoint line is not of the type the writer signed. The database column
    would convert it (``true`` to 1, ``"7"`` to 7, nanoseconds cut off), so the line's text would verify as
    something it does not say."""
    for name, value in item.items():
        if name == "payload" or name == "type":
            continue
        if name == integer:
            ok = value.__class__ is int
        elif name == "ts":
            ok = value.__class__ is str and _TS_TEXT.fullmatch(value) is not None
        else:
            ok = value.__class__ is str or (value is None and name in _NULLABLE)
        if not ok:
            return f"{name} is {json.dumps(value)[:40]}, not as the log writes it"
    return None


def _record_row(item: dict[str, Any], where: str) -> tuple[Any, ...]:
    _exact_keys(item, RECORD_KEYS, "record", where)
    problem = _typed_problem(item, "seq")
    if problem is not None:
        raise AuditError(f"{where}: record {problem}; refusing the export")
    try:
        values = {name: item[name] for name in RECORD_COLUMNS}
        values["payload"] = canonical_text(values["payload"])
    except KeyError as err:
        raise AuditError(f"{where}: record lacks {err}") from None
    except CanonicalJSONError as err:
        raise AuditError(f"{where}: payload {err}") from None
    return tuple(values[name] for name in RECORD_COLUMNS)
