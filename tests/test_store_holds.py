"""Reservations around model calls (``policyengine.store.holds``): the helper, and the orchestrator using it.

The multi-process test starts four real ``policyengine run`` processes sharing
one PostgreSQL ledger and a 3,000-token budget: each reserves a call's estimate
before the call, so together they never spend more than the limit (without
reservations two such processes spent 5,272 of 3,000).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from policyengine.budgets import window_bounds
from policyengine.engine import load_policy
from policyengine.orchestrator.ledger import BufferedLedger
from policyengine.store.embedded_ledger import EmbeddedLedger
from policyengine.store.holds import MemoryReservingLedger, release, reserve, settle
from policyengine.store.protocols import Reservation

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
POLICY = """\
package holds.test
role caller
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1000 USD per 1M tokens latency 10 ms
rule callers_invoke
    allow role caller to invoke model "*"
budget daily_tokens
    for role caller
    limit 1_000 tokens per day
    limit 1_500 tokens per month
    on exceed deny
budget monthly_tokens
    for role caller
    limit 5_000 tokens per month
    on exceed deny
budget model_money
    for model small
    limit 5 USD per day
    on exceed deny
"""
REQUEST = {"principal": {"id": "bob", "roles": ["caller"]}, "action": "invoke",
           "resource": {"kind": "model", "id": "small"}}


def ledgers(tmp_path: Path):
    yield "memory", MemoryReservingLedger()
    yield "embedded", EmbeddedLedger(duckdb.connect(str(tmp_path / "ledger.duckdb")))
    yield "buffered", BufferedLedger(EmbeddedLedger(duckdb.connect(str(tmp_path / "buffered.duckdb"))))


@pytest.fixture(params=["memory", "embedded", "buffered"])
def policy_and_ledger(tmp_path, request):
    ledger = dict(ledgers(tmp_path))[request.param]
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    yield load_policy([str(tmp_path / "p.policy")], ledger=ledger), ledger


def test_limits_sharing_a_scope_and_unit_hold_and_charge_once(policy_and_ledger):
    policy, ledger = policy_and_ledger
    budgets = policy.budgets_for(REQUEST)
    hold = reserve(ledger, budgets, 600, 0.6, "USD", at=NOW)
    assert hold.refused_by is None
    # three token limits on role:caller, one hold; one USD limit on model:small
    assert sorted((r.scope_key, u) for r, u in hold.reservations) == [("model:small", "USD"),
                                                                     ("role:caller", "tokens")]
    assert ledger.reserved("role:caller", "tokens") == 600
    assert reserve(ledger, budgets, 500, 0.5, "USD", at=NOW).refused_by == "holds.test.daily_tokens"  # 1,100 > 1,000
    assert ledger.reserved("role:caller", "tokens") == 600
    assert ledger.reserved("model:small", "USD") == pytest.approx(0.6)
    settle(ledger, hold, 400, 0.4)
    day = window_bounds("day", NOW)
    assert ledger.usage("role:caller", "tokens", *day) == 400  # once, not once per limit
    assert ledger.usage("model:small", "USD", *day) == pytest.approx(0.4)
    assert ledger.usage("model:small", "tokens", *day) == 400  # unheld unit of a covering scope: charged too
    assert ledger.usage("role:caller", "USD", *day) == pytest.approx(0.4)
    assert ledger.reserved("role:caller", "tokens") == 0 and ledger.reserved("model:small", "USD") == pytest.approx(0)


def test_a_refusal_by_the_second_window_holds_nothing(policy_and_ledger):
    policy, ledger = policy_and_ledger
    budgets = policy.budgets_for(REQUEST)
    earlier = datetime(2026, 11, 2, 12, tzinfo=UTC)  # same month, another day
    ledger.charge("role:caller", "tokens", 1_200, earlier)
    refused = reserve(ledger, budgets, 400, 0.4, "USD", at=NOW)  # day: 400 <= 1,000; month: 1,600 > 1,500
    assert refused.refused_by == "holds.test.daily_tokens" and refused.refused_unit == "tokens"
    assert ledger.reserved("role:caller", "tokens") == 0 and ledger.reserved("model:small", "USD") == pytest.approx(0)
    fits = reserve(ledger, budgets, 300, 0.3, "USD", at=NOW)
    assert fits.refused_by is None
    release(ledger, fits)
    assert ledger.reserved("role:caller", "tokens") == 0
    assert ledger.usage("role:caller", "tokens", *window_bounds("month", NOW)) == 1_200


def test_buffered_ledger_counts_pending_charges_and_holds(tmp_path):
    ledger = BufferedLedger(EmbeddedLedger(duckdb.connect(str(tmp_path / "b.duckdb"))))
    ledger.charge("s", "tokens", 700, NOW)  # pending, not yet flushed
    assert ledger.reserve("s", "tokens", 301, limit=1_000, window="day", at=NOW) is None
    held = ledger.reserve("s", "tokens", 300, limit=1_000, window="day", at=NOW)
    assert isinstance(held, Reservation)
    assert ledger.reserve("s", "tokens", 1, limit=1_000, window="day", at=NOW) is None
    ledger.settle(held, 100)
    ledger.flush()
    assert ledger.durable.usage("s", "tokens", *window_bounds("day", NOW)) == 800
    assert ledger.reserve("s", "tokens", 200, limit=1_000, window="day", at=NOW) is not None


def _cli() -> list[str]:
    exe = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "policyengine"]


# A workflow whose decision under-declares its usage (10 tokens) while each call
# really takes about 210: the decision alone lets every process in flight
# through near the limit. Installed as a plugin (entry point) for ``run``.
BURST_FLOWS = '''\
from policyengine.orchestrator.workflow import Ask, ModelCall, Prompt, Workflow

BURST = Workflow(
    name="burst", agent="burst_bot",
    nodes=(ModelCall("classify", ask=lambda ctx: Ask("invoke", "model", "small", {}, {"tokens": 10}),
                     prompt=lambda ctx: Prompt((("user", "classify item " + str(ctx.item["id"]) + " " * 40),),
                                               max_tokens=200)),))
'''
BURST_RULES = """\
package burst
role bot
agent burst_bot
    owner "ops@example.com"
    roles bot
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 20 ms
rule bots_invoke
    allow role bot to invoke model "*"
