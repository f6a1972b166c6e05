"""End to end: the `policyengine` workflow commands as separate processes on one database.

Each test works in a temp dir with its own DuckDB file and signing key, runs the
real CLI in subprocesses (so a paused run really outlives its process), and reads
the database afterwards with DuckDB directly.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest

from policyengine.resources import data_path

PE = [sys.executable, "-m", "policyengine"]
INVOICE = {"id": "INV-T1", "vendor": "Acme Metals", "vendor_country": "DE", "vendor_region": "EU",
           "amount": 25_000.0, "currency": "EUR", "po_number": "PO-41000", "classification": "confidential",
           "true_exception": "none", "vendor_age_days": 900, "vendor_status": "active"}
SURE = "models:\n  classifier_small: {accuracy: 1.0, confidence: 0.95}\n"


def pe(*args: str, cwd: Path, ok: bool | None = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    if ok is True:
        assert proc.returncode == 0, proc.stderr
    elif ok is False:
        assert proc.returncode != 0, proc.stdout
    return proc


def audit_rows(db: Path, event: str) -> list[dict]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT run_id, payload FROM audit_log WHERE event = ? ORDER BY seq", [event]).fetchall()
    return [{"run_id": r, **json.loads(p)} for r, p in rows]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """A database and key made by one real run, copied by tests that only need them to exist."""
    d = tmp_path_factory.mktemp("seeded")
    pe("run", "fraud-routing", "--limit", "1", cwd=d)
    return d


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "invoice.json").write_text(json.dumps([INVOICE]))
    (tmp_path / "sure.yaml").write_text(SURE)
    return tmp_path


def test_paused_run_is_approved_by_an_allowed_user_in_a_new_process(work):
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--json", cwd=work)
    summary = json.loads(out.stdout)
    assert summary["items"] == 1 and summary["escalated"] == 1
    (run,) = summary["runs"]
    assert run["status"] == "waiting_approval" and "senior_analyst" in run["reason"]
    run_id = run["run_id"]

    listed = [json.loads(line) for line in pe("runs", "list", "--json", cwd=work).stdout.splitlines()]
    assert [(r["run_id"], r["status"], r["waiting_for"]) for r in listed] == [
        (run_id, "waiting_approval", "senior_analyst")]

    refused = pe("approve", run_id, "--as", "operator", cwd=work, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: operator requested run {run_id} and cannot decide its approval (four-eyes: gate "
        "finance.invoices.large_payment needs a different person holding role senior_analyst)")
    refused = pe("approve", run_id, "--as", "bob", cwd=work, ok=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "bob (analyst) does not hold role senior_analyst" in refused.stderr

    done = pe("approve", run_id, "--as", "alice", "--note", "contract checked", cwd=work)
    assert f"{run_id} approved by alice; run completed, outcome approved" in done.stdout
    shown = json.loads(pe("runs", "show", run_id[:8], "--json", cwd=work).stdout)
    assert shown["status"] == "completed"
    assert [(a["status"], a["approver"], a["note"]) for a in shown["approvals"]] == [
        ("approved", "alice", "contract checked")]
    assert {s["step"]: s["status"] for s in shown["steps"]}["approve_payment"] == "done"
    (approval,) = audit_rows(work / "policyengine.duckdb", "approval")
    assert approval["run_id"] == run_id and approval["requester"] == "operator" and approval["approver"] == "alice"


def test_rejection_and_deadline_expiry_from_the_command_line(work):
    (work / "two.json").write_text(json.dumps([INVOICE, {**INVOICE, "id": "INV-T2"}]))
    runs = json.loads(pe("run", "invoice-exceptions", "--input", "two.json", "--providers", "sure.yaml",
                         "--json", cwd=work).stdout)["runs"]
    first, second = (r["run_id"] for r in runs)
    out = pe("reject", first, "--as", "alice", "--note", "duplicate of INV-9", cwd=work)
    assert "rejected by alice; run rejected, outcome queued_for_review" in out.stdout

    later = (datetime.now(UTC) + timedelta(hours=5)).isoformat()
    out = pe("runs", "expire", "--now", later, "--clock-override", cwd=work)
    assert out.stdout.startswith(f"{second}\tinvoice-exceptions\texpired")
    (line,) = out.stdout.splitlines()
    assert "..." not in line and re.search(r"approval deadline passed at \d{4}-\d\d-\d\dT\d\d:\d\dZ at gate "
                                           r"finance\.[\w.]+ \(its else: deny\)$", line), line
    refused = pe("approve", second, "--as", "alice", cwd=work, ok=False)
    assert "is not waiting for approval: its approval deadline passed" in refused.stderr
    outcomes = [a["outcome"] for a in audit_rows(work / "policyengine.duckdb", "approval")]
    assert outcomes == ["rejected", "expired"]


@pytest.mark.parametrize("verb", ["approve", "reject"])
@pytest.mark.parametrize("named", [
    lambda run_id: "",  # a script's unset variable: "" is a prefix of every id
    lambda run_id: "r-",
    lambda run_id: run_id[:10],
    lambda run_id: run_id.upper(),
    lambda run_id: run_id + " ",
], ids=["empty", "r-", "prefix", "upper-case", "trailing-space"])
def test_a_decision_names_its_run_by_the_whole_id(work, verb, named):
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--json", cwd=work)
    (run,) = json.loads(out.stdout)["runs"]
    run_id = run["run_id"]
    assert run["status"] == "waiting_approval"
    refused = pe(verb, named(run_id), "--as", "alice", cwd=work, ok=False)
    assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: no run {named(run_id)!r} in this database")
    assert audit_rows(work / "policyengine.duckdb", "approval") == []  # nothing decided
    (listed,) = [json.loads(line) for line in pe("runs", "list", "--json", cwd=work).stdout.splitlines()]
    assert listed["status"] == "waiting_approval"
    out = pe(verb, run_id, "--as", "alice", cwd=work)
    assert out.stdout.startswith(f"{run_id} {verb}d by alice" if verb == "approve" else f"{run_id} rejected by alice")


@pytest.mark.parametrize("second", ["inv-t1", "ＩＮＶ-Ｔ1", "INV-T1\u200b", " INV-T1", "INV-T1\u00a0"],
                         ids=["lower-case", "full-width", "zero-width-space", "leading-space", "no-break-space"])
def test_items_whose_ids_only_look_alike_are_refused_before_anything_is_paid(work, second):
    # two runs would mean two payments of one invoice under two idempotency keys, which no tool can deduplicate
    (work / "alike.json").write_text(json.dumps([{**INVOICE, "amount": 900.0},
                                                 {**INVOICE, "id": second, "amount": 900.0}]))
    proc = pe("run", "invoice-exceptions", "--input", "alike.json", "--providers", "sure.yaml", cwd=work, ok=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"error: alike.json: item 2 (id {second!r}) reads as item 1 (id 'INV-T1'): the ids differ "
                           f"only in case, width, spaces or invisible characters: each item runs once per input "
                           f"(remove the repeats, or give distinct items distinct ids); no run was started\n")
    assert not (work / "policyengine.duckdb").exists()


def _tiny_triage_budget(work: Path) -> Path:
    """The shipped rules plus a 600-token daily budget for it-ticket-triage: a batch of 20 runs out of it."""
    rules = work / "rules"
    shutil.copytree(data_path("rules"), rules)
    (rules / "tiny_budget.policy").write_text(
        'package test.tiny\nowner "qa@example.com"\n\n'
        'budget tiny_triage\n    for workflow "it-ticket-triage"\n    limit 600 tokens per day\n    on exceed deny\n')
    return rules


def test_budget_exhausted_mid_batch_denies_the_rest(work):
    rules = _tiny_triage_budget(work)
    out = pe("run", "it-ticket-triage", "--rules", str(rules), "--limit", "20", "--json", cwd=work)
    summary = json.loads(out.stdout)
    statuses = [r["status"] for r in summary["runs"]]
    assert "denied" in statuses
    cut = statuses.index("denied")
    assert cut > 0 and all(s == "denied" for s in statuses[cut:])
    assert summary["denied"] == len(statuses) - cut
    assert all("test.tiny.tiny_triage" in r["reason"] for r in summary["runs"][cut:])
    denials = [d for d in audit_rows(work / "policyengine.duckdb", "decision")
               if any(r["rule"] == "test.tiny.tiny_triage" for r in d["decision"]["reasons"])]
    assert len(denials) == len(statuses) - cut


class _Chat(BaseHTTPRequestHandler):
    usage: ClassVar[dict] = {"total_tokens": 55}

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        raw = json.dumps({"choices": [{"message": {"content": '{"label": "hardware", "confidence": 0.97}'}}],
                          "usage": self.usage}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def run_over_http(work: Path, chat: type[_Chat], models: str, limit: int, *options: str) -> subprocess.CompletedProcess[str]:
    """``run it-ticket-triage`` with ``models`` (simulator settings) and an HTTP provider answered by ``chat``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), chat)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        (work / "providers.yaml").write_text(
            f"retries: 1\ntimeout_s: 2\nmodels:\n  {models}\n"
            f"providers:\n  openai-compatible: {{base_url: 'http://127.0.0.1:{httpd.server_address[1]}/v1'}}\n")
        return pe("run", "it-ticket-triage", "--limit", str(limit), "--providers", "providers.yaml", "--json",
                  *options, cwd=work)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_failing_model_falls_back_to_the_next_allowed_model_over_http(work):
    out = run_over_http(work, _Chat, "triage_small: {fail_rate: 1.0, fail: timeout}", 3)
    summary = json.loads(out.stdout)
    assert summary["models"] == {"frontier_llm": 3} and summary["fallbacks"] == 3
    calls = audit_rows(work / "policyengine.duckdb", "model_call")
    assert [(c["model"], c["provider"], c["status"]) for c in calls[:3]] == [
        ("triage_small", "local", "timeout"), ("triage_small", "local", "timeout"),
        ("frontier_llm", "openai-compatible", "ok")]
    assert calls[2]["tokens"] == 55 and calls[2]["output"]["label"] == "hardware"


