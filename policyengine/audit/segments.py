"""Segmented audit logs: roll a long-running writer's log into files, chain them, verify and prune them.

A **series** is a run of segment files ``<series>.<NNNNNN>.duckdb`` in one
folder (``audit.000001.duckdb``, ``audit.000002.duckdb``, ...; a decision-server
worker writes ``audit.worker<i>.NNNNNN.duckdb``). Each segment is a complete
signed log (its own origin, ``<series origin>/<NNNNNN>``) that ``audit verify``
checks alone; the segments are chained by two signed records:

- record 1 of every segment is ``segment_started``: the series, the index, the
  records of the series before it, and the previous segment's final signed
  checkpoint (origin, tree size, root, signature; ``null`` for the first); it is
  committed with its own checkpoint, so a segment's first checkpoint signs the
  previous segment's last root;
- the last record of every segment but the newest is ``segment_sealed``: why it
  rolled, its record count and the next file's name; the final checkpoint
  covers it.

``verify_segments`` checks each segment and every link (a segment missing from
the middle, swapped, or a link that names another root fails, naming the file
and seq). ``prune_segments`` drops the oldest sealed segments of each series,
never one whose newest record is younger than the retention floor (at least six
months, for EU AI Act Art. 12/19 record keeping), and first writes a signed
``segments_pruned`` record to ``segments-pruned.duckdb`` in the folder, so a
verifier knows where each series now begins and what the dropped part ended with.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..store.files import StoreError, open_duckdb
from .errors import AuditError
from .keys import PublicKey, SigningKey
from .log import AuditLog, Checkpoint, new_origin
from .masking import NO_MASKING, Masking, merged
from .sql import q
from .verify import VerifyReport, verify_connection

SEGMENT_NAME = re.compile(r"^(?P<series>.+)\.(?P<index>\d{6})\.duckdb$")
PRUNE_LOG = "segments-pruned.duckdb"
MIN_RETENTION_MONTHS = 6  # EU AI Act Art. 19(1): logs kept at least six months
_BYTES_EVERY = 256  # appends between two looks at the file size (--roll-bytes)


def segment_name(series: str, index: int) -> str:
    return f"{series}.{index:06d}.duckdb"


def worker_db_path(db: str | os.PathLike[str], worker: int) -> Path:
    """The audit file worker ``worker`` of ``serve --workers`` writes for ``--db db`` (its series, when rolled)."""
    path = Path(db)
    return path.with_name(f"{worker_series(path.stem, worker)}{path.suffix or '.duckdb'}")


def worker_series(stem: str, worker: int) -> str:
    return f"{stem}.worker{worker}"


def series_segments(folder: Path, series: str) -> list[tuple[int, Path]]:
    """The segments of ``series`` in ``folder``, by index."""
    found = []
    for path in folder.glob(f"{glob_escape(series)}.*.duckdb"):
        m = SEGMENT_NAME.match(path.name)
        if m and m.group("series") == series:
            found.append((int(m.group("index")), path))
    return sorted(found)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


@dataclass(frozen=True)
class RollPolicy:
    """When a segment is sealed: after ``records`` records, ``bytes`` on disk or ``age`` seconds (any that is set)."""

    records: int | None = None
    bytes: int | None = None
    age: float | None = None

    def __post_init__(self) -> None:
        if self.records is not None and self.records < 2:
            raise AuditError("--roll-records must be at least 2 (a segment holds its segment_started record)")
        if self.bytes is not None and self.bytes < 1:
            raise AuditError("--roll-bytes must be a positive number of bytes")
        if self.age is not None and not self.age > 0:
            raise AuditError("--roll-age must be a positive number of seconds")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.records, self.bytes, self.age))

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "bytes": self.bytes, "age_seconds": self.age}


@dataclass(frozen=True)
class SegmentInfo:
    """What a closed (or read-only opened) segment says about itself: its first and last record, its final checkpoint."""

    path: Path
    records: int
    started: dict[str, Any] | None  # the segment_started payload, if record 1 is one
    last_event: str | None
    last_payload: dict[str, Any] | None
    last_ts: str | None
    first_ts: str | None
    checkpoint: Checkpoint | None
    newest_ts: str | None = None  # the youngest record's ts: a clock stepped back makes it another than last_ts

    @property
    def sealed(self) -> bool:
        return self.last_event == "segment_sealed"

    def link(self) -> dict[str, Any]:
        """The ``previous`` object the next segment's ``segment_started`` carries."""
        assert self.checkpoint is not None
        cp = self.checkpoint.to_json()
        return {"file": self.path.name, **{k: cp[k] for k in ("origin", "tree_size", "root", "ts", "key_id", "signature")}}


