"""The toxicity guard (the optional offline model of alt-profanity-check) and response quality as policy inputs.

End to end: a gateway subprocess with ``guards: {toxicity: true}`` driven by the official ``openai`` SDK in
front of the recording upstream process. In process: an absent guard fails closed, a missing package stops
the start, and the quality heuristic's cases.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from gateway_process import Process, received, start_gateway, start_upstream

from policyengine.engine import load_policy
from policyengine.gateway import guards as g
from policyengine.gateway import toxicity
from policyengine.gateway.config import GatewayConfigError, _guards
from policyengine.gateway.quality import response_quality

POLICY = """\
package gw.tox

role caller

model plain
    provider "openai-compatible" region "eu-west-1" hosting external
model refuser
    provider "openai-compatible" region "eu-west-1" hosting external
model rude
    provider "openai-compatible" region "eu-west-1" hosting external
model rudelong
    provider "openai-compatible" region "eu-west-1" hosting external
model mailer
    provider "openai-compatible" region "eu-west-1" hosting external

rule callers_invoke
    allow role caller to invoke model "*"

rule no_toxic_prompts
    deny any to invoke model "*"
    when context.guard.toxicity >= 0.8
    because "toxic prompt"

rule no_toxic_answers
    deny any to invoke model "*"
    when context has guard.response and context.guard.response.toxicity >= 0.8
    because "toxic answer"

rule no_refusals_passed_on
    deny any to invoke model "*"
    when context has guard.response and context.guard.response.quality < 0.5
    because "low-quality answer"
"""
KEY = "sk-tox"


@dataclass
class Env:
    gateway: Process
    record: Path

    def chat(self, model: str, content: str, **kwargs: Any) -> Any:
        client = openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=30)
        return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], **kwargs)

    def count(self) -> int:
        return len(received(self.record))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    cwd = tmp_path_factory.mktemp("gateway-tox")
    record = cwd / "upstream.jsonl"
    with start_upstream(cwd, record) as upstream:
        (cwd / "gw.policy").write_text(POLICY, encoding="utf-8")
        keys = [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "principal": {"id": "t", "roles": ["caller"]}}]
        (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
        base = upstream.url + "/v1"
        providers = {"models": {m: {"base_url": base, "model": m} for m in ("plain", "refuser", "rude", "rudelong", "mailer")}}
        (cwd / "providers.yaml").write_text(yaml.safe_dump(providers), encoding="utf-8")
        config = {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "db": "gw.duckdb",
                  "key": "gw.key", "guards": {"toxicity": True, "timeout_s": 30}}
        (cwd / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        with start_gateway(cwd, cwd / "gateway.yaml") as gateway:
            yield Env(gateway, record)


def test_a_civil_prompt_and_answer_pass(env: Env) -> None:
    answer = env.chat("plain", "Please classify this invoice exception")
    assert answer.choices[0].message.content == "Hello from the upstream."


def test_a_toxic_prompt_is_denied_by_the_rule_before_the_upstream(env: Env) -> None:
    before = env.count()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        env.chat("plain", "you are a stupid idiot and I hate you")
    assert caught.value.body["rule"] == "gw.tox.no_toxic_prompts"
    assert env.count() == before


def test_a_toxic_answer_is_withheld(env: Env) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        env.chat("rude", "say something")
    assert caught.value.body["code"] == "response_blocked"
    assert caught.value.body["rule"] == "gw.tox.no_toxic_answers"


def test_a_refusal_is_withheld_by_its_quality(env: Env) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        env.chat("refuser", "help me")
    assert caught.value.body["rule"] == "gw.tox.no_refusals_passed_on"


def test_a_streamed_refusal_ends_with_an_error_event(env: Env) -> None:
    with pytest.raises(openai.APIError) as caught:
        for _ in env.chat("refuser", "help me", stream=True):
            pass
    assert "low-quality answer" in str(caught.value)


@pytest.mark.parametrize("model", ["rude", "rudelong"])
def test_a_streamed_toxic_answer_ends_with_an_error_event_and_releases_none_of_it(env: Env, model: str) -> None:
    """Screened before release: an insult followed by enough civil text to release it is refused on the way."""
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in env.chat(model, "say something", stream=True):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "toxic answer" in str(caught.value)
    assert "stupid" not in "".join(seen) and "idiot" not in "".join(seen)


def test_a_streams_decisions_on_the_way_have_the_quality_of_the_text_so_far(env: Env) -> None:
    """The email decides the stream again on its way (a new type): with a quality to read, the rule on it lets
    a civil answer through instead of failing closed on a missing attribute."""
    text = "".join(c.choices[0].delta.content or "" for c in env.chat("mailer", "how do I reach you?", stream=True)
                   if c.choices)
    assert text == "Reach me at jane.doe@example.com soon"


def test_without_the_guard_a_rule_on_toxicity_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    policy = load_policy([str(tmp_path / "p.policy")])
    guard = g.merge([g.screen("hello", g.GuardConfig())])  # toxicity off: no attribute, not a 0
    assert "toxicity" not in guard
    request = {"principal": {"id": "t", "roles": ["caller"]}, "action": "invoke",
               "resource": {"kind": "model", "id": "plain"}, "context": {"guard": guard}}
    decision = policy.evaluate(request)
    assert decision.effect == "deny" and decision.reasons[0].rule == "gw.tox.no_toxic_prompts"


def test_toxicity_on_without_the_package_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable() -> Any:
        raise toxicity.ToxicityUnavailable("the toxicity guard needs alt-profanity-check")

    monkeypatch.setattr(toxicity, "scorer", unavailable)
    with pytest.raises(GatewayConfigError) as caught:
        _guards({"toxicity": True}, "gateway.yaml: guards")
    assert str(caught.value).startswith("gateway.yaml: guards.toxicity: the toxicity guard needs alt-profanity-check")


@pytest.mark.parametrize("text, finish, expected", [
    ("The invoice is a duplicate of INV-1002.", "stop", 1.0),
    ("", "stop", 0.0),
    ("The invoice is a duplicate of", "length", 0.6),
    ("I'm sorry, I can't help with that.", "stop", 0.3),
    ("as an AI language model I cannot", "stop", 0.3),
    (" ".join(["same words again"] * 10), "stop", 0.5),
    ("ok", "stop", 0.5),
])
def test_response_quality(text: str, finish: str, expected: float) -> None:
    assert response_quality(text, finish) == expected
