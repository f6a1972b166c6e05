"""``--otel``: one span per decision carrying effect, rule, policy hash and audit seq (in-memory exporter)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from server_process import ALLOW, DENY, RULES

from policyengine.audit import AuditLog, generate_key
from policyengine.budgets import InMemoryLedger
from policyengine.server.app import DecisionApp, ServerOptions
from policyengine.server.audit_writer import DurableAudit
from policyengine.server.metrics import Metrics
from policyengine.server.policy_source import PolicyHolder

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def test_each_decision_is_one_span_with_effect_rule_hash_and_seq(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    log = AuditLog(tmp_path / "a.duckdb", generate_key(tmp_path / "k.key"))
    audit = DurableAudit(log)
    holder = PolicyHolder(rules=[str(RULES)], ledger=InMemoryLedger())
    holder.reload("startup", force=True)
    app = DecisionApp(holder, audit, Metrics(lambda: audit.queue_depth),
                      ServerOptions(access_log=False, tracer=provider.get_tracer("test")))

    async def drive() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/decide", json=body) for body in (ALLOW, DENY)]

    try:
        answers = asyncio.run(drive())
    finally:
        audit.close()
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["policyengine.decision"] * 2
    for span, answer in zip(spans, answers, strict=True):
        attributes = dict(span.attributes or {})
        assert attributes["policyengine.effect"] == answer.json()["effect"]
        assert attributes["policyengine.audit_seq"] == int(answer.headers["x-audit-seq"])
        assert attributes["policyengine.policy_hash"] == answer.json()["policy_hash"]
        assert attributes["policyengine.rule"] == answer.json()["reasons"][0]["rule"]