def read_segment(path: Path, con: duckdb.DuckDBPyConnection | None = None) -> SegmentInfo:
    """Read a segment's chain records (one line ``AuditError`` if it cannot be read)."""
    own = con is None
    if con is None:
        try:
            con = open_duckdb(path, read_only=True, external_access=False)
        except StoreError as error:
            raise AuditError(str(error)) from None
    try:
        count, newest = con.execute(q("segment_state")).fetchone()
        first = con.execute(q("records_from"), {"first": 1, "limit": 1}).fetchone()
        last = con.execute(q("tail"), {"limit": 1}).fetchone()
        latest = con.execute(q("latest_checkpoint")).fetchone()
    except duckdb.Error as error:
        raise AuditError(f"{path}: not a policyengine audit segment ({str(error).splitlines()[0]})") from None
    finally:
        if own:
            con.close()
    started = _payload(first, path) if first and first[3] == "segment_started" else None
    return SegmentInfo(
        path=path, records=int(count), started=started,
        last_event=last[3] if last else None, last_payload=_payload(last, path) if last else None,
        last_ts=last[1] if last else None, first_ts=first[1] if first else None, checkpoint=Checkpoint.from_row(latest) if latest else None,
        newest_ts=newest,
    )


def _payload(row: Sequence[Any], path: Path) -> dict[str, Any]:
    try:
        value = json.loads(row[7])
    except (TypeError, ValueError):
        raise AuditError(f"{path}: record {row[0]} has a payload that is not JSON") from None
    if not isinstance(value, dict):
        raise AuditError(f"{path}: record {row[0]} has a payload that is not an object")
    return value


# -- writing ------------------------------------------------------------------


