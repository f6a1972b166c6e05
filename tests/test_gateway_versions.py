"""``policyengine gateway --registry``: each call is decided with the model version its alias names and its
``model_call`` record carries the version of the model actually called, end to end: gateway subprocesses driven
by the official ``openai`` SDK in front of the recording upstream, aliases moved by ``policyengine models promote``
and ``rollback`` on a registry database, the records read from the gateway's own audit log once it stopped.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from gateway_process import Process, start_gateway, start_upstream
from server_process import audit_records, verify

from policyengine.audit import generate_key

_MODEL = '    provider "openai-compatible" region "eu-west-1" hosting external\n' \
         '    cost 1 USD per 1M tokens latency 50 ms\n'
POLICY = f"""package gw.versions

role caller
role ml_engineer

model vm
{_MODEL}    version "1.0", "1.1", "2.0"

model flaky
{_MODEL}    version "f1", "f2"

model steady
{_MODEL}    version "s1", "s2"

model plain
{_MODEL}
rule engineers_change_versions
    allow role ml_engineer to promote, rollback model "*"

rule callers_invoke
    allow role caller to invoke model "*"

rule no_vm_2
    deny any to invoke model "vm"
    when resource.version == "2.0"
"""

DIRECTORY = "users:\n  eve: {name: Eve, roles: [ml_engineer]}\n"
KEY = "sk-caller"


def pe(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def move(cwd: Path, how: str, name: str, *args: str) -> None:
    out = pe(cwd, "models", how, name, *args, "--as", "eve", "--reason", "test", "--rules", "gw.policy",
             "--db", "registry.duckdb", "--key", "policyengine.key")
    assert out.returncode == 0, out.stderr


@dataclass
class Session:
    """What the gateways answered and recorded (read after they stopped)."""

    cwd: Path
    answers: dict[str, Any] = field(default_factory=dict)
    records: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)

    def calls(self, db: str) -> list[dict[str, Any]]:
        return [p for e, p in self.records[db] if e == "model_call"]


def _chat(gateway: Process, model: str, *, stream: bool = False) -> Any:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
    try:
        answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                stream=stream)
        return [chunk.model for chunk in answer] if stream else answer
    except openai.APIStatusError as error:
        return error


def _reloaded(gateway: Process, what: str) -> None:
    """SIGHUP (the file watch may read the change first: either says it, once)."""
    gateway.proc.send_signal(signal.SIGHUP)
    gateway.wait_for_line(rf"model versions \((sighup|change); registry\.duckdb\) changed: {what}")


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    cwd = tmp_path_factory.mktemp("gateway-versions")
    (cwd / "gw.policy").write_text(POLICY, encoding="utf-8")
    (cwd / "policyengine.directory.yaml").write_text(DIRECTORY, encoding="utf-8")
    generate_key(cwd / "policyengine.key")
    keys = [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "name": KEY,
             "principal": {"id": "bob", "roles": ["caller"]}}]
    (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
    move(cwd, "promote", "vm", "--to", "1.1")
    move(cwd, "promote", "steady", "--to", "s2")
    s = Session(cwd)
    with start_upstream(cwd) as upstream:
        base = upstream.url + "/v1"
        models = {name: {"base_url": base, "model": f"{name}-up"} for name in ("vm", "steady", "plain")}
        models["flaky"] = {"base_url": base, "model": "fail500", "fallbacks": ["steady"]}
        (cwd / "providers.yaml").write_text(yaml.safe_dump({"defaults": {"timeout_s": 10, "retries": 0},
                                                            "models": models}), encoding="utf-8")
        common = {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "key": "gw.key"}
        (cwd / "gateway.yaml").write_text(yaml.safe_dump({**common, "db": "gw.duckdb",
                                                          "registry": "registry.duckdb"}), encoding="utf-8")
        (cwd / "plain.yaml").write_text(yaml.safe_dump({**common, "db": "plain.duckdb"}), encoding="utf-8")
        with start_gateway(cwd, cwd / "gateway.yaml") as gateway:
            for model in ("vm", "flaky", "plain"):
                s.answers[model] = _chat(gateway, model)
            move(cwd, "promote", "vm", "--to", "2.0")
            _reloaded(gateway, "promote vm production 1.1 -> 2.0 by eve")
            s.answers["vm denied"] = _chat(gateway, "vm")
            move(cwd, "rollback", "vm")
            _reloaded(gateway, "rollback vm production 2.0 -> 1.1 by eve")
            s.answers["vm again"] = _chat(gateway, "vm")
            s.answers["vm streamed"] = _chat(gateway, "vm", stream=True)
        with start_gateway(cwd, cwd / "plain.yaml") as gateway:  # no registry
            for model in ("vm", "flaky"):
                s.answers["unversioned " + model] = _chat(gateway, model)
    for db in ("gw.duckdb", "plain.duckdb"):
        s.records[db] = list(audit_records(cwd / db).values())
    yield s


def test_a_call_records_the_version_the_promoted_alias_names(session: Session) -> None:
    assert session.answers["vm"].model == "vm"
    first = session.calls("gw.duckdb")[0]
    assert (first["model"], first["model_version"]) == ("vm", "1.1")
    admitted = {"model": "vm", "effect": "allow", "rules": ["gw.versions.callers_invoke"], "model_version": "1.1"}
    assert first["decisions"] == [admitted, {**admitted, "stage": "response"}]


def test_a_fallback_records_the_version_of_the_model_actually_called(session: Session) -> None:
    assert session.answers["flaky"].model == "steady"
    call = session.calls("gw.duckdb")[1]
    assert (call["requested_model"], call["model"], call["model_version"]) == ("flaky", "steady", "s2")
    assert [(d["model"], d["model_version"]) for d in call["decisions"]] == \
        [("flaky", "f1"), ("steady", "s2"), ("steady", "s2")]  # admitted both, called steady, its response


def test_an_unversioned_model_has_no_model_version(session: Session) -> None:
    assert session.answers["plain"].model == "plain"
    call = session.calls("gw.duckdb")[2]
    assert call["model"] == "plain" and "model_version" not in call
    assert "model_version" not in call["decisions"][0]


def test_a_rule_about_the_version_decides_after_a_reload_and_a_rollback_lifts_it(session: Session) -> None:
    denied = session.answers["vm denied"]
    assert isinstance(denied, openai.PermissionDeniedError)
    assert (denied.body["code"], denied.body["rule"]) == ("policy_denied", "gw.versions.no_vm_2")
    call = session.calls("gw.duckdb")[3]
    assert call["status"] == "denied" and call["model"] is None and "model_version" not in call  # nothing called
    assert call["decisions"][0]["model_version"] == "2.0"
    assert session.answers["vm again"].model == "vm"
    assert session.calls("gw.duckdb")[4]["model_version"] == "1.1"


def test_a_streamed_call_records_the_version_too(session: Session) -> None:
    assert set(session.answers["vm streamed"]) == {"vm"}
    call = session.calls("gw.duckdb")[5]
    assert (call["stream"], call["model"], call["model_version"]) == (True, "vm", "1.1")


def test_each_reload_is_recorded_before_the_calls_it_decides(session: Session) -> None:
    events = [(e, p.get("model_version") or [c["version"] for c in p.get("changes", [])])
              for e, p in session.records["gw.duckdb"] if e in ("model_call", "model_versions_reloaded")]
    assert events == [("model_call", "1.1"), ("model_call", "s2"), ("model_call", []),
                      ("model_versions_reloaded", ["2.0"]), ("model_call", []),
                      ("model_versions_reloaded", ["1.1"]), ("model_call", "1.1"), ("model_call", "1.1")]
    reloads = [p for e, p in session.records["gw.duckdb"] if e == "model_versions_reloaded"]
    assert {p["registry"] for p in reloads} == {"registry.duckdb"}
    out = verify(session.cwd, session.cwd / "gw.duckdb", session.cwd / "gw.key")
    assert out.returncode == 0, out.stdout + out.stderr


def test_without_a_registry_no_call_carries_a_version(session: Session) -> None:
    denied = session.answers["unversioned vm"]  # as before: no version resolved, so a rule about it fails closed
    assert isinstance(denied, openai.PermissionDeniedError)
    assert "resource.version is missing" in denied.body["message"]
    assert session.answers["unversioned flaky"].model == "steady"
    calls = session.calls("plain.duckdb")
    assert len(calls) == 2
    for call in calls:
        assert "model_version" not in call
        assert all("model_version" not in d for d in call["decisions"])
    assert not [e for e, _ in session.records["plain.duckdb"] if e == "model_versions_reloaded"]


@pytest.mark.parametrize("registry, said", [
    ("notes.txt", "error: --registry: notes.txt"),
])
def test_a_registry_that_is_not_an_audit_database_stops_the_gateway_with_one_line(session: Session, registry: str,
                                                                                  said: str) -> None:
    (session.cwd / registry).write_text("not a database\n", encoding="utf-8")
    out = pe(session.cwd, "gateway", "--config", "plain.yaml", "--port", "0", "--registry", registry)
    assert out.returncode == 1 and out.stderr.startswith(said), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
