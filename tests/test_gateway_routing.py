"""Routes and rate limits from the language, end to end: a gateway subprocess driven by the official ``openai``
SDK in front of the recording upstream process (tests/openai_upstream.py).

Each route has its own models, so what one test's calls measure (the gateway's moving
average of upstream latency) never reorders another test's route.
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

# name -> (cost USD per 1M tokens, latency ms)
MODELS = {
    "a_cheap": (0.5, 300), "a_quick": (5, 20), "a_mid": (2, 80),
    "b_cheap": (0.5, 300), "b_quick": (5, 20), "b_mid": (2, 80),
    "c_cheap": (0.5, 300), "c_quick": (5, 20), "c_mid": (2, 80),
    "d_cheap": (0.5, 300), "d_quick": (5, 20), "d_mid": (2, 80),
    "e_broken": (0.1, 10), "e_mid": (2, 80),
    "f_forbidden": (0.01, 1), "f_ok": (2, 80),
    "plain": (1, 50), "other": (1, 50),
}

POLICY = "package gw.routes\n\nrole caller\nrole limited\nrole crew\nrole per_model\nrole per_person\n\n" + "".join(
    f"model {name}\n    provider \"openai-compatible\" region \"eu-west-1\" hosting external\n"
    f"    cost {cost} USD per 1M tokens latency {latency} ms\n" for name, (cost, latency) in MODELS.items()) + """
rule callers_invoke
    allow role caller to invoke model "*"

rule no_forbidden
    deny any to invoke model "f_forbidden"

rule limited_invoke
    allow role limited to invoke model "*"
    limit 2 requests per day

rule crew_invoke
    allow role crew to invoke model "*"
    limit 450 tokens per day for team

rule per_model_invoke
    allow role per_model to invoke model "*"
    limit 1 requests per day for model

rule per_person_invoke
    allow role per_person to invoke model "*"
    limit 1 requests per day for principal

route cheapest_chat
    prefer cheapest among a_quick, a_cheap, a_mid

route fastest_chat
    prefer fastest among b_cheap, b_quick, b_mid

route bounded_chat
    prefer cheapest among c_cheap, c_quick, c_mid
    within latency 100 ms

route budget_chat
    prefer fastest among d_cheap, d_quick, d_mid
    under cost 3 USD per 1M tokens

route fallback_chat
    prefer cheapest among e_broken, e_mid

route gated_chat
    prefer cheapest among f_forbidden, f_ok
