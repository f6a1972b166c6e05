"""The server's group commit (``DurableAudit``): every waiter is answered only once its record is durable."""

from __future__ import annotations

import asyncio
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
