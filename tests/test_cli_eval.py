"""``policyengine eval`` end to end: real subprocess runs of the installed command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

POLICY = """
package shop
role clerk
role manager extends clerk
model small
    region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens
rule clerks_read
    allow role clerk to read dataset "orders/**"
    because "clerks handle orders"
rule no_archive
    deny any to read dataset "orders/archive/*"
rule managers_invoke
    allow role manager to invoke model "*"
budget daily
    for model small
    limit 1000 tokens per day
    on exceed deny
escalate refunds
    when action == "refund"
    to role manager
rule clerks_refund
    allow role clerk to refund tool "till"
"""


def _exe() -> list[str]:
    found = shutil.which("policyengine", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "policyengine"]


def run(*args: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*_exe(), *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_rules")
    (root / "shop.policy").write_text(POLICY)
    return root


def request(roles=("clerk",), action="read", kind="dataset", rid="orders/1", **extra) -> dict:
    return {"principal": {"id": "pat", "roles": list(roles)}, "action": action,
            "resource": {"kind": kind, "id": rid}, **extra}


def decisions(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_one_request_from_stdin(rules):
    result = run("eval", "--rules", str(rules), stdin=json.dumps(request(), indent=2))
    assert result.returncode == 0, result.stderr
    (decision,) = decisions(result.stdout)
    assert decision["effect"] == "allow" and decision["route"] is None
    assert decision["reasons"][0] == {"rule": "shop.clerks_read", "file": "shop.policy",  # relative to --rules
                                      "line": POLICY.splitlines().index("rule clerks_read") + 1,
                                      "message": "clerks handle orders", "cites": [], "candidate": None}
    assert result.stderr == ""


def test_json_lines_from_a_file_with_a_malformed_line(rules, tmp_path):
    lines = [
        json.dumps(request()),
        '{"principal": ',
        json.dumps(request(rid="orders/archive/7")),
        "",
        json.dumps({"principal": {"id": "pat"}, "action": "read"}),
        json.dumps(request(action="refund", kind="tool", rid="till")),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = run("eval", "--rules", str(rules), "--input", str(source))
    assert result.returncode == 1
    got = decisions(result.stdout)
    assert [d["effect"] for d in got] == ["allow", "deny", "deny", "deny", "escalate"]
    assert got[1]["errors"][0].startswith("line 2: not valid JSON")
    assert got[2]["reasons"][0]["rule"] == "shop.no_archive"
    assert got[3]["errors"] == ["resource: missing"]
    assert got[4]["obligations"][0]["role"] == "manager"
    assert result.stderr.splitlines() == [
        "input line 2: not valid JSON: Expecting value (column 15)",
        "input line 5: resource: missing",
    ]


def test_a_json_array_is_a_batch(rules):
    result = run("eval", "--rules", str(rules), stdin=json.dumps([request(), request(roles=[])]))
    assert [d["effect"] for d in decisions(result.stdout)] == ["allow", "deny"]


def test_explain_lists_only_what_matched_by_default(rules):
    result = run("eval", "--rules", str(rules), "--explain", stdin=json.dumps(request(rid="orders/archive/1")))
    assert result.returncode == 0
    assert decisions(result.stdout)[0]["effect"] == "deny"
    trace = result.stderr
    assert "rule shop.clerks_read [allow]" in trace and "MATCHED (allow)" in trace
    assert "rule shop.no_archive [deny]" in trace and "MATCHED (deny)" in trace
    assert "no match" not in trace and "shop.managers_invoke [allow]" not in trace
    assert "more did not match this request; --all lists them with why)" in trace
    assert "decision: deny" in trace


def test_explain_all_prints_the_full_trace(rules):
    result = run("eval", "--rules", str(rules), "--explain", "--all", stdin=json.dumps(request(rid="orders/archive/1")))
    assert result.returncode == 0
    assert decisions(result.stdout)[0]["effect"] == "deny"
    trace = result.stderr
    assert "rule shop.clerks_read [allow]" in trace and "MATCHED (allow)" in trace
    assert "rule shop.no_archive [deny]" in trace and "MATCHED (deny)" in trace
    assert "rule shop.managers_invoke [allow]" in trace and "no match: principal does not hold role manager" in trace
    assert "decision: deny" in trace


def test_ledger_makes_budgets_durable(rules, tmp_path):
    ledger = tmp_path / "ledger.duckdb"
    script = ("import sys; from policyengine import DuckDBLedger\n"
              "from datetime import datetime, timezone\n"
              "with DuckDBLedger(sys.argv[1]) as l: l.charge('model:small', 'tokens', 900, "
              "datetime(2026, 11, 24, 8, tzinfo=timezone.utc))\n")
    subprocess.run([sys.executable, "-c", script, str(ledger)], check=True)
    invoke = request(roles=["manager"], action="invoke", kind="model", rid="small", context={"tokens": 200})
    args = ("eval", "--rules", str(rules), "--now", "2026-11-24T12:00:00Z")
    with_ledger = run(*args, "--ledger", str(ledger), stdin=json.dumps(invoke))
    without = run(*args, stdin=json.dumps(invoke))
    assert decisions(with_ledger.stdout)[0]["reasons"][0]["rule"] == "shop.daily"
    assert decisions(with_ledger.stdout)[0]["effect"] == "deny"
    assert decisions(without.stdout)[0]["effect"] == "allow"


def test_bad_rule_files_render_findings_and_exit_1(tmp_path):
    (tmp_path / "bad.policy").write_text('package bad\nrule r\n    allow role ghost to read dataset "*"\n')
    result = run("eval", "--rules", str(tmp_path), stdin=json.dumps(request()))
    assert result.returncode == 1
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'bad.policy'}:3:") and "ghost" in first
    assert "Traceback" not in result.stderr


ERRORS = [
    # case, extra args, stdin, exit code, stderr fragment
    ("missing rules path", ["--rules", "does/not/exist"], "{}", 1, "does/not/exist:1:1: error[load]"),
    ("missing input file", ["--input", "nope.jsonl"], "", 1, "error: nope.jsonl: no such input file"),
    ("bad --now", ["--now", "yesterday"], "", 2, "not an ISO 8601 time"),
    ("--audit without --key", ["--audit", "a.duckdb"], "", 2, "--audit needs --key"),
    ("no rules at all", ["--rules"], "", 2, "requires an argument"),
    ("ledger that is not a database", ["--ledger", "NOTDB"], "", 1, "cannot open budget ledger"),
    ("missing ledger (a typo would read zero usage)", ["--ledger", "typo.duckdb"], "{}", 1,
     "error: typo.duckdb: no such budget ledger (pass --create to start an empty one)"),
    ("--create without --ledger", ["--create"], "{}", 2, "--create only applies with --ledger DB"),
]


@pytest.mark.parametrize("case,args,stdin,code,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_are_one_clear_line(rules, tmp_path, case, args, stdin, code, message):
    (tmp_path / "NOTDB").write_text("this is not duckdb\n" * 100)
    if "--rules" not in args:
        args = ["--rules", str(rules), *args]
    result = run("eval", *args, stdin=stdin, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_ledger_is_refused_and_created_only_when_asked(rules, tmp_path):
    args = ("eval", "--rules", str(rules), "--ledger", "new.duckdb")
    refused = run(*args, stdin=json.dumps(request()), cwd=tmp_path)
    assert refused.returncode == 1 and refused.stdout == "" and not (tmp_path / "new.duckdb").exists()
    created = run(*args, "--create", stdin=json.dumps(request()), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "new.duckdb").is_file()
    assert run(*args, stdin=json.dumps(request()), cwd=tmp_path).returncode == 0  # exists now: no --create needed


@pytest.mark.parametrize("command", ["eval", "check"])
def test_a_folder_without_policy_files_is_an_error_not_an_empty_policy(tmp_path, command):
    (tmp_path / "emptydir").mkdir()
    args = ("eval", "--rules", "emptydir") if command == "eval" else ("check", "emptydir")
    result = run(*args, stdin=json.dumps(request()), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip() == "" or command == "check"
    assert "emptydir:1:1: error[load]: no .policy files found here" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_rule_paths_may_follow_as_arguments(rules, tmp_path):
    (tmp_path / "extra.policy").write_text('package extra\nrule clerks_write\n    allow role clerk to write dataset "orders/*"\n')
    result = run("eval", "--rules", str(rules), str(tmp_path / "extra.policy"),
                 stdin=json.dumps(request(action="write")))
    assert result.returncode == 0, result.stderr
    assert decisions(result.stdout)[0]["reasons"][0]["rule"] == "extra.clerks_write"
    missing = run("eval", stdin="{}")
    assert missing.returncode == 2 and "give the rule files" in missing.stderr


EMPTY = [("nothing", ""), ("blank lines", "\n\n"), ("an empty array", "[]\n"), ("only a BOM", "\ufeff")]


@pytest.mark.parametrize("case,stdin", EMPTY, ids=[e[0] for e in EMPTY])
def test_empty_input_is_an_error(rules, case, stdin):
    result = run("eval", "--rules", str(rules), stdin=stdin)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == "error: stdin: no request in the input\n"


def test_empty_input_file_is_named(rules, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    result = run("eval", "--rules", str(rules), "--input", str(tmp_path / "empty.jsonl"))
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'empty.jsonl'}: no request in the input\n"


BOM = [
    ("one request", json.dumps(request()), ["allow"]),
    ("multi-line request", json.dumps(request(), indent=2), ["allow"]),
    ("JSON Lines", json.dumps(request()) + "\n" + json.dumps(request(roles=[])), ["allow", "deny"]),
    ("array", json.dumps([request(), request(roles=[])], indent=1), ["allow", "deny"]),
]


@pytest.mark.parametrize("case,text,effects", BOM, ids=[b[0] for b in BOM])
@pytest.mark.parametrize("via", ["file", "stdin"])
def test_input_starting_with_a_utf8_bom_is_accepted(rules, tmp_path, case, text, effects, via):
    data = b"\xef\xbb\xbf" + text.encode() + b"\n"
    if via == "file":
        (tmp_path / "in.json").write_bytes(data)
        result = run("eval", "--rules", str(rules), "--input", str(tmp_path / "in.json"))
    else:
        result = subprocess.run([*_exe(), "eval", "--rules", str(rules)], input=data, capture_output=True,
                                timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert [d["effect"] for d in decisions(result.stdout.decode() if via == "stdin" else result.stdout)] == effects


def test_errors_in_a_multi_line_array_name_the_element(rules):
    text = "[\n" + json.dumps(request()) + ",\n\n" + json.dumps({"principal": {"id": "pat"}, "action": "read"}) + "\n]\n"
    result = run("eval", "--rules", str(rules), stdin=text)
    assert result.returncode == 1
    got = decisions(result.stdout)
    assert [d["effect"] for d in got] == ["allow", "deny"]
    assert got[1]["errors"] == ["resource: missing"]
    assert result.stderr.splitlines() == ["input line 4 item 2: resource: missing"]
    one_line = run("eval", "--rules", str(rules), stdin=json.dumps([request(), 7]) + "\n")
    assert one_line.stderr.splitlines() == ["input line 1 item 2: request: must be a JSON object"]


def test_help_documents_the_options():
    result = run("eval", "--help")
    for option in ("--rules", "--input", "--explain", "--all", "--only-matching", "--ledger", "--now", "--audit", "--key", "--directory",
                   "--mask"):
        assert option in result.stdout


def test_json_lines_are_decided_as_they_arrive(rules):
    """eval can sit in a pipe: each line's decision comes out before the next line is sent."""
    process = subprocess.Popen([*_exe(), "eval", "--rules", str(rules)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for roles, effect in ((["clerk"], "allow"), ([], "deny")):
            process.stdin.write(json.dumps(request(roles=roles)) + "\n")
            process.stdin.flush()
            assert json.loads(process.stdout.readline())["effect"] == effect
    finally:
        process.stdin.close()
        process.wait(timeout=30)
    assert process.returncode == 0


def test_input_that_is_not_utf8_is_one_clear_line(rules, tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_bytes(b'{"action": "\xff\xfe"}\n')
    result = run("eval", "--rules", str(rules), "--input", str(source))
    assert result.returncode == 1
    assert "not UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_audit_hook_records_every_decision(rules, tmp_path, monkeypatch):
    """The contract --audit relies on: policyengine.audit.record_decisions(path, key) -> record(request, decision)."""
    import contextlib
    import types

    from click.testing import CliRunner

    import policyengine.audit.decisions  # noqa: F401 - eval's helpers stay reachable once the package is faked
    import policyengine.audit.masking  # noqa: F401
    from policyengine.audit import NO_MASKING, AuditError
    from policyengine.cli import main

    recorded: list[tuple[str, str, dict, str]] = []

    @contextlib.contextmanager
    def record_decisions(path, key, masking):
        assert masking == NO_MASKING  # no --mask, no mask file beside the database, no masks in the rules
        class Record:  # the recorder's contract: call it per decision, wait_durable(seq) before printing
            def __call__(self, request, decision):
                recorded.append((path, key, request, decision.effect))
                return len(recorded)

            def wait_durable(self, seq):
                assert seq <= len(recorded)

        yield Record()

    fake = types.SimpleNamespace(record_decisions=record_decisions, NO_MASKING=NO_MASKING, AuditError=AuditError,
                                 load_masking=None)
    monkeypatch.setitem(sys.modules, "policyengine.audit", fake)
    lines = "\n".join([json.dumps(request()), "{bad", json.dumps(request(roles=[]))])
    result = CliRunner().invoke(main, ["eval", "--rules", str(rules), "--audit", "a.duckdb", "--key", "k.pem"],
                                input=lines)
    assert [(p, k, e) for p, k, _, e in recorded] == [("a.duckdb", "k.pem", "allow")] + [("a.duckdb", "k.pem", "deny")] * 2
    assert recorded[0][2] == request() and recorded[1][2] is None  # the unreadable line has no request
    assert result.exit_code == 1  # one line was not JSON


DEEP = [
    # case, the deep line
    ("100,000 arrays", "[" * 100_000 + "]" * 100_000),
    ("3,000 arrays", "[" * 3_000 + "]" * 3_000),
    ("5,000 objects", '{"a":' * 5_000 + "1" + "}" * 5_000),
    ("129 levels", "[" * 129 + "]" * 129),
    ("deep inside a request", json.dumps(request(data={"x": "PLACEHOLDER"})).replace(
        '"PLACEHOLDER"', "[" * 2_000 + "]" * 2_000)),
]


@pytest.mark.parametrize("case,deep", DEEP, ids=[d[0] for d in DEEP])
def test_deeply_nested_line_is_denied_and_the_next_is_decided(rules, case, deep):
    good = json.dumps(request())
    result = run("eval", "--rules", str(rules), stdin=f"{good}\n{deep}\n{good}\n")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    got = decisions(result.stdout)
    assert [d["effect"] for d in got] == ["allow", "deny", "allow"]
    assert got[1]["errors"] == ["line 2: nested too deeply (more than 128 levels of arrays and objects)"]
    assert result.stderr.splitlines() == ["input line 2: nested too deeply (more than 128 levels of arrays and objects)"]


@pytest.mark.parametrize("wraps,effect,code", [(124, "allow", 0), (125, "deny", 1)])
def test_nesting_up_to_the_limit_is_decided_even_with_explain(rules, wraps, effect, code):
    """batch array, request, data, then wraps + 1 lists: 128 levels pass (traced by --explain), 129 do not."""
    inner: list = []
    for _ in range(wraps):
        inner = [inner]
    result = run("eval", "--rules", str(rules), "--explain", stdin=json.dumps([request(data={"x": inner})]) + "\n")
    assert result.returncode == code, result.stderr
    assert [d["effect"] for d in decisions(result.stdout)] == [effect]
    assert "Traceback" not in result.stderr



def _audit_rows(db: Path) -> list[tuple]:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT seq, actor, payload FROM audit_log ORDER BY seq").fetchall()


@pytest.fixture
def key(tmp_path) -> Path:
    from policyengine.audit import generate_key

    generate_key(tmp_path / "k.key")
    return tmp_path / "k.key"


def test_lone_surrogate_is_denied_recorded_escaped_and_the_log_verifies(rules, tmp_path, key):
    bad = json.dumps(request()).replace('"pat"', '"u\\ud800"')
    db = tmp_path / "a.duckdb"
    lines = "\n".join([json.dumps(request()), bad, json.dumps(request())]) + "\n"
    for args in ((), ("--audit", str(db), "--key", str(key))):
        result = run("eval", "--rules", str(rules), *args, stdin=lines)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        got = decisions(result.stdout)
        assert [d["effect"] for d in got] == ["allow", "deny", "allow"]
        assert got[1]["errors"] == ['line 2: principal.id: not valid Unicode text (lone surrogate in "u\\ud800")']
        assert result.stderr.splitlines() == [
            'input line 2: principal.id: not valid Unicode text (lone surrogate in "u\\ud800")']
    rows = _audit_rows(db)
    assert [r[1] for r in rows] == ["pat", "u\\ud800", "pat"]  # the text backslash-u-d-8-0-0
    payload = json.loads(rows[1][2])
    assert payload["request"]["principal"]["id"] == "u\\ud800"
    assert payload["decision"]["effect"] == "deny"
    verify = run("audit", "verify", "--db", str(db), "--pubkey", str(key) + ".pub.pem")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_record_decisions_escapes_lone_surrogates_from_library_callers(rules, tmp_path, key):
    from policyengine import load_policy
    from policyengine.audit import record_decisions

    policy = load_policy(rules)
    sneaky = request()
    sneaky["principal"]["id"] = "x\udc80"
    with record_decisions(tmp_path / "b.duckdb", key) as record:
        assert record(sneaky, policy.evaluate(sneaky)) == 1
        assert record(request(), policy.evaluate(request())) == 2
    assert [r[1] for r in _audit_rows(tmp_path / "b.duckdb")] == ["x\\udc80", "pat"]
    verify = run("audit", "verify", "--db", str(tmp_path / "b.duckdb"), "--pubkey", str(key) + ".pub.pem")
    assert verify.returncode == 0, verify.stdout + verify.stderr



DIRECTORY = "users:\n  mallory:\n    name: Mallory (a clerk)\n    roles: [clerk]\n  sue:\n    roles: [manager]\n"


def refund(approver: str, claimed: list[str]) -> dict:
    """A refund request with an approval bound to it (its request_hash) and given now."""
    from datetime import UTC, datetime

    from policyengine.approval_binding import request_hash

    body = request(action="refund", kind="tool", rid="till")
    return {**body, "approvals": [{"gate": "refunds", "approver": approver, "roles": claimed,
                                   "request_hash": request_hash(body), "ts": datetime.now(UTC).isoformat()}]}


CLAIMS = [
    # case, approver, claimed roles, effect without --directory, effect with it
    ("clerk claims manager", "mallory", ["manager"], "allow", "escalate"),
    ("manager claims nothing", "sue", [], "escalate", "allow"),
    ("unknown approver claims manager", "eve", ["manager"], "allow", "escalate"),
]


@pytest.mark.parametrize("case,approver,claimed,without,with_directory", CLAIMS, ids=[c[0] for c in CLAIMS])
def test_directory_decides_approvers_roles(rules, tmp_path, case, approver, claimed, without, with_directory):
    (tmp_path / "directory.yaml").write_text(DIRECTORY)
    line = json.dumps(refund(approver, claimed)) + "\n"
    trusted = run("eval", "--rules", str(rules), stdin=line)
    judged = run("eval", "--rules", str(rules), "--directory", str(tmp_path / "directory.yaml"), stdin=line)
    explained = run("eval", "--rules", str(rules), "--directory", str(tmp_path / "directory.yaml"), "--explain",
                    stdin=line)
    assert [d["effect"] for d in decisions(trusted.stdout)] == [without]
    assert [d["effect"] for d in decisions(judged.stdout)] == [with_directory]
    assert [d["effect"] for d in decisions(explained.stdout)] == [with_directory]
    assert trusted.stderr == ("warning: input line 1: approvals are judged by the roles the request claims for its "
                              "approvers; pass --directory FILE to judge them by a user directory\n")
    assert judged.stderr == ""


def test_claimed_roles_warning_is_printed_once(rules):
    lines = "\n".join([json.dumps(request()), *[json.dumps(refund("sue", ["manager"]))] * 3]) + "\n"
    result = run("eval", "--rules", str(rules), stdin=lines)
    assert result.returncode == 0
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["warning"]
    assert "input line 2:" in result.stderr


BAD_DIRECTORIES = [
    # case, file text (None: no file), message fragment
    ("missing", None, "cannot read user directory"),
    ("not YAML", "users: [\n", "user directory is not valid YAML"),
    ("no users", "people: {}\n", "needs a top-level 'users' mapping"),
    ("roles not a list", "users:\n  sue:\n    roles: manager\n", "'roles' must be a list"),
]


@pytest.mark.parametrize("case,text,message", BAD_DIRECTORIES, ids=[b[0] for b in BAD_DIRECTORIES])
def test_bad_directory_is_one_clear_line(rules, tmp_path, case, text, message):
    path = tmp_path / "dir.yaml"
    if text is not None:
        path.write_text(text)
    result = run("eval", "--rules", str(rules), "--directory", str(path), stdin=json.dumps(request()))
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}") and message in line



MASK = "drop:\n  - /request/principal/attrs/email\nhash:\n  - /request/principal/id\n  - /request/data/ssn\n"


def test_mask_keeps_masked_fields_out_of_the_audit_log(rules, tmp_path, key):
    (tmp_path / "mask.yaml").write_text(MASK)
    db = tmp_path / "a.duckdb"
    secret = request(data={"ssn": "078-05-1120", "purpose": "refund"})
    secret["principal"]["attrs"] = {"email": "pat@example.com", "dept": "ap"}
    lines = "\n".join([json.dumps(secret), json.dumps(request(roles=[]))]) + "\n"
    result = run("eval", "--rules", str(rules), "--audit", str(db), "--key", str(key),
                 "--mask", str(tmp_path / "mask.yaml"), stdin=lines)
    assert result.returncode == 0, result.stderr
    assert [d["effect"] for d in decisions(result.stdout)] == ["allow", "deny"]  # masking never changes decisions
    rows = _audit_rows(db)
    raw = db.read_bytes()
    for needle in ("078-05-1120", "pat@example.com"):
        assert all(needle not in r[2] for r in rows)
        assert needle.encode() not in raw
    first = json.loads(rows[0][2])
    assert "email" not in first["request"]["principal"]["attrs"]
    assert first["request"]["principal"]["attrs"]["dept"] == "ap"
    assert first["request"]["data"]["ssn"].startswith("sha256:")
    assert first["request"]["data"]["purpose"] == "refund"
    assert first["request"]["principal"]["id"].startswith("sha256:")
    assert first["_masked"] == {"drop": ["/request/principal/attrs/email"],
                                "hash": ["/request/data/ssn", "/request/principal/id"]}
    assert [r[1] for r in rows] == [first["request"]["principal"]["id"]] * 2  # the actor column is hashed too
    verify = run("audit", "verify", "--db", str(db), "--pubkey", str(key) + ".pub.pem")
    assert verify.returncode == 0, verify.stdout + verify.stderr


BAD_MASKS = [
    # case, file text (None: no file), message fragment
    ("missing", None, "cannot read masking config"),
    ("not YAML", "drop: [\n", "not valid YAML"),
    ("unknown key", "remove: [/a]\n", "expected a mapping with keys drop, hash, salt_env"),
    ("not a pointer", "drop: [request/data]\n", "must start with '/'"),
    ("empty", "", "the masking config is empty, so nothing would be masked"),
]


@pytest.mark.parametrize("case,text,message", BAD_MASKS, ids=[b[0] for b in BAD_MASKS])
def test_bad_mask_file_is_one_clear_line(rules, tmp_path, key, case, text, message):
    path = tmp_path / "mask.yaml"
    if text is not None:
        path.write_text(text)
    db = tmp_path / "a.duckdb"
    result = run("eval", "--rules", str(rules), "--audit", str(db), "--key", str(key), "--mask", str(path),
                 stdin=json.dumps(request()))
    assert result.returncode == 1 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {path}") and message in line
    assert not db.exists()  # nothing was written unmasked


def test_mask_without_audit_is_a_usage_error(rules, tmp_path):
    (tmp_path / "mask.yaml").write_text(MASK)
    result = run("eval", "--rules", str(rules), "--mask", str(tmp_path / "mask.yaml"), stdin=json.dumps(request()))
    assert result.returncode == 2 and "--mask only applies with --audit" in result.stderr


def test_malformed_ids_do_not_break_the_audit_columns(rules, tmp_path, key):
    db = tmp_path / "a.duckdb"
    odd = {"principal": {"id": 5}, "action": "read", "resource": {"kind": "dataset", "id": "orders/1"},
           "context": {"workflow": ["w"]}}
    result = run("eval", "--rules", str(rules), "--audit", str(db), "--key", str(key), stdin=json.dumps(odd))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [(r[1], json.loads(r[2])["request"]["principal"]["id"]) for r in _audit_rows(db)] == [(None, 5)]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "line-by-line"])
def test_a_line_that_repeats_a_key_is_denied_on_every_path(rules, tmp_path, batched):
    # Another parser may keep the first "roles" (clerk) where Python keeps the last: the line is malformed.
    good = json.dumps(request())
    twice = good.replace('"roles": ["clerk"]', '"roles": [], "roles": ["clerk"]')
    args = ["eval", "--rules", str(rules)] if batched else ["eval", "--rules", str(rules), "--explain"]
    result = run(*args, stdin=f"{good}\n{twice}\n{good}\n")
    assert result.returncode == 1, result.stderr
    got = decisions(result.stdout)
    assert [d["effect"] for d in got] == ["allow", "deny", "allow"]
    assert got[1]["errors"] == ['line 2: duplicate key "roles" in an object; send each key once '
                                "(parsers disagree on which one counts)"]
