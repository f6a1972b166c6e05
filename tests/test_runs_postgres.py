"""Runs and approvals on PostgreSQL: several worker processes, one truth.

Every worker is a real ``policyengine`` process with its own audit database
(``--db``) and the run state in one PostgreSQL (``--state``). The payment tool
of the test workflow writes one row per call into ``payments_made`` in that
PostgreSQL, so a side effect executed twice shows as two rows for one key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.postgres

PAYMENTS_PLUGIN = '''\
import os, time
from pathlib import Path

import psycopg

from policyengine.orchestrator.workflow import Ask, ToolCall, Workflow


def _wait(until, why):
    for _ in range(1200):  # a safety net of 60 s: the test then fails on its counts, it never hangs
        if until():
            return
        time.sleep(0.05)


def pay(ctx, key):
    url = os.environ["PAYMENTS_PG"]
    hold = os.environ.get("PAYMENTS_HOLD")
    if hold:  # this worker stops before paying until the file exists (or it is killed)
        _wait(lambda: Path(hold).exists(), "hold")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO payments_made (idem_key, pid) VALUES (%s, %s)", (key, os.getpid()))
        workers = int(os.environ.get("PAYMENTS_WORKERS", "1"))
        # every worker pays one run and then waits for the others to have paid one too: while it waits it
        # holds its run, so the others can only go on by claiming other runs
        _wait(lambda: conn.execute("SELECT count(DISTINCT pid) FROM payments_made").fetchone()[0] >= workers,
              "workers")
    return {"paid": ctx.item["amount"], "payment_ref": key}


PAYMENTS = Workflow(
    name="pg-payments", agent="payer_bot",
    nodes=(ToolCall("pay", effect=True,
                    ask=lambda ctx: Ask("pay", "tool", "bank/payments", {}, {"amount": ctx.item["amount"]}),
                    run=pay),),
    outcome=lambda ctx: "approved" if ctx.approved else "auto_resolved")
'''

RULES = """\
package pgpay
role bot
role approver
agent payer_bot
    owner "ops@example.com"
    roles bot
rule bots_pay
    allow role bot to pay tool "bank/payments"
    because "the bot pays invoices"
escalate large_payments
    when action == "pay" and context.amount > 1000
    to role approver
    within 1h else allow
    because "a person looks at large payments first"
"""

DIRECTORY = """\
users:
  operator: {name: Operator, roles: []}
  alice: {name: Alice, roles: [approver]}
  bob: {name: Bob, roles: [approver]}
  carol: {name: Carol, roles: [approver]}
  dan: {name: Dan, roles: [approver]}
