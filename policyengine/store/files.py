"""The one place that opens DuckDB files, names the default paths and loads packaged ``.sql`` files.

Every area that keeps state in a DuckDB file (audit log, run state, budget
ledger, reports) opens it through ``open_duckdb`` so that lock conflicts,
directories and non-DuckDB files read as one clean line, and looks up its SQL
through ``packaged_sql`` so the text ships inside the wheel.
"""

from __future__ import annotations

import os
import re
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb

DEFAULT_DB_PATH = Path("policyengine.duckdb")
"""The embedded store (audit log, runs, budgets) when no ``--db``/``--state`` is given: in the working directory."""

DEFAULT_KEY_PATH = Path("policyengine.key")
"""The audit signing key next to it."""


DIRECTORY_NAME = "policyengine.directory.yaml"
"""The deployment's user directory (who may approve what), beside the database."""

MASK_NAME = "policyengine.mask.yaml"
"""The masking config every writer applies, beside the database."""


class StoreError(Exception):
    """State that cannot be opened or used (one line, names the file or server)."""


def beside_database(db: str | os.PathLike[str], name: str) -> Path:
    """The file ``name`` in the folder that really holds the database ``db`` (the user directory, the masking config).

    What sits beside the database is trusted, so the path is resolved first: a
    symlink to the database in a folder of the caller's does not make the
    caller's files the deployment's. A hard link cannot be told from the
    original, so a database file with more than one link is refused
    (``StoreError``) rather than guessed at. A database not yet created has none.
    """
    real = Path(os.path.realpath(db))
    try:
        links = real.stat().st_nlink
    except FileNotFoundError:
        links = 1
    except OSError as exc:
        raise StoreError(f"{db}: cannot read the database file to find its {name} ({exc.strerror})") from None
    if links > 1:
        raise StoreError(f"{db}: the database file has {links} hard links, so the {name} beside it cannot be "
                         f"trusted; keep one link (open it by its path, or through a symlink)")
    try:
        here = Path(os.getcwd())
    except OSError:  # the working folder was removed
        here = None
    if real.parent == here:  # the working folder: named as the user wrote it (the same folder, not a path)
        return Path(name)
    return real.parent / name


_LOCK = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


@cache
def packaged_sql(package: str, name: str) -> str:
    """The text of ``<package>/sql/<name>.sql`` (``name`` may hold a sub-folder: ``postgres/budget_reserve``)."""
    return resources.files(package).joinpath("sql", *f"{name}.sql".split("/")).read_text(encoding="utf-8")


def describe_open_error(path: str | os.PathLike[str], error: BaseException, noun: str = "database") -> str:
    """What is wrong with a DuckDB file that would not open, as ``PATH: reason`` (the path named once).

    DuckDB's own text repeats the (absolute) path and ends with links, so the
    common causes are restated and anything else keeps its first line with the
    path taken out. ``noun`` is what the caller opened it as (``audit database``).
    """
    p = Path(path)
    text = str(error).strip().splitlines()
    msg = text[0] if text else type(error).__name__
    low = msg.lower()
    m = _LOCK.search(str(error))
    if m or "lock" in low:
        who = f"another process (pid {m.group(2)})" if m else "another process"
        return (f"{p}: {noun} is in use by {who}; one process at a time may open it "
                "(wait for it to finish, or read a snapshot or sealed copy)")
    if p.is_dir() or "is a directory" in low:
        return f"{p}: is a directory, not a DuckDB database file"
    if "not a valid duckdb database" in low or "not a duckdb database" in low:
        return f"{p}: not a DuckDB database file"
    msg = re.sub(r"^[A-Za-z ]+Error: ", "", msg)
    for shown in sorted({str(p.resolve()), str(p.absolute()), str(p)}, key=len, reverse=True):
        msg = msg.replace(f' "{shown}"', "").replace(f'"{shown}"', "the file").replace(shown, "the file")
    return f"{p}: cannot open {noun} ({msg})"


