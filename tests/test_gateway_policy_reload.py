"""``policyengine gateway`` reloading its rules: a refused reload leaves a signed ``policy_refused`` record, as
``serve`` does, and the old policy keeps answering; each activation leaves a ``policy_activated`` record.

One gateway subprocess in front of the recording upstream: its rules file is replaced by one that fails to
check (and would have let every caller invoke every model), then SIGHUP reads it again, then a good file
replaces it. The records are read from the gateway's audit log once it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import openai
import pytest
import yaml
from gateway_process import Process, start_gateway, start_upstream
from server_process import verify

from policyengine.audit import generate_key

HEAD = """package gw.reload
owner "t@example.com"

role caller

model open
    provider "openai-compatible" region "eu-west-1" hosting external
    cost 1 USD per 1M tokens latency 50 ms

model secret
    provider "openai-compatible" region "eu-west-1" hosting external
    cost 1 USD per 1M tokens latency 50 ms
"""
GOOD = HEAD + '\nrule callers_invoke_open\n    allow role caller to invoke model "open"\n'
# would let every caller invoke every model, but names a role nobody declared: it fails to check
BROKEN = HEAD + '\nrule everyone_invokes\n    allow role calller to invoke model "*"\n'
FIXED = GOOD + '\nrule callers_invoke_secret\n    allow role caller to invoke model "secret"\n'
KEY = "sk-caller"


def _put(target: Path, text: str) -> None:
    """Replace ``target`` atomically, as a deployment would."""
    partial = target.with_name(target.name + ".new")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, target)


def _chat(gateway: Process, model: str) -> Any:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as error:
        return error


@dataclass
class Session:
    cwd: Path
    answers: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)  # the stderr line of each reload
    exit_code: int | None = None
    records: list[tuple[int, str, str | None, dict[str, Any]]] = field(default_factory=list)  # seq, event, hash

    def events(self, event: str) -> list[dict[str, Any]]:
        return [p for _, e, _, p in self.records if e == event]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    cwd = tmp_path_factory.mktemp("gateway-reload")
    rules = cwd / "gw.policy"
    rules.write_text(GOOD, encoding="utf-8")
    generate_key(cwd / "gw.key")
    keys = [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "name": KEY,
             "principal": {"id": "bob", "roles": ["caller"]}}]
    (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
    s = Session(cwd)
    with start_upstream(cwd) as upstream:
        models = {name: {"base_url": upstream.url + "/v1", "model": f"{name}-up"} for name in ("open", "secret")}
        (cwd / "providers.yaml").write_text(yaml.safe_dump({"defaults": {"timeout_s": 10, "retries": 0},
                                                            "models": models}), encoding="utf-8")
        (cwd / "gateway.yaml").write_text(yaml.safe_dump({"rules": ["gw.policy"], "keys": "keys.yaml",
                                                          "providers": "providers.yaml", "db": "gw.duckdb",
                                                          "key": "gw.key"}), encoding="utf-8")
        with start_gateway(cwd, cwd / "gateway.yaml") as gateway:
            s.answers["open"] = _chat(gateway, "open")
            s.answers["secret"] = _chat(gateway, "secret")
            _put(rules, BROKEN)
            s.lines["change"] = gateway.wait_for_line(r"policy reload \(change\) refused")
            s.answers["open after refusal"] = _chat(gateway, "open")
            s.answers["secret after refusal"] = _chat(gateway, "secret")
            gateway.proc.send_signal(signal.SIGHUP)  # read again at once: refused again, for another reason
            s.lines["sighup"] = gateway.wait_for_line(r"policy reload \(sighup\) refused")
            _put(rules, FIXED)
            s.lines["fixed"] = gateway.wait_for_line(r"policy \w+ activated \(change")
            s.answers["secret after fix"] = _chat(gateway, "secret")
            s.exit_code = gateway.stop()
    con = duckdb.connect(str(cwd / "gw.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT seq, event, policy_hash, payload FROM audit_log ORDER BY seq").fetchall()
    finally:
        con.close()
    s.records = [(seq, event, policy_hash, json.loads(payload)) for seq, event, policy_hash, payload in rows]
    yield s


def test_a_rules_file_that_fails_to_check_is_refused_and_the_old_policy_keeps_answering(session: Session) -> None:
    assert session.answers["open"].model == "open"
    denied = session.answers["secret"]
    assert isinstance(denied, openai.PermissionDeniedError) and denied.body["code"] == "policy_denied"
    line = session.lines["change"]
    assert "unknown role 'calller'" in line and "still serving" in line and "not recorded" not in line
    assert session.answers["open after refusal"].model == "open"
    still = session.answers["secret after refusal"]  # the broken file would have allowed it
    assert isinstance(still, openai.PermissionDeniedError) and still.body["rule"] == denied.body["rule"]
    assert session.exit_code == 0


def test_each_refused_reload_is_recorded_as_policy_refused_naming_the_policy_that_kept_serving(
        session: Session) -> None:
    (started, fixed) = session.events("policy_activated")
    refused = session.events("policy_refused")
    assert [r["reason"] for r in refused] == ["change", "sighup"]
    for record in refused:
        assert (record["source"], record["bundle"], record["bundle_sha256"], record["signer"]) == \
            ("rules", None, None, None)
        assert "unknown role 'calller'" in record["refusal"] and "\n" not in record["refusal"]
        assert record["active"] == {"policy_hash": started["policy_hash"], "bundle": None, "bundle_sha256": None,
                                    "bundle_created": None, "signer": None}
    hashes = [h for _, e, h, _ in session.records if e == "policy_refused"]
    assert hashes == [started["policy_hash"]] * 2  # the column names the active policy, as serve's
    assert session.lines["change"].split("still serving ")[1].startswith(started["policy_hash"][:12])


def test_the_refusals_come_between_the_calls_they_were_made_among(session: Session) -> None:
    order = [(e, p.get("reason") or p.get("requested_model")) for _, e, _, p in session.records
             if e in ("policy_activated", "policy_refused", "model_call")]
    assert order == [("policy_activated", "startup"), ("model_call", "open"), ("model_call", "secret"),
                     ("policy_refused", "change"), ("model_call", "open"), ("model_call", "secret"),
                     ("policy_refused", "sighup"), ("policy_activated", "change"), ("model_call", "secret")]
    calls = [(p["requested_model"], h) for _, e, h, p in session.records if e == "model_call"]
    started, fixed = session.events("policy_activated")
    assert calls == [("open", started["policy_hash"]), ("secret", started["policy_hash"]),
                     ("open", started["policy_hash"]), ("secret", started["policy_hash"]),
                     ("secret", fixed["policy_hash"])]


def test_each_activation_is_recorded_and_the_fixed_file_serves(session: Session) -> None:
    started, fixed = session.events("policy_activated")
    assert (started["reason"], fixed["reason"]) == ("startup", "change")
    assert started["source"] == fixed["source"] == "rules" and started["files"] == fixed["files"] \
        == [str(session.cwd / "gw.policy")]  # gateway.yaml's paths are read relative to it
    assert fixed["policy_hash"] != started["policy_hash"]
    assert session.lines["fixed"].startswith(f"policy {fixed['policy_hash'][:12]} activated (change")
    assert session.answers["secret after fix"].model == "secret"


def test_the_log_with_the_refusals_verifies(session: Session) -> None:
    out = verify(session.cwd, session.cwd / "gw.duckdb", session.cwd / "gw.key")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_refusal_the_gateways_log_cannot_take_still_refuses_keeps_the_old_policy_and_says_so(
        tmp_path: Path) -> None:
    """The gateway's own holder (as ``run_gateway`` builds it) with a log that can take nothing any more."""
    from policyengine.audit import AuditLog
    from policyengine.gateway.limits import MemoryReservingLedger
    from policyengine.gateway.run import _policy_holder
    from policyengine.server.metrics import Metrics

    rules = tmp_path / "gw.policy"
    rules.write_text(GOOD, encoding="utf-8")
    log = AuditLog(tmp_path / "gw.duckdb", generate_key(tmp_path / "gw.key"))
    holder = _policy_holder([str(rules)], log, Metrics(lambda: 0), MemoryReservingLedger(), frozenset())
    try:
        assert holder.reload("startup", force=True) == "activated"
        first = holder.active
        log.close()  # from here on the log takes nothing
        _put(rules, BROKEN)
        outcome = holder.reload("sighup", force=True)
        line = outcome.splitlines()[0]
        assert line.startswith("refused: ") and "unknown role 'calller'" in line
        assert line.endswith(f"(not recorded in the audit log: AuditError: audit log {tmp_path / 'gw.duckdb'} "
                             "is closed)")
        assert holder.active is first  # refusing is still right: the old policy keeps answering
    finally:
        holder.close()
        log.close()
    con = duckdb.connect(str(tmp_path / "gw.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT event FROM audit_log ORDER BY seq").fetchall() == [("policy_activated",)]
    finally:
        con.close()
