"""Orchestration overhead per step: policy + audit + state, with a zero-latency model.

Runs a four-step workflow (data read, routed model call, tool call, rules
decision) over a batch of items on a real DuckDB file with the signed audit
log and the durable budget ledger, using the local simulator at zero latency,
and reports wall time per step (flushes included, amortised) and where it goes.
Steps with a side effect pay two commits each for exactly-once; they are
measured separately.

    python benchmarks/bench_orchestrator.py [--items 2000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import duckdb

from policyengine.audit import EVENTS, AuditLog, generate_key, load_private_key
from policyengine.budgets import DuckDBLedger
from policyengine.engine import load_policy
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.orchestrator.providers import LocalProvider, Providers
from policyengine.orchestrator.runner import Orchestrator
from policyengine.orchestrator.state import StateStore
from policyengine.orchestrator.workflow import (
    Ask,
    DataRead,
    ModelCall,
    Prompt,
    RulesDecision,
    ToolCall,
    Workflow,
)

RULES = """\
package bench.orch
owner "bench@example.com"
role bot
agent bench_bot
    owner "bench@example.com"
    roles bot
model small
    provider "local" region "eu-west-1" hosting internal
    cost 0.20 USD per 1M tokens latency 40 ms
model big
    provider "local" region "eu-west-1" hosting internal
    cost 10 USD per 1M tokens latency 900 ms
rule models
    allow role bot to invoke model "*"
    when context.tokens <= 8000
rule data
    allow role bot to read dataset "erp/**"
rule tools
    allow role bot to call tool "*"
rule pay
    allow role bot to pay tool "erp/payments"
    when context.amount < 1_000_000
route classify
    when context.task == "classify"
    prefer small, big
budget bench
    for workflow "bench"
    limit 1_000_000_000 tokens per month
    warn at 99%
    on exceed deny
"""


def workflow(effect: bool) -> Workflow:
    steps = [
        DataRead("read", ask=lambda c: Ask("read", "dataset", f"erp/invoices/{c.item['id']}",
                                           {"classification": "internal"}),
                 read=lambda c: {"amount": c.item["amount"]}),
        ModelCall("classify", ask=lambda c: Ask("invoke", "model", None, {"classification": "internal"},
                                                {"task": "classify", "tokens": 200}),
                  prompt=lambda c: Prompt((("user", f"invoice {c.item['id']}"),), ("ok", "bad"), "ok"),
                  subject=lambda c: {"vendor_region": "EU"}),
        ToolCall("lookup", ask=lambda c: Ask("call", "tool", "erp/vendors"), run=lambda c, k: {"vendor": "acme"}),
        RulesDecision("may_pay", ask=lambda c: Ask("pay", "tool", "erp/payments", {},
                                                   {"amount": c.item["amount"]})),
    ]
    if effect:
        steps = [ToolCall("pay", effect=True, ask=lambda c: Ask("pay", "tool", "erp/payments", {},
                                                                {"amount": c.item["amount"]}),
                          run=lambda c, k: {"ref": k})]
    return Workflow("bench", "bench_bot", tuple(steps))


class Timed:
    """Wrap an object's methods to add their wall time to a shared tally."""

    def __init__(self, inner, tally: dict, label: str, methods: tuple[str, ...]) -> None:
        self._inner = inner
        for name in methods:
            fn = getattr(inner, name)

            def timed(*a, _fn=fn, _label=f"{label}.{name}", **kw):
                t = time.perf_counter()
                try:
                    return _fn(*a, **kw)
                finally:
                    tally[_label] += time.perf_counter() - t
            setattr(self, name, timed)

    def __getattr__(self, name):
        return getattr(self._inner, name)


_RUNS = itertools.count()


def run(items: int, effect: bool, tmp: Path, breakdown: bool) -> tuple[float, int, dict]:
    rules = tmp / "bench.policy"
    rules.write_text(RULES)
    key = tmp / "bench.key"
    if not key.exists():
        generate_key(key)
    db = tmp / f"bench-{effect}-{breakdown}-{next(_RUNS)}.duckdb"  # a new file: run_batch finds no earlier runs
    conn = duckdb.connect(str(db))
    audit = AuditLog(conn, load_private_key(key))
    ledger = BufferedLedger(DuckDBLedger(conn))
    policy = load_policy([rules], ledger=ledger)
    store = StateStore(conn)
    tally: dict[str, float] = defaultdict(float)
    providers = Providers(default=LocalProvider(), retries=0)
    if breakdown:
        policy = Timed(policy, tally, "policy", ("evaluate", "charge"))
        audit = Timed(audit, tally, "audit", ("append", "flush"))
        store = Timed(store, tally, "state", ("put", "flush", "steps", "approvals", "effect"))
        providers = Timed(providers, tally, "provider", ("call",))
    orch = Orchestrator(policy, store, audit, workflows={}, providers=providers, ledger=ledger, flush_every=500,
                        record_runs="run" in EVENTS)
    wf = workflow(effect)
    batch = [{"id": f"INV-{i}", "amount": 100 + i} for i in range(items)]
    t = time.perf_counter()
    results = orch.run_batch(wf, batch, requested_by="bench")
    elapsed = time.perf_counter() - t
    orch.close()
    audit.close()
    conn.close()
    assert all(r.status == "completed" for r in results), {r.status for r in results}
    steps = sum(len(r.step_ms) for r in results)
    return elapsed, steps, tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run(200, False, tmp, False)  # warm up imports and caches
        per_step = []
        for _ in range(args.repeat):
            elapsed, steps, _ = run(args.items, False, tmp, False)
            per_step.append(elapsed / steps * 1e6)
        print(f"plain steps: {args.items} runs x 4 steps; per step median {statistics.median(per_step):.1f} µs "
              f"(runs: {', '.join(f'{x:.1f}' for x in per_step)})")
        elapsed, steps, tally = run(args.items, False, tmp, True)
        print(f"breakdown (with timing wrappers, {elapsed / steps * 1e6:.1f} µs/step):")
        for label, secs in sorted(tally.items(), key=lambda kv: -kv[1]):
            print(f"  {label:<22} {secs / steps * 1e6:8.1f} µs/step")
        rest = elapsed - sum(tally.values())
        print(f"  {'runner itself':<22} {rest / steps * 1e6:8.1f} µs/step")
        n = max(50, args.items // 10)
        elapsed, steps, _ = run(n, True, tmp, False)
        print(f"side-effect steps (write-ahead + receipt commits): {n} steps; "
              f"per step {elapsed / steps * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
