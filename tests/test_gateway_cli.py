"""``policyengine gateway``: the shipped example runs out of the box; bad settings are one line and exit 1."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml
from gateway_process import start_gateway
from server_process import audit_records, verify

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gateway" / "gateway.yaml"


def test_shipped_example_serves_the_two_documented_keys(tmp_path: Path) -> None:
    with start_gateway(tmp_path, EXAMPLE) as gateway:
        allowed = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-example-allowed", max_retries=0)
        denied = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-example-denied", max_retries=0)
        assert "classifier_small" in [m.id for m in allowed.models.list()]
        assert list(denied.models.list()) == []
        answer = allowed.chat.completions.create(model="classifier_small",
                                                 messages=[{"role": "user", "content": "classify: duplicate invoice"}])
        assert answer.model == "classifier_small" and answer.choices[0].message.content
        streamed = allowed.chat.completions.create(model="classifier_small", stream=True,
                                                   messages=[{"role": "user", "content": "classify"}])
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).startswith("Simulated")
        rerouted = allowed.chat.completions.create(model="frontier_llm", messages=[{"role": "user", "content": "x"}])
        assert rerouted.model == "classifier_small"  # restricted data stays on internal hosting
        with pytest.raises(openai.PermissionDeniedError) as caught:
            denied.chat.completions.create(model="classifier_small", messages=[{"role": "user", "content": "x"}])
        assert caught.value.body["rule"] == "<default-deny>"
    assert (tmp_path / "gateway.key").exists()  # created on first start
    calls = [p for e, p in audit_records(tmp_path / "gateway.duckdb").values() if e == "model_call"]
    assert len(calls) == 4 and [c["status"] for c in calls] == ["ok", "ok", "ok", "denied"]
    assert all(c["prompt_sha256"] and "prompt_masked" not in c for c in calls)  # audit_prompts: hash
    assert "classify: duplicate invoice" not in str(calls)
    result = verify(tmp_path, tmp_path / "gateway.duckdb", tmp_path / "gateway.key")
    assert result.returncode == 0, result.stdout + result.stderr


def _write(tmp_path: Path, name: str, doc: object) -> str:
    (tmp_path / name).write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return name


GOOD_KEY = {"sha256": hashlib.sha256(b"k").hexdigest(), "principal": {"id": "bob"}}
RULES = str(EXAMPLE.parents[2] / "rules")


@pytest.mark.parametrize(("files", "args", "message"), [
    ({"keys.yaml": {"keys": [{"sha256": "abc", "principal": {"id": "bob"}}]}}, ["--keys", "keys.yaml"],
     "keys.yaml: keys[0].sha256: must be the 64 lowercase hex digits"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "key": "sk-clear"}]}}, ["--keys", "keys.yaml"],
     "keys.yaml: keys[0]: unknown field 'key' (keys are stored hashed: sha256)"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}}, ["--keys", "missing.yaml"], "missing.yaml: cannot read keys file"),
    ({"keys.yaml": "keys: [\n"}, ["--keys", "keys.yaml"], "keys.yaml:2: keys file is not valid YAML"),
    ({"keys.yaml": f"keys:\n  - sha256: {GOOD_KEY['sha256']}\n    principal: {{id: bob}}\n"
                   "    principal: {id: admin, roles: [admin]}\n"}, ["--keys", "keys.yaml"],
     "keys.yaml:4: keys file gives the key 'principal' twice in one mapping; refused"),
    ({"keys.yaml": f"keys:\n  - sha256: {GOOD_KEY['sha256']}\n    principal: {{id: bob}}\n"
                   "teams:\n  ops: {limits: {requests_per_minute: 1}}\n  ops: {limits: {requests_per_minute: 9}}\n"},
     ["--keys", "keys.yaml"], "keys.yaml:6: keys file gives the key 'ops' twice in one mapping; refused"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "p.yaml": {"models": {"gpt-x": {"base_url": "http://127.0.0.1:9/v1"}}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"], "p.yaml: model 'gpt-x' is not declared in the rules"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "p.yaml": {"models": {"classifier_small": {"base_url": "ftp://x"}}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"], "models.classifier_small.base_url: must be an http(s) URL"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"rules": "x", "keys": "keys.yaml", "prot": 1}},
     ["--config", "gw.yaml"], "gw.yaml: unknown field 'prot'"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"keys": "keys.yaml", "guards": {"mask": ["ssn"]}}},
     ["--config", "gw.yaml"], "guards.mask: must be a list of entity types"),
    # a guard switch or mask left empty (YAML null) or spelt as a string was read as off: the guard did not run
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": f"rules: {RULES}\nkeys: keys.yaml\nguards:\n  pii:\n"},
     ["--config", "gw.yaml"], "guards.pii: must be true or false"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "guards": {"secrets": "off"}}},
     ["--config", "gw.yaml"], "guards.secrets: must be true or false"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "guards": {"prompt_injection": 0}}},
     ["--config", "gw.yaml"], "guards.prompt_injection: must be true or false"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": f"rules: {RULES}\nkeys: keys.yaml\nguards:\n  mask:\n"},
     ["--config", "gw.yaml"], "guards.mask: must be a list of entity types"),
    # a masked type whose detector is off was never found, so it went upstream in clear
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "guards": {"pii": False, "mask": ["email"]}}},
     ["--config", "gw.yaml"], "guards.mask: email is found by the pii guard, which is off; nothing would be masked"),
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "guards": {"secrets": False, "mask": ["openai_key"]}}},
     ["--config", "gw.yaml"], "guards.mask: openai_key is found by the secrets guard, which is off"),
    # audit_prompts: masked redacts what the guards find: with pii off, the prompt's emails were recorded in clear
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "audit_prompts": "masked", "guards": {"pii": False}}},
     ["--config", "gw.yaml"], "audit_prompts: masked needs guards pii and secrets on"),
    # a guard turned off under rules that read it: the shipped no_prompt_injection read a score of 0 and let
    # "Ignore all previous instructions" through
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "gw.yaml": {"rules": [RULES, str(EXAMPLE.parent / "guards.policy")], "keys": "keys.yaml",
                  "guards": {"prompt_injection": False}}},
     ["--config", "gw.yaml"], "guards.prompt_injection: off, but "),
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "gw.yaml": {"rules": [RULES, str(EXAMPLE.parent / "guards.policy")], "keys": "keys.yaml",
                  "guards": {"pii": False}}},
     ["--config", "gw.yaml"], "guards.pii: off, but "),
    # keys-file fields that were dropped or read as "no limit", each loosening the file
    ({"keys.yaml": {"keys": [GOOD_KEY], "team": {"ops": {"limits": {"requests_per_minute": 1}}}}},
     ["--keys", "keys.yaml"], "keys.yaml: unknown field 'team' (known: keys, teams)"),
    ({"keys.yaml": {"keys": [GOOD_KEY], "teams": {"ops": {"limit": {"requests_per_minute": 1}}}}},
     ["--keys", "keys.yaml"], "keys.yaml: teams.ops: must be a mapping with one field, limits"),
    ({"keys.yaml": {"keys": [GOOD_KEY], "teams": {"ops": {"requests_per_minute": 1}}}},
     ["--keys", "keys.yaml"], "keys.yaml: teams.ops: must be a mapping with one field, limits"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "limits": {"requests_per_minute": None}}]}},
     ["--keys", "keys.yaml"], "keys[0].limits.requests_per_minute: must be a whole number >= 1"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "limits": None}]}},
     ["--keys", "keys.yaml"], "keys[0].limits: must be a mapping"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "principal": {"id": "bot", "type": "Agent", "roles": ["senior_analyst"]}}]}},
     ["--keys", "keys.yaml"], "keys[0].principal.type: must be user or agent"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "principal": {"id": "bob", "role": ["analyst"]}}]}},
     ["--keys", "keys.yaml"], "keys[0].principal: unknown field 'role'"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "principal": {"id": "bob", "roles": "analyst"}}]}},
     ["--keys", "keys.yaml"], "keys[0].principal.roles: must be a list of role names"),
    # providers: a misspelt `models:` served every model by the simulator; an API key went over plain http
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "p.yaml": {"model": {"classifier_small": {"base_url": "https://x/v1"}}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"], "p.yaml: unknown field 'model' (known: defaults, models)"),
    ({"keys.yaml": {"keys": [GOOD_KEY]},
      "p.yaml": {"models": {"classifier_small": {"base_url": "http://llm.example.com/v1", "api_key_env": "K"}}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"],
     "models.classifier_small.base_url: plain http to llm.example.com would carry the API key"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "p.yaml": {"defaults": {"api_key_env": "K"},
                                                    "models": {"classifier_small": {"base_url": "http://10.0.0.5/v1"}}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"],
     "models.classifier_small.base_url: plain http to 10.0.0.5 would carry the API key"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "p.yaml": {"models": {"classifier_small": "https://x/v1"}}},
     ["--keys", "keys.yaml", "--providers", "p.yaml"], "models.classifier_small: must be a mapping"),
    # an empty ledger was the in-memory one (budgets back to zero at each start), also over the config's ledger
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "ledger": ""}},
     ["--config", "gw.yaml"], "error: ledger: empty; leave it out for the default"),
    ({"keys.yaml": {"keys": [GOOD_KEY]}, "gw.yaml": {"rules": RULES, "keys": "keys.yaml", "ledger": "b.duckdb"}},
     ["--config", "gw.yaml", "--ledger", ""], "error: ledger: empty; leave it out for the default"),
    # a team's limits that bind no key: the key's team was spelt otherwise, and its calls had no team limit
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "team": "acounts-payable"}],
                    "teams": {"accounts-payable": {"limits": {"requests_per_minute": 1}}}}},
     ["--keys", "keys.yaml"], "keys.yaml: teams.accounts-payable: no key has this team, so its limits bind no call"),
    # a request default no rule names: data.clasification left 'data has classification' false, so the shipped
    # no_restricted_data_offsite let the key's restricted data go to frontier_llm
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "name": "ap", "data": {"clasification": "restricted", "origin": "DE"}}]}},
     ["--keys", "keys.yaml"], "keys.yaml: key ap: data.clasification: no rule or schema of the rules names it"),
    ({"keys.yaml": {"keys": [{**GOOD_KEY, "name": "ap", "context": {"ammount": 5}}]}},
     ["--keys", "keys.yaml"], "keys.yaml: key ap: context.ammount: no rule or schema of the rules names it"),
])
def test_bad_settings_are_one_line_and_exit_1(tmp_path: Path, files: dict[str, object], args: list[str],
                                              message: str) -> None:
    for name, doc in files.items():
        _write(tmp_path, name, doc)
    rules = [] if "--config" in args else ["--rules", RULES]
    result = subprocess.run([sys.executable, "-m", "policyengine", "gateway", *rules, *args, "--port", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:9/v1", "http://localhost:9/v1", "http://[::1]:9/v1",
                                      "https://llm.example.com/v1"])
def test_an_api_key_may_go_over_https_or_to_loopback(tmp_path: Path, base_url: str) -> None:
    from policyengine.gateway.config import load_providers

    _write(tmp_path, "p.yaml", {"models": {"m": {"base_url": base_url, "api_key_env": "K"}}})
    assert load_providers(tmp_path / "p.yaml")["m"].base_url == base_url.rstrip("/")


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_listening_off_loopback_warns_that_keys_travel_in_clear(tmp_path: Path, host: str, warned: bool) -> None:
    with start_gateway(tmp_path, EXAMPLE, "--host", host) as gateway:
        said = [line for line in gateway.lines if line.startswith("warning: ")]
    assert said == ([f"warning: listening on {host} over plain http: the virtual keys callers send cross the "
                     "network in clear; put a TLS proxy in front"] if warned else [])


def test_missing_keys_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "policyengine", "gateway", "--rules", RULES], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "give --keys" in result.stderr