class SegmentedLog:
    """An ``AuditLog`` that seals its file and starts the next segment when a ``RollPolicy`` limit is reached.

    Seqs it returns count records across the series (``records_before`` of the
    segment plus the seq inside it), so callers wait on them as on one log;
    ``wait_durable``, ``flush``, ``size`` and ``flushed`` speak the same numbers.
    Rolling happens inside the ``append`` that finds the limit reached: the old
    segment gets ``segment_sealed`` and its final checkpoint, the new one
    ``segment_started`` and its first checkpoint, then the record is appended.
    """

    def __init__(self, folder: str | os.PathLike[str], series: str, key: SigningKey, *, roll: RollPolicy,
                 masking: Masking = NO_MASKING, on_roll: Callable[[Path, Path], None] | None = None,
                 **log_options: Any) -> None:
        if not roll.active:
            raise AuditError("a segmented log needs a roll limit (records, bytes or age)")
        if not series or "/" in series or os.sep in series:
            raise AuditError(f"segment series {series!r} must be a file name stem")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise AuditError(f"{self.folder}: no such folder for audit segments")
        self.series = series
        self.roll = roll
        self._key = key
        self._masking = masking
        self._options = log_options
        self._on_roll = on_roll
        self._lock = threading.RLock()
        self._log: AuditLog | None = None
        self._started: dict[str, Any] = {}  # the current segment's segment_started payload
        self._closers: list[threading.Thread] = []  # sealed segments being closed in the background
        self._offset = 0
        self._index = 0
        self._started_at = time.time()
        self._series_origin = ""
        self._open_latest()

    # -- opening and rolling ---------------------------------------------------

    def _open_latest(self) -> None:
        existing = series_segments(self.folder, self.series)
        if not existing:
            self._start(1, None)
            return
        index, path = existing[-1]
        info = read_segment(path)
        if info.sealed:
            self._start(index + 1, info)
            return
        if info.started is None:  # created, then stopped before its first record: start it again
            if info.records:
                raise AuditError(f"{path}: record 1 is not segment_started; not a segment of series {self.series}")
            for p in (path, path.with_name(path.name + ".wal")):
                p.unlink(missing_ok=True)  # no record in it: nothing is lost, and its origin may be a stale guess
            self._open_latest()  # the one before it decides: sealed, so start this index again; or open, continue it
            return
        self._attach(index, path, info.started, info.first_ts)

    def _attach(self, index: int, path: Path, started: dict[str, Any], first_ts: str | None) -> None:
        self._log = AuditLog(path, self._key, masking=self._masking, **self._options)
        self._index = index
        self._started = started
        self._offset = int(started.get("records_before", 0))
        self._series_origin = str(started.get("series_origin", ""))
        self._started_at = _epoch(first_ts) if first_ts else time.time()  # --roll-age counts across restarts

    def _start(self, index: int, previous: SegmentInfo | None) -> None:
        if previous is not None and (previous.started is None or previous.checkpoint is None):
            raise AuditError(f"{previous.path}: has no segment_started record or checkpoint; cannot chain to it")
        series_origin = str(previous.started["series_origin"]) if previous and previous.started else new_origin()
        records_before = (int(previous.started["records_before"]) + previous.records) if previous and previous.started else 0
        path = self.folder / segment_name(self.series, index)
        log = AuditLog(path, self._key, origin=f"{series_origin}/{index:06d}", masking=self._masking, **self._options)
        try:
            payload = {
                "series": self.series, "series_origin": series_origin, "index": index,
                "records_before": records_before, "previous": previous.link() if previous else None,
                "roll": self.roll.to_json(),
            }
            log.append("segment_started", payload=payload)
            log.checkpoint()  # the segment's first checkpoint signs the link to the previous root
        except BaseException:
            log.abandon()
            raise
        self._log, self._index, self._offset = log, index, records_before
        self._series_origin = series_origin
        self._started = payload
        self._started_at = time.time()

    def _due(self) -> str | None:
        log = self._current()
        if self.roll.records is not None and log.size >= self.roll.records:
            return "records"
        if self.roll.age is not None and time.time() - self._started_at >= self.roll.age:
            return "age"
        if self.roll.bytes is not None and log.size % _BYTES_EVERY == 0 and self.bytes_on_disk() >= self.roll.bytes:
            return "bytes"
        return None

    def bytes_on_disk(self) -> int:
        """The current segment's file and write-ahead log, in bytes."""
        path = self.path
        total = 0
        for p in (path, path.with_name(path.name + ".wal")):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def roll_now(self, reason: str = "requested") -> Path:
        """Seal the current segment and start the next; return the new segment's path."""
        with self._lock:
            old = self._current()
            old_path = self.path
            nxt = segment_name(self.series, self._index + 1)
            seal = {"series": self.series, "index": self._index, "reason": reason, "records": old.size + 1, "next": nxt}
            old.append("segment_sealed", payload=seal)
            try:
                final = old.checkpoint()  # durable, with the final checkpoint over the seal, before anything names it
                info = SegmentInfo(path=old_path, records=old.size, started=self._started, last_event="segment_sealed",
                                   last_payload=seal, last_ts=None, first_ts=None, checkpoint=final)
                self._log = None
                self._start(self._index + 1, info)
            finally:  # nothing is left to write to it: let DuckDB close the file off the caller's path
                closer = threading.Thread(target=self._close_sealed, args=(old,), name="audit-segment-close")
                self._closers = [t for t in self._closers if t.is_alive()] + [closer]
                closer.start()
            if self._on_roll is not None:
                self._on_roll(old_path, self.path)
            return self.path

    def _close_sealed(self, log: AuditLog) -> None:
        try:
            log.close()
        except AuditError as error:  # its records and final checkpoint are committed already; say so, once
            print(f"warning: closing sealed audit segment: {error}", file=sys.stderr, flush=True)

    def _join_closers(self) -> None:
        while self._closers:
            self._closers.pop().join()

    # -- the AuditLog surface --------------------------------------------------

    def _current(self) -> AuditLog:
        if self._log is None:
            raise AuditError(f"audit series {self.series} in {self.folder} is closed")
        return self._log

    def append(self, event: str, **columns: Any) -> int:
        with self._lock:
            reason = self._due()
            if reason is not None:
                self.roll_now(reason)
            return self._offset + self._current().append(event, **columns)

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        with self._lock:
            offset, log = self._offset, self._current()
        if seq <= offset:
            return  # an earlier segment: sealed and closed, so committed
        log.wait_durable(seq - offset, timeout)

    def flush(self, *, checkpoint: bool = False, answer_first: bool = False) -> int:
        with self._lock:
            offset, log = self._offset, self._current()
        return offset + log.flush(checkpoint=checkpoint, answer_first=answer_first)

    @property
    def facts_due(self) -> int:
        with self._lock:
            return self._current().facts_due  # a sealed segment wrote its facts when it closed

    def prepare_facts(self) -> None:
        with self._lock:
            log = self._current()
        log.prepare_facts()

    def write_facts(self) -> None:
        with self._lock:
            log = self._current()
        log.write_facts()

    def checkpoint(self) -> Checkpoint | None:
        with self._lock:
            return self._current().checkpoint()

    def mask_also(self, masking: Masking) -> None:
        with self._lock:
            self._masking = merged(self._masking, masking)
            self._current().mask_also(masking)

    def rotate_key(self, new_key: SigningKey) -> int:
        with self._lock:
            seq = self._offset + self._current().rotate_key(new_key)
            self._key = new_key
            return seq

    @property
    def size(self) -> int:
        with self._lock:
            return self._offset + self._current().size

    @property
    def flushed(self) -> int:
        with self._lock:
            return self._offset + self._current().flushed

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def origin(self) -> str:
        return self._current().origin

    @property
    def index(self) -> int:
        return self._index

    @property
    def path(self) -> Path:
        return self.folder / segment_name(self.series, self._index)

    @property
    def where(self) -> str:
        return f"{self.path} (segments of {self.series} in {self.folder})"

    def close(self) -> None:
        """Sign a final checkpoint and release the current segment (unsealed: a restart continues it)."""
        with self._lock:
            try:
                if self._log is not None:
                    self._log.close()
                    self._log = None
            finally:
                self._join_closers()

    def abandon(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.abandon()
                self._log = None
            self._join_closers()

    def __enter__(self) -> SegmentedLog:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


# -- verifying ----------------------------------------------------------------

SEGMENT_KINDS = ("segment_missing", "segment_misplaced", "chain_broken", "not_sealed", "duplicated", "unreadable")


@dataclass(frozen=True)
class SegmentFailure:
    """The first fault in a folder: the file, the kind (a ``verify.KINDS`` or a ``SEGMENT_KINDS``), the seq, a sentence."""

    segment: str
    kind: str
    seq: int
    message: str

    def __str__(self) -> str:
        return f"{self.segment}: seq {self.seq}: {self.kind.replace('_', ' ')}: {self.message}"


@dataclass
class SegmentsReport:
    """What ``audit verify --dir`` prints: each segment's result, the first failure, notes (skipped files)."""

    folder: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    failures: list[SegmentFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failure(self) -> SegmentFailure | None:
        return self.failures[0] if self.failures else None

    def summary(self) -> str:
        if self.failure:
            return f"{self.folder}: FAILED at {self.failure}"
        series = sorted({s["series"] for s in self.segments})
        records = sum(s["records"] for s in self.segments)
        return (f"{self.folder}: OK, {len(series)} series ({', '.join(series)}), {len(self.segments)} segments, "
                f"{records} records, {self.seconds:.2f} s")

    def to_json(self) -> dict[str, Any]:
        failure = self.failure
        return {
            "ok": self.ok, "dir": self.folder, "segments": self.segments, "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "failure": None if failure is None else {"segment": failure.segment, "kind": failure.kind,
                                                     "seq": failure.seq, "message": failure.message},
        }


def folder_series(folder: Path) -> tuple[dict[str, list[tuple[int, Path]]], list[Path]]:
    """Segments of each series in ``folder``, and the other ``.duckdb`` files (whole logs, such as a
    worker's own ``DB.worker<i>.duckdb``)."""
    if not folder.is_dir():
        raise AuditError(f"{folder}: no such folder of audit segments")
    series: dict[str, list[tuple[int, Path]]] = {}
    others = []
    for path in sorted(folder.glob("*.duckdb")):
        m = SEGMENT_NAME.match(path.name)
        if m:
            series.setdefault(m.group("series"), []).append((int(m.group("index")), path))
        elif path.name != PRUNE_LOG:
            others.append(path)
    return {k: sorted(v) for k, v in sorted(series.items())}, others


def verify_segments(folder: str | os.PathLike[str], trusted: Sequence[PublicKey]) -> SegmentsReport:
    """Verify every segment in ``folder`` and the chain between the segments of each series."""
    if not trusted:
        raise AuditError("no trusted public key: pass --pubkey PEM (the key the first segment was signed with)")
    started = time.perf_counter()
    root = Path(folder)
    all_series, others = folder_series(root)
    report = SegmentsReport(str(root))
    pruned = _pruned(root, trusted, report)
    if not all_series and not others and not report.failures:
        raise AuditError(f"{root}: no audit segments (files named <series>.NNNNNN.duckdb)")
    for name in sorted({*all_series, *pruned}):  # a pruned series keeps its newest segment: it must be here
        _verify_series(name, all_series.get(name, []), pruned.get(name, []), list(trusted), report)
    for path in others:  # `query` and reports read every *.duckdb file here, so every one is checked
        _verify_whole_log(path, trusted, report)
    _duplicated(report)
    report.seconds = time.perf_counter() - started
    return report


def _duplicated(report: SegmentsReport) -> None:
    """Two files of the folder holding one log (one origin): a copy of a segment or log under another name, or an
    older state of it. Each verifies alone, but `query` and the reports read every file, so its records twice."""
    folder = Path(report.folder)
    by_origin: dict[str, list[str]] = {}
    for entry in report.segments:
        if entry.get("origin") is not None:
            by_origin.setdefault(entry["origin"], []).append(entry["file"])
    for origin, files in by_origin.items():
        seen: dict[str | None, str] = {}
        for file in files if len(files) > 1 else ():
            # record 1 too: logs made before origins were unique share the origin 'policyengine', not record 1
            first = _first_leaf(folder / file)
            if first in seen:
                report.failures.append(SegmentFailure(
                    str(folder / file), "duplicated", 1,
                    f"holds the log {origin!r}, as {seen[first]} does (a copy or an older state of it: "
                    "query and reports would read its records twice)"))
                return
            seen[first] = file


def _first_leaf(path: Path) -> str | None:
    """Record 1's leaf hash of a verified file (None if it cannot be read again)."""
    try:
        con = open_duckdb(path, read_only=True, external_access=False)
    except StoreError:
        return None
    try:
        row = con.execute(q("leaf_hashes_upto"), {"size": 1}).fetchone()
    except duckdb.Error:
        return None
    finally:
        con.close()
    return row[0] if row else None


def _verify_whole_log(path: Path, trusted: Sequence[PublicKey], report: SegmentsReport) -> None:
    """A file of the folder that is not a segment, verified alone as ``audit verify --db`` would (reports
    read its audit tables with the segments'); one without audit tables gives reports nothing."""
    try:
        con = open_duckdb(path, read_only=True, external_access=False)
    except StoreError as error:
        if "in use by" in str(error):
            report.notes.append(f"{path}: in use by its writer; not checked (reports leave it out too)")
        else:
            report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
        return
    try:
        if not {"audit_log", "audit_checkpoints"} & {r[0] for r in con.execute(q("tables")).fetchall()}:
            report.notes.append(f"{path}: holds no audit log; not checked (reports read nothing from it)")
            return
        result = verify_connection(con, str(path), trusted)
    except (AuditError, duckdb.Error) as error:
        report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error).splitlines()[0]))
        return
    finally:
        con.close()
    _add_verified(report, path, result, series=path.name, index=None, records_before=0)


