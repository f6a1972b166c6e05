"""The server's group commit (``DurableAudit``): every waiter is answered only once its record is durable."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from policyengine.audit import AuditLog, generate_key
from policyengine.server.audit_writer import DurableAudit


@pytest.mark.parametrize("waiters", [1, 16, 300])
def test_every_waiter_is_released_after_its_record_commits_and_commits_are_shared(tmp_path: Path,
                                                                                   waiters: int) -> None:
    log = AuditLog(tmp_path / "a.duckdb", generate_key(tmp_path / "k.key"), flush_interval=0)
    commits: list[int] = []
    audit = DurableAudit(log, on_commit=lambda seconds, records: commits.append(records))

    async def one(index: int) -> tuple[int, int]:
        seq = audit.append("decision", {"request": {"n": index}, "decision": {"effect": "allow"}})
        await audit.durable(seq)
        return seq, log.flushed  # durable when answered, never before

    async def run_all() -> list[tuple[int, int]]:
        return await asyncio.gather(*(one(index) for index in range(waiters)))

    try:
        answered = asyncio.run(run_all())
        assert all(seq <= flushed for seq, flushed in answered)
        assert sum(commits) == waiters  # each waiter counted once, in the commit that covered it
        assert len(commits) <= max(1, waiters // 2)  # group commit: waiters share commits
        again = asyncio.run(run_all())  # a second event loop (the committer hands back to the new one)
        assert all(seq <= flushed for seq, flushed in again)
    finally:
        audit.close()
    assert audit.queue_depth == 0


def test_stop_ends_the_committer_and_leaves_the_log_open(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.duckdb", generate_key(tmp_path / "k.key"), flush_interval=0)
    audit = DurableAudit(log)

    async def once() -> None:
        await audit.durable(audit.append("decision", {"request": {}, "decision": {"effect": "deny"}}))

    asyncio.run(once())
    audit.stop()
    seq = log.append("decision", payload={"request": {}, "decision": {"effect": "deny"}})
    log.wait_durable(seq)  # still writable: stop is not close
    log.close()


def test_an_answer_waits_for_its_record_and_its_reports_columns_follow(tmp_path: Path) -> None:
    """A gateway's ``model_call`` answer waits for the record and its checkpoint; the record's ``audit_facts`` row
    (the reports' columns) is written after the answer is handed back, off its path, and before the log closes."""
    from policyengine.audit import verify_database

    key = generate_key(tmp_path / "k.key")
    log = AuditLog(tmp_path / "a.duckdb", key, flush_interval=0)
    events: list[tuple[str, int]] = []  # in the committer thread: each answer handed back, each facts row written
    audit = DurableAudit(log)
    post, add_rows = audit._post, log._facts.add_rows

    def posted(callback, *args):  # noqa: ANN001, ANN202 - DurableAudit's own signature
        if callback == audit._release:
            events.extend(("answered", seq) for seq in range(1, args[0] + 1) if ("answered", seq) not in events)
        post(callback, *args)

    def facts_written(con, rows, prepared=None):  # noqa: ANN001, ANN202 - the FactsWriter's own signature
        events.extend(("facts", row[0]) for row in rows)
        add_rows(con, rows, prepared)

    audit._post = posted  # type: ignore[method-assign]
    log._facts.add_rows = facts_written  # type: ignore[method-assign]

    async def calls() -> None:
        for index in range(4):
            await audit.durable(audit.append("model_call", {"model": "m", "outcome": "ok", "i": index}))

    try:
        asyncio.run(calls())
        deadline = time.monotonic() + 10
        while log.facts_due and time.monotonic() < deadline:  # written once nobody has waited for a while
            time.sleep(0.01)
        assert log.facts_due == 0
    finally:
        audit.close()
    facts = [seq for what, seq in events if what == "facts"]
    assert facts == [1, 2, 3, 4], events  # every record got its facts row, once, in order
    assert all(events.index(("answered", seq)) < events.index(("facts", seq)) for seq in facts), events
    report = verify_database(tmp_path / "a.duckdb", [key.public])
    assert report.ok and report.notes == ()


def test_a_rolled_series_answers_first_and_every_segment_keeps_its_facts(tmp_path: Path) -> None:
    """``serve --roll-*`` hands DurableAudit a SegmentedLog: answer-first commits, and the facts rows left for
    later, must work across rolls (a sealed segment writes its facts as it closes)."""
    import duckdb

    from policyengine.audit.segments import RollPolicy, SegmentedLog, verify_segments

    key = generate_key(tmp_path / "k.key")
    log = SegmentedLog(tmp_path, "audit", key, roll=RollPolicy(records=3), flush_interval=0)
    audit = DurableAudit(log)

    async def calls() -> None:
        for index in range(8):
            await asyncio.wait_for(audit.durable(audit.append("model_call", {"model": "m", "i": index})), 30)

    try:
        asyncio.run(calls())
    finally:
        audit.close()
    assert verify_segments(tmp_path, [key.public]).ok
    counts = []
    for path in sorted(tmp_path.glob("audit.*.duckdb")):
        con = duckdb.connect(str(path), read_only=True)
        try:
            counts.append(con.execute("SELECT (SELECT count(*) FROM audit_log WHERE event = 'model_call'), "
                                      "(SELECT count(*) FROM audit_facts)").fetchone())
        finally:
            con.close()
    assert len(counts) > 2 and all(calls == facts for calls, facts in counts) and sum(c for c, _ in counts) == 8
