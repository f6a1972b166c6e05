"""When the audit log cannot record, the service answers 503 and never a decision (fail closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import httpx
from server_process import ALLOW, AUTHZEN_ALLOW, BUDGET_RACE, BUDGETED_CALL, RULES

from policyengine.audit import AuditLog, generate_key
from policyengine.store.holds import MemoryReservingLedger
from policyengine.server.app import DecisionApp, ServerOptions
from policyengine.server.audit_writer import DurableAudit
from policyengine.server.metrics import Metrics
from policyengine.server.policy_source import PolicyHolder


def test_a_log_that_cannot_commit_gets_503_and_no_decision(tmp_path: Path) -> None:
    connection = duckdb.connect(str(tmp_path / "a.duckdb"))
    log = AuditLog(connection, generate_key(tmp_path / "k.key"), flush_interval=0)
    audit = DurableAudit(log)
    (tmp_path / "race.policy").write_text(BUDGET_RACE)
    ledger = MemoryReservingLedger()
    holder = PolicyHolder(rules=[str(tmp_path / "race.policy"), str(RULES)], ledger=ledger)
    holder.reload("startup", force=True)
    app = DecisionApp(holder, audit, Metrics(lambda: audit.queue_depth), ServerOptions(access_log=False))

    async def drive() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            answers = [await client.post("/v1/decide", json=ALLOW)]
            connection.close()  # the database goes away under the writer
            answers.append(await client.post("/v1/decide", json=ALLOW))
            answers.append(await client.post("/access/v1/evaluation", json=AUTHZEN_ALLOW))
            answers.append(await client.post("/v1/decide/batch", json=[ALLOW, ALLOW]))
            answers.append(await client.post("/v1/explain", json=ALLOW))
            answers.append(await client.post("/v1/reserve", json={"request": BUDGETED_CALL}))
            answers.append(await client.post("/access/v1/evaluations", json={**AUTHZEN_ALLOW, "evaluations": [{}]}))
            answers.append(await client.get("/ready"))
            return answers

    try:
        ok, *refused, ready = asyncio.run(drive())
    finally:
        audit.stop()
    assert ok.status_code == 200 and ok.json()["effect"] == "allow"
    for answer in refused:
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert "not recorded, so not answered" in body["error"]
        assert "effect" not in body and "decision" not in body and "decisions" not in body
        assert "evaluations" not in body and "reservation" not in body
    assert ledger.reserved("role:caller", "tokens") == 0  # the unanswered reservation holds nothing
    assert ready.status_code == 503 and "audit log not writable" in ready.json()["problems"][0]