def _add_verified(report: SegmentsReport, path: Path, result: VerifyReport, *, series: str, index: int | None,
                  records_before: int) -> bool:
    """One verified file in the folder's report: its entry, its own notes and its failure; True if it failed."""
    report.segments.append({"file": path.name, "series": series, "index": index, "records": result.records,
                            "origin": result.origin, "ok": result.ok,
                            "first_seq": records_before + 1, "last_seq": records_before + result.records})
    report.notes.extend(f"{path}: {note}" for note in result.notes)
    if result.failure:
        f = result.failure
        report.failures.append(SegmentFailure(str(path), f.kind, f.seq, f.message))
        return True
    return False


def _pruned(root: Path, trusted: Sequence[PublicKey], report: SegmentsReport) -> dict[str, list[dict[str, Any]]]:
    """Series -> the segments ``segments-pruned.duckdb`` records as dropped (after verifying it)."""
    path = root / PRUNE_LOG
    if not path.exists():
        return {}
    try:
        con = open_duckdb(path, read_only=True, external_access=False)
    except StoreError as error:
        report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
        return {}
    try:
        result = verify_connection(con, str(path), trusted)
        rows = con.execute(q("records_from"), {"first": 1, "limit": 1_000_000}).fetchall()
    except AuditError as error:
        report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
        return {}
    finally:
        con.close()
    if result.failure:
        f = result.failure
        report.failures.append(SegmentFailure(str(path), f.kind, f.seq, f.message))
        return {}
    dropped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row[3] == "segments_pruned":
            payload = _payload(row, path)
            for entry in payload.get("segments", []):
                dropped.setdefault(str(entry.get("series")), []).append(entry)
    return dropped


