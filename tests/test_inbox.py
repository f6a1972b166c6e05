"""The approver inbox over real HTTP: a `policyengine inbox serve` subprocess on a free port, driven by httpx.

Each test starts a real invoice run that waits for a senior analyst, mints
sign-in tokens with the real CLI, and signs in as an approver would. The
decision goes through the same library call as `policyengine approve`, so the
checks here are those of the CLI: four-eyes, the gate's role, and the audit
record (verified with `audit verify` afterwards).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from policyengine.resources import data_path
from tests.inbox_process import InboxServer, mint, run_status, start_waiting_run
from tests.server_process import ALLOW, RULES, Server
from tests.test_cli_workflows import INVOICE, SURE, audit_rows, pe

DB = "policyengine.duckdb"
NOT_SHOWN = "no:gate:shown"  # what a post names for a run whose card offered no form (refused for another reason)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


def client(server: InboxServer | Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60)


def sign_in(c: httpx.Client, token: str) -> httpx.Response:
    return c.post("/login", data={"token": token})


def audit_events(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return [e for (e,) in conn.execute("SELECT event FROM audit_log ORDER BY seq").fetchall()]


def csrf_of(page: str) -> str:
    found = re.search(r"name='csrf' value='([^']+)'", page)
    assert found, page[:2000]
    return found[1]


def gates_of(page: str) -> str:
    """The gates the page's first decision form names: what its Approve and Reject decide."""
    found = re.search(r"name='gates' value='([^']+)'", page)
    assert found, page[:2000]
    return html.unescape(found[1])


def flashes(page: str) -> list[str]:
    return re.findall(r"<p class='flash (?:ok|error)' role='status'>([^<]*)</p>", page)


def test_sign_in_with_a_minted_token_shows_the_pending_approval_with_its_context(work):
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    directory = (work / "policyengine.directory.yaml").read_text()
    assert token not in directory  # only the hash is kept
    assert f"token_sha256: {hashlib.sha256(token.encode()).hexdigest()}" in directory
    with InboxServer(work) as server, client(server) as c:
        first = c.get("/")
        assert first.status_code == 303 and first.headers["location"] == "/login"
        signed = sign_in(c, token)
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("pe_inbox=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = c.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "'unsafe-inline'" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    html = page.text
    assert "<script" not in html and " style=" not in html  # nothing the policy would have to allow
    assert f"name='run_id' value='{run_id}'" in html
    assert "finance.invoices.large_payment" in html  # the rule that escalated
    assert "needs approval by role senior_analyst" in html  # its reason
    assert "design_sample.policy:" in html  # where the rule is
    assert "&quot;action&quot;: &quot;approve_payment&quot;" in html  # the request, escaped
    assert "Deadline</dt><dd>20" in html and "senior_analyst" in html


def test_a_wrong_or_revoked_token_is_refused(work):
    start_waiting_run(work)
    old = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        wrong = sign_in(c, "pei_" + "x" * 43)
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert "unknown or revoked token" in wrong.text
        assert sign_in(c, hashlib.sha256(old.encode()).hexdigest()).status_code == 401  # the stored hash is no token
        assert sign_in(c, old).status_code == 303
        assert c.get("/").status_code == 200
        new = mint(work, "alice")  # re-minting ends the sessions of the old token
        after = c.get("/")
        assert after.status_code == 303 and after.headers["location"] == "/login"
        assert sign_in(c, old).status_code == 401
        assert sign_in(c, new).status_code == 303


def test_a_post_without_the_csrf_token_or_from_another_site_is_refused(work):
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        sign_in(c, token)
        csrf = csrf_of(c.get("/").text)
        missing = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve"})
        assert missing.status_code == 403 and "CSRF token is missing or wrong" in missing.text
        wrong = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve", "csrf": csrf[::-1]})
        assert wrong.status_code == 403
        cross = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve", "csrf": csrf},
                       headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403 and "cross-site" in cross.text
        anonymous = httpx.post(f"{server.url}/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve",
                                                             "csrf": csrf})
        assert anonymous.status_code == 401
    assert run_status(work, run_id)["status"] == "waiting_approval"
    assert audit_rows(work / DB, "approval") == []