class _Refunder(_Chat):
    usage: ClassVar[dict] = {"total_tokens": -100_000}  # charged, it would give the budget back


def test_a_provider_reporting_negative_usage_does_not_give_the_budget_back(work):
    out = run_over_http(work, _Refunder, "triage_small: {fail_rate: 1.0, fail: error}", 2)
    runs = json.loads(out.stdout)["runs"]
    assert [r["status"] for r in runs] == ["failed", "failed"]
    assert all(re.search(r"usage -100000 is not a usage amount .*estimate of \d+ tokens was charged instead",
                         r["reason"]) for r in runs)
    with duckdb.connect(str(work / "policyengine.duckdb"), read_only=True) as conn:
        (spent,) = conn.execute("SELECT amount FROM budget_totals WHERE unit = 'tokens' AND period = 'month' "
                                "AND scope_key = 'workflow:it-ticket-triage'").fetchone()
    assert spent > 0  # the two calls' estimates, not -200,000


KILL_AFTER_RECEIPT = """
import os, sys
from pathlib import Path
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import load_items

def die(point, step):
    if point == "after_effect":
        os._exit(137)  # the process dies between the payment's receipt and its record

with Session(SessionConfig(db=Path("policyengine.duckdb"), key=Path("policyengine.key"), create_key=True,
                           providers=Path("sure.yaml"))) as session:
    session.orchestrator.faults = die
    session.orchestrator.run_batch("invoice-exceptions", load_items("small.json"), requested_by="operator")
"""