def _verify_series(name: str, segments: list[tuple[int, Path]], pruned: list[dict[str, Any]],
                   trusted: list[PublicKey], report: SegmentsReport) -> None:
    pruned_by_file = {e.get("file"): e for e in pruned}
    for _, p in [(i, p) for i, p in segments if p.name in pruned_by_file]:
        if not _pruned_leftover(p, pruned_by_file[p.name], trusted, report):
            return
    segments = [(i, p) for i, p in segments if p.name not in pruned_by_file]
    last_pruned = max(pruned, key=lambda e: int(e.get("index", 0))) if pruned else None
    if last_pruned is not None and not segments:
        missing = segment_name(name, int(last_pruned.get("index", 0)) + 1)
        report.failures.append(SegmentFailure(
            str(Path(report.folder) / missing), "segment_missing", 1,
            f"{PRUNE_LOG} records segments of series {name} up to {last_pruned.get('file')} as pruned, and prune "
            f"keeps a series' newest segment, but no later segment of it is here"))
        return
    expected = int(last_pruned["index"]) + 1 if last_pruned else 1
    previous: dict[str, Any] | None = last_pruned.get("final") if last_pruned else None
    records_before = int(last_pruned.get("records_before", 0)) + int(last_pruned.get("records", 0)) if last_pruned else 0
    keys = {k.key_id: k for k in trusted}
    for position, (index, path) in enumerate(segments):
        newest = position == len(segments) - 1
        if index != expected:
            missing = segment_name(name, expected)
            kind = "segment_missing" if index > expected else "segment_misplaced"
            report.failures.append(SegmentFailure(str(path), kind, 1,
                                                  f"expected {missing} before it; segment {expected} of series {name} is gone"))
            return
        try:
            con = open_duckdb(path, read_only=True, external_access=False)
        except StoreError as error:
            if newest and "in use by" in str(error):
                report.notes.append(f"{path}: in use by its writer (the live segment); not checked, chain checked up to it")
                return
            report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
            return
        try:
            result = verify_connection(con, str(path), list(keys.values()))
            info = read_segment(path, con)
            rotations = con.execute(q("rotations")).fetchall()
        except AuditError as error:
            report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
            return
        finally:
            con.close()
        if _add_verified(report, path, result, series=name, index=index, records_before=records_before):
            return
        problem = _link_problem(name, index, path, info, previous, records_before, newest, position)
        if problem:
            report.failures.append(problem)
            return
        for _, _, payload in rotations:  # the series' key chain carries on into the next segment
            body = json.loads(payload)
            keys.pop(body["old_key_id"], None)
            keys[body["new_key_id"]] = PublicKey.from_pem(body["new_public_key"])
        previous = info.link()
        records_before += info.records
        expected += 1


