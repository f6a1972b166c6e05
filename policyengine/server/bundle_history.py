"""The last bundle a server's audit log says it activated: the floor a restart may not go below.

While running, ``PolicyHolder`` refuses a bundle older than the active one; a
restart would forget that, so whoever can write the bundle path could bring a
revoked rule back by restarting. The audit log remembers: its newest
``policy_activated`` record that names a bundle is read at start (read-only,
before the log is opened for writing, through ``reporting.db`` as every reader
of the log does) and the first bundle loaded is compared with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ..audit.segments import series_segments
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

    def describe(self) -> dict[str, Any]:
        """``rollback_from`` of the ``policy_activated`` record of a rollback (docs/audit-events.md)."""
        return {"bundle": self.bundle, "bundle_sha256": self.bundle_sha256, "bundle_created": self.bundle_created,
                "signer": self.signer, "seq": self.seq, "log": self.log}


def last_bundle(db: str | Path, *, rolled: bool) -> LastBundle | None:
    """The last activated bundle recorded in ``db`` (or, ``rolled``, in its series of segments), or None.

    Activations of ``--rules`` (and any without ``bundle_created``, written before
    records named it) are passed over: they say nothing about how old a bundle may be. ``ReportError`` when a file is there but cannot be read (in use,
    not DuckDB, stores code): the server then does not start, rather than start
    without knowing what it served before.
    """
    path = Path(db)
    files = [p for _, p in reversed(series_segments(path.parent, path.stem))] if rolled else [path]
    for file in files:
        if not file.is_file():
            continue
        found = _last_in(file, shown=str(path.with_name(file.name)))
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
    for seq, payload in rows:  # newest first
        try:
            body = json.loads(payload) if payload else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict) or body.get("source") != "bundle" or body.get("bundle_created") is None:
            continue  # --rules, or written before activations named the bundle's creation time
        return LastBundle(_text(body.get("bundle")), _text(body.get("bundle_sha256")),
                          _text(body.get("bundle_created")), _text(body.get("signer")), int(seq), shown)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
