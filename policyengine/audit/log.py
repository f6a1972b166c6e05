"""AuditLog: the append-only, hash-chained, checkpoint-signed writer.

Each record's leaf hash is computed when it is appended; records are buffered
and written in batches (one Arrow table per batch, with the batch's ``audit_facts``
rows, which behind a server's answers follow in a later transaction on a connection
of their own: facts.py), and every batch is committed in one transaction together with a
checkpoint (tree size, RFC 9162 root, Ed25519 signature) covering it. So every
committed record is signed, whenever the process stops: ``audit verify`` can
treat an uncovered record as tampering.

Signing per batch, not per record, keeps appends fast (an Ed25519 signature
costs ~50 us; a SHA-256 ~1 us). To keep the checkpoint table small under a
trickle of records, only every ``checkpoint_every`` records or
``checkpoint_interval`` seconds (and on close, rotation or request) is a
checkpoint kept for good; a checkpoint between those is provisional, and the
transaction of the next kept one deletes the provisional ones before it (each
covers less than the kept one does). Deleting them one commit at a time cost a
statement in every small commit, the wait of every durable answer.

One writer per database file: DuckDB locks the file for the writing process,
and this module also refuses a second writer on the same file in one process.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sys
import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256 as _sha256
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ..store.files import DEFAULT_DB_PATH as DEFAULT_DB_PATH  # the one default path (re-exported)
from ..store.files import StoreError, open_duckdb
from .canonical import CanonicalJSONError, _encode_string, canonical_text
from .errors import AuditError
from .facts import FACT_EVENT, FactsWriter, payload_facts
from .keys import SigningKey
from .masking import NO_MASKING, Masking, merged
from .merkle import CompactTree
from .sql import q

EVENTS = frozenset(
    {"decision", "model_call", "tool_call", "data_access", "approval", "alert", "policy_loaded", "key_rotated",
     "run",  # run: the orchestrator's run outcome (docs/audit-events.md)
     "rerun_requested",  # `policyengine run --again LABEL`: items run again on purpose (orchestrator/batch.py)
     "model_unblocked",  # a monitor block lifted by `policyengine models unblock`
     "directory_changed", "policy_migrated", "clock_override",  # approvals' context (docs/audit-events.md)
     "policy_activated",  # `policyengine serve` or `gateway` began serving a policy (docs/audit-events.md)
     "policy_refused",  # `serve` or `gateway` refused a policy at start or on reload; the old one kept serving
     "segment_started", "segment_sealed", "segments_pruned",  # rolled segments (audit/segments.py)
     "model_version", "model_version_requested", "model_version_rejected",  # models promote|rollback (models_registry)
     "shadow_diff",  # `serve --shadow`: the candidate policy decided a request differently
     "model_versions_reloaded"}  # `serve --registry`: a reload (file watch, SIGHUP) changed the model aliases
)
_EVENT_JSON = {event: _encode_string(event) for event in EVENTS}  # each name's JSON, encoded once (append)
DEFAULT_ORIGIN_PREFIX = "policyengine/"  # a new log without an origin gets this and 16 random hex digits
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_open_writers: set[str] = set()
_open_writers_lock = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the log ``origin`` had ``tree_size`` records with ``root``."""

    origin: str
    tree_size: int
    root: bytes
    ts: str
    key_id: str
    signature: bytes

    def note(self) -> bytes:
        return checkpoint_note(self.origin, self.tree_size, self.root, self.ts)

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "ts": self.ts,
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Checkpoint:
        origin, size, root, ts, key_id, signature = row
        return cls(origin, int(size), bytes.fromhex(root), ts, key_id, base64.b64decode(signature))


@dataclass(eq=False)
class _Batch:
    """Records cut from the buffer, and the root to sign over them (if a checkpoint is due).

    A big batch is inserted as one Arrow table, built once by whichever thread asks first
    (``table``): the appending thread that cut it, so the writer thread is left with DuckDB's
    insert and commit, most of which runs without the GIL, while the caller appends the next batch.
    """

    rows: list[tuple[Any, ...]]
    size: int
    root: bytes
    key: SigningKey
    keep: bool  # a kept checkpoint; otherwise provisional, replaced by the next batch's
    _table: pa.Table | None = None
    _building: threading.Lock = field(default_factory=threading.Lock)

    @property
    def big(self) -> bool:
        return len(self.rows) > _SMALL_BATCH

    def table(self) -> pa.Table:
        """The rows as one Arrow table (built on first call, by one thread; the others wait for it)."""
        with self._building:
            if self._table is None:
                self._table = _arrow_rows(self.rows)
            return self._table


def checkpoint_note(origin: str, tree_size: int, root: bytes, ts: str) -> bytes:
    """The exact bytes a checkpoint signature covers (a C2SP-style signed note body)."""
    return f"{origin}\n{tree_size}\n{base64.b64encode(root).decode('ascii')}\n{ts}\n".encode()


def new_origin() -> str:
    """A unique origin for a new log: witnesses tell logs apart by origin (c2sp.org/tlog-checkpoint)."""
    return f"{DEFAULT_ORIGIN_PREFIX}{secrets.token_hex(8)}"