def _killed_after_a_payment(work) -> None:
    """One 900.0 invoice run in a process killed between the payment's receipt and its audit record."""
    (work / "small.json").write_text(json.dumps([{**INVOICE, "amount": 900.0}]))
    (work / "kill.py").write_text(KILL_AFTER_RECEIPT)
    proc = subprocess.run([sys.executable, "kill.py"], cwd=work, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 137, proc.stderr


def test_a_killed_process_is_resumed_without_paying_twice(work):
    _killed_after_a_payment(work)
    out = pe("runs", "resume", cwd=work)
    run_id, workflow, status, outcome = out.stdout.strip().split("\t")
    assert (workflow, status, outcome) == ("invoice-exceptions", "completed", "auto_resolved")
    with duckdb.connect(str(work / "policyengine.duckdb"), read_only=True) as conn:
        receipts = conn.execute("SELECT count(*) FROM orch_effects WHERE run_id = ?", [run_id]).fetchone()[0]
    assert receipts == 1
    (tool,) = [t for t in audit_rows(work / "policyengine.duckdb", "tool_call") if t["run_id"] == run_id]
    assert tool["tool"] == "erp/payments" and tool["replayed"] is True
    assert pe("runs", "resume", cwd=work).stdout == ""  # nothing left to resume


def test_a_payment_made_before_a_kill_stays_in_the_run_when_the_model_decides_otherwise_on_resume(work):
    # the probe's case: killed right after the payment's receipt; on resume the classifier that led to the
    # payment is down, so re-running it would take the fallback branch and drop the payment from the run
    _killed_after_a_payment(work)
    (work / "outage.yaml").write_text("models:\n  classifier_small: {fail_rate: 1, fail: error}\n")
    out = pe("runs", "resume", "--providers", "outage.yaml", cwd=work)
    run_id, _, status, outcome = out.stdout.strip().split("\t")
    assert (status, outcome) == ("completed", "auto_resolved")  # the branch the classifier chose before the kill
    db = work / "policyengine.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT step FROM orch_effects WHERE run_id = ?", [run_id]).fetchall() == [
            ("approve_payment",)]  # paid once
        steps = dict(conn.execute("SELECT step, status FROM orch_steps WHERE run_id = ?", [run_id]).fetchall())
    assert steps["classify"] == "done" and steps["approve_payment"] == "done" and "queue_for_review" not in steps
    tools = [(t["step"], t["replayed"]) for t in audit_rows(db, "tool_call") if t["run_id"] == run_id]
    assert tools == [("approve_payment", True)]  # the payment made is on the record
    assert [c["status"] for c in audit_rows(db, "model_call") if c["run_id"] == run_id] == ["ok"]  # not re-asked


KILL_BETWEEN_STATE_AND_AUDIT = """
import os
from pathlib import Path
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import load_items

with Session(SessionConfig(db=Path("policyengine.duckdb"), key=Path("policyengine.key"), create_key=True,
                           providers=Path("sure.yaml"))) as session:
    audit, append, paid = session.audit, session.audit.append, []

    def append_and_note(event, **kw):
        if event == "tool_call" and kw["payload"]["step"] == "approve_payment":
            paid.append(kw["run_id"])
        return append(event, **kw)

    def die_once_the_payment_awaits_its_commit():
        if paid:  # the payment's receipt is committed; its tool_call record is not
            os._exit(137)

    audit.append = append_and_note
    audit.before_commit(die_once_the_payment_awaits_its_commit)
    session.orchestrator.run_batch("invoice-exceptions", load_items("small.json"), requested_by="operator")
"""


def test_a_payment_is_on_record_after_a_kill_before_its_tool_call_commits(work):
    # the process dies as the payment's tool_call waits for its commit: the state must not already say the run
    # completed (run state committed before the audit records it describes left it completed, paid, unrecorded)
    (work / "small.json").write_text(json.dumps([{**INVOICE, "amount": 900.0}]))
    (work / "kill.py").write_text(KILL_BETWEEN_STATE_AND_AUDIT)
    proc = subprocess.run([sys.executable, "kill.py"], cwd=work, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 137, proc.stderr
    db = work / "policyengine.duckdb"
    pe("runs", "resume", cwd=work)
    pe("run", "invoice-exceptions", "--input", "small.json", "--providers", "sure.yaml", cwd=work)  # typed again
    with duckdb.connect(str(db), read_only=True) as conn:
        (run_id, status), = conn.execute("SELECT run_id, status FROM orch_runs").fetchall()
        receipts = conn.execute("SELECT step FROM orch_effects WHERE run_id = ?", [run_id]).fetchall()
    assert status == "completed" and receipts == [("approve_payment",)]  # paid once
    tools = [t["step"] for t in audit_rows(db, "tool_call") if t["run_id"] == run_id]
    assert tools == ["approve_payment"]  # ... and the payment is in the audit log
    assert [r["status"] for r in audit_rows(db, "run") if r["run_id"] == run_id] == ["completed"]
    assert "OK" in pe("audit", "verify", cwd=work).stdout


DIE_WHEN_STATE_COMMITS_AHEAD_OF_ITS_RECORDS = """
import os
from pathlib import Path
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import load_items

with Session(SessionConfig(db=Path("policyengine.duckdb"), key=Path("policyengine.key"), create_key=True,
                           providers=Path("sure.yaml"))) as session:
    audit, store, seqs = session.audit, session.run_state, [0]
    append, flush, write_intent = audit.append, store.flush, store.write_intent

    def die_if_ahead():  # run state just committed while records appended before it are not: a kill here
        if seqs[-1] > audit.flushed:
            os._exit(137)

    def append_and_note(event, **kw):
        seqs.append(append(event, **kw))
        return seqs[-1]

    def flush_then_check():
        written = flush()
        if written:
            die_if_ahead()
        return written

    def write_intent_then_check(*args):
        write_intent(*args)
        die_if_ahead()

    audit.append, store.flush, store.write_intent = append_and_note, flush_then_check, write_intent_then_check
    session.orchestrator.run_batch("invoice-exceptions", load_items("two.json"), requested_by="operator")
"""


def test_run_state_never_commits_ahead_of_the_records_that_describe_it(work):
    # the journal committed with a payment's intent before the records of the steps that led to it: a kill
    # in between, and the resumed run restored the invoice read and the classification from the journal, with
    # no data_access, model_call or decision record of them ever written
    (work / "two.json").write_text(json.dumps([{**INVOICE, "id": "INV-P1", "amount": 900.0},
                                               {**INVOICE, "id": "INV-W1"}]))  # paid; waits for alice
    (work / "die.py").write_text(DIE_WHEN_STATE_COMMITS_AHEAD_OF_ITS_RECORDS)
    proc = subprocess.run([sys.executable, "die.py"], cwd=work, capture_output=True, text=True, timeout=120,
                          check=False)
    pe("runs", "resume", cwd=work)
    pe("run", "invoice-exceptions", "--input", "two.json", "--providers", "sure.yaml", cwd=work)  # typed again
    db = work / "policyengine.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        steps = conn.execute("SELECT run_id, step, kind, status FROM orch_steps WHERE status IN ('done', 'waiting') "
                             "ORDER BY run_id, ord").fetchall()
        runs = dict(conn.execute("SELECT item_id, status FROM orch_runs").fetchall())
    assert runs == {"INV-P1": "completed", "INV-W1": "waiting_approval"}
    decided = {(d["run_id"], d["request"]["context"]["step"]) for d in audit_rows(db, "decision")}
    recorded = {(r["run_id"], r["step"], kind) for kind, event in (("model", "model_call"), ("data", "data_access"),
                                                                   ("tool", "tool_call"))
                for r in audit_rows(db, event)}
    unrecorded = [(run_id, step) for run_id, step, kind, status in steps if (run_id, step) not in decided
                  or status == "done" and kind in ("model", "data", "tool") and (run_id, step, kind) not in recorded]
    assert unrecorded == []
    assert proc.returncode == 0, "run state committed ahead of the records that describe it"