"""


class Cluster:
    """Workers sharing one PostgreSQL: each command is a process with its own --db, all with one --state."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        import psycopg

        self.dir, self.url = tmp_path, url
        site = tmp_path / "site"
        (site / "pg_payments-0.1.dist-info").mkdir(parents=True)
        (site / "pg_payments.py").write_text(PAYMENTS_PLUGIN)
        (site / "pg_payments-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: pg-payments\n"
                                                                     "Version: 0.1\n")
        (site / "pg_payments-0.1.dist-info" / "entry_points.txt").write_text(
            "[policyengine.workflows]\npg-payments = pg_payments:PAYMENTS\n")
        (tmp_path / "pay.policy").write_text(RULES)
        (tmp_path / "policyengine.directory.yaml").write_text(DIRECTORY)  # beside every worker's --db
        path = os.environ.get("PYTHONPATH", "")
        self.plain = {**os.environ, "PAYMENTS_PG": url}
        self.plugin = {**self.plain, "PYTHONPATH": os.pathsep.join(p for p in (str(site), path) if p)}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE payments_made (idem_key TEXT NOT NULL, pid INTEGER NOT NULL)")

    def start(self, worker: str, *args: str, plugin: bool = True, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "policyengine", *args, "--db", f"{worker}.duckdb", "--key", "policyengine.key",
             "--rules", "pay.policy", "--state", self.url],
            cwd=self.dir, env={**(self.plugin if plugin else self.plain), **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ok(self, proc: subprocess.Popen[str]) -> str:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
        return out

    def run(self, worker: str, *args: str, plugin: bool = True) -> str:
        return self.ok(self.start(worker, *args, plugin=plugin))

    def waiting_runs(self, n: int) -> list[str]:
        """``n`` runs started on worker "seed", each waiting for an approver."""
        (self.dir / "items.json").write_text(json.dumps([{"id": f"P-{i}", "amount": 5_000 + i} for i in range(n)]))
        runs = json.loads(self.run("seed", "run", "pg-payments", "--input", "items.json", "--json"))["runs"]
        assert [r["status"] for r in runs] == ["waiting_approval"] * n
        return [r["run_id"] for r in runs]

    def sql(self, query: str, *params: object) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def payments(self) -> dict[str, int]:
        """How many times the payment of each run was made (a run's key is run_id/pay)."""
        rows = self.sql("SELECT idem_key, count(*) FROM payments_made GROUP BY idem_key")
        return {key.split("/")[0]: n for key, n in rows}


def _later() -> str:
    return (datetime.now(UTC) + timedelta(hours=3)).isoformat()


@pytest.fixture
def cluster(tmp_path, postgres_url) -> Cluster:
    return Cluster(tmp_path, postgres_url)


def test_two_resume_workers_share_interrupted_runs_and_pay_each_once(cluster):
    runs = cluster.waiting_runs(6)
    # expired (else allow) where the workflow is not installed: the runs are left running for a worker that has it
    cluster.run("expirer", "runs", "expire", "--now", _later(), "--clock-override", plugin=False)
    assert cluster.sql("SELECT count(*) FROM orch_runs WHERE status = 'running'") == [(6,)]
    workers = [cluster.start(f"w{n}", "runs", "resume", PAYMENTS_WORKERS="2") for n in range(2)]
    resumed = [cluster.ok(w).splitlines() for w in workers]
    by_worker = [{line.split("\t")[0] for line in lines} for lines in resumed]
    assert by_worker[0].isdisjoint(by_worker[1]) and by_worker[0] | by_worker[1] == set(runs)
    assert all(line.endswith("\tcompleted\tapproved") or line.endswith("\tcompleted\tauto_resolved")
               for lines in resumed for line in lines)
    assert cluster.payments() == {run_id: 1 for run_id in runs}  # every payment made, none twice
    payers = {pid for (pid,) in cluster.sql("SELECT DISTINCT pid FROM payments_made")}
    assert payers == {w.pid for w in workers}  # both workers paid: each went on while the other held a run
    assert cluster.sql("SELECT status, count(*) FROM orch_runs GROUP BY status") == [("completed", 6)]


def test_a_live_workers_run_is_not_taken_and_a_dead_workers_run_is_taken_once(cluster):
    (run_id,) = cluster.waiting_runs(1)
    cluster.run("expirer", "runs", "expire", "--now", _later(), "--clock-override", plugin=False)
    hold = cluster.dir / "release"
    first = cluster.start("w0", "runs", "resume", PAYMENTS_HOLD=str(hold))
    # the first worker holds the run: its intent to pay is committed, the payment waits for the file
    for _ in range(1200):
        if cluster.sql("SELECT count(*) FROM orch_intents WHERE run_id = %s", run_id) == [(1,)]:
            break
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    assert cluster.run("w1", "runs", "resume") == ""  # the run is held by a live worker: not taken
    explicit = cluster.start("w1", "runs", "resume", run_id)
    _, err = explicit.communicate(timeout=300)
    assert explicit.returncode == 1 and "another live worker is driving it" in err
    first.send_signal(signal.SIGKILL)  # the worker dies before paying: its session, and its lock, end
    first.communicate(timeout=60)
    hold.touch()
    for _ in range(1200):  # PostgreSQL ends the dead worker's session when it sees the connection close
        if cluster.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7020131") == [(0,)]:
            break
        time.sleep(0.05)
    assert cluster.run("w1", "runs", "resume").split("\t")[:3] == [run_id, "pg-payments", "completed"]
    assert cluster.payments() == {run_id: 1}
    assert cluster.run("w1", "runs", "resume") == ""  # nothing left


def _until(check, proc: subprocess.Popen[str] | None = None) -> None:
    for _ in range(1200):
        if check():
            return
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("timed out")


def _intents(cluster: Cluster) -> int:
    """Intents committed so far (0 before the first worker created the tables)."""
    if cluster.sql("SELECT to_regclass('orch_intents')") == [(None,)]:
        return 0
    return cluster.sql("SELECT count(*) FROM orch_intents")[0][0]


def _paid_per_item(cluster: Cluster) -> dict[str, int]:
    """Payments made per input item (through the run that made each)."""
    items = dict(cluster.sql("SELECT run_id, item_id FROM orch_runs"))
    paid: dict[str, int] = {}
    for run_id, n in cluster.payments().items():
        paid[items[run_id]] = paid.get(items[run_id], 0) + n
    return paid


BATCH = ("run", "pg-payments", "--input", "items.json", "--json")


def test_a_batch_whose_worker_was_killed_is_run_again_on_another_worker_and_pays_each_item_once(cluster):
    (cluster.dir / "items.json").write_text(json.dumps([{"id": f"P-{i}", "amount": 100 + i} for i in range(4)]))
    hold = cluster.dir / "release"
    first = cluster.start("w0", *BATCH, PAYMENTS_HOLD=str(hold))
    _until(lambda: _intents(cluster) == 1, first)  # about to pay P-0
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    hold.touch()
    _until(lambda: cluster.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                               "AND classid = 7020131") == [(0,)])  # PostgreSQL saw the worker go
    again = json.loads(cluster.run("w1", *BATCH))  # the same command, on another worker
    third = json.loads(cluster.run("w2", *BATCH))  # and once more
    cluster.run("w3", "runs", "resume")  # no run of the killed worker is left to pay P-0 a second time
    assert _paid_per_item(cluster) == {f"P-{i}": 1 for i in range(4)}
    assert [(r["item_id"], r["status"], r["earlier"]) for r in again["runs"]] == [
        ("P-0", "completed", "resumed"), ("P-1", "completed", None), ("P-2", "completed", None),
        ("P-3", "completed", None)]
    assert [r["earlier"] for r in third["runs"]] == ["done"] * 4