def test_four_eyes_and_the_gates_role_are_enforced_as_by_the_cli(work):
    run_id = start_waiting_run(work, requested_by="alice")  # alice started it: she may not approve it
    alice, carol = mint(work, "alice"), mint(work, "carol")
    with InboxServer(work) as server:
        with client(server) as c:
            sign_in(c, alice)
            page = c.get("/").text
            assert "You requested this run: four-eyes forbids you to decide it." in page
            assert f"name='run_id' value='{run_id}'" not in page  # no form offered
            reply = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve",
                                            "csrf": csrf_of(page)})
            assert reply.status_code == 303
            (message,) = flashes(c.get("/").text)
            assert f"alice requested run {run_id} and cannot decide its approval (four-eyes" in message
        with client(server) as c:
            sign_in(c, carol)  # an analyst: not the senior analyst the gate needs
            page = c.get("/").text
            assert run_id not in page
            c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "reject", "csrf": csrf_of(page)})
            (message,) = flashes(c.get("/").text)
            assert message.startswith(f"{run_id}: not rejected: carol (analyst) does not hold role senior_analyst")
    cli = pe("approve", run_id, "--as", "alice", cwd=work, ok=False)  # the CLI says the same
    assert "cannot decide its approval (four-eyes" in cli.stderr
    assert run_status(work, run_id)["status"] == "waiting_approval"
    assert audit_rows(work / DB, "approval") == []


def test_approve_resumes_the_run_and_the_signed_audit_log_records_it(work):
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        sign_in(c, token)
        page = c.get("/").text
        csrf = csrf_of(page)
        reply = c.post("/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "approve", "csrf": csrf,
                                        "note": "PO checked <b>by phone</b>"})
        assert reply.status_code == 303
        page = c.get("/").text
        (message,) = flashes(page)
        assert message == f"{run_id} approved by alice; run completed, outcome approved"
        assert "Nothing waits for you." in page
        again = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve", "csrf": csrf})
        assert again.status_code == 303
        (message,) = flashes(c.get("/").text)
        assert f"run {run_id} is not waiting for approval: it is completed" in message
    shown = run_status(work, run_id)
    assert shown["status"] == "completed" and shown["outcome"] == "approved"
    assert [(a["status"], a["approver"], a["note"]) for a in shown["approvals"]] == [
        ("approved", "alice", "PO checked <b>by phone</b>")]
    (approval,) = audit_rows(work / DB, "approval")
    assert (approval["run_id"], approval["approver"], approval["outcome"], approval["note"]) == (
        run_id, "alice", "approved", "PO checked <b>by phone</b>")
    changed = audit_rows(work / DB, "directory_changed")
    assert approval["directory_sha256"] == changed[-1]["sha256"]  # the directory holding the token hash, recorded
    verified = pe("audit", "verify", "--db", DB, "--pubkey", "policyengine.key.pub.pem", cwd=work)
    assert "OK" in verified.stdout


def test_reject_runs_the_workflows_fallback_and_is_recorded(work):
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        sign_in(c, token)
        page = c.get("/").text
        csrf = csrf_of(page)
        c.post("/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "reject", "csrf": csrf,
                                "note": "vendor unknown"})
        (message,) = flashes(c.get("/").text)
        assert message.startswith(f"{run_id} rejected by alice; run ")
        bad = c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "delete", "csrf": csrf})
        assert bad.status_code == 400 and "action must be approve or reject" in bad.text
    (approval,) = audit_rows(work / DB, "approval")
    assert (approval["outcome"], approval["note"]) == ("rejected", "vendor unknown")
    assert run_status(work, run_id)["status"] != "waiting_approval"
    pe("audit", "verify", "--db", DB, "--pubkey", "policyengine.key.pub.pem", cwd=work)


def test_what_the_run_carries_is_escaped(work):
    run_id = start_waiting_run(work, item_id="INV-'\"><img src=x onerror=alert(1)>")  # no '/': the rules' glob
    token = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        sign_in(c, token)
        page = c.get("/").text
    assert run_id in page
    assert "<img" not in page and "INV-&#x27;&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page


def test_sign_out_ends_the_session(work):
    start_waiting_run(work)
    token = mint(work, "alice")
    with InboxServer(work) as server, client(server) as c:
        sign_in(c, token)
        csrf = csrf_of(c.get("/").text)
        assert c.post("/logout", data={}).status_code == 403  # a signed-in session needs its CSRF token
        out = c.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert c.get("/").status_code == 303