def _pruned_leftover(path: Path, entry: dict[str, Any], trusted: list[PublicKey], report: SegmentsReport) -> bool:
    """A segment the prune log records as dropped but still in the folder (a prune stopped before deleting it):
    reports read it, so it must verify and end at the final checkpoint the prune record names. True if it does."""
    try:
        con = open_duckdb(path, read_only=True, external_access=False)
    except StoreError as error:
        report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
        return False
    try:
        result = verify_connection(con, str(path), trusted)
        info = read_segment(path, con)
    except AuditError as error:
        report.failures.append(SegmentFailure(str(path), "unreadable", 0, str(error)))
        return False
    finally:
        con.close()
    records_before = entry.get("records_before")
    if _add_verified(report, path, result, series=str(entry.get("series")), index=entry.get("index"),
                     records_before=records_before if isinstance(records_before, int) else 0):
        return False
    final = entry.get("final") if isinstance(entry.get("final"), dict) else {}
    ended = info.link() if info.checkpoint is not None else {}
    if any(ended.get(k) != final.get(k) for k in ("origin", "tree_size", "root")):
        report.failures.append(SegmentFailure(
            str(path), "segment_misplaced", 1,
            f"recorded as pruned, ending at tree size {final.get('tree_size')} of {final.get('origin')!r}, but the "
            f"file ends at tree size {ended.get('tree_size')} of {ended.get('origin')!r}: not the segment pruned"))
        return False
    report.notes.append(f"{path}: recorded as pruned but still present; it verifies and is the segment pruned "
                        "(`audit prune` deletes it)")
    return True


