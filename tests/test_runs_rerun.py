"""Running the same input again: a batch killed mid-way and re-run pays nothing twice.

Real processes on a real DuckDB file and key: `policyengine run` of a plugin
workflow whose payment tool is a fake payment API in the test's directory. It
honours idempotency keys, as payment APIs do (a key seen before returns its
payment, no new one), logs every call to ``calls.jsonl`` and every payment it
really makes to ``payments.jsonl``, and can be told to hang inside one
invoice's payment (``PAY_BLOCK_AT``), where the test SIGKILLs the process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

PLUGIN = '''\
import json, os, time
from pathlib import Path

from policyengine.orchestrator.workflow import Ask, ToolCall, Workflow


def _append(path, row):
    with Path(path).open("a") as f:
        f.write(json.dumps(row) + "\\n")
        f.flush()
        os.fsync(f.fileno())


def pay(ctx, key):
    invoice = ctx.item.get("id")
    _append("calls.jsonl", {"key": key, "invoice": invoice})
    made = Path("payments.jsonl")
    if made.exists() and any(json.loads(line)["key"] == key for line in made.read_text().splitlines()):
        return {"paid": ctx.item["amount"], "payment_ref": key}  # the key was paid before: not again
    _append(made, {"key": key, "invoice": invoice, "amount": ctx.item["amount"]})
    if invoice == os.environ.get("PAY_BLOCK_AT"):
        for _ in range(1200):  # paid, no receipt yet: the test kills the process here (60 s safety net)
            time.sleep(0.05)
    return {"paid": ctx.item["amount"], "payment_ref": key}


PAYMENTS = Workflow(
    name="ledger-payments", agent="payer_bot",
    nodes=(ToolCall("pay", effect=True,
                    ask=lambda ctx: Ask("pay", "tool", "bank/payments", {}, {"amount": ctx.item["amount"]}),
                    run=pay),),
    outcome=lambda ctx: "paid")
'''

RULES = """\
package ledgerpay
role bot
agent payer_bot
    owner "ops@example.com"
    roles bot
rule bots_pay
    allow role bot to pay tool "bank/payments"
    because "the bot pays invoices"