def test_the_same_batch_on_two_live_workers_pays_each_item_once(cluster):
    (cluster.dir / "items.json").write_text(json.dumps([{"id": f"P-{i}", "amount": 100 + i} for i in range(4)]))
    hold = cluster.dir / "release"
    first = cluster.start("w0", *BATCH, PAYMENTS_HOLD=str(hold))
    _until(lambda: _intents(cluster) == 1, first)  # holds P-0, about to pay
    second = json.loads(cluster.run("w1", *BATCH))  # looks P-0 up: held by a live worker, left to it
    hold.touch()
    out, err = first.communicate(timeout=300)
    assert _paid_per_item(cluster) == {f"P-{i}": 1 for i in range(4)}
    assert [r["earlier"] for r in second["runs"]] == ["held", None, None, None]
    # the first worker paid P-0, then found P-1 run by the other worker meanwhile: refused, not paid again
    assert first.returncode == 1 and "held by another worker" in err and "Traceback" not in err, (out, err)
    # P-0's completion was in the refused write; its receipt was committed on its own, so running the batch
    # again completes P-0 from it and pays nothing
    third = json.loads(cluster.run("w2", *BATCH))
    assert [r["earlier"] for r in third["runs"]] == ["resumed", "done", "done", "done"]
    assert _paid_per_item(cluster) == {f"P-{i}": 1 for i in range(4)}
    assert cluster.sql("SELECT status, count(*) FROM orch_runs GROUP BY status") == [("completed", 4)]


def test_one_of_four_concurrent_approvers_on_four_workers_wins_and_the_run_resumes_once(cluster):
    (run_id,) = cluster.waiting_runs(1)
    approvers = [cluster.start(f"w-{user}", "approve", run_id, "--as", user)
                 for user in ("alice", "bob", "carol", "dan")]
    results = [(p.returncode, out, err) for p in approvers for out, err in [p.communicate(timeout=300)]]
    winners = [out for code, out, _ in results if code == 0]
    assert len(winners) == 1, results
    assert winners[0].startswith(f"{run_id} approved by ")
    assert winners[0].rstrip().endswith("run completed, outcome approved")
    for code, _, err in results:
        if code != 0:
            assert code == 1 and "not waiting for approval" in err and "Traceback" not in err, err
    assert cluster.payments() == {run_id: 1}
    assert cluster.sql("SELECT status, count(*) FROM orch_approvals GROUP BY status") == [("approved", 1)]


def test_two_expiring_workers_expire_each_deadline_once(cluster):
    runs = cluster.waiting_runs(4)
    later = _later()
    expirers = [cluster.start(f"w{n}", "runs", "expire", "--now", later, "--clock-override") for n in range(2)]
    outputs = [cluster.ok(p).splitlines() for p in expirers]
    expired = sorted(line.split("\t")[0] for lines in outputs for line in lines)
    assert expired == sorted(runs)  # each run expired (and resumed) by exactly one of the two
    assert cluster.payments() == {run_id: 1 for run_id in runs}  # else allow: paid once each
    assert cluster.sql("SELECT status, count(*) FROM orch_approvals GROUP BY status") == [("expired", 4)]


