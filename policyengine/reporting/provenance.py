"""Where a report's numbers came from, and whether that audit log verified.

Every HTML report says which log it read and what ``audit verify`` says about
that log, with the newest signed checkpoint it was verified against (tree size,
root, signing key), so a reader can tell evidence from numbers of unknown
origin. A report on CSV files says so instead. Verification needs a trusted
public key: the one given, else ``policyengine.key.pub.pem`` in the current
directory (as ``audit verify`` does); without one the report says the log was
not verified and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ..audit.errors import AuditError
from ..audit.export import verify_database
from ..audit.keys import DEFAULT_KEY_PATH, PublicKey, load_public_key, public_key_path
from ..audit.log import Checkpoint
from ..audit.sql import q
from .db import open_readonly
from .errors import ReportError


_SIGNED_KINDS = frozenset({"audit log", "audit segments"})


@dataclass(frozen=True, slots=True)
class Provenance:
    """The source of a report. ``verified`` is None when the source is not an audit log or was not checked."""

    source: str
    kind: str  # "audit log" | "files"
    verified: bool | None
    summary: str
    checkpoint: dict[str, Any] | None = None
    records: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "verified": self.verified, "summary": self.summary,
                "checkpoint": self.checkpoint, "records": self.records}

    def html(self) -> str:
        """A box at the top of the page: source, verification result, checkpoint."""
        signed = self.kind in _SIGNED_KINDS  # a log or a folder of segments: verified, or FAILED in red
        tone = {True: "ok", False: "bad", None: "warn"}[self.verified] if signed else "muted"
        verdict = {True: "verified", False: "FAILED verification", None: "not verified"}[self.verified]
        head = (f"<strong>Source:</strong> {escape(self.kind)} <code>{escape(self.source)}</code>"
                + (f" — <strong class='{tone}'>{verdict}</strong>" if signed else ""))
        lines = [f"<div class='provenance {tone}'><p>{head}</p><p>{escape(self.summary)}</p>"]
        if self.checkpoint:
            c = self.checkpoint
            lines.append(f"<p>Checkpoint: {c['tree_size']} records, root <code class='hash'>{escape(c['root'])}</code>,"
                         f" signed {escape(c['ts'])} by key <code>{escape(c['key_id'])}</code></p>")
        lines.append("</div>")
        return "".join(lines)


def trusted_keys(pubkeys: Sequence[str | Path] = ()) -> list[PublicKey]:
    """The given public keys; else ``policyengine.key.pub.pem`` in the current directory if present; else none."""
    if pubkeys:
        try:
            return [load_public_key(p) for p in pubkeys]
        except AuditError as exc:
            raise ReportError(str(exc)) from None
    default = public_key_path(DEFAULT_KEY_PATH)
    return [load_public_key(default)] if default.exists() else []


def newest_checkpoint(db: str | Path) -> dict[str, Any] | None:
    with open_readonly(db) as con:
        rows = con.execute(q("checkpoints")).fetchall()
    if not rows:
        return None
    c = Checkpoint.from_row(rows[-1]).to_json()
    c.pop("signature")
    return c


def files_not_read(db: str | Path) -> list[str]:
    """The files of the folder ``db`` that a report leaves out (a live segment its writer holds), each as a note."""
    skipped: list[str] = []
    if Path(db).is_dir():
        try:
            open_readonly(db, skipped=skipped).close()
        except ReportError:
            pass  # the report itself could not have read it either; verification says why
    return skipped


def log_provenance(db: str | Path, pubkeys: Sequence[str | Path] = (),
                   not_read: Sequence[str] | None = None) -> Provenance:
    """Verify the audit log ``db`` (read-only) and describe it for a report.

    ``not_read``: the files of a folder the report's own connection left out
    (``open_readonly(skipped=...)``; found here when not given). Numbers without
    their records are not the log's: the log is then not verified as a whole.
    """
    trusted = trusted_keys(pubkeys)
    source = str(db)
    if not_read is None:
        not_read = files_not_read(db)
    missing = f"not read, so not in the numbers: {'; '.join(not_read)}. " if not_read else ""
    if not trusted:
        return Provenance(source, "audit log", None,
                          missing + "not verified: no trusted public key (pass --pubkey PEM, or keep "
                          f"{public_key_path(DEFAULT_KEY_PATH)} in the current directory)")
    if Path(db).is_dir():  # a folder of rolled segments (audit/segments.py)
        from ..audit.segments import verify_segments

        try:
            folder = verify_segments(db, trusted)
        except AuditError as exc:
            return Provenance(source, "audit segments", False, f"{missing}cannot be verified: {exc}")
        verified = None if folder.ok and not_read else folder.ok
        return Provenance(source, "audit segments", verified, missing + folder.summary(), None,
                          sum(s["records"] for s in folder.segments))
    try:
        report = verify_database(db, trusted)
    except AuditError as exc:
        return Provenance(source, "audit log", False, f"cannot be verified: {exc}")
    checkpoint = newest_checkpoint(db) if report.ok else None
    return Provenance(source, "audit log", report.ok, report.summary(), checkpoint, report.records)


def file_provenance(*paths: str) -> Provenance:
    """A report computed from files (CSV) rather than an audit log."""
    shown = ", ".join(p for p in paths if p) or "—"
    return Provenance(shown, "files", None, "computed from the files named; no audit log was read")


__all__ = ["Provenance", "file_provenance", "files_not_read", "log_provenance", "newest_checkpoint", "trusted_keys"]
