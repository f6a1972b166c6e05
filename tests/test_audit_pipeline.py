"""AuditLog's big batches: the Arrow table built by the appending thread, payloads as Arrow's JSON type.

A full batch's table is built by whichever thread asks first (the appender that cut it, or the
writer thread), once; what lands in DuckDB is the canonical payload text, byte for byte, in the
JSON column, and nothing is durable before its commit.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policyengine.audit.log as log_module
from policyengine.audit import AuditError, AuditLog, generate_key, verify_database
from policyengine.audit.canonical import canonical_text
from tests.services import small_tmpfs

# Every control character, the characters RFC 8785 and DuckDB escape differently, and some above the BMP.
_TEXT = st.text(alphabet=st.characters(max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=12)
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
            | _TEXT)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
                     max_leaves=8)
_PAYLOADS = st.dictionaries(_TEXT, _JSON, max_size=4)


def _stored(db: Path) -> list[tuple[int, str, str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT seq, typeof(payload), payload::VARCHAR FROM audit_log ORDER BY seq").fetchall()
    finally:
        con.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(_PAYLOADS, min_size=1, max_size=40))
def test_big_batches_store_the_canonical_payload_text_byte_for_byte(tmp_path_factory, payloads: list[dict]) -> None:
    folder = tmp_path_factory.mktemp("big")
    key = generate_key(folder / "k.key")
    db = folder / "a.duckdb"
    records = (payloads * (log_module._SMALL_BATCH // len(payloads) + 2))[: log_module._SMALL_BATCH + 40]
    with AuditLog(db, key, batch_size=log_module._SMALL_BATCH + 1, checkpoint_every=100) as log:
        for payload in records:  # the first full batch is cut (and its table built) by this thread
            log.append("decision", payload=payload)
    stored = _stored(db)
    assert [text for _, _, text in stored] == [canonical_text(p) for p in records]
    assert {kind for _, kind, _ in stored} == {"JSON"}
    assert verify_database(db, [key.public]).ok


@pytest.mark.parametrize(
    ("flush_interval", "batch_size", "records"),
    [
        (0.2, 300, 1_000),  # writer thread; full batches built by the appending thread
        (0, 300, 1_000),  # no writer thread: the appending thread drains (back-pressure path)
        (0.2, 5_000, 12_000),  # the bench's batch size, two kept checkpoints and a provisional one
        (0.2, 257, 257),  # exactly one big batch
    ],
)
def test_every_record_lands_once_in_order_and_verifies(tmp_path: Path, flush_interval: float, batch_size: int,
                                                      records: int) -> None:
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, batch_size=batch_size, checkpoint_every=4_000, flush_interval=flush_interval) as log:
        for i in range(records):
            log.append("decision", actor=f"u{i % 7}", payload={"i": i, "s": "\u000b\u2028é"})
    stored = _stored(db)
    assert [seq for seq, _, _ in stored] == list(range(1, records + 1))
    assert stored[-1][2] == canonical_text({"i": records - 1, "s": "\u000b\u2028é"})
    assert verify_database(db, [key.public]).ok


def test_a_batch_table_is_built_once_whichever_threads_ask(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = log_module._arrow_rows

    def counting(rows):
        calls.append(len(rows))
        return real(rows)

    monkeypatch.setattr(log_module, "_arrow_rows", counting)
    key = generate_key(tmp_path / "k.key")
    log = AuditLog(tmp_path / "a.duckdb", key, batch_size=10**9, flush_interval=0)
    for i in range(log_module._SMALL_BATCH + 1):
        log.append("decision", payload={"i": i})
    with log._lock:
        log._cut(False)
        batch = log._pending[0]
    tables: list = []
    threads = [threading.Thread(target=lambda: tables.append(batch.table())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert calls == [log_module._SMALL_BATCH + 1]
    assert all(t is tables[0] for t in tables)


def test_nothing_of_a_big_batch_is_durable_before_its_commit(tmp_path: Path) -> None:
    """The appending thread builds the table; only the writer's commit makes the records durable."""
    key = generate_key(tmp_path / "k.key")
    log = AuditLog(tmp_path / "a.duckdb", key, batch_size=300, flush_interval=0.2)
    entered, release = threading.Event(), threading.Event()
    real_commit = log._commit

    def held_commit(batch, *args):
        entered.set()
        release.wait(10)
        real_commit(batch, *args)

    log._commit = held_commit  # type: ignore[method-assign]
    seq = 0
    for i in range(300):
        seq = log.append("decision", payload={"i": i})
    assert entered.wait(10)
    assert log.flushed == 0
    waiter_done = threading.Event()
    threading.Thread(target=lambda: (log.wait_durable(seq), waiter_done.set()), daemon=True).start()
    assert not waiter_done.wait(0.3)  # not acknowledged while its commit is held
    release.set()
    assert waiter_done.wait(10)
    assert log.flushed >= seq
    log.close()


@pytest.mark.parametrize("event", ["decision", "model_call"])  # model_call batches also fill audit_facts
def test_a_log_whose_columns_are_in_another_order_still_gets_each_value_in_its_column(tmp_path: Path,
                                                                                     event: str) -> None:
    """Big batches go in by position only where audit_log's column order is the writer's own."""
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "a.duckdb"
    con = duckdb.connect(str(db))
    from policyengine.audit.sql import q

    schema = q("create_schema")
    swapped = schema.replace("    actor       VARCHAR,\n    workflow    VARCHAR,",
                             "    workflow    VARCHAR,\n    actor       VARCHAR,")
    assert swapped != schema
    con.execute(swapped)
    con.close()
    with AuditLog(db, key, batch_size=300) as log:
        assert not log._positional
        for i in range(600):
            log.append(event, actor=f"actor-{i}", workflow=f"workflow-{i}", payload={"i": i, "model": "m"})
    with AuditLog(tmp_path / "own.duckdb", key) as own:
        assert own._positional
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT seq, actor, workflow FROM audit_log ORDER BY seq").fetchall()
    con.close()
    assert rows == [(i + 1, f"actor-{i}", f"workflow-{i}") for i in range(600)]
    assert verify_database(db, [key.public]).ok


@pytest.fixture
def small_disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def test_a_full_disk_during_big_batches_fails_the_log_and_keeps_what_was_acknowledged(tmp_path: Path,
                                                                                     small_disk: Path) -> None:
    key = generate_key(tmp_path / "k.key")
    db = small_disk / "a.duckdb"
    acknowledged = 0
    log = AuditLog(db, key, batch_size=300, checkpoint_every=600)
    with pytest.raises(AuditError, match="failed"):
        for i in range(200_000):  # ~600-byte payloads: the 2 MB disk fills within a few thousand
            seq = log.append("decision", actor=f"u{i}", payload={"i": i, "pad": "x" * 600})
            if seq % 300 == 0:
                log.wait_durable(seq)
                acknowledged = seq
    log.abandon()
    assert acknowledged >= 300
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    for wal in small_disk.glob("a.duckdb.wal"):
        shutil.copy(wal, tmp_path / "copy.duckdb.wal")
    con = duckdb.connect(str(copy), read_only=True)
    kept = con.execute("SELECT count(*) FROM audit_log").fetchone()[0]
    con.close()
    assert kept >= acknowledged
    assert verify_database(copy, [key.public]).ok