KILL_AFTER_WAITING_IS_AUDITED = """
import os
from pathlib import Path
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import load_items

with Session(SessionConfig(db=Path("policyengine.duckdb"), key=Path("policyengine.key"), create_key=True,
                           providers=Path("sure.yaml"))) as session:
    audit, append, waiting = session.audit, session.audit.append, []

    def append_then_die(event, **kw):
        seq = append(event, **kw)
        if event == "run" and kw["payload"]["status"] == "waiting_approval":
            waiting.append(seq)
            if len(waiting) == 2:
                audit.flush()  # the writer's timer commits the waiting record (every 0.2 s)...
                os._exit(137)  # ...and the process dies before the batch's next checkpoint
        return seq

    audit.append = append_then_die
    session.orchestrator.run_batch("invoice-exceptions", load_items("batch.json"), requested_by="operator")
"""


def test_runs_the_audit_log_records_as_waiting_survive_a_kill_and_can_be_approved(work):
    items = [{**INVOICE, "id": "INV-W1"}, {**INVOICE, "id": "INV-A1", "amount": 900.0},
             {**INVOICE, "id": "INV-W2"}, {**INVOICE, "id": "INV-W3"}]
    (work / "batch.json").write_text(json.dumps(items))
    (work / "kill.py").write_text(KILL_AFTER_WAITING_IS_AUDITED)
    proc = subprocess.run([sys.executable, "kill.py"], cwd=work, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 137, proc.stderr
    db = work / "policyengine.duckdb"
    audited = [r["run_id"] for r in audit_rows(db, "run") if r["status"] == "waiting_approval"]
    assert len(audited) == 2
    listed = [json.loads(line)["run_id"] for line in
              pe("runs", "list", "--status", "waiting_approval", "--json", cwd=work).stdout.splitlines()]
    assert sorted(listed) == sorted(audited)
    for run_id in audited:
        assert f"{run_id} approved by alice" in pe("approve", run_id, "--as", "alice", cwd=work).stdout


def test_demo_from_an_empty_directory_then_the_commands_it_suggests(tmp_path):
    out = pe("demo", cwd=tmp_path)  # all shipped samples, nothing prepared
    assert out.stdout.startswith("Workflow summary")  # progress and notices go to stderr
    for name in ("invoice-exceptions", "it-ticket-triage", "supply-chain-disruption", "fraud-routing",
                 "marketing-campaign"):
        assert name in out.stdout
    assert {p.name for p in tmp_path.iterdir()} == {
        "policyengine.duckdb", "policyengine.key", "policyengine.key.pub.pem", "policyengine.mask.yaml"}
    assert "wrote policyengine.mask.yaml" in out.stderr
    assert "Audit payloads masked by: policyengine.mask.yaml" in out.stdout
    nxt = out.stdout.split("\nNext:\n", 1)[1].splitlines()
    commands = [line.split("   ")[0].strip() for line in nxt]
    assert commands[0] == "policyengine runs list --db policyengine.duckdb --status waiting_approval"
    assert commands[2] == "policyengine audit verify --db policyengine.duckdb --pubkey policyengine.key.pub.pem"
    assert commands[3] == "policyengine report --list"
    approve = commands[1].split()
    assert approve[:2] == ["policyengine", "approve"] and approve[3:] == ["--as", "alice", "--db", "policyengine.duckdb"]
    # every suggested command works as printed
    for cmd in commands[:1] + commands[2:]:
        pe(*cmd.split()[1:], cwd=tmp_path)
    assert "approved by alice" in pe(*approve[1:], cwd=tmp_path).stdout
    waiting_before = int(nxt[0].split("   ")[-1].strip().split()[0]) - 1  # alice approved one
    again = pe("demo", "--limit", "3", cwd=tmp_path)  # re-runnable on an existing database
    waiting_line = next(line for line in again.stdout.splitlines() if "waiting for a human" in line)
    with duckdb.connect(str(tmp_path / "policyengine.duckdb"), read_only=True) as conn:
        (in_db,) = conn.execute("SELECT count(*) FROM orch_runs WHERE status = 'waiting_approval'").fetchone()
    assert in_db > waiting_before  # the second demo added some
    assert waiting_line.endswith(f"{in_db} run(s) waiting for a human ({in_db - waiting_before} from this demo)")
    pe("audit", "verify", "--db", "policyengine.duckdb", "--pubkey", "policyengine.key.pub.pem", cwd=tmp_path)
    # the shipped mask was applied: invoice vendors are hashed in the log, still in the run state
    (call,) = [c for c in audit_rows(tmp_path / "policyengine.duckdb", "model_call")
               if c["run_id"] == approve[2] and c["step"] == "classify"]
    assert call["subject"]["vendor"].startswith("sha256:") and call["_masked"]["hash"] == ["/subject/vendor"]


@pytest.mark.parametrize("args, code, message", [
    (["run", "no-such-workflow"], 2, "unknown workflow 'no-such-workflow'"),
    (["run", "fraud-routing", "--input", "bad.json"], 1, "error: bad.json:1: not valid JSON"),
    (["approve", "r-000000000000", "--as", "alice"], 1, "error: no run 'r-000000000000'"),
    (["approve", "r-1"], 2, "Missing option '--as'"),
    (["runs", "expire", "--now", "yesterday"], 2, "is not an ISO 8601 time"),
    (["approve", "r-1", "--as", "alice", "--key", "missing.key"], 1, "missing.key: signing key not found"),
    (["runs", "list", "--db", "notes.txt"], 1, "error: notes.txt: not a DuckDB database file\n"),  # no raw IO Error
    (["run", "fraud-routing", "--db", "notes.txt", "--key", "policyengine.key"], 1,
     "error: notes.txt: not a DuckDB database file\n"),
    (["runs", "show", "r-1", "--db", "none.duckdb"], 1, "none.duckdb: no such database"),
    (["runs", "list", "--now", "soon"], 2, "is not an ISO 8601 time"),
    (["run", "fraud-routing", "--db", "new.duckdb", "--key", "no/such/dir.key"], 1,
     "no/such/dir.key: cannot create key file"),
    (["run", "fraud-routing", "--mask", "notes.txt"], 1, "notes.txt: expected a mapping with keys drop, hash"),
    (["approve", "r-1", "--as", "alice", "--mask", "bad.json"], 1, "bad.json: not valid YAML"),
    (["run", "fraud-routing", "--mask", "missing.yaml"], 2, "'missing.yaml' does not exist"),
])
def test_bad_input_is_one_clear_line(work, seeded, args, code, message):
    (work / "bad.json").write_text("{not json")
    (work / "notes.txt").write_text("not a database\n" * 100)
    for f in seeded.iterdir():
        shutil.copy(f, work / f.name)
    proc = pe(*args, cwd=work, ok=False)
    assert proc.returncode == code and message in proc.stderr, proc.stderr


@pytest.mark.parametrize("command", [["demo", "--limit", "1"], ["run", "fraud-routing", "--limit", "1"]])
def test_an_existing_database_without_its_key_is_refused_before_anything_is_written(work, seeded, command):
    # a new key could never sign the existing log: creating one only to fail later left a stray key behind
    for f in seeded.iterdir():
        shutil.copy(f, work / f.name)
    (work / "policyengine.key").unlink()
    (work / "policyengine.key.pub.pem").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in work.iterdir()}
    proc = pe(*command, cwd=work, ok=False)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "error: policyengine.key: signing key not found, and policyengine.duckdb already exists (signed by its own "
        "key): pass --key with the key that signed it, or use a new --db"]
    assert {p.name: p.stat().st_mtime_ns for p in work.iterdir()} == before  # no key made, no mask copied


