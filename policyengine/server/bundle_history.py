"""The last bundle a server's audit log says it activated: the floor a restart may not go below.

While running, ``PolicyHolder`` refuses a bundle older than the active one; a
restart would forget that, so whoever can write the bundle path could bring a
revoked rule back by restarting. The audit log remembers: its newest
``policy_activated`` record that names a bundle is read at start (read-only,
before the log is opened for writing, through ``reporting.db`` as every reader
of the log does) and the first bundle loaded is compared with it. It is read
from every file ``--db`` may have been written as (the one file, its rolled
segments, each worker's file or segments), whatever the layout of this start:
a restart with ``--roll-*`` or ``--workers`` added or dropped must not forget it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ..audit.segments import glob_escape, series_segments, worker_db_path, worker_series
from ..reporting.db import first_line, has_table, open_readonly, sql
from ..reporting.errors import ReportError


@dataclass(frozen=True)
class LastBundle:
    """The bundle of the newest ``policy_activated`` record that names one, and where that record is."""

    bundle: str | None
    bundle_sha256: str | None
    bundle_created: str | None  # the signed manifest's creation time, as recorded
    signer: str | None
    seq: int
    log: str  # the audit file holding the record (a segment, when the log is rolled)
    ts_us: int = 0  # when the record was written (microseconds since 1970): the newest of several files wins

    def describe(self) -> dict[str, Any]:
        """``rollback_from`` of the ``policy_activated`` record of a rollback (docs/audit-events.md)."""
        return {"bundle": self.bundle, "bundle_sha256": self.bundle_sha256, "bundle_created": self.bundle_created,
                "signer": self.signer, "seq": self.seq, "log": self.log}


def last_bundle(db: str | Path) -> LastBundle | None:
    """The last activated bundle recorded in any audit file of ``--db`` ``db``, or None.

    Each series (``db`` itself, its segments ``<stem>.NNNNNN.duckdb``, each
    worker's ``<stem>.worker<i>`` file and segments) is read newest first; of
    what they hold, the record written last wins. Activations of ``--rules`` (and
    any without ``bundle_created``, written before records named it) are passed
    over: they say nothing about how old a bundle may be. ``ReportError`` when a
    file is there but cannot be read (in use, not DuckDB, stores code): the
    server then does not start, rather than start without knowing what it served before.
    """
    path = Path(db)
    found = [bundle for files in _series(path) if (bundle := _newest(files, path)) is not None]
    return max(found, key=lambda bundle: bundle.ts_us, default=None)


def _series(path: Path) -> list[list[Path]]:
    """The audit files ``serve --db path`` writes in any layout, by series, each newest first."""
    folder, stem = path.parent, path.stem
    workers = re.compile(rf"^{re.escape(stem)}\.worker(\d+)\.")
    ids = sorted({int(m.group(1)) for p in folder.glob(f"{glob_escape(stem)}.worker*")
                  if (m := workers.match(p.name))})
    series = [[path], [p for _, p in reversed(series_segments(folder, stem))]]
    for worker in ids:
        series += [[worker_db_path(path, worker)],
                   [p for _, p in reversed(series_segments(folder, worker_series(stem, worker)))]]
    return series


def _newest(files: list[Path], db: Path) -> LastBundle | None:
    """The newest bundle activation of one series (``files`` newest first)."""
    for file in files:
        if file.is_file():
            found = _last_in(file, shown=str(db.with_name(file.name)))
            if found is not None:
                return found
    return None


def _last_in(file: Path, *, shown: str) -> LastBundle | None:
    con = open_readonly(file)
    try:
        rows = con.execute(sql("policy_activations")).fetchall() if has_table(con, "audit_log") else []
    except duckdb.Error as error:
        raise ReportError(f"{shown}: cannot read its policy_activated records ({first_line(error)})") from None
    finally:
        con.close()
    for seq, ts_us, payload in rows:  # newest first
        try:
            body = json.loads(payload) if payload else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict) or body.get("source") != "bundle" or body.get("bundle_created") is None:
            continue  # --rules, or written before activations named the bundle's creation time
        return LastBundle(_text(body.get("bundle")), _text(body.get("bundle_sha256")),
                          _text(body.get("bundle_created")), _text(body.get("signer")), int(seq), shown,
                          int(ts_us))
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