def _link_problem(name: str, index: int, path: Path, info: SegmentInfo, previous: dict[str, Any] | None,
                  records_before: int, newest: bool, position: int) -> SegmentFailure | None:
    where = str(path)
    started = info.started
    if started is None:
        return SegmentFailure(where, "chain_broken", 1, "record 1 is not a segment_started record")
    series_origin = str(previous.get("origin", "")).rpartition("/")[0] if previous else None
    if series_origin is not None and started.get("series_origin") != series_origin:
        return SegmentFailure(where, "segment_misplaced", 1,
                              f"its origin {started.get('series_origin')!r} is not the series origin "
                              f"{series_origin!r} of the segments before it (a segment of another log)")
    if started.get("series") != name or started.get("index") != index:
        return SegmentFailure(where, "segment_misplaced", 1,
                              f"its segment_started record is for segment {started.get('index')} of series "
                              f"{started.get('series')!r}, not {index} of {name!r} (files renamed or swapped)")
    if info.checkpoint is not None and info.checkpoint.origin != f"{started.get('series_origin')}/{index:06d}":
        return SegmentFailure(where, "segment_misplaced", 1,
                              f"its origin {info.checkpoint.origin!r} is not segment {index} of series origin "
                              f"{started.get('series_origin')!r}")
    link = started.get("previous")
    if previous is None and position == 0 and index == 1:
        if link is not None:
            return SegmentFailure(where, "chain_broken", 1, "the first segment names a previous segment")
    elif not isinstance(link, dict) or any(link.get(k) != previous.get(k) for k in ("origin", "tree_size", "root")):
        shown = f"{previous.get('file')} (tree size {previous.get('tree_size')}, root {str(previous.get('root'))[:16]}...)" \
            if previous else "nothing"
        named = f"{link.get('file')} (tree size {link.get('tree_size')}, root {str(link.get('root'))[:16]}...)" \
            if isinstance(link, dict) else "nothing"
        return SegmentFailure(where, "chain_broken", 1,
                              f"segment_started links to {named}, but the segment before it ended at {shown}")
    if started.get("records_before") != records_before:
        return SegmentFailure(where, "chain_broken", 1,
                              f"segment_started counts {started.get('records_before')} records before it, "
                              f"the segments before it hold {records_before}")
    if newest:
        if info.sealed:
            return SegmentFailure(where, "segment_missing", info.records,
                                  f"sealed, naming {(info.last_payload or {}).get('next')} as next, which is missing")
        return None
    seal = info.last_payload or {}
    if not info.sealed:
        return SegmentFailure(where, "not_sealed", info.records,
                              "a segment with segments after it must end with segment_sealed")
    following = segment_name(name, index + 1)
    if seal.get("index") != index or seal.get("next") != following or seal.get("records") != info.records:
        return SegmentFailure(where, "chain_broken", info.records,
                              f"segment_sealed names next {seal.get('next')!r} (index {seal.get('index')}, "
                              f"{seal.get('records')} records), not {following!r} after {info.records} records")
    return None


# -- pruning ------------------------------------------------------------------


def months_before(now: datetime, months: int) -> datetime:
    """``now`` minus whole calendar months (the day clamped to the month's length)."""
    year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
    month += 1
    days = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return now.replace(year=year, month=month, day=min(now.day, days[month - 1]))