def test_a_second_process_gets_a_clear_error_while_the_database_is_held(work, seeded):
    for f in seeded.iterdir():
        shutil.copy(f, work / f.name)
    holder = duckdb.connect(str(work / "policyengine.duckdb"))
    try:
        proc = pe("runs", "list", cwd=work, ok=False)
    finally:
        holder.close()
    assert proc.returncode == 1
    assert "policyengine.duckdb: database is in use by another process (pid" in proc.stderr
    assert proc.stderr.count("\n") == 1


def _pending_and_records(db: Path) -> tuple[list[str], int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        statuses = [r[0] for r in conn.execute("SELECT status FROM orch_approvals ORDER BY run_id").fetchall()]
        return statuses, conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]


def test_looking_at_runs_needs_no_key_and_writes_nothing(work, tmp_path_factory):
    run_id = json.loads(pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml",
                           "--json", cwd=work).stdout)["runs"][0]["run_id"]
    db = str(work / "policyengine.duckdb")
    before = _pending_and_records(work / "policyengine.duckdb")
    elsewhere = tmp_path_factory.mktemp("auditor")  # no key here at all
    other = tmp_path_factory.mktemp("other-key")
    pe("keys", "generate", "--out", "policyengine.key", cwd=other)  # a key that did not sign this log
    for cwd in (elsewhere, other):
        (listed,) = [json.loads(line) for line in pe("runs", "list", "--db", db, "--json", cwd=cwd).stdout.splitlines()]
        assert (listed["run_id"], listed["status"], listed["overdue"]) == (run_id, "waiting_approval", False)
        shown = json.loads(pe("runs", "show", run_id, "--db", db, "--json", cwd=cwd).stdout)
        assert [(a["status"], a["overdue"]) for a in shown["approvals"]] == [("pending", False)]

    # past the deadline: shown as overdue, computed at read time, nothing written
    later = (datetime.now(UTC) + timedelta(hours=5)).isoformat()
    out = pe("runs", "list", "--db", db, "--json", "--now", later, cwd=elsewhere)
    (listed,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert listed["status"] == "waiting_approval" and listed["overdue"] is True
    assert "1 approval(s) are past their deadline" in out.stderr and "policyengine runs expire" in out.stderr
    table = pe("runs", "list", "--db", db, "--now", later, cwd=elsewhere).stdout
    assert "waiting_approval (overdue)" in table
    shown = pe("runs", "show", run_id[:8], "--db", db, "--now", later, cwd=elsewhere).stdout
    assert "pending (overdue)" in shown
    assert _pending_and_records(work / "policyengine.duckdb") == before

    # writing still needs the key that signs the log
    refused = pe("approve", run_id, "--as", "alice", "--db", db, cwd=elsewhere, ok=False)
    assert refused.returncode == 1 and "policyengine.key: signing key not found" in refused.stderr
    refused = pe("approve", run_id, "--as", "alice", "--db", db, cwd=other, ok=False)
    assert refused.returncode == 1 and "the log is signed by key" in refused.stderr
    # the next writing command records the expiry
    assert pe("runs", "expire", "--now", later, "--clock-override", cwd=work).stdout.startswith(f"{run_id}\tinvoice-exceptions\texpired")
    assert _pending_and_records(work / "policyengine.duckdb")[0] == ["expired"]


def test_a_database_without_runs_lists_none(work):
    with duckdb.connect(str(work / "empty.duckdb")) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    out = pe("runs", "list", "--db", "empty.duckdb", "--json", cwd=work)
    assert out.stdout == ""
    refused = pe("runs", "show", "r-1", "--db", "empty.duckdb", cwd=work, ok=False)
    assert refused.returncode == 1 and "error: no run 'r-1' in this database" in refused.stderr


MASK = """
drop:
  - /subject/vendor
hash:
  - /request/principal/attrs/requested_by
"""


def test_masked_fields_never_reach_the_audit_log(work):
    (work / "custom-mask.yaml").write_text(MASK)
    run_id = json.loads(pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml",
                           "--as", "carol.jones", "--mask", "custom-mask.yaml", "--json", cwd=work).stdout
                        )["runs"][0]["run_id"]
    db = work / "policyengine.duckdb"
    decisions = audit_rows(db, "decision")
    assert decisions and all(d["request"]["principal"]["attrs"]["requested_by"].startswith("sha256:")
                             and d["_masked"]["hash"] == ["/request/principal/attrs/requested_by"] for d in decisions)
    (call,) = audit_rows(db, "model_call")
    assert "vendor" not in call["subject"] and call["_masked"]["drop"] == ["/subject/vendor"]

    # without --mask, policyengine.mask.yaml beside the database applies (here: the shipped example)
    shutil.copy(data_path("data") / "mask.yaml", work / "policyengine.mask.yaml")
    pe("approve", run_id, "--as", "alice", "--note", "called Jane Doe on +44 20 7946 0000", cwd=work)
    (approval,) = audit_rows(db, "approval")
    assert "note" not in approval and approval["_masked"] == {"drop": ["/note"], "hash": []}
    with duckdb.connect(str(db), read_only=True) as conn:
        logged = " ".join(r[0] for r in conn.execute("SELECT payload FROM audit_log").fetchall())
    assert "Jane Doe" not in logged and "Acme Metals" not in logged
    pe("audit", "verify", "--db", "policyengine.duckdb", "--pubkey", "policyengine.key.pub.pem", cwd=work)