"""

INVOICES = [{"id": f"INV-{n}", "amount": 100 + n} for n in range(12)]


class Shop:
    """A temp dir with the plugin installed, rules, an input file and the payment API's logs."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        site = tmp_path / "site"
        (site / "ledger_payments-0.1.dist-info").mkdir(parents=True)
        (site / "ledger_payments.py").write_text(PLUGIN)
        (site / "ledger_payments-0.1.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: ledger-payments\nVersion: 0.1\n")
        (site / "ledger_payments-0.1.dist-info" / "entry_points.txt").write_text(
            "[policyengine.workflows]\nledger-payments = ledger_payments:PAYMENTS\n")
        (tmp_path / "pay.policy").write_text(RULES)
        self.write_items(INVOICES)
        path = os.environ.get("PYTHONPATH", "")
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), path) if p)}

    def write_items(self, items: list[dict]) -> None:
        (self.dir / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "policyengine", *args], cwd=self.dir, env={**self.env, **env},
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def cli(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
        return proc

    def run(self, *extra: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        return self.cli("run", "ledger-payments", "--input", "items.jsonl", "--rules", "pay.policy", *extra,
                        code=code)

    def run_json(self, *extra: str) -> dict:
        return json.loads(self.run("--json", *extra).stdout)

    def log(self, name: str) -> list[dict]:
        path = self.dir / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def paid(self) -> Counter:
        """Payments really made, per invoice."""
        return Counter(p["invoice"] for p in self.log("payments.jsonl"))

    def sql(self, query: str) -> list[tuple]:
        with duckdb.connect(str(self.dir / "policyengine.duckdb"), read_only=True) as conn:
            return conn.execute(query).fetchall()

    def events(self, event: str) -> list[dict]:
        return [{"run_id": r, **json.loads(p)} for r, p in
                self.sql(f"SELECT run_id, payload FROM audit_log WHERE event = '{event}' ORDER BY seq")]

    def tool_calls(self) -> Counter:
        """``tool_call`` audit records per invoice (through the run that made them)."""
        return Counter(item for (item,) in self.sql(
            "SELECT r.item_id FROM audit_log a JOIN orch_runs r USING (run_id) WHERE a.event = 'tool_call'"))

    def verify(self) -> str:
        return self.cli("audit", "verify", "--db", "policyengine.duckdb", "--pubkey",
                        "policyengine.key.pub.pem").stdout

    def kill_while_paying(self, invoice: str, *extra: str) -> None:
        """Start the batch and SIGKILL it inside ``invoice``'s payment: paid, no receipt."""
        proc = self.start("run", "ledger-payments", "--input", "items.jsonl", "--rules", "pay.policy", *extra,
                          PAY_BLOCK_AT=invoice)
        try:
            for _ in range(1200):
                if any(p["invoice"] == invoice for p in self.log("payments.jsonl")):
                    break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    return Shop(tmp_path)


def test_a_batch_killed_mid_payment_and_run_again_pays_every_invoice_exactly_once(shop):
    shop.kill_while_paying("INV-5")
    assert shop.paid() == Counter({f"INV-{n}": 1 for n in range(6)})  # INV-5 paid, its receipt never written
    again = shop.run_json()  # the same command, as an operator would type it again
    assert shop.paid() == Counter({i["id"]: 1 for i in INVOICES})  # every invoice paid, none twice
    calls = Counter(c["invoice"] for c in shop.log("calls.jsonl"))
    assert calls == Counter({**{i["id"]: 1 for i in INVOICES}, "INV-5": 2})
    assert len({c["key"] for c in shop.log("calls.jsonl") if c["invoice"] == "INV-5"}) == 1  # called again, same key
    earlier = {r["item_id"]: r["earlier"] for r in again["runs"]}
    assert earlier == {**{f"INV-{n}": "done" for n in range(5)}, "INV-5": "resumed",
                       **{f"INV-{n}": None for n in range(6, 12)}}
    assert (again["completed"], again["already_run"], again["resumed"]) == (12, 5, 1)
    assert shop.tool_calls() == Counter({i["id"]: 1 for i in INVOICES})  # one tool_call record per invoice
    assert shop.sql("SELECT count(*), count(DISTINCT item_id) FROM orch_runs") == [(12, 12)]
    assert shop.sql("SELECT count(*) FROM orch_effects") == [(12,)]
    assert "OK" in shop.verify()


def test_a_finished_batch_run_again_runs_nothing(shop):
    first = shop.run_json()
    assert [r["status"] for r in first["runs"]] == ["completed"] * 12
    before = Counter(e for (e,) in shop.sql("SELECT event FROM audit_log"))
    again = shop.run_json()
    assert len(shop.log("calls.jsonl")) == 12 and shop.paid() == Counter({i["id"]: 1 for i in INVOICES})
    assert [r["run_id"] for r in again["runs"]] == [r["run_id"] for r in first["runs"]]
    assert [r["earlier"] for r in again["runs"]] == ["done"] * 12 and again["already_run"] == 12
    after = Counter(e for (e,) in shop.sql("SELECT event FROM audit_log"))
    assert after - before == Counter({"policy_loaded": 1})  # the command is on the record; no run did anything
    table = shop.run().stdout
    assert "12 item(s) already have a run from an earlier run of this input (completed 12); not run again" in table
    assert "OK" in shop.verify()


def test_again_runs_the_items_anew_once_per_label_and_is_recorded(shop):
    first = shop.run_json()
    again = shop.run_json("--again", "fix-1")
    assert {r["run_id"] for r in again["runs"]}.isdisjoint(r["run_id"] for r in first["runs"])
    assert [r["earlier"] for r in again["runs"]] == [None] * 12 and again["completed"] == 12
    assert shop.paid() == Counter({i["id"]: 2 for i in INVOICES})  # paid again, on purpose
    assert len({p["key"] for p in shop.log("payments.jsonl")}) == 24  # under new idempotency keys
    (asked,) = shop.events("rerun_requested")
    assert {k: asked[k] for k in ("workflow", "label", "by", "items", "first_runs", "already_run")} == {
        "workflow": "ledger-payments", "label": "fix-1", "by": "operator", "items": 12, "first_runs": 12,
        "already_run": 0}
    ends = {e["run_id"]: e.get("again") for e in shop.events("run")}
    assert {ends[r["run_id"]] for r in again["runs"]} == {"fix-1"}
    assert {ends[r["run_id"]] for r in first["runs"]} == {None}
    same = shop.run_json("--again", "fix-1")  # the same re-run again (after a crash, say): nothing repeated
    assert [r["run_id"] for r in same["runs"]] == [r["run_id"] for r in again["runs"]]
    assert [r["earlier"] for r in same["runs"]] == ["done"] * 12
    assert [(e["first_runs"], e["already_run"]) for e in shop.events("rerun_requested")] == [(12, 0), (12, 12)]
    assert shop.paid() == Counter({i["id"]: 2 for i in INVOICES})
    assert "OK" in shop.verify()


def test_an_again_rerun_killed_mid_payment_and_run_again_pays_each_invoice_once_more(shop):
    shop.run()
    shop.kill_while_paying("INV-3", "--again", "fix-1")
    shop.run("--again", "fix-1")
    assert shop.paid() == Counter({i["id"]: 2 for i in INVOICES})
    assert "OK" in shop.verify()


@pytest.mark.parametrize("label", ["", "   ", "fix\u200b1"])
def test_a_blank_or_invisible_again_label_is_refused_before_anything_is_written(shop, label):
    err = shop.run("--again", label, code=1).stderr
    assert err.startswith("error: items.jsonl: --again ")
    assert not (shop.dir / "policyengine.duckdb").exists() and shop.log("calls.jsonl") == []


def test_items_repeated_in_one_input_are_refused_before_any_run_starts(shop):
    shop.write_items([*INVOICES[:3], {"id": "INV-1", "amount": 999}, {"amount": 5}, {"amount": 5}])
    err = shop.run(code=1).stderr
    assert "item 4 is the same item as item 2 (id 'INV-1')" in err
    assert "item 6 is the same item as item 5 (same content, sha256 " in err
    assert "no run was started" in err
    assert not (shop.dir / "policyengine.duckdb").exists() and shop.log("calls.jsonl") == []


def test_items_without_an_id_are_known_by_their_content(shop):
    shop.write_items([{"amount": 5}, {"amount": 6, "id": None}])
    first = shop.run_json()
    shop.write_items([{"amount": 6, "id": None}, {"amount": 7}, {"amount": 5}])
    again = shop.run_json()
    by_amount = {r["run_id"]: a for r, a in zip(first["runs"], (5, 6), strict=True)}
    assert [by_amount.get(r["run_id"]) for r in again["runs"]] == [6, None, 5]
    assert [r["earlier"] for r in again["runs"]] == ["done", None, "done"]
    assert sorted(p["amount"] for p in shop.log("payments.jsonl")) == [5, 6, 7]


def test_an_item_whose_id_ran_before_with_other_content_is_not_run_and_is_named(shop):
    shop.run()
    shop.write_items([{"id": "INV-2", "amount": 5_000}])
    proc = shop.run("--json")
    (run,) = json.loads(proc.stdout)["runs"]
    assert (run["earlier"], run["differs"]) == ("done", True)
    assert "warning: 1 item(s) have the id of an earlier run whose input differs, e.g. INV-2" in proc.stderr
    assert shop.paid()["INV-2"] == 1 and {p["amount"] for p in shop.log("payments.jsonl")} == {i["amount"]
                                                                                             for i in INVOICES}


def test_an_unfinished_run_from_before_under_other_rules_refuses_the_rerun(shop):
    shop.kill_while_paying("INV-2")
    (shop.dir / "pay.policy").write_text(RULES + 'rule bots_read\n    allow role bot to read dataset "x"\n')
    err = shop.run(code=1).stderr
    assert "was started under policy" in err and "finish it first with `policyengine runs resume`" in err
    assert shop.paid() == Counter({f"INV-{n}": 1 for n in range(3)})  # nothing else was paid
    assert shop.sql("SELECT status, count(*) FROM orch_runs GROUP BY status ORDER BY status") == [
        ("completed", 2), ("running", 1)]


KILL_AFTER_RECEIPT = """
import os
from pathlib import Path
from policyengine.orchestrator.session import Session, SessionConfig
from policyengine.orchestrator.workflows import load_items

def die(point, step):
    if point == "after_effect":
        os._exit(137)  # the process dies between the payment's receipt and its record

with Session(SessionConfig(db=Path("policyengine.duckdb"), key=Path("policyengine.key"), create_key=True,
                           rules=[Path("pay.policy")])) as session:
    session.orchestrator.faults = die
    session.orchestrator.run_batch("ledger-payments", load_items("items.jsonl"), requested_by="operator")
"""


def test_a_payment_whose_receipt_outlived_the_kill_is_completed_from_it_by_the_rerun(shop):
    (shop.dir / "kill.py").write_text(KILL_AFTER_RECEIPT)
    proc = subprocess.run([sys.executable, "kill.py"], cwd=shop.dir, env=shop.env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 137, proc.stderr
    again = shop.run_json()
    assert len(shop.log("calls.jsonl")) == 12  # INV-0 was not called again: its receipt stands
    assert again["runs"][0]["earlier"] == "resumed" and again["completed"] == 12
    (replayed,) = [t for t in shop.events("tool_call") if t["replayed"]]
    assert replayed["run_id"] == again["runs"][0]["run_id"]
    assert shop.tool_calls() == Counter({i["id"]: 1 for i in INVOICES})
    assert "OK" in shop.verify()
