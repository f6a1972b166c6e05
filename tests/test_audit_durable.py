"""Durable before acknowledged: ``wait_durable`` (group commit), and ``eval --audit`` printing only committed decisions."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from policyengine.audit import AuditError, AuditLog, generate_key, verify_database
from tests.services import small_tmpfs

POLICY = """
package shop
role clerk
rule clerks_read
    allow role clerk to read dataset "orders/*"
    because "clerks handle orders"
rule no_archive
    deny any to read dataset "orders/archive/*"
"""


@pytest.fixture
def key(tmp_path: Path):
    return generate_key(tmp_path / "signing.key")


def test_wait_durable_returns_once_the_record_is_committed(tmp_path: Path, key) -> None:
    db = tmp_path / "a.duckdb"
    with AuditLog(db, key, flush_interval=60) as log:  # the timer alone would not write for a minute
        seq = log.append("alert", payload={"kind": "x"})
        assert log.flushed < seq
        log.wait_durable(seq)
        assert log.flushed >= seq
        log.wait_durable(seq)  # already durable: returns at once
        with pytest.raises(AuditError, match="never appended"):
            log.wait_durable(seq + 1)
        log.snapshot(tmp_path / "snap.duckdb")
    assert verify_database(tmp_path / "snap.duckdb", [key.public]).records == 1


@pytest.mark.parametrize("flush_interval", [0, 60], ids=["no writer thread", "writer thread"])
def test_many_waiters_share_one_commit(tmp_path: Path, key, flush_interval: float) -> None:
    """Writes held back while 20 threads append and wait: they are committed together, not one by one."""
    log = AuditLog(tmp_path / "a.duckdb", key, flush_interval=flush_interval)
    commits: list[int] = []
    original = log._commit

    def counting(batch, *args):  # the one transaction per batch, counted
        commits.append(len(batch.rows))
        original(batch, *args)

    log._commit = counting  # type: ignore[method-assign]
    appended = threading.Barrier(21)
    errors: list[BaseException] = []

    def caller(i: int) -> None:
        try:
            seq = log.append("decision", actor=f"u{i}", payload={"i": i})
            appended.wait()
            log.wait_durable(seq)
            assert log.flushed >= seq
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    with log._io:  # no commit can happen until every caller has appended
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        appended.wait()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sum(commits) == 20
    assert len(commits) <= 2, commits  # one group (a first record may have been cut just before the rest)
    log.close()


def test_a_failed_write_is_raised_to_every_waiter(tmp_path: Path, key) -> None:
    con = duckdb.connect()
    log = AuditLog(con, key, flush_interval=60)
    seq = log.append("alert", payload={"kind": "x"})
    con.execute("DROP TABLE audit_checkpoints")  # the next commit cannot insert its checkpoint
    with pytest.raises(AuditError, match="failed"):
        log.wait_durable(seq)
    with pytest.raises(AuditError, match="failed"):
        log.append("alert", payload={"kind": "y"})
    with pytest.raises(AuditError, match=f"record {seq} not written"):
        log.close()
    con.close()


def test_waiters_of_an_abandoned_log_are_told(tmp_path: Path, key) -> None:
    log = AuditLog(tmp_path / "a.duckdb", key, flush_interval=0)
    seq = log.append("alert", payload={"kind": "x"})
    log.abandon()
    with pytest.raises(AuditError):
        log.wait_durable(seq)


# --- eval --audit, end to end -----------------------------------------------------------------------------


def _exe() -> list[str]:
    found = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "policyengine"]


def _requests(path: Path, prefix: str, count: int, pad: int = 0) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            folder = "archive/" if i % 3 == 0 else ""
            fh.write(json.dumps({"principal": {"id": f"{prefix}-{i}{'x' * pad}", "roles": ["clerk"]},
                                 "action": "read", "resource": {"kind": "dataset", "id": f"orders/{folder}{i}"}}) + "\n")


def _recorded(db: Path) -> dict[str, str]:
    """actor -> effect of every decision record in the log."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT actor, payload::VARCHAR FROM audit_log WHERE event = 'decision'").fetchall()
    finally:
        con.close()
    return {actor: json.loads(payload)["decision"]["effect"] for actor, payload in rows}


KILLS = 50
STREAMS = 5  # logs killed side by side, so 50 kills cost 10 process start-ups of wall time