def test_runs_list_and_show_read_the_shared_run_state(cluster):
    (run_id,) = cluster.waiting_runs(1)
    listed = subprocess.run([sys.executable, "-m", "policyengine", "runs", "list", "--json", "--state", cluster.url],
                            cwd=cluster.dir, env=cluster.plain, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["run_id"], row["status"], row["waiting_for"]) == (run_id, "waiting_approval", "approver")
    shown = subprocess.run([sys.executable, "-m", "policyengine", "runs", "show", run_id[:8], "--json",
                            "--state", cluster.url], cwd=cluster.dir, env=cluster.plain, capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert [s["status"] for s in json.loads(shown.stdout)["steps"]] == ["waiting"]


# --- the store itself: several workers in one process, each with its own session and liveness lock ---------------

T0 = datetime(2026, 12, 1, 9, 0)


def _waiting_run(store, run_id: str):
    from policyengine.orchestrator.state import ApprovalRecord, RunRecord

    run = RunRecord(run_id, None, "pg-payments", "P-1", "operator", "waiting_approval", "escalated", "{}", None,
                    "hash", 0, 0.0, T0, T0)
    gate = ApprovalRecord(run_id, "pay", "large_payments", "approver", "operator", T0, T0 + timedelta(hours=1),
                          "allow", False, "pending", None, None, None)
    store.put(run, gate)
    store.flush()
    return run, gate


@pytest.mark.parametrize("decision", ["approved", "rejected", "expired"])
def test_of_four_workers_deciding_one_gate_at_once_exactly_one_wins(postgres_url, decision):
    import threading
    from dataclasses import replace

    from policyengine.store import open_store
    from policyengine.store.stores import open_run_state

    with open_store(postgres_url) as shared:
        workers = [open_run_state(shared) for _ in range(4)]
        run, gate = _waiting_run(workers[0], "r-decide")
        seen = [w.approvals(run.run_id) for w in workers]  # every worker sees the gate pending
        assert all([g.status for g in s] == ["pending"] for s in seen)
        start, won = threading.Barrier(4), {}

        def decide(n: int) -> None:
            start.wait()
            won[n] = workers[n].decide(run, [replace(gate, status=decision, approver=f"user{n}",
                                                     decided_at=T0 + timedelta(minutes=n))])

        threads = [threading.Thread(target=decide, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        (winner,) = [n for n, ok in won.items() if ok]
        assert sorted(won) == [0, 1, 2, 3]
        (decided,) = workers[1].approvals(run.run_id)
        assert (decided.status, decided.approver) == (decision, f"user{winner}")
        held = workers[2].run(run.run_id)
        assert held is not None and held.status == "running"  # taken by the winner, to drive on once
        assert not any(w.decide(run, [replace(gate, status="approved", approver="late")]) for w in workers)
        for w in workers:
            w.close()


def test_a_run_held_by_a_live_worker_is_claimed_by_no_one_else_and_by_one_worker_once_it_is_gone(postgres_url):
    from policyengine.store import StoreError, open_store
    from policyengine.store.stores import open_run_state

    with open_store(postgres_url) as shared:
        first, second, third = (open_run_state(shared) for _ in range(3))
        run, _ = _waiting_run(first, "r-claim")
        from dataclasses import replace

        first.put(replace(run, status="running"))
        first.flush()
        assert second.claim_unfinished(["pg-payments"]) == [] and not second.claim(run)
        with pytest.raises(StoreError, match="no longer holds it"):
            second.write_intent(run, "pay", "r-claim/pay")  # a side effect needs the run held
        first.abandon()  # the worker's session ends: its liveness lock with it
        claims = [second.claim_unfinished(["pg-payments"]), third.claim_unfinished(["pg-payments"])]
        assert sorted(len(c) for c in claims) == [0, 1]  # taken once
        taker = second if claims[0] else third
        taker.write_intent(run, "pay", "r-claim/pay")
        with pytest.raises(StoreError, match="held by another worker"):
            first.put(replace(run, status="completed"))  # the old holder's late writes are refused
            first.flush()
        for w in (second, third):
            w.close()