"""

KEYS = {
    "sk-caller": {"principal": {"id": "bob", "roles": ["caller"]}},
    "sk-limited": {"principal": {"id": "lim", "roles": ["limited"]}},
    "sk-crew-1": {"principal": {"id": "c1", "roles": ["crew"]}, "team": "crew"},
    "sk-crew-2": {"principal": {"id": "c2", "roles": ["crew"]}, "team": "crew"},
    "sk-solo": {"principal": {"id": "solo", "roles": ["crew"]}, "team": "solo"},
    "sk-per-model": {"principal": {"id": "pm", "roles": ["per_model"]}},
    # one person (identities compare NFKC, trimmed and casefolded), three keys spelling her id three ways
    "sk-dana": {"principal": {"id": "dana", "roles": ["per_person"]}},
    "sk-dana-caps": {"principal": {"id": "Dana ", "roles": ["per_person"]}},
    "sk-dana-wide": {"principal": {"id": "\uff44\uff41\uff4e\uff41", "roles": ["per_person"]}},
    "sk-erin": {"principal": {"id": "erin", "roles": ["per_person"]}},
}


@dataclass
class Env:
    gateway: Process
    record: Path

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url + "/v1", api_key=key, max_retries=0, timeout=30)

    def chat(self, key: str, model: str, **kwargs: Any) -> Any:
        return self.client(key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], **kwargs)

    def sent_models(self, since: int) -> list[str]:
        return [r["body"]["model"] for r in received(self.record)[since:]]

    def count(self) -> int:
        return len(received(self.record))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    cwd = tmp_path_factory.mktemp("gateway-routes")
    record = cwd / "upstream.jsonl"
    with start_upstream(cwd, record) as upstream:
        (cwd / "gw.policy").write_text(POLICY, encoding="utf-8")
        keys = [{"sha256": hashlib.sha256(k.encode()).hexdigest(), "name": k, **spec} for k, spec in KEYS.items()]
        (cwd / "keys.yaml").write_text(yaml.safe_dump({"keys": keys}), encoding="utf-8")
        base = upstream.url + "/v1"
        models = {name: {"base_url": base, "model": "fail500" if name == "e_broken" else f"{name}-up"}
                  for name in MODELS}
        (cwd / "providers.yaml").write_text(yaml.safe_dump({"defaults": {"timeout_s": 10, "retries": 0},
                                                            "models": models}), encoding="utf-8")
        config = {"rules": ["gw.policy"], "keys": "keys.yaml", "providers": "providers.yaml", "db": "gw.duckdb",
                  "key": "gw.key"}
        (cwd / "gateway.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        with start_gateway(cwd, cwd / "gateway.yaml") as gateway:
            yield Env(gateway, record)


def test_prefer_cheapest_picks_the_lowest_declared_cost(env: Env) -> None:
    before = env.count()
    answer = env.chat("sk-caller", "cheapest_chat")
    assert answer.model == "a_cheap"
    assert env.sent_models(before) == ["a_cheap-up"]


def test_a_route_is_also_named_by_its_id(env: Env) -> None:
    assert env.chat("sk-caller", "gw.routes.cheapest_chat").model == "a_cheap"


def test_prefer_fastest_picks_the_lowest_declared_latency(env: Env) -> None:
    before = env.count()
    assert env.chat("sk-caller", "fastest_chat").model == "b_quick"
    assert env.sent_models(before) == ["b_quick-up"]


def test_latency_bound_leaves_out_slower_models_even_when_cheaper(env: Env) -> None:
    # c_cheap (0.5 USD, 300 ms) is over 100 ms; of c_quick (5 USD, 20 ms) and c_mid (2 USD, 80 ms) c_mid is cheaper
    assert env.chat("sk-caller", "bounded_chat").model == "c_mid"


def test_cost_bound_leaves_out_dearer_models_even_when_faster(env: Env) -> None:
    # d_quick (5 USD) is over 3 USD per 1M tokens; of d_cheap (300 ms) and d_mid (80 ms) d_mid is faster
    assert env.chat("sk-caller", "budget_chat").model == "d_mid"


def test_upstream_error_falls_back_to_the_next_candidate(env: Env) -> None:
    before = env.count()
    answer = env.chat("sk-caller", "fallback_chat")
    assert answer.model == "e_mid"
    assert env.sent_models(before) == ["fail500", "e_mid-up"]


def test_a_denied_candidate_is_skipped_and_never_called(env: Env) -> None:
    before = env.count()
    assert env.chat("sk-caller", "gated_chat").model == "f_ok"
    assert env.sent_models(before) == ["f_ok-up"]


def test_neither_model_nor_route_is_404(env: Env) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        env.chat("sk-caller", "no_such_route")
    assert caught.value.body["code"] == "model_not_found"


def test_request_limit_of_the_allowing_rule_is_429_with_retry_after(env: Env) -> None:
    env.chat("sk-limited", "plain")
    env.chat("sk-limited", "other")
    before = env.count()
    with pytest.raises(openai.RateLimitError) as caught:
        env.chat("sk-limited", "plain")
    assert caught.value.body["code"] == "rate_limited"
    assert caught.value.body["rule"] == "gw.routes.limited_invoke"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 86_400
    assert env.count() == before  # nothing reached the upstream


def test_token_limit_for_team_is_shared_by_its_keys(env: Env) -> None:
    # each call: estimate 1 + 200 tokens, settled at the upstream's usage (1 + 200): 402 of 450 after two
    env.chat("sk-crew-1", "plain", max_tokens=200)
    env.chat("sk-crew-1", "plain", max_tokens=200)
    with pytest.raises(openai.RateLimitError) as caught:
        env.chat("sk-crew-2", "plain", max_tokens=200)  # another key, the same team
    assert "per team crew" in caught.value.body["message"]
    assert env.chat("sk-crew-2", "plain", max_tokens=40).model == "plain"  # 402 + 41 fits
    assert env.chat("sk-solo", "plain", max_tokens=200).model == "plain"  # another team counts apart


def test_limit_for_model_counts_each_model_apart(env: Env) -> None:
    assert env.chat("sk-per-model", "plain").model == "plain"
    with pytest.raises(openai.RateLimitError):
        env.chat("sk-per-model", "plain")
    assert env.chat("sk-per-model", "other").model == "other"



def test_limit_for_principal_counts_one_person_once_however_her_keys_spell_her_id(env: Env) -> None:
    assert env.chat("sk-dana", "plain").model == "plain"  # her one request of the day
    before = env.count()
    for key in ("sk-dana", "sk-dana-caps", "sk-dana-wide"):  # "dana", "Dana ", full-width
        with pytest.raises(openai.RateLimitError) as caught:
            env.chat(key, "plain")
        assert caught.value.body["rule"] == "gw.routes.per_person_invoke", key
    assert env.count() == before  # nothing reached the upstream
    assert env.chat("sk-erin", "plain").model == "plain"  # another person counts apart