def test_inputs_saved_with_a_utf8_bom_keep_their_first_column(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "tx.csv").write_bytes(bom + b"id,amount,merchant_category,card_present,customer_region,"
                                      b"classification,origin,true_label\n"
                                      b"TXN-BOM1,12.5,grocery,true,EU,pii,FR,legit\n")
    (tmp_path / "tx.json").write_bytes(bom + json.dumps([{"id": "TXN-BOM2", "amount": 3}]).encode())
    (tmp_path / "tx.jsonl").write_bytes(bom + json.dumps({"id": "TXN-BOM3", "amount": 4}).encode() + b"\n")
    for name, item_id in (("tx.csv", "TXN-BOM1"), ("tx.json", "TXN-BOM2"), ("tx.jsonl", "TXN-BOM3")):
        out = json.loads(pe("run", "fraud-routing", "--input", name, "--json", cwd=tmp_path).stdout)
        assert [r["item_id"] for r in out["runs"]] == [item_id], name
    with duckdb.connect(str(tmp_path / "policyengine.duckdb"), read_only=True) as conn:
        (stored,) = conn.execute("SELECT input FROM orch_runs WHERE item_id = 'TXN-BOM1'").fetchone()
    assert json.loads(stored)["id"] == "TXN-BOM1" and json.loads(stored)["amount"] == 12.5