def open_duckdb(path: str | os.PathLike[str], *, read_only: bool = False, create: bool = True,
                external_access: bool = True, utc: bool = True, noun: str = "database") -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file ``path`` (``:memory:`` for a private in-memory database).

    ``create=False`` (or ``read_only``) refuses a file that does not exist instead
    of creating an empty one; ``external_access=False`` switches off file access
    from SQL (for databases opened only to be read as evidence). ``read_only``
    opens through ``open_evidence``: a file that stores code is refused. Errors are
    ``StoreError`` with one line naming the file as ``noun``; with ``utc`` the
    session's time zone is UTC.
    """
    if str(path) == ":memory:":
        con = duckdb.connect(":memory:")
        if utc:
            con.execute("SET TimeZone = 'UTC'")
        return con
    p = Path(path)
    if p.is_dir():
        raise StoreError(f"{p}: is a directory, not a DuckDB database file")
    if (read_only or not create) and not p.exists():
        raise StoreError(f"{p}: no such {noun}")
    if read_only:
        return open_evidence(p, external_access=external_access, utc=utc, noun=noun)
    config = {} if external_access else {"enable_external_access": False}
    try:
        con = duckdb.connect(str(p), read_only=read_only, config=config)
    except duckdb.Error as error:
        raise StoreError(describe_open_error(p, error, noun)) from None
    if utc:
        con.execute("SET TimeZone = 'UTC'")
    return con


# Objects a DuckDB file can store that run code inside whoever reads it: a view answers for a table, a
# macro replaces a built-in function (``timezone``) or catalog function (``duckdb_tables``) of a reader whose
# default catalog is the file, a generated column computes its value on read. Asked of the built-in catalog
# functions by their qualified names (``system.main``), which no macro in the file can shadow.
_STORED_CODE = """
SELECT 'view ' || view_name FROM system.main.duckdb_views() WHERE database_name = $db AND NOT internal
UNION ALL
SELECT function_type || ' ' || function_name FROM system.main.duckdb_functions()
WHERE database_name = $db AND NOT internal
UNION ALL
SELECT 'generated column ' || table_name || '.' || column_name FROM system.main.duckdb_columns()
WHERE database_name = $db AND is_generated
"""


def refuse_stored_code(con: duckdb.DuckDBPyConnection, database: str, path: str | os.PathLike[str]) -> None:
    """``StoreError`` when the file open as ``database`` stores views, macros or generated columns.

    policyengine writes none; a file read as evidence (``audit verify``, reports,
    ``query``) that holds one could show each reader what it chooses.
    """
    found = sorted({row[0] for row in con.execute(_STORED_CODE, {"db": database}).fetchall()})
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise StoreError(f"{path}: stores {shown}, which would run inside whatever reads it; policyengine writes "
                         "no views, macros or generated columns, so the file is not read")


def open_evidence(path: Path, *, external_access: bool = False, utc: bool = True,
                  noun: str = "database") -> duckdb.DuckDBPyConnection:
    """``path`` read-only, refused when it stores code (``refuse_stored_code``): every read-only reader
    gets plain tables."""
    config = {} if external_access else {"enable_external_access": False}
    try:
        con = duckdb.connect(str(path), read_only=True, config=config)
    except duckdb.Error as error:
        raise StoreError(describe_open_error(path, error, noun)) from None
    try:
        database = con.execute("SELECT system.main.current_database()").fetchone()[0]
        refuse_stored_code(con, database, path)
        if utc:
            con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


def open_duckdb_set(paths: list[Path], tables: tuple[str, ...], *,
                    skip_in_use: bool = False) -> tuple[duckdb.DuckDBPyConnection, list[str]]:
    """Read several DuckDB files as one: each attached read-only, each of ``tables`` a view over them all.

    A private in-memory database attaches every file (``seg0``, ``seg1``, ...) and
    defines ``table`` as the ``UNION ALL BY NAME`` of the files that have it; file
    access from SQL is then switched off, so nothing can attach more or write.
    With ``skip_in_use``, a file another process is writing (a live segment) is
    left out and named in the returned notes; otherwise it is a ``StoreError``.
    """
    con = open_duckdb(":memory:")
    notes: list[str] = []
    attached: list[str] = []
    try:
        for i, path in enumerate(paths):
            alias = f"seg{i}"
            try:
                con.execute(f"ATTACH $path AS {alias} (READ_ONLY)", {"path": str(path)})
            except duckdb.Error as error:
                reason = describe_open_error(path, error)
                if skip_in_use and "in use by" in reason:
                    notes.append(f"{path}: skipped, in use by a writer (a live segment is read once it is sealed)")
                    continue
                raise StoreError(reason) from None
            refuse_stored_code(con, alias, path)
            attached.append(alias)
        for table in tables:
            present = [a for a in attached if con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE database_name = $db AND table_name = $t",
                {"db": a, "t": table}).fetchone()[0]]
            if present:  # names are ours (seg<i>) and the caller's constants: never user text
                union = " UNION ALL BY NAME ".join(f"SELECT * FROM {a}.main.{table}" for a in present)
                con.execute(f"CREATE VIEW {table} AS {union}")
        con.execute("SET enable_external_access = false")
    except BaseException:
        con.close()
        raise
    return con, notes