def leaf_bytes(
    *,
    seq: int,
    ts: str,
    origin: str,
    event: str,
    actor: str | None,
    workflow: str | None,
    run_id: str | None,
    payload: str,
    policy_hash: str | None,
    key_id: str,
) -> bytes:
    """RFC 8785 bytes of a record: every column but ``leaf_hash``, keys sorted.

    ``payload`` is the already-canonical JSON text of the payload object.
    """
    text = _leaf_text("", _json_string(actor), _json_string(event), _json_string(key_id), _json_string(origin),
                      payload, _json_string(policy_hash), _json_string(run_id), seq, ts, _json_string(workflow))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError(f"record {seq} contains a lone surrogate") from None


def _json_string(value: str | None) -> str:
    return "null" if value is None else _encode_string(value)


def _leaf_text(head: str, actor: str, event: str, key_id: str, origin: str, payload: str, policy_hash: str,
               run_id: str, seq: int, ts: str, workflow: str) -> str:
    """The one template of a record's leaf text (``head`` + the RFC 8785 object), from JSON-encoded column values.

    ``append`` passes RFC 9162's leaf prefix "\\x00" as ``head`` and hashes the result
    at once; ``leaf_bytes`` passes "". ``ts`` is canonical text that needs no escaping.
    """
    return (f'{head}{{"actor":{actor},"event":{event},"key_id":{key_id},"origin":{origin},"payload":{payload}'
            f',"policy_hash":{policy_hash},"run_id":{run_id},"seq":{seq},"ts":"{ts}","workflow":{workflow}}}')