@pytest.mark.parametrize("name, content", [
    ("empty.csv", b""), ("header.csv", b"id,amount\n"), ("empty.json", b""), ("blank.json", b"  \n"),
    ("array.json", b"[]"), ("empty.jsonl", b""), ("blank.jsonl", b"\n\n"), ("bom.csv", b"\xef\xbb\xbf"),
])
def test_an_input_without_items_is_one_clear_line_and_starts_no_run(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    proc = pe("run", "fraud-routing", "--input", name, cwd=tmp_path, ok=False)
    assert proc.returncode == 1 and proc.stderr == f"error: {name}: no items in the input\n"
    assert proc.stdout == "" and not (tmp_path / "policyengine.duckdb").exists()


_INVOICE_HEADER = "id,vendor,vendor_country,vendor_region,amount,currency,po_number,classification,true_exception," \
                  "vendor_age_days,vendor_status"


@pytest.mark.parametrize("content, message", [
    # a spreadsheet shows the first amount column (900,000, escalated); DictReader kept the last (50, paid)
    (f"{_INVOICE_HEADER},amount\nINV-C1,Lumen SARL,FR,EU,900000,EUR,PO-1,confidential,none,45,active,50\n",
     'inv.csv:1: the header names the column "amount" twice; name each column once (readers disagree on which '
     "cell counts)"),
    # a cut row: vendor_status (and the rest) would read as absent, and no rule about a sanctioned vendor fires
    (f"{_INVOICE_HEADER}\nINV-C2,Lumen SARL,FR,EU,900,EUR,PO-2,confidential,none,45,active\n"
     "INV-C3,Evil Ltd,FR,EU,900\n",
     "inv.csv:3: fewer cells than the header has columns"),
    (f"{_INVOICE_HEADER}\nINV-C4,Lumen SARL,FR,EU,900,EUR,PO-4,confidential,none,45,active,sanctioned\n",
     "inv.csv:2: more cells than the header has columns"),
])
def test_a_csv_whose_cells_do_not_line_up_with_its_header_starts_no_run(tmp_path, content, message):
    (tmp_path / "inv.csv").write_text(content)
    proc = pe("run", "invoice-exceptions", "--input", "inv.csv", cwd=tmp_path, ok=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", f"error: {message}\n")
    assert not (tmp_path / "policyengine.duckdb").exists()  # nothing ran, nothing was paid


def test_unrecordable_input_values_refuse_the_file_before_any_run_starts(work, seeded):
    for f in seeded.iterdir():
        shutil.copy(f, work / f.name)
    db = work / "policyengine.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        before = conn.execute("SELECT count(*) FROM orch_runs").fetchone()[0]
    ok = {**INVOICE, "id": "INV-OK"}
    (work / "inv2.json").write_text("[\n" + ",\n".join(json.dumps(i) for i in (
        ok, {**INVOICE, "id": "INV-NAN", "amount": "NaN"}, ok)) + ',\n{"id": "INV-BIG", "amount": 1e400,\n'
        ' "vendor_age_days": 99999999999999999999999}\n]\n')
    proc = pe("run", "invoice-exceptions", "--input", "inv2.json", cwd=work, ok=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        'error: inv2.json:3: amount: "NaN" is not a number (the workflow reads amount as a number)',
        "inv2.json:5: amount: number 1e400 is out of range (numbers must be finite IEEE-754 doubles)",
        "inv2.json:5: vendor_age_days: number 99999999999999999999999 is out of range (numbers must be finite IEEE-754 doubles)",
        "inv2.json: refused; no run was started"]
    (work / "tx.csv").write_text("id,amount,card_present\nTXN-1,12.5,true\nTXN-2,99999999999999999999999,true\n"
                                 "TXN-3,-Infinity,false\nTXN-4,1.5e999,false\n")
    proc = pe("run", "fraud-routing", "--input", "tx.csv", cwd=work, ok=False)
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "error: tx.csv:3: amount: number 99999999999999999999999 is out of range (numbers must be finite IEEE-754 doubles)",
        'tx.csv:4: amount: "-Infinity" is not a number (the workflow reads amount as a number)',
        "tx.csv:5: amount: number 1.5e999 is out of range (numbers must be finite IEEE-754 doubles)",
        "tx.csv: refused; no run was started"]
    (work / "tx.jsonl").write_text('{"id": "TXN-1", "amount": 1}\n\n{"id": "TXN-2", "meta": {"n": [1, -1E+400]}}\n')
    proc = pe("run", "it-ticket-triage", "--input", "tx.jsonl", cwd=work, ok=False)
    assert proc.stderr.splitlines()[0] == "error: tx.jsonl:3: meta.n[1]: number -1E+400 is out of range (numbers must be finite IEEE-754 doubles)"
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM orch_runs").fetchone()[0] == before
        assert conn.execute("SELECT count(*) FROM orch_runs WHERE status = 'running'").fetchone()[0] == 0
    # the largest exact integer is fine
    (work / "ok.json").write_text(json.dumps([{**INVOICE, "vendor_age_days": 2**53}]))
    pe("run", "invoice-exceptions", "--input", "ok.json", cwd=work)


def test_a_missing_amount_stays_missing_in_requests_and_records(work):
    no_amount = {k: v for k, v in INVOICE.items() if k != "amount"}
    (work / "noamt.json").write_text(json.dumps([no_amount]))
    (work / "sig.json").write_text(json.dumps([{"id": "SIG-T1", "signal": "strike", "severity": "high",
                                                "region": "EU", "sku": "SKU-UNKNOWN", "classification": "internal",
                                                "true_action": "expedite_alternative"}]))
    (work / "sure.yaml").write_text(SURE + "  planner_llm: {accuracy: 1.0, confidence: 0.95}\n")
    out = json.loads(pe("run", "invoice-exceptions", "--input", "noamt.json", "--providers", "sure.yaml", "--json",
                        cwd=work).stdout)
    assert out["runs"][0]["outcome"] == "queued_for_review"  # no rule allows paying an invoice of unknown amount
    pe("run", "supply-chain-disruption", "--input", "sig.json", "--providers", "sure.yaml", cwd=work)
    db = work / "policyengine.duckdb"
    requests = {(d["request"]["action"], d["request"]["context"]["step"]): d["request"]
                for d in audit_rows(db, "decision")}
    assert "amount" not in requests[("approve_payment", "approve_payment")]["context"]
    assert "amount" not in requests[("approve_order", "planner_approval")]["context"]
    with duckdb.connect(str(db), read_only=True) as conn:
        outputs = dict(conn.execute("SELECT step, output FROM orch_steps").fetchall())
    assert json.loads(outputs["load_invoice"])["amount"] is None
    assert json.loads(outputs["inventory"])["on_hand"] is None


def test_runs_list_says_when_limit_cut_the_list(tmp_path):
    pe("run", "fraud-routing", "--limit", "5", cwd=tmp_path)
    pe("run", "it-ticket-triage", "--limit", "2", cwd=tmp_path)
    cut = pe("runs", "list", "--limit", "3", cwd=tmp_path)
    assert cut.stderr.splitlines()[-1] == "showing 3 of 7 runs (use --limit)"
    cut = pe("runs", "list", "--limit", "3", "--workflow", "fraud-routing", "--json", cwd=tmp_path)
    assert len(cut.stdout.splitlines()) == 3 and cut.stderr.splitlines()[-1] == "showing 3 of 5 runs (use --limit)"
    for args in (["--limit", "7"], ["--limit", "2", "--workflow", "it-ticket-triage"], []):
        whole = pe("runs", "list", "--json", *args, cwd=tmp_path)
        assert "showing" not in whole.stderr


def test_approve_and_reject_take_now_like_runs_expire(work):
    (work / "two.json").write_text(json.dumps([INVOICE, {**INVOICE, "id": "INV-T2"}]))
    runs = json.loads(pe("run", "invoice-exceptions", "--input", "two.json", "--providers", "sure.yaml",
                         "--json", cwd=work).stdout)["runs"]
    first, second = (r["run_id"] for r in runs)
    soon = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    out = pe("reject", first, "--as", "alice", "--now", soon.isoformat(), "--clock-override", cwd=work)
    assert "rejected by alice; run rejected" in out.stdout
    with duckdb.connect(str(work / "policyengine.duckdb"), read_only=True) as conn:
        (decided,) = conn.execute("SELECT decided_at FROM orch_approvals WHERE run_id = ?", [first]).fetchone()
    assert decided == soon.replace(tzinfo=None)
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    refused = pe("approve", second, "--as", "alice", "--now", later, "--clock-override", cwd=work, ok=False)
    assert "its approval deadline passed" in refused.stderr
    bad = pe("approve", second, "--as", "alice", "--now", "tomorrow", cwd=work, ok=False)
    assert bad.returncode == 2 and "is not an ISO 8601 time" in bad.stderr


CUSTOM_FLOWS = '''\
from policyengine.orchestrator.workflow import Ask, ToolCall, Workflow

DATA = {"classification": "confidential", "origin": "DE", "vendor_status": "active", "vendor_age_days": 900}
PAYMENTS = Workflow(
    name="custom-payments", agent="invoice_classifier",
    nodes=(ToolCall("pay", effect=True,
                    ask=lambda ctx: Ask("approve_payment", "tool", "erp/payments", DATA,
                                        {"amount": ctx.item["amount"], "confidence": 0.99, "currency": "EUR"}),
                    run=lambda ctx, key: {"paid": ctx.item["amount"]}),),
    outcome=lambda ctx: "approved" if ctx.approved else "auto_resolved")
'''


def test_a_custom_workflow_registered_by_entry_point_and_decided_where_its_code_is_not(tmp_path):
    """A workflow of a plugin package (entry point group policyengine.workflows) runs from the CLI; approve,
    reject and runs expire work in a process without the plugin (the run waits for `runs resume` there)."""
    site = tmp_path / "site"
    (site / "custom_flows-0.1.dist-info").mkdir(parents=True)
    (site / "custom_flows.py").write_text(CUSTOM_FLOWS)
    (site / "custom_flows-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: custom-flows\n"
                                                                  "Version: 0.1\n")
    (site / "custom_flows-0.1.dist-info" / "entry_points.txt").write_text(
        "[policyengine.workflows]\ncustom-payments = custom_flows:PAYMENTS\n")
    (tmp_path / "items.json").write_text(json.dumps([{"id": f"P-{n}", "amount": 25_000 + n} for n in range(3)]))
    import os

    with_plugin = {**os.environ, "PYTHONPATH": str(site)}

    def cli(*args: str, plugin: bool) -> subprocess.CompletedProcess:
        proc = subprocess.run([*PE, *args], cwd=tmp_path, env=with_plugin if plugin else None, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc

    runs = json.loads(cli("run", "custom-payments", "--input", "items.json", "--json", plugin=True).stdout)["runs"]
    assert [r["status"] for r in runs] == ["waiting_approval"] * 3
    approved, rejected, overdue = (r["run_id"] for r in runs)
    # without the plugin: decisions are recorded, the runs wait to be resumed where the code is
    assert "not installed here" in cli("approve", approved, "--as", "alice", plugin=False).stdout
    assert "not installed here" in cli("reject", rejected, "--as", "alice", plugin=False).stdout
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    expired = cli("runs", "expire", "--now", later, "--clock-override", plugin=False).stdout
    assert f"{overdue}\tcustom-payments\trunning\t" in expired
    resumed = cli("runs", "resume", plugin=True).stdout.splitlines()
    assert sorted(resumed) == sorted([f"{approved}\tcustom-payments\tcompleted\tapproved",
                                      f"{rejected}\tcustom-payments\trejected\trejected",
                                      f"{overdue}\tcustom-payments\texpired\texpired"])
    cli("audit", "verify", "--db", "policyengine.duckdb", "--pubkey", "policyengine.key.pub.pem", plugin=False)


def test_runs_show_prints_a_step_reason_whole(work):
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--json", cwd=work)
    (run,) = json.loads(out.stdout)["runs"]
    with duckdb.connect(str(work / "policyengine.duckdb"), read_only=True) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM orch_steps WHERE run_id = ? AND reason IS NOT NULL",
                                              [run["run_id"]]).fetchall()]
    assert any(len(r) > 90 for r in reasons)
    import os

    shown = subprocess.run([*PE, "runs", "show", run["run_id"]], cwd=work, capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "400"}, timeout=120)
    table = shown.stdout[shown.stdout.index("┏"):]  # the header line above it repeats the run's reason
    cells = " ".join(re.sub(r"[│┃┏┓┗┛┡┩└┘━─╇┳┻╋┼]", " ", table).split())  # wrapped cells read as one text
    for reason in reasons:
        assert reason in cells


def test_budget_exhausted_mid_batch_over_an_http_provider_records_every_run(work):
    """The budget denies the rest of a batch whose calls go to an HTTP provider: every run is recorded.

    It stopped with "audit write ... failed: ... unfinished result" (exit 1, the batch unrecorded)."""
    rules = _tiny_triage_budget(work)
    out = run_over_http(work, _Chat, "triage_small: {fail_rate: 1.0, fail: error}", 20, "--rules", str(rules))
    statuses = [r["status"] for r in json.loads(out.stdout)["runs"]]
    assert "denied" in statuses and len(statuses) == 20
    with duckdb.connect(str(work / "policyengine.duckdb"), read_only=True) as conn:
        recorded = conn.execute("SELECT count(DISTINCT run_id) FROM orch_runs").fetchone()[0]
    assert recorded == 20
