"""Prometheus metrics of one server process (``GET /metrics``).

With ``--workers N`` each worker keeps and serves its own; scrape each, or sum.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters, gauges and histograms the server moves."""

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("policyengine_decisions", "Decisions answered, by effect and deciding rule.",
                                 ["effect", "rule"], registry=r)
        self.requests = Counter("policyengine_http_requests", "HTTP requests, by route and status.",
                                ["route", "status"], registry=r)
        self.latency = Histogram("policyengine_request_seconds", "Time from request to answer, by route.",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.audit_commit = Histogram("policyengine_audit_commit_seconds",
                                      "Time one group commit of the audit log took.", buckets=LATENCY_BUCKETS,
                                      registry=r)
        self.audit_batch = Histogram("policyengine_audit_commit_records", "Records one group commit made durable.",
                                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096), registry=r)
        self.audit_queue = Gauge("policyengine_audit_queue_depth", "Audit records appended and not yet durable.",
                                 registry=r)
        self.audit_queue.set_function(queue_depth)
        self.reloads = Counter("policyengine_policy_reloads", "Policy loads, by outcome (activated, refused).",
                               ["outcome"], registry=r)
        self.spend = Counter("policyengine_budget_spend", "Usage charged through /v1/charge, by budget scope and unit.",
                             ["scope", "unit"], registry=r)
        # Children by label values, found once: ``labels()`` validates and locks on every call (~3 us a request).
        self._decided: dict[tuple[str, str], Any] = {}
        self._answered: dict[tuple[str, int], Any] = {}

    def decided(self, effect: str, rule: str) -> None:
        child = self._decided.get((effect, rule))
        if child is None:
            child = self._decided[effect, rule] = self.decisions.labels(effect, rule)
        child.inc()

    def answered(self, route: str, status: int) -> None:
        """Count one HTTP answer by route and status."""
        child = self._answered.get((route, status))
        if child is None:
            child = self._answered[route, status] = self.requests.labels(route, str(status))
        child.inc()

    def committed(self, seconds: float, records: int) -> None:
        self.audit_commit.observe(seconds)
        self.audit_batch.observe(records)

    def render(self) -> bytes:
        return generate_latest(self.registry)