@dataclass(frozen=True)
class PruneResult:
    floor: datetime
    dropped: list[dict[str, Any]]
    seq: int | None  # the segments_pruned record's seq (None on a dry run or when nothing is due)

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would drop" if dry_run else "dropped"
        out = [f"{verb} {e['file']} ({e['records']} records, newest {e['newest_ts']})" for e in self.dropped]
        if not self.dropped:
            out.append("nothing to prune")
        return out


def prune_segments(folder: str | os.PathLike[str], before: datetime, key: SigningKey | None, *,
                   retention_months: int = MIN_RETENTION_MONTHS, dry_run: bool = False,
                   now: datetime | None = None, trusted: Sequence[PublicKey] = ()) -> PruneResult:
    """Drop each series' sealed segments whose newest record is older than ``before``; never below the floor.

    Only a leading run of segments is dropped (the chain must stay whole after
    them), never the newest segment of a series, and never a segment whose newest
    record is younger than ``retention_months`` (>= 6) before ``now``: such a
    request is refused whole, nothing dropped. The folder must verify first
    (``trusted``, else the signing key's public key): evidence that fails is kept.
    The ``segments_pruned`` record is durable before any file is deleted.
    """
    if retention_months < MIN_RETENTION_MONTHS:
        raise AuditError(f"--retention-months {retention_months} is below the floor of {MIN_RETENTION_MONTHS} months "
                         "(EU AI Act Art. 12/19 record keeping); refusing to prune")
    now = now or datetime.now(UTC)
    floor = months_before(now, retention_months)
    root = Path(folder)
    all_series, _ = folder_series(root)
    keys = list(trusted) or ([key.public] if key is not None else [])
    if not keys:
        raise AuditError("pruning checks the folder first: pass --pubkey PEM or --key KEYFILE")
    checked = verify_segments(root, keys) if all_series else None
    if checked is not None and not checked.ok:
        raise AuditError(f"{root}: does not verify ({checked.failure}); refusing to prune evidence that fails")
    pruned_before = _already_pruned(root)
    dropped: list[dict[str, Any]] = []
    for name, segments in all_series.items():
        for index, path in segments[:-1]:  # the newest segment of a series stays
            if path.name in pruned_before:
                continue
            info = read_segment(path)
            if not info.sealed or info.newest_ts is None or info.started is None or info.checkpoint is None:
                raise AuditError(f"{path}: not a sealed segment; refusing to prune")
            newest = datetime.fromisoformat(info.newest_ts.replace("Z", "+00:00"))  # max(ts): clocks step back
            if newest >= before:
                break
            if newest >= floor:
                raise AuditError(f"{path}: its newest record ({info.newest_ts}) is younger than the retention floor "
                                 f"({floor:%Y-%m-%dT%H:%M:%SZ}, {retention_months} months before now); nothing pruned")
            dropped.append({"series": name, "index": index, "file": path.name, "records": info.records,
                            "records_before": int(info.started.get("records_before", 0)),
                            "first_ts": info.first_ts, "last_ts": info.last_ts, "newest_ts": info.newest_ts,
                            "final": info.link()})
    leftovers = [root / f for f in sorted(pruned_before) if (root / f).exists()]
    if dry_run or (not dropped and not leftovers):
        return PruneResult(floor, dropped, None)
    seq = None
    if dropped:
        if key is None:
            raise AuditError("pruning writes a signed segments_pruned record: pass --key KEYFILE")
        with AuditLog(root / PRUNE_LOG, key) as log:
            seq = log.append("segments_pruned", payload={
                "before": before.isoformat(), "retention_months": retention_months, "floor": floor.isoformat(),
                "segments": dropped})
            log.wait_durable(seq)
    for path in [*leftovers, *(root / e["file"] for e in dropped)]:
        for p in (path, path.with_name(path.name + ".wal")):
            p.unlink(missing_ok=True)
    return PruneResult(floor, dropped, seq)


def _already_pruned(root: Path) -> set[str]:
    path = root / PRUNE_LOG
    if not path.exists():
        return set()
    try:
        con = open_duckdb(path, read_only=True, external_access=False)
    except StoreError as error:
        raise AuditError(str(error)) from None
    try:
        rows = con.execute(q("pruned_segments")).fetchall()
    except duckdb.Error as error:
        raise AuditError(f"{path}: cannot read the prune log ({str(error).splitlines()[0]})") from None
    finally:
        con.close()
    return {str(e.get("file")) for (text,) in rows for e in json.loads(text).get("segments", [])}
