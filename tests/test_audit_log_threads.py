"""AuditLog under threads: close vs append, ts ordering, the per-second ts cache."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import duckdb
import pytest

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


# -- the GIL switch interval while a commit runs (log._prompt_gil_handoff) --------------------------


@pytest.fixture
def switch_interval():
    saved = sys.getswitchinterval()
    yield
    sys.setswitchinterval(saved)


@pytest.mark.parametrize(("before", "inside", "after"), [
    (0.005, 0.0005, 0.005),  # CPython's default: shortened for the commit, then restored
    (0.02, 0.0005, 0.02),
    (0.0001, 0.0001, 0.0001),  # already shorter: left as it is
])
def test_a_commit_shortens_the_switch_interval_while_it_runs(tmp_path: Path, switch_interval, before, inside,
                                                              after) -> None:
    sys.setswitchinterval(before)
    seen: list[float] = []
    with AuditLog(tmp_path / "a.duckdb", generate_key(tmp_path / "k.key"), flush_interval=0) as log:
        log.append("decision", payload={"n": 0})
        real_add_rows = log._facts.add_rows

        def add_rows(cur, rows):  # runs inside the records' transaction
            seen.append(sys.getswitchinterval())
            return real_add_rows(cur, rows)

        log._facts.add_rows = add_rows  # type: ignore[method-assign]
        log.flush()
    assert seen and all(value == pytest.approx(inside, rel=0.02) for value in seen)
    assert sys.getswitchinterval() == pytest.approx(after, rel=0.02)


def test_overlapping_commits_restore_the_interval_once_the_last_one_ends(switch_interval) -> None:
    sys.setswitchinterval(0.005)
    first, second = log_module._prompt_gil_handoff(), log_module._prompt_gil_handoff()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.0005)  # the second commit still runs
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_an_interval_the_application_set_during_a_commit_is_kept(switch_interval) -> None:
    sys.setswitchinterval(0.005)
    with log_module._prompt_gil_handoff():
        sys.setswitchinterval(0.002)
    assert sys.getswitchinterval() == pytest.approx(0.002)