budget burst_tokens
    for workflow "burst"
    limit 3_000 tokens per month
    on exceed deny
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_four_run_processes_sharing_a_postgres_ledger_never_overspend(postgres_url, tmp_path):
    import os

    from policyengine.store import open_store

    site = tmp_path / "site"
    (site / "burst_flows-0.1.dist-info").mkdir(parents=True)
    (site / "burst_flows.py").write_text(BURST_FLOWS)
    (site / "burst_flows-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: burst-flows\n"
                                                                 "Version: 0.1\n")
    (site / "burst_flows-0.1.dist-info" / "entry_points.txt").write_text(
        "[policyengine.workflows]\nburst = burst_flows:BURST\n")
    (tmp_path / "burst.policy").write_text(BURST_RULES)
    # each call takes 30 ms and answers 200 tokens (the prompt's max_tokens), so calls overlap at the limit
    (tmp_path / "providers.yaml").write_text("models:\n  small: {tokens_out: 500, latency_ms: 30}\n")
    for n in range(4):  # items of their own: the same item on two workers is one run (docs/orchestrator.md)
        (tmp_path / f"items-{n}.json").write_text(json.dumps([{"id": f"w{n}-{i}"} for i in range(30)]))
    env = {**os.environ, "PYTHONPATH": str(site)}
    procs = [subprocess.Popen([*_cli(), "run", "burst", "--input", f"items-{n}.json", "--json", "--rules",
                               "burst.policy",
                               "--providers", "providers.yaml", "--db", f"w{n}.duckdb", "--key", f"w{n}.key",
                               "--state", postgres_url],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in range(4)]
    outputs = [p.communicate(timeout=600) for p in procs]
    summaries = []
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        summaries.append(json.loads(out))
    spent_by_runs = sum(s["tokens"] for s in summaries)
    with open_store(postgres_url) as store:
        month = window_bounds("month", datetime.now(UTC))
        spent = store.ledger.usage("workflow:burst", "tokens", *month)
        assert store.ledger.reserved("workflow:burst", "tokens") == 0  # every hold settled or released
    assert spent == spent_by_runs  # every call that happened was charged
    assert 0 < spent <= 3_000
    assert sum(s["denied"] for s in summaries) > 0  # 120 calls of about 210 tokens: the budget did run out


def test_settles_from_many_threads_share_one_commit_and_each_returns_once_durable(tmp_path):
    path = tmp_path / "group.duckdb"
    ledger = EmbeddedLedger(path)
    real_write, batches, first_started, release_first = ledger._write, [], threading.Event(), threading.Event()

    def write(batch):
        batches.append(len(batch))
        if len(batches) == 1:
            first_started.set()
            release_first.wait(30)  # the first commit is slow: the next settles queue behind it
        real_write(batch)

    ledger._write = write
    holds = [ledger.reserve("s", "tokens", 100, limit=10_000, window="day", at=NOW) for _ in range(6)]
    done: list[int] = []
    first = threading.Thread(target=lambda: (ledger.settle(holds[0], 50), done.append(0)))
    first.start()
    assert first_started.wait(30)
    others = [threading.Thread(target=lambda i=i: (ledger.settle(holds[i], 50), done.append(i))) for i in range(1, 6)]
    for t in others:
        t.start()
    while ledger._queued < 6:  # every settle has queued its charge (and counted it) behind the first commit
        threading.Event().wait(0.01)
    assert done == [] and ledger.usage("s", "tokens", *window_bounds("day", NOW)) == 300
    assert ledger.reserved("s", "tokens") == 0
    release_first.set()
    for t in (first, *others):
        t.join(30)
    assert sorted(done) == [0, 1, 2, 3, 4, 5] and batches == [1, 5]  # one commit for the five that waited
    ledger.close()
    with EmbeddedLedger(path) as reopened:
        assert reopened.usage("s", "tokens", *window_bounds("day", NOW)) == 300


def test_a_failed_commit_raises_to_its_callers_and_keeps_their_holds(tmp_path):
    from policyengine.store import StoreError

    ledger = EmbeddedLedger(tmp_path / "fail.duckdb")
    ledger.charge("s", "tokens", 200, NOW)
    hold = ledger.reserve("s", "tokens", 100, limit=1_000, window="day", at=NOW)

    def broken(batch):
        raise duckdb.IOException("IO Error: disk full")

    real, ledger._write = ledger._write, broken
    with pytest.raises(StoreError, match="could not record usage: IO Error: disk full"):
        ledger.settle(hold, 80)
    day = window_bounds("day", NOW)
    assert ledger.usage("s", "tokens", *day) == 200  # what was not written is not counted
    assert ledger.reserved("s", "tokens") == 100  # and the call's budget stays held (fail closed)
    ledger._write = real
    ledger.settle(hold, 80)
    assert ledger.usage("s", "tokens", *day) == 280 and ledger.reserved("s", "tokens") == 0
    ledger.close()


@pytest.fixture(params=["memory", "embedded", "buffered", "postgres"])
def any_ledger(tmp_path, request):
    if request.param == "postgres":
        from policyengine.store.postgres import PostgresLedger, connect_pool

        pool = connect_pool(request.getfixturevalue("postgres_url"), size=1)
        yield PostgresLedger(pool)
        pool.close()
        return
    yield dict(ledgers(tmp_path))[request.param]


def test_a_settle_after_a_release_or_an_expiry_still_records_the_usage(any_ledger):
    """A charge of a reservation always records the usage it reports: after a release (the call happened
    after all) the whole of it, after an expiry (charged at its estimate) what passes the estimate."""
    ledger, scope = any_ledger, "role:late"
    day = window_bounds("day", NOW)
    released = ledger.reserve(scope, "tokens", 400, limit=10_000, window="day", at=NOW)
    ledger.release(released)
    ledger.settle(released, 900)
    assert ledger.usage(scope, "tokens", *day) == 900
    short = ledger.reserve(scope, "tokens", 300, limit=10_000, window="day", at=NOW)
    long = ledger.reserve(scope, "tokens", 300, limit=10_000, window="day", at=NOW)
    assert ledger.expire(short.expires_at) == 2  # nobody settled them in time: charged at 300 each
    assert ledger.usage(scope, "tokens", *day) == 1_500
    ledger.settle(short, 120)  # used less than the estimate already charged: nothing more
    ledger.settle(long, 5_000)  # used more: the 4,700 past the estimate are charged too
    assert ledger.usage(scope, "tokens", *day) == 6_200
    assert ledger.reserved(scope, "tokens") == 0
    assert ledger.reserve(scope, "tokens", 4_000, limit=10_000, window="day", at=NOW) is None  # 6,200 + 4,000