def test_token_for_an_unknown_user_is_refused_in_one_line(work):
    start_waiting_run(work)
    refused = pe("inbox", "token", "--user", "mallory", cwd=work, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: unknown user 'mallory': not in the user directory policyengine.directory.yaml")
    assert refused.stdout == ""


def test_serve_refuses_a_missing_database_in_one_line(work):
    refused = pe("inbox", "serve", "--db", "none.duckdb", "--port", "0", cwd=work, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("error: none.duckdb: no such database (runs are recorded by `policyengine run` "
                                      "or `policyengine demo`)")


@pytest.mark.parametrize(("args", "warned"), [
    (["--host", "0.0.0.0"], True),  # tokens and cookies in clear on the network: said at start
    (["--host", "0.0.0.0", "--secure-cookie"], False),  # behind a TLS proxy
    (["--host", "127.0.0.1"], False),
])
def test_serving_off_loopback_over_plain_http_is_warned_about(work, args, warned):
    start_waiting_run(work)
    with InboxServer(work, *args) as server:
        said = [line for line in server.lines if line.startswith("warning: ")]
    assert said == (["warning: listening on 0.0.0.0 over plain http without --secure-cookie: sign-in tokens and "
                     "session cookies cross the network in clear; serve it behind a TLS proxy with --secure-cookie"]
                    if warned else [])


def test_the_decision_server_mounts_the_inbox_at_inbox(work):
    run_id = start_waiting_run(work)
    token = mint(work, "alice")
    (work / "bearer.txt").write_text("s3cret-bearer\n")
    with Server(work, "--rules", str(RULES), "--inbox", DB, "--inbox-key", "policyengine.key",
                "--auth-token-file", "bearer.txt") as server, client(server) as c:
        assert server.post("/v1/decide", ALLOW).status_code == 401  # the decision API keeps its bearer token
        assert server.post("/v1/decide", ALLOW, headers={"Authorization": "Bearer s3cret-bearer"}).status_code == 200
        assert c.get("/inbox").headers["location"] == "/inbox/"
        assert c.get("/inbox/").headers["location"] == "/inbox/login"
        signed = c.post("/inbox/login", data={"token": token})
        assert signed.status_code == 303 and "Path=/inbox;" in signed.headers["set-cookie"]
        page = c.get("/inbox/").text
        assert "action='/inbox/decide'" in page and "href='/inbox/inbox.css'" in page
        c.post("/inbox/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "approve",
                                      "csrf": csrf_of(page)})
        (message,) = flashes(c.get("/inbox/").text)
        assert message == f"{run_id} approved by alice; run completed, outcome approved"
    assert run_status(work, run_id)["status"] == "completed"
    (approval,) = audit_rows(work / DB, "approval")
    assert approval["approver"] == "alice"
    pe("audit", "verify", "--db", DB, "--pubkey", "policyengine.key.pub.pem", cwd=work)
    pe("audit", "verify", "--db", "audit.duckdb", "--pubkey", "audit.key.pub.pem", cwd=work)  # the decision log


def test_serve_refuses_an_inbox_on_its_own_decision_log(work):
    start_waiting_run(work)
    refused = pe("serve", "--rules", str(RULES), "--port", "0", "--db", DB, "--inbox", DB, cwd=work, ok=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --inbox {DB}: that is the decision log --db, which this server holds open; give the runs database "
        "(`policyengine run --db`)")
    assert [e for e in audit_events(work / DB) if e == "policy_activated"] == []  # refused before writing


def test_a_gate_past_its_deadline_cannot_be_approved(work):
    rules = work / "rules"
    shutil.copytree(data_path("rules"), rules)
    sample = rules / "design_sample.policy"
    sample.write_text(sample.read_text().replace("within 4h else deny", "within 1s else deny"))
    (work / "invoice.json").write_text(json.dumps([INVOICE]))
    (work / "sure.yaml").write_text(SURE)
    out = pe("run", "invoice-exceptions", "--input", "invoice.json", "--providers", "sure.yaml", "--rules", "rules",
             "--json", cwd=work)
    (run,) = json.loads(out.stdout)["runs"]
    run_id = run["run_id"]
    token = mint(work, "alice")
    while not run_status(work, run_id)["approvals"][0]["overdue"]:  # the one-second deadline passes
        time.sleep(0.2)
    with InboxServer(work, "--rules", "rules") as server, client(server) as c:
        sign_in(c, token)
        page = c.get("/").text
        assert "The deadline has passed: this approval can no longer be decided" in page
        assert f"name='run_id' value='{run_id}'" not in page
        c.post("/decide", data={"run_id": run_id, "gates": NOT_SHOWN, "action": "approve", "csrf": csrf_of(page)})
        (message,) = flashes(c.get("/").text)
        assert message == (f"{run_id}: not approved: run {run_id} is not waiting for approval: "
                           "its approval deadline passed")
    assert [a["outcome"] for a in audit_rows(work / DB, "approval")] == ["expired"]  # recorded, as by the CLI
    assert run_status(work, run_id)["status"] != "waiting_approval"


def _waiting_transaction(work: Path, rules: tuple[str, ...]) -> str:
    """An 18,000 transaction the fraud models are unsure of: it waits at step analyst_review for a fraud analyst,
    then, approved, at step release (over 10,000). Its run id."""
    txn = {"id": "TXN-T1", "account": "ACC-1", "amount": 18_000.0, "merchant_category": "electronics",
           "card_present": False, "customer_region": "EU", "classification": "pii", "origin": "FR",
           "true_label": "legit"}
    (work / "txn.json").write_text(json.dumps([txn]))
    (work / "unsure.yaml").write_text("models:\n  fraud_fast: {accuracy: 1.0, confidence: 0.6}\n"
                                      "  fraud_deep: {accuracy: 1.0, confidence: 0.6}\n")
    out = pe("run", "fraud-routing", "--input", "txn.json", "--providers", "unsure.yaml", "--as", "operator",
             "--json", *rules, cwd=work)
    (run,) = json.loads(out.stdout)["runs"]
    return run["run_id"]


def _one_escalation_for_both_steps(work: Path) -> tuple[str, ...]:
    """The shipped rules, but ambiguous_scores also gates the release (large_releases is gone): the same gate
    at the next step."""
    shutil.copytree(data_path("rules"), work / "rules")
    routing = work / "rules" / "fraud" / "routing.policy"
    text = routing.read_text()
    text = text.replace('    when action == "review_transaction" and context.confidence < 0.9\n',
                        '    when (action == "review_transaction" and context.confidence < 0.9)\n'
                        '      or (action == "release_transaction" and context.amount > 10_000)\n')
    start = text.index("escalate large_releases")
    routing.write_text(text[:start] + text[text.index("budget ", start):])
    return ("--rules", "rules")


def _pending(work: Path, run_id: str) -> list[str]:
    return sorted(a["gate"] for a in run_status(work, run_id)["approvals"] if a["status"] == "pending")


REVIEW = "fraud.routing.ambiguous_scores"
MOVED_ON = [  # (case, the rules, the gate the run waits at once the review gate is approved)
    ("at its next gate", lambda work: (), "fraud.routing.large_releases"),
    ("at the same gate at its next step", _one_escalation_for_both_steps, REVIEW),
]


@pytest.mark.parametrize(("case", "rules_of", "next_gate"), MOVED_ON, ids=[m[0] for m in MOVED_ON])
def test_a_page_loaded_before_the_run_moved_on_does_not_decide_where_it_waits_now(work, case, rules_of, next_gate):
    """The fraud lead's page shows the review; an analyst approves it and the run waits for the lead again, at
    the release of 18,000: her click on the old page must not decide that release, which she never saw."""
    rules = rules_of(work)
    run_id = _waiting_transaction(work, rules)
    assert _pending(work, run_id) == [REVIEW]
    gina = mint(work, "gina")  # fraud_lead, which extends fraud_analyst
    with InboxServer(work, *rules) as server, client(server) as c:
        sign_in(c, gina)
        page = c.get("/").text
        stale = {"run_id": run_id, "gates": gates_of(page), "csrf": csrf_of(page)}
        assert stale["gates"].startswith(f"analyst_review:{REVIEW}:")
        pe("approve", run_id, "--as", "erin", *rules, cwd=work)  # the fraud analyst: the review
        assert _pending(work, run_id) == [next_gate]
        for action in ("approve", "reject"):
            c.post("/decide", data={**stale, "action": action})
            (message,) = flashes(c.get("/").text)
            verb = "approved" if action == "approve" else "rejected"
            assert message == (f"{run_id}: not {verb}: run {run_id} now waits for you at gate {next_gate} at step "
                               f"release, not at the gate {REVIEW} at step analyst_review the page showed; nothing "
                               "was decided: reload the inbox and decide what it shows now")
        assert c.post("/decide", data={**stale, "gates": "", "action": "approve"}).status_code == 400  # names none
        assert _pending(work, run_id) == [next_gate]
        page = c.get("/").text  # reloaded, it shows the release: that is what she decides now
        assert gates_of(page).startswith(f"release:{next_gate}:")
        c.post("/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "reject", "csrf": csrf_of(page)})
    assert [(a["step"], a["gate"]) for a in audit_rows(work / DB, "approval") if a["approver"] == "gina"] == [
        ("release", next_gate)]


# (inbox --db, whether the page shows the escalated request and its reasons): with --state the runs are in
# PostgreSQL; the request and reasons are in the audit log of the worker that ran the step, shown when the
# inbox's --db is that log. The inbox records its own decisions in its --db either way.
STATE_CASES = [("the worker's log", "worker.duckdb", True), ("a log of its own", "inbox.duckdb", False)]


@pytest.mark.postgres
@pytest.mark.parametrize(("db", "context"), [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES])
def test_with_state_the_inbox_lists_and_decides_the_runs_kept_in_postgresql(work, postgres_url, db, context):
    state = ("--state", postgres_url)
    run_id = start_waiting_run(work, "--db", "worker.duckdb", *state)
    token = mint(work, "alice")
    with InboxServer(work, "--db", db, *state) as server, client(server) as c:
        sign_in(c, token)
        page = c.get("/").text
        assert f"name='run_id' value='{run_id}'" in page
        assert ("needs approval by role senior_analyst" in page) is context
        assert ("The request is not in the audit log." in page) is not context
        assert f"<code>{postgres_url.split('://', 1)[0]}://" in page  # where the runs are read from
        c.post("/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "approve", "csrf": csrf_of(page),
                                "note": "ok"})
        (message,) = flashes(c.get("/").text)
        assert message == f"{run_id} approved by alice; run completed, outcome approved"
    shown = run_status(work, run_id, *state)
    assert (shown["status"], shown["outcome"]) == ("completed", "approved")
    assert [(a["status"], a["approver"]) for a in shown["approvals"]] == [("approved", "alice")]
    (approval,) = audit_rows(work / db, "approval")
    assert (approval["run_id"], approval["approver"], approval["note"]) == (run_id, "alice", "ok")
    verified = pe("audit", "verify", "--db", db, "--pubkey", "policyengine.key.pub.pem", cwd=work)
    assert "OK" in verified.stdout


@pytest.mark.postgres
def test_the_inbox_mounted_in_serve_with_state_decides_the_runs_kept_in_postgresql(work, postgres_url):
    """serve --state shares budgets and blocks; its /inbox must decide the same workers' runs, not a file's."""
    state = ("--state", postgres_url)
    run_id = start_waiting_run(work, "--db", "worker.duckdb", *state)
    token = mint(work, "alice")
    with Server(work, "--rules", str(RULES), "--inbox", "inbox.duckdb", "--inbox-key", "policyengine.key",
                *state) as server, client(server) as c:
        assert c.post("/inbox/login", data={"token": token}).status_code == 303
        page = c.get("/inbox/").text
        assert f"name='run_id' value='{run_id}'" in page
        c.post("/inbox/decide", data={"run_id": run_id, "gates": gates_of(page), "action": "approve",
                                      "csrf": csrf_of(page)})
        (message,) = flashes(c.get("/inbox/").text)
        assert message == f"{run_id} approved by alice; run completed, outcome approved"
    shown = run_status(work, run_id, *state)
    assert (shown["status"], shown["outcome"]) == ("completed", "approved")
    (approval,) = audit_rows(work / "inbox.duckdb", "approval")
    assert (approval["run_id"], approval["approver"]) == (run_id, "alice")


def test_an_inbox_state_that_is_not_postgresql_is_refused_in_one_line(work):
    start_waiting_run(work)
    out = pe("inbox", "serve", "--state", "other.duckdb", "--port", "0", cwd=work, ok=False)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: --state other.duckdb: the inbox shares runs through postgresql://...; "
                                  "the embedded run state is the --db file")