@pytest.mark.slow
def test_sigkill_never_loses_a_decision_the_reader_saw(tmp_path: Path) -> None:
    """A reader of ``eval --audit`` output, killed 50 times at random points: every decision it read is in the log."""
    rules = tmp_path / "shop.policy"
    rules.write_text(POLICY)
    key_path = tmp_path / "k.key"
    key = generate_key(key_path)
    dbs = [tmp_path / f"audit{n}.duckdb" for n in range(STREAMS)]
    rng = random.Random(11)
    seen: list[dict[str, str]] = [{} for _ in dbs]
    for round_ in range(KILLS // STREAMS):
        procs = []
        for n, db in enumerate(dbs):
            source = tmp_path / f"in{n}.jsonl"
            _requests(source, f"k{round_}", 1500)
            procs.append(subprocess.Popen(
                [*_exe(), "eval", "--rules", str(rules), "--input", str(source), "--audit", str(db), "--key",
                 str(key_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        for n, proc in enumerate(procs):
            assert proc.stdout is not None
            for i in range(rng.randint(1, 1400)):
                line = proc.stdout.readline()
                if not line:
                    break
                seen[n][f"k{round_}-{i}"] = json.loads(line)["effect"]
            os.kill(proc.pid, signal.SIGKILL)  # right after the reader saw its last line
        for proc in procs:
            proc.communicate(timeout=60)
    for db, read in zip(dbs, seen, strict=True):
        recorded = _recorded(db)
        missing = {actor for actor in read if actor not in recorded}
        assert not missing, f"{len(missing)} decisions read but not in {db.name}, e.g. {sorted(missing)[:3]}"
        assert all(recorded[actor] == effect for actor, effect in read.items())
        assert len(read) > KILLS // STREAMS  # the reader did read decisions
        report = verify_database(db, [key.public])
        assert report.ok, report.summary()


@pytest.fixture
def small_disk(tmp_path: Path):
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


@pytest.mark.slow
def test_a_full_disk_stops_eval_with_one_line_and_loses_nothing_printed(tmp_path: Path, small_disk: Path) -> None:
    rules = tmp_path / "shop.policy"
    rules.write_text(POLICY)
    key_path = tmp_path / "k.key"
    key = generate_key(key_path)
    source = tmp_path / "in.jsonl"
    _requests(source, "r", 20_000, pad=200)  # ~8 MB of records for a 1 MB disk
    db = small_disk / "audit.duckdb"
    done = subprocess.run([*_exe(), "eval", "--rules", str(rules), "--input", str(source), "--audit", str(db),
                           "--key", str(key_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(db) in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    printed = [json.loads(line)["effect"] for line in done.stdout.splitlines()]
    assert len(printed) < 20_000
    copy = tmp_path / "copy"  # read it off the full disk
    shutil.copytree(small_disk, copy)
    recorded = _recorded(copy / "audit.duckdb")
    for i, effect in enumerate(printed):
        assert recorded.get(f"r-{i}{'x' * 200}") == effect, i
    report = verify_database(copy / "audit.duckdb", [key.public])
    if report.records:  # what was committed before the disk filled verifies
        assert report.ok, report.summary()
    else:  # the disk filled before the first commit: nothing printed, nothing signed, and that is never OK
        assert not printed and report.failure is not None and report.failure.kind == "nothing_signed", report.summary()


PAY_RULES = """\
package ops.pay
role ap_agent
agent pay_bot
    owner "ap@example.com"
    roles ap_agent
rule pay
    allow role ap_agent to approve_payment tool "*"
"""


def test_a_side_effect_runs_only_after_the_decision_allowing_it_is_committed(tmp_path: Path, key) -> None:
    from policyengine.engine import load_policy
    from policyengine.orchestrator.runner import Orchestrator
    from policyengine.orchestrator.state import StateStore
    from policyengine.orchestrator.workflow import Ask, ToolCall, Workflow

    (tmp_path / "pay.policy").write_text(PAY_RULES)
    conn = duckdb.connect(str(tmp_path / "pe.duckdb"))
    log = AuditLog(conn, key, flush_interval=60)  # left alone, the writer would commit a minute later
    seen: list[tuple[int, int]] = []

    def pay(ctx, idempotency_key: str) -> dict:
        seen.append((log.size, log.flushed))  # what the log holds when the payment really happens
        return {"paid": ctx.item["amount"]}

    wf = Workflow("pay", "pay_bot", (ToolCall("pay", effect=True, run=pay,
                                              ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments")),))
    orch = Orchestrator(load_policy([tmp_path / "pay.policy"]), StateStore(conn), log, workflows={"pay": wf})
    results = orch.run_batch("pay", [{"id": i, "amount": 10 * i} for i in range(1, 4)], requested_by="alice")
    assert [r.status for r in results] == ["completed"] * 3
    assert len(seen) == 3 and all(flushed == size for size, flushed in seen), seen
    orch.close()
    log.close()
    conn.close()


@pytest.mark.parametrize("flush_interval", [0, 60], ids=["no writer thread", "writer thread"])
def test_an_unexpected_error_in_a_commit_fails_the_log_and_no_waiter_hangs(tmp_path: Path, key,
                                                                           flush_interval: float) -> None:
    """The batch is gone from the queue once its commit starts: an error that is no DuckDB error (a bug, memory)
    must fail the log for every waiter, not leave them waiting for a commit that will never come."""
    log = AuditLog(tmp_path / "a.duckdb", key, flush_interval=flush_interval)

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    log._facts.add_rows = broken  # type: ignore[method-assign]
    first = log.append("model_call", payload={"model": "m"})
    second = log.append("model_call", payload={"model": "m"})
    with pytest.raises((AuditError, RuntimeError), match="boom"):
        log.wait_durable(first, timeout=30)
    with pytest.raises(AuditError, match="boom"):
        log.wait_durable(second, timeout=30)
    with pytest.raises(AuditError, match="boom"):
        log.append("decision", payload={})
    log.abandon()


def test_closing_a_log_whose_commit_failed_says_which_records_were_not_written(small_disk: Path, key) -> None:
    """A commit that failed on a full disk (told to the waiter, or to nobody when the writer thread ran it) left
    close() returning as if the records were kept: the caller that closes must hear that they were lost."""
    log = AuditLog(small_disk / "a.duckdb", key, flush_interval=60)
    kept = log.append("alert", payload={"kind": "kept"})
    log.wait_durable(kept)
    lost = log.append("alert", payload={"kind": "lost", "pad": "x" * 2_000_000})  # more than the 1 MB disk holds
    with pytest.raises(AuditError, match="failed"):
        log.wait_durable(lost)
    with pytest.raises(AuditError, match=f"record {lost} not written"):
        log.close()