# payload as Arrow's JSON extension type: DuckDB takes it as its JSON type without parsing every payload again
# (a VARCHAR into the JSON column is parsed to be checked: ~1 us of a ~600-byte payload, and canonical_text's output
# is JSON by construction; benchmarks/README.md).
_ROW_TYPES = (pa.int64(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(), pa.string(),
              pa.json_(pa.string()), pa.string(), pa.string(), pa.string())
_ROW_NAMES = ("seq", "ts", "origin", "event", "actor", "workflow", "run_id", "payload", "policy_hash", "key_id",
              "leaf_hash")
_TS_TYPE = pa.timestamp("us", tz="UTC")


def _arrow_rows(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Buffered records (tuples in ``audit_log`` column order) as an Arrow table; ts text becomes a timestamp."""
    columns = [pa.array(values, type=kind) for values, kind in zip(zip(*rows), _ROW_TYPES)]  # rows: append's 11-tuples
    columns[1] = columns[1].cast(_TS_TYPE)
    return pa.Table.from_arrays(columns, names=list(_ROW_NAMES))


_COMMIT_SWITCH_INTERVAL = 0.0005  # seconds; CPython's default is 0.005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved: tuple[float, float] | None = None  # (the interval before, the one set) while shortened


@contextmanager
def _prompt_gil_handoff() -> Iterator[None]:
    """While a commit runs, a thread running Python hands the GIL over after 0.5 ms instead of 5.

    DuckDB's Python client takes the GIL back ~120 times in a 5,000-row commit (a
    signal check between execution steps, each call's entry and exit), and each
    re-take waits a whole switch interval while another thread runs Python (the
    appending thread, a server's event loop): the commit then waits far longer than
    it works (benchmarks/README.md). The interval is process-wide, so it is shortened
    only while some log commits and restored afterwards, unless someone changed it
    meanwhile.
    """
    global _switch_users, _switch_saved
    with _switch_lock:
        if _switch_users == 0 and sys.getswitchinterval() > _COMMIT_SWITCH_INTERVAL:
            before = sys.getswitchinterval()
            sys.setswitchinterval(_COMMIT_SWITCH_INTERVAL)
            _switch_saved = (before, sys.getswitchinterval())  # read back: CPython keeps whole microseconds
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0 and _switch_saved is not None:
                before, ours = _switch_saved
                _switch_saved = None
                if sys.getswitchinterval() == ours:
                    sys.setswitchinterval(before)


_seq_of = itemgetter(0)  # a row's seq (audit_log column order)
_SMALL_BATCH = 256  # up to here appenders commit faster than one Arrow table; 1,024: slower (benchmarks/README.md)
_CHECKPOINT_COLUMNS = ("origin", "tree_size", "root", "ts", "key_id", "signature")


class _Appenders:
    """The writer's prepared inserts: records, checkpoints, and the removal of its provisional checkpoint."""

    def __init__(self, cur: duckdb.DuckDBPyConnection):
        self.records = cur.appender("audit_log", columns=list(_ROW_NAMES))
        self.checkpoints = cur.appender("audit_checkpoints", columns=list(_CHECKPOINT_COLUMNS))
        self.provisional = cur.appender("audit_checkpoints", action="delete", key=["tree_size"])

    def clear(self) -> None:
        """Drop rows a failed flush left buffered, so nothing of a rolled-back batch is written later."""
        for appender in (self.records, self.checkpoints, self.provisional):
            appender.clear()


def _current_key(last: tuple[Any, ...] | None) -> str | None:
    """The key that signs the next record: the last record's, or the one it rotated to."""
    if last is None:
        return None
    key_id, event, payload = last
    return json.loads(payload)["new_key_id"] if event == "key_rotated" else key_id


def connect(
    path: str | os.PathLike[str], *, read_only: bool = False, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file as an audit database; its errors are one-line AuditErrors (naming ``path`` once).

    Read-only, it is read as evidence: refused if it stores views, macros or generated columns.
    """
    try:
        return open_duckdb(path, read_only=read_only, create=create, utc=False, noun="audit database")
    except StoreError as err:
        raise AuditError(str(err)) from None


def database_path(con: duckdb.DuckDBPyConnection) -> str:
    """The file ``con`` writes (resolved), or ``memory:<id>``.

    The result is read to its end: DuckDB refuses ``register`` on a connection
    with an unfinished result, and the run state registers Arrow tables on the
    audit log's cursor right after asking (a batch that stopped with a budget
    denial failed its audit write on it).
    """
    rows = con.execute(q("database_path")).fetchall()
    return str(Path(rows[0][0]).resolve()) if rows and rows[0][0] else f"memory:{id(con)}"


_second_cache: tuple[int | None, str] = (None, "")


def utc_now_text() -> str:
    """Now in UTC as the canonical text ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (runs per record, so cached per second)."""
    micros = time.time_ns() // 1000
    second, fraction = divmod(micros, 1_000_000)
    global _second_cache
    cached_second, prefix = _second_cache  # one tuple, replaced in one assignment: never a torn pair
    if cached_second != second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _second_cache = (second, prefix)
    return f"{prefix}{fraction:06d}Z"


class AuditLog:
    """Append records to one signed log in a DuckDB file (or a caller's connection).

    Use as a context manager. ``append`` returns the record's seq at once; the
    record is durable when ``wait_durable(seq)`` or ``flush()`` returns (or after
    the next automatic flush). Acknowledge nothing to anyone before that:
    ``seq = log.append(...)`` then ``log.wait_durable(seq)``. Waiting callers share
    commits (group commit): the writer thread commits everything buffered in one
    transaction, so many threads waiting at once cost one commit, not one each.
    """

    # append's columns fixed per log and key: (key, its id, the id as JSON, the origin as JSON)
    _fixed_json: tuple[SigningKey | None, str, str, str] = (None, "", "", "")

    def __init__(
        self,
        db: str | os.PathLike[str] | duckdb.DuckDBPyConnection,
        key: SigningKey,
        *,
        origin: str | None = None,
        batch_size: int = 5_000,
        flush_interval: float = 0.2,
        checkpoint_every: int = 10_000,
        checkpoint_interval: float = 5.0,
        masking: Masking = NO_MASKING,
        create: bool = True,
    ):
        if not isinstance(key, SigningKey):
            raise TypeError("key must be a SigningKey (keys.load_private_key)")
        if batch_size < 1 or checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be positive")
        self._key = key
        self._masking = masking
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval
        self._owns_connection = not isinstance(db, duckdb.DuckDBPyConnection)
        self._base: duckdb.DuckDBPyConnection = (
            db if isinstance(db, duckdb.DuckDBPyConnection) else connect(db, create=create)
        )
        self._cur = self._base.cursor()  # own transaction context, even on a shared connection
        # Serialises audit_facts writes, which keep seq order. Facts left behind answers (``write_facts``) go
        # through a cursor of their own, holding this lock and not ``_io``: the next answer's commit never waits
        # for them. A records transaction that writes facts holds both, ``_io`` first.
        self._facts_io = threading.Lock()
        self._facts_cur: duckdb.DuckDBPyConnection | None = None
        self._path = database_path(self._cur)
        self._where = self._path if isinstance(db, duckdb.DuckDBPyConnection) else os.fspath(db)  # as the caller named it
        with _open_writers_lock:
            if self._path in _open_writers:
                self._close_connections()
                raise AuditError(f"{self._where}: audit database is already open for writing in this process")
            _open_writers.add(self._path)
        self._lock = threading.Lock()  # guards the buffer, seq and tree
        self._io = threading.RLock()  # serialises the records' transactions
        self._buffer: list[tuple[Any, ...]] = []
        self._pending: deque[_Batch] = deque()
        self._last_signed: Checkpoint | None = None
        self._closed = False
        self._failed: str | None = None
        self._durable = threading.Condition()  # notified whenever _flushed grows or the log fails or closes
        self._released = False  # the file is let go (closed or abandoned): nothing more will be written
        self._flush_wanted = False  # a caller waits in wait_durable: the writer cuts the buffer at once
        self._before_commit: list[Callable[[], None]] = []  # see ``before_commit``
        self._with_commit: list[Callable[[], Any]] = []  # ``before_commit(within=True)``
        self._facts_due: list[tuple[Any, ...]] = []  # committed records whose facts follow (``flush(answer_first)``)
        self._facts_scheduled = False  # a caller flushes answer-first and writes the facts itself (``write_facts``)
        self._facts_prepared: dict[int, Any] = {}  # seq -> its facts, computed ahead (``prepare_facts``)
        self._facts_prepared_upto = 0  # the highest seq prepare_facts computed or write_facts wrote
        try:
            self.origin = self._open_log(origin, create)
            self._facts = self._open_facts()
            self._appenders = self._open_appenders()
        except BaseException:
            self._release()
            raise
        self._last_checkpoint_time = time.monotonic()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._timer: threading.Thread | None = None
        if flush_interval > 0:
            self._timer = threading.Thread(target=self._run_timer, name="audit-flush", daemon=True)
            self._timer.start()

    # -- opening -------------------------------------------------------------

    def _open_log(self, origin: str | None, create: bool) -> str:
        cur = self._cur
        try:
            tables = {r[0] for r in cur.execute(q("tables")).fetchall()}
            if tables != {"audit_meta", "audit_log", "audit_checkpoints"}:
                if tables:
                    raise AuditError(f"{self._where}: has only some audit tables ({', '.join(sorted(tables))})")
                if not create:
                    raise AuditError(f"{self._where}: has no audit tables; not a policyengine audit log")
                cur.execute(q("create_schema"))
            meta = cur.execute(q("read_meta")).fetchone()
            if meta is None:
                origin = origin or new_origin()
                if not origin or "\n" in origin:
                    raise AuditError(f"origin {origin!r} must be a non-empty single line")
                cur.execute(q("insert_meta"), {"origin": origin, "key_id": self._key.key_id})
            elif origin is not None and origin != meta[0]:
                raise AuditError(f"{self._where}: holds the log {meta[0]!r}, not {origin!r}")
            else:
                origin = meta[0]
            count, last = cur.execute(q("log_state")).fetchone() or (0, 0)
            if count != last:
                raise AuditError(f"{self._where}: seq has gaps or repeats; run `policyengine audit verify` first")
            leaves = [bytes.fromhex(r[0]) for r in cur.execute(q("leaf_hashes")).fetchall()]
            latest = cur.execute(q("latest_checkpoint")).fetchone()
            last = cur.execute(q("last_record_key")).fetchone()
            current_key = _current_key(last)
        except duckdb.Error as err:
            raise AuditError(f"{self._where}: cannot open the audit log ({str(err).splitlines()[0]})") from None
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"{self._where}: malformed audit record; run `policyengine audit verify`") from None
        self._tree = CompactTree()
        signed = Checkpoint.from_row(latest) if latest else None
        for i, leaf in enumerate(leaves):
            self._tree.append(leaf)
            if signed and i + 1 == signed.tree_size and self._tree.root() != signed.root:
                raise AuditError(
                    f"{self._where}: records 1..{signed.tree_size} do not match their signed checkpoint; "
                    "refusing to append (run `policyengine audit verify`)"
                )
        if signed and signed.tree_size > len(leaves):
            raise AuditError(f"{self._where}: log is truncated below its checkpoint at {signed.tree_size}")
        covered = signed.tree_size if signed else 0
        if covered < len(leaves):  # every batch is committed with its checkpoint: these were added or unsigned since
            raise AuditError(
                f"{self._where}: records {covered + 1}..{len(leaves)} are not covered by any signed checkpoint; "
                "refusing to sign over them (run `policyengine audit verify`)"
            )
        if signed and signed.key_id == self._key.key_id and not self._key.public.verify(signed.signature, signed.note()):
            raise AuditError(f"{self._where}: the latest checkpoint's signature is invalid; refusing to append")
        if current_key and current_key != self._key.key_id:
            raise AuditError(
                f"{self._where}: the log is signed by key {current_key}, not {self._key.key_id}; "
                "use that key or record a rotation with `policyengine keys rotate`"
            )
        self._seq = len(leaves)
        self._flushed = self._seq
        self._checkpointed = self._scheduled = signed.tree_size if signed else 0
        self._provisional: list[int] = []  # tree sizes of this writer's provisional checkpoints, oldest first
        self._last_signed = signed
        return origin

    def _open_facts(self) -> FactsWriter:
        try:
            return FactsWriter(self._cur)
        except duckdb.Error as err:
            raise AuditError(f"{self._where}: cannot prepare audit_facts ({str(err).splitlines()[0]})") from None

    def _open_appenders(self) -> _Appenders:
        try:
            # From here on this cursor only writes small batches, where planning costs more than it saves.
            self._cur.execute("SET enable_optimizer = false")
            if self._owns_connection:  # (a setting of the whole database: a caller's connection keeps its own)
                # DuckDB's worker threads only add hand-offs to a commit of a few rows: ~20% of its CPU.
                self._cur.execute("SET threads = 1")
            # A relation's insert_into is by position: taken only where audit_log's columns are in the order
            # the Arrow batch has them (every log this module created); any other order keeps INSERT BY NAME.
            columns = self._cur.execute(q("log_columns")).fetchall()
            self._positional = tuple(name for (name,) in columns) == _ROW_NAMES
            self._facts_cur = self._base.cursor()
            self._facts_cur.execute("SET enable_optimizer = false")
            return _Appenders(self._cur)
        except duckdb.Error as err:
            raise AuditError(f"{self._where}: cannot prepare the audit writer ({str(err).splitlines()[0]})") from None

    # -- writing -------------------------------------------------------------

    @property
    def key_id(self) -> str:
        return self._key.key_id

    @property
    def size(self) -> int:
        """Records appended so far (durable or not)."""
        return self._seq

    @property
    def flushed(self) -> int:
        """The highest seq known durable."""
        return self._flushed

    def before_commit(self, fn: Callable[..., Any], *, within: bool = False) -> None:
        """Call ``fn`` before every commit of records, so that the state they describe is durable first.

        It runs on whichever thread commits (mostly the writer thread). If it
        raises, those records are not written and the log fails, as on a failed write.

        With ``within``, ``fn()`` is called just before the transaction that
        writes the records begins and returns ``(write, done)``: ``write(cursor)``
        runs inside that very transaction (so what it writes on the log's
        database is durable exactly when the records are: neither can be lost
        without the other), with DuckDB's optimizer on (the records' own writes,
        planned once, keep it off); ``done(committed)`` is called once the
        transaction committed or rolled back. All three run on the same thread.
        """
        if within:
            self._with_commit.append(fn)
        else:
            self._before_commit.append(fn)

    def mask_also(self, masking: Masking) -> None:
        """Mask ``masking``'s fields too in every later record: the masks of rule files loaded after opening."""
        self._masking = merged(self._masking, masking)

    def append(
        self,
        event: str,
        *,
        actor: str | None = None,
        workflow: str | None = None,
        run_id: str | None = None,
        payload: dict[str, Any],
        policy_hash: str | None = None,
    ) -> int:
        """Buffer one record and return its seq; it is durable after the next flush.

        Every record of every caller (each answer of ``serve``) pays this, so it
        is kept lean: the columns fixed per log (event name, key id, origin) are
        JSON-encoded once, the leaf text is one f-string that starts with RFC
        9162's leaf prefix and is hashed as it is, and masking is skipped when
        none is configured.
        """
        event_json = _EVENT_JSON.get(event)
        if event_json is None:
            raise AuditError(f"unknown audit event {event!r} (expected one of {', '.join(sorted(EVENTS))})")
        if not isinstance(payload, dict):
            raise AuditError(f"{event} payload must be a JSON object, not {type(payload).__name__}")
        if not ((actor is None or type(actor) is str) and (workflow is None or type(workflow) is str)
                and (run_id is None or type(run_id) is str) and (policy_hash is None or type(policy_hash) is str)):
            for name, value in (("actor", actor), ("workflow", workflow), ("run_id", run_id), ("policy_hash", policy_hash)):
                if value is not None and not isinstance(value, str):
                    raise AuditError(f"{name} must be a string or None, not {type(value).__name__}")
        masking = self._masking
        try:
            if masking.empty:
                payload_text = canonical_text(payload)
            else:
                hidden: dict[str, str | None] = {}
                payload_text = canonical_text(masking.apply(payload, hidden))
                # a column that repeats a masked value (an approver, ``by``, a principal id) shows what the payload
                # shows instead: its hash, or nothing
                if actor in hidden:
                    actor = hidden[actor]
                if workflow in hidden:
                    workflow = hidden[workflow]
        except CanonicalJSONError as err:
            raise AuditError(f"{event} payload: {err}") from None
        enc = _encode_string
        actor_json = "null" if actor is None else enc(actor)
        workflow_json = "null" if workflow is None else enc(workflow)
        run_id_json = "null" if run_id is None else enc(run_id)
        policy_hash_json = "null" if policy_hash is None else enc(policy_hash)
        with self._lock:
            if self._failed or self._closed:
                self._check_open()
            ts = utc_now_text()  # under the lock: ts follows seq unless the system clock steps back
            key, key_id, key_json, origin_json = self._fixed_json
            if key is not self._key:  # the first record, or the first after a rotation
                key = self._key
                key_id = key.key_id
                key_json, origin_json = _json_string(key_id), _json_string(self.origin)
                self._fixed_json = (key, key_id, key_json, origin_json)
            seq = self._seq + 1
            try:
                data = _leaf_text("\x00", actor_json, event_json, key_json, origin_json, payload_text, policy_hash_json,
                                  run_id_json, seq, ts, workflow_json).encode("utf-8")
            except UnicodeEncodeError:
                raise AuditError(f"record {seq} contains a lone surrogate") from None
            leaf = _sha256(data).digest()  # merkle.leaf_hash of the leaf bytes: data starts with its 0x00
            self._tree.append(leaf)
            self._seq = seq
            self._buffer.append(
                (seq, ts, self.origin, event, actor, workflow, run_id, payload_text, policy_hash, key_id, leaf.hex())
            )
            full = len(self._buffer) >= self._batch_size
            if full:
                self._cut(False)
                cut = self._pending[-1] if self._pending else None
            backlog = len(self._pending)
        if full:
            if self._timer is None or backlog > 2:
                self._drain()  # no writer thread, or it is behind: write here (back-pressure)
            else:
                if cut is not None and cut.big:
                    cut.table()  # built here, outside the lock: the writer thread only inserts and commits
                self._wake.set()
        return seq

    def wait_durable(self, seq: int, timeout: float | None = None) -> None:
        """Block until record ``seq`` is committed (with the checkpoint that signs it).

        Raises AuditError if the write failed (disk full, I/O error), the log was
        closed or abandoned before the record was written, or ``timeout`` seconds
        passed. Concurrent waiters are served by one commit (group commit).
        """
        if seq <= self._flushed:
            return
        if seq > self._seq or seq < 1:
            raise AuditError(f"record {seq} was never appended to {self._where}")
        if self._timer is None or not self._timer.is_alive():
            with self._lock:
                self._check_open()
                if seq > self._flushed:
                    self._cut(False)
            self._drain()
        else:
            with self._lock:
                self._flush_wanted = True
            self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._durable:
            while self._flushed < seq:
                if self._failed:
                    raise AuditError(self._failed)
                if self._released:
                    raise AuditError(f"audit log {self._path} closed before record {seq} was written")
                remaining = 0.5 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise AuditError(f"record {seq} was not durable in {self._where} within {timeout} s")
                self._durable.wait(min(remaining, 0.5))  # bounded, so a lost wake-up costs a little time, never a hang

    def flush(self, *, checkpoint: bool = False, answer_first: bool = False) -> int:
        """Write every appended record durably (and sign a checkpoint if due or asked); return the last durable seq.

        With ``answer_first`` (a server whose callers wait for this), the records' ``audit_facts`` rows are left
        for ``write_facts``, which the caller runs beside its answers (or any later plain flush, and close): the
        records and their checkpoint are then the whole transaction the answer waits for (facts.py says why
        that is safe). From then on the log's writer thread leaves the facts to that caller too: its timed
        flush writing them held ``_io`` from under the next answer's commit (the gateway's p99).
        """
        with self._lock:
            self._check_open()
            self._cut(checkpoint)
            if answer_first:
                self._facts_scheduled = True
        self._drain(answer_first=answer_first)
        return self._flushed

    @property
    def facts_due(self) -> int:
        """How many committed records wait for ``write_facts``."""
        return len(self._facts_due)

    def prepare_facts(self) -> None:
        """Compute the facts of the records waiting for ``write_facts``, without holding the database.

        Printing a gateway payload's facts costs ~45 µs of Python: done inside the facts transaction, 256 of
        them kept it open for their whole time. A server calls this before ``write_facts``, from the same
        thread, so that transaction only appends and commits.
        """
        with self._lock:  # _facts_due is in seq order, and _commit adds at its end
            due, upto = self._facts_due, self._facts_prepared_upto
        start = bisect_right(due, upto, key=_seq_of)
        if start < len(due):
            todo = due[start:]
            computed = {row[0]: payload_facts(row[7]) for row in todo}
            with self._lock:
                if self._facts_prepared_upto == upto:  # else written or prepared meanwhile: computed again later
                    self._facts_prepared.update(computed)
                    self._facts_prepared_upto = todo[-1][0]

    def write_facts(self) -> None:
        """Write the facts ``flush(answer_first=True)`` left, in a transaction of their own cursor.

        Holds ``_facts_io``, not ``_io``: answers go on committing meanwhile, and their facts follow these.
        """
        with self._facts_io:
            if self._failed:
                raise AuditError(self._failed)
            if not self._released:  # else closed, which wrote them, or abandoned
                self._write_facts_due()

    def checkpoint(self) -> Checkpoint | None:
        """Flush and sign a checkpoint over everything appended so far; return the latest checkpoint."""
        self.flush(checkpoint=True)
        return self._last_signed

    def rotate_key(self, new_key: SigningKey) -> int:
        """Record a ``key_rotated`` event, sign it with the old key, then switch keys.

        The rotation record is the last record the old key signs: the cut and
        the switch happen under one lock, so no other thread's record slips
        between them.
        """
        if new_key.key_id == self._key.key_id:
            raise AuditError("the new key is the key already in use")
        with self._io:
            from .verify import retired_at  # (verify reads what this writes: imported when needed)

            self.flush()  # a rotated-away key signs nothing after its rotation record: every later record would fail
            if (retired := retired_at(self._cur, new_key.key_id)) is not None:
                raise AuditError(f"{self._where}: key {new_key.key_id} was rotated away at seq {retired}; "
                                 "rotate to a new key (`policyengine keys generate`)")
            seq = self.append(
                "key_rotated",
                payload={
                    "old_key_id": self._key.key_id,
                    "new_key_id": new_key.key_id,
                    "new_public_key": new_key.public.pem,
                },
            )
            with self._lock:
                self._cut(True)
                self._key = new_key
            self._drain()
        return seq

    def snapshot(self, dest: str | os.PathLike[str]) -> Path:
        """Sign everything so far and copy the log to a new DuckDB file that readers can open now.

        DuckDB keeps other processes out of a file while it is written, so this
        is how auditors, ``audit verify`` and reports see a live log.
        """
        target = Path(dest)
        if target.exists():
            raise AuditError(f"{target}: already exists; a snapshot is always a new file")
        self.flush(checkpoint=True)
        with self._io:
            cur = self._cur
            try:
                cur.execute(q("attach_snapshot"), {"path": str(target)})
                try:
                    cur.execute(q("copy_to_snapshot"))
                finally:
                    cur.execute(q("detach_snapshot"))
            except duckdb.Error as err:
                raise AuditError(f"{target}: cannot write snapshot ({str(err).splitlines()[0]})") from None
        return target

    def _checkpoint_due(self) -> bool:
        return (
            self._seq - self._scheduled >= self._checkpoint_every
            or (self._seq > self._scheduled and time.monotonic() - self._last_checkpoint_time >= self._checkpoint_interval)
        )

    def _cut(self, checkpoint: bool) -> None:
        """Move the buffer to the pending batches with the root that signs it (caller holds ``_lock``).

        Every batch carries a checkpoint; it is kept if one is due or asked for,
        otherwise provisional. ``_scheduled`` is the size of the last kept one.
        Asked for with nothing buffered, an empty batch keeps the provisional
        checkpoint over the same records (a rotation record must stay signed by
        the old key).
        """
        keep = checkpoint or self._checkpoint_due()
        if not self._buffer and not (keep and self._seq > self._scheduled):
            return
        self._pending.append(_Batch(self._buffer, self._seq, self._tree.root(), self._key, keep))
        self._buffer = []
        if keep:
            self._scheduled = self._seq
            self._last_checkpoint_time = time.monotonic()

    def _drain(self, *, answer_first: bool = False) -> None:
        """Commit pending batches in order; each is one transaction (records, then its checkpoint)."""
        with self._io:
            while True:
                with self._lock:
                    if self._failed:
                        raise AuditError(self._failed)
                    if not self._pending:
                        break
                    batch = self._pending.popleft()
                try:
                    if batch.big or not answer_first:  # facts stay in seq order: the ones left go before these
                        with self._facts_io:
                            self._write_facts_due()
                            self._commit(batch, answer_first)
                    else:
                        self._commit(batch, answer_first)
                except AuditError:
                    raise
                except BaseException as err:  # the batch is gone from _pending: its waiters must not wait forever
                    with self._lock:
                        self._failed = f"audit write to {self._path} failed: {type(err).__name__}: {err}"
                    self._notify_waiters()
                    raise
            if not answer_first:
                with self._facts_io:
                    self._write_facts_due()

    def _write_facts_due(self) -> None:
        """The facts of committed records that wait for them, in one transaction of the facts cursor (the caller
        holds ``_facts_io``). Answers may commit meanwhile: ``_commit`` puts theirs after these, in a new list."""
        with self._lock:
            rows, prepared = self._facts_due, self._facts_prepared
        if not rows:
            return
        assert self._facts_cur is not None
        self._in_transaction(lambda cur: self._facts.add_rows(cur, rows, prepared), self._facts_cur)
        last = rows[-1][0]
        with self._lock:
            self._facts_due = self._facts_due[len(rows):]  # rows is still its prefix: only we take from it
            self._facts_prepared = {seq: found for seq, found in self._facts_prepared.items() if seq > last}
            self._facts_prepared_upto = max(self._facts_prepared_upto, last)

    def _commit(self, batch: _Batch, answer_first: bool = False) -> None:
        """One transaction: the batch's records and the checkpoint that signs them (never one without the other).

        Everything but the facts goes through appenders made once at open: a SQL
        statement costs DuckDB ~0.3 ms to parse and plan, which is most of a small
        batch's commit (and of every durable answer's wait). Big batches are
        inserted as one Arrow table, column-wise at C speed.
        """
        if not batch.rows:  # the provisional checkpoint at this size (cut just before) becomes a kept one
            if len(self._provisional) > 1:
                self._in_transaction(lambda cur: self._remove_provisional(self._provisional[:-1]))
            self._provisional = []
            return
        for fn in self._before_commit:
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - the records must not outrun the state they describe
                with self._lock:
                    why = (str(err).splitlines() or [type(err).__name__])[0]
                    self._failed = f"audit write to {self._path} held back: {why}"
                self._notify_waiters()
                raise AuditError(self._failed) from None
        ts = utc_now_text()
        signature = batch.key.sign(checkpoint_note(self.origin, batch.size, batch.root, ts))
        signed = Checkpoint(self.origin, batch.size, batch.root, ts, batch.key.key_id, signature)
        within: list[tuple[Callable[[duckdb.DuckDBPyConnection], None], Callable[[bool], None]]] = []

        def write(cur: duckdb.DuckDBPyConnection) -> None:
            if within:
                cur.execute("SET enable_optimizer = true")  # a state row's UPDATE by key scans without it
                for write_also, _ in within:
                    write_also(cur)
                cur.execute("SET enable_optimizer = false")
            if not batch.big:
                self._appenders.records.append_rows(batch.rows)
                self._appenders.records.flush()
                if not answer_first:
                    self._facts.add_rows(cur, batch.rows)
            elif self._positional and not FactsWriter.wanted(batch.rows):
                # No facts to extract: nothing needs the table by name. One relation insert takes the GIL back
                # ~72 times in a 5,000-row transaction against ~99 for register, INSERT BY NAME, unregister, and
                # every time is a wait while the appending thread runs Python (benchmarks/README.md).
                cur.from_arrow(batch.table()).insert_into("audit_log")
            else:
                cur.register("audit_batch", batch.table())
                try:
                    cur.execute(q("insert_batch"))
                    self._facts.add(cur, "audit_batch", batch.rows)  # the reports' columns, from these payloads
                finally:
                    cur.unregister("audit_batch")
            if batch.keep:
                self._remove_provisional(self._provisional)
            row = signed.to_json()
            self._appenders.checkpoints.append_row(*(row[k] for k in _CHECKPOINT_COLUMNS))
            self._appenders.checkpoints.flush()

        committed = False
        try:
            for fn in self._with_commit:  # before the transaction begins: it sees what they committed before
                within.append(fn())
            self._in_transaction(write)
            committed = True
        finally:
            for _, done in within:
                done(committed)
        if answer_first and not batch.big:
            due = [row for row in batch.rows if row[3] == FACT_EVENT]
            if due:
                with self._lock:  # a new list: a facts transaction under way holds the old one
                    self._facts_due = self._facts_due + due
        with self._durable:
            self._flushed = batch.rows[-1][0]
            self._durable.notify_all()
        self._checkpointed = batch.size
        self._last_signed = signed
        self._provisional = [] if batch.keep else [*self._provisional, batch.size]

    def _remove_provisional(self, sizes: list[int]) -> None:
        """Delete this writer's provisional checkpoints at ``sizes`` (inside the caller's transaction)."""
        if sizes:
            self._appenders.provisional.append_rows([(size,) for size in sizes])
            self._appenders.provisional.flush()

    def _in_transaction(self, write: Callable[[duckdb.DuckDBPyConnection], None],
                        cur: duckdb.DuckDBPyConnection | None = None) -> None:
        """Run ``write`` in one transaction of ``cur`` (the records' cursor unless given); any DuckDB error rolls
        it back and fails the log for good.

        Any other error (a bug, MemoryError) rolls it back too and goes on up: ``_drain`` fails the log with it.
        """
        cur = self._cur if cur is None else cur
        try:
            with _prompt_gil_handoff():
                cur.begin()
                write(cur)
                cur.commit()
        except duckdb.Error as err:
            self._roll_back(cur)
            with self._lock:
                self._failed = f"audit write to {self._path} failed: {str(err).splitlines()[0]}"
            self._notify_waiters()
            raise AuditError(self._failed) from None
        except BaseException:
            self._roll_back(cur)  # else the transaction stays open, and every later write fails on BEGIN
            raise

    def _roll_back(self, cur: duckdb.DuckDBPyConnection) -> None:
        if cur is self._cur:
            self._appenders.clear()
        self._facts.clear(cur)
        try:
            cur.rollback()
        except duckdb.Error:
            pass

    def _notify_waiters(self) -> None:
        with self._durable:
            self._durable.notify_all()

    def _check_open(self) -> None:
        if self._failed:
            raise AuditError(self._failed)
        if self._closed:
            raise AuditError(f"audit log {self._path} is closed")

    def _run_timer(self) -> None:
        """Write full batches as they come, and every ``flush_interval`` whatever is buffered."""
        while not self._stop.is_set():
            woken = self._wake.wait(self._flush_interval)
            self._wake.clear()
            try:
                with self._lock:
                    if self._closed or self._failed:
                        return
                    if not woken or self._flush_wanted:  # the interval passed, or a caller waits for durability
                        self._flush_wanted = False
                        self._cut(False)
                    answer_first = self._facts_scheduled
                self._drain(answer_first=answer_first)
            except AuditError:
                return  # the failure is kept in self._failed and raised to the next caller
            except BaseException as err:  # never leave waiters hanging on a dead writer thread
                with self._lock:
                    self._failed = f"audit writer for {self._path} stopped: {err}"
                self._notify_waiters()
                return

    # -- closing -------------------------------------------------------------

    def close(self) -> None:
        """Flush, sign a final checkpoint, and release the file; ``AuditError`` if records appended were not
        written since a commit failed (the caller that closes may not be the one told: returning says "kept")."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._timer is not None:
            self._timer.join()
        try:
            if not self._failed:
                with self._lock:
                    self._cut(True)
                    self._closed = True  # in the same locked section: no append can slip in after the final cut
                self._drain()
        finally:
            with self._lock:
                self._closed = True
                lost = (self._flushed + 1, self._seq) if self._failed and self._seq > self._flushed else None
            self._notify_waiters()
            self._release()
        if lost is not None:
            first, last = lost
            raise AuditError(f"{self._failed}; record{'s' if last > first else ''} "
                             f"{first}{f'..{last}' if last > first else ''} not written")

    def abandon(self) -> None:
        """Stop the writer thread and release the file without writing what is buffered (a failed or crashed caller)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.join()
        self._notify_waiters()
        self._release()

    def _release(self) -> None:
        self._released = True
        self._notify_waiters()
        with _open_writers_lock:
            _open_writers.discard(self._path)
        self._close_connections()

    def _close_connections(self) -> None:
        with self._facts_io:  # a facts transaction under way (``write_facts``) ends first
            if self._facts_cur is not None:
                self._facts_cur.close()
            self._cur.close()
            if self._owns_connection:
                self._base.close()

    def __enter__(self) -> AuditLog:  # noqa: PYI034 - Self needs 3.11 typing; AuditLog is final in practice
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
