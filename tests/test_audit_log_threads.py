"""AuditLog under threads: close vs append, ts ordering, the per-second ts cache."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from policyengine.audit import AuditError, AuditLog, generate_key
import policyengine.audit.log as log_module


def test_an_append_during_close_is_refused_not_lost(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "a.duckdb"
    log = AuditLog(db, key, flush_interval=0)
    log.append("decision", payload={"n": 0})
    real_drain = log._drain
    results: list = []

    def drain_then_append() -> None:  # runs in close() right after the final cut
        if not results:
            t = threading.Thread(target=lambda: results.append(_try_append(log)))
            t.start()
            t.join()
        real_drain()

    log._drain = drain_then_append  # type: ignore[method-assign]
    log.close()
    assert isinstance(results[0], AuditError)
    con = duckdb.connect(str(db), read_only=True)
    seqs = [r[0] for r in con.execute("SELECT seq FROM audit_log ORDER BY seq").fetchall()]
    con.close()
    assert seqs == [1]


def _try_append(log: AuditLog):
    try:
        return log.append("decision", payload={"n": 1})
    except AuditError as err:
        return err


def test_ts_is_non_decreasing_with_seq_under_threads(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k.key")
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key) as log:
        def worker(i: int) -> None:
            for j in range(300):
                log.append("decision", payload={"i": i, "j": j})
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    con = duckdb.connect(str(db), read_only=True)
    ts = [r[0] for r in con.execute("SELECT ts FROM audit_log ORDER BY seq").fetchall()]
    con.close()
    assert len(ts) == 2400
    assert ts == sorted(ts)


def test_second_cache_is_one_tuple() -> None:
    log_module.utc_now_text()
    assert isinstance(log_module._second_cache, tuple)
