"""Model providers: the deterministic simulator and the OpenAI-compatible HTTP client.

The HTTP provider is tested against a real server on 127.0.0.1 (``http.server``
in a thread) that behaves per model: answers, fails with 503, or stalls.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from policyengine.orchestrator.providers import (
    LocalProvider,
    ModelProfile,
    OpenAICompatibleProvider,
    ProviderError,
    Providers,
    ProviderTimeout,
)
from policyengine.orchestrator.workflow import Prompt

PROMPT = Prompt((("user", "Invoice INV-1 for 120 EUR. Which exception applies?"),), ("duplicate", "none"), "none")


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization"),
                              "idem": self.headers.get("Idempotency-Key")})
        model = body["model"]
        if model == "broken":
            self.send_response(503)
            self.end_headers()
            return
        if model == "slow":
            time.sleep(0.5)
        content = "not json at all" if model == "chatty" else json.dumps({"label": "none", "confidence": 0.81})
        doc = {"choices": [{"message": {"role": "assistant", "content": content}}],
               "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}}
        if model == "garbled":
            doc = {"nothing": True}
        raw = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_http_provider_sends_chat_completions_and_reads_json_answer(server, monkeypatch):
    monkeypatch.setenv("TEST_PE_KEY", "sk-test")
    p = OpenAICompatibleProvider(server, api_key_env="TEST_PE_KEY")
    c = p.complete("gpt-test", PROMPT, timeout=2, idempotency_key="r-1/classify")
    assert (c.label, c.confidence, c.tokens) == ("none", 0.81, 37)
    sent = _Handler.seen[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["auth"] == "Bearer sk-test" and sent["idem"] == "r-1/classify"
    assert sent["body"]["model"] == "gpt-test"
    assert "duplicate" in sent["body"]["messages"][0]["content"]  # the labels are offered to the model
    # the simulator's hint (the ground truth) is never sent to a real model
    assert sent["body"]["messages"][1:] == [{"role": "user", "content": PROMPT.messages[0][1]}]


@pytest.mark.parametrize("model, error, message", [
    ("broken", ProviderError, "HTTP 503"),
    ("slow", ProviderTimeout, "timed out"),
    ("garbled", ProviderError, "unreadable"),
])
def test_http_provider_errors_are_typed(server, model, error, message):
    p = OpenAICompatibleProvider(server)
    with pytest.raises(error, match=message):
        p.complete(model, PROMPT, timeout=0.2, idempotency_key="k")


def test_http_provider_plain_text_answer_becomes_label(server):
    c = OpenAICompatibleProvider(server).complete("chatty", PROMPT, timeout=2, idempotency_key="k")
    assert (c.label, c.confidence) == ("not json at all", None)


def test_unreachable_endpoint_is_a_provider_error():
    p = OpenAICompatibleProvider("http://127.0.0.1:9/v1")
    with pytest.raises(ProviderError, match="cannot reach"):
        p.complete("m", PROMPT, timeout=1, idempotency_key="k")


def test_simulator_is_deterministic_and_honours_its_profile():
    sim = LocalProvider({"m": ModelProfile(accuracy=1.0, confidence=0.9)})
    a = sim.complete("m", PROMPT, timeout=1, idempotency_key="x")
    b = sim.complete("m", PROMPT, timeout=1, idempotency_key="y")
    assert a == b and a.label == "none" and 0.9 <= a.confidence <= 1.0 and a.tokens > 0
    wrong = LocalProvider({"m": ModelProfile(accuracy=0.0, confidence=0.9)}).complete("m", PROMPT, timeout=1,
                                                                                       idempotency_key="x")
    assert wrong.label == "duplicate" and wrong.confidence < 0.9


def test_simulator_accuracy_is_a_rate_over_many_prompts():
    sim = LocalProvider({"m": ModelProfile(accuracy=0.8)})
    prompts = [Prompt((("user", f"item {i}"),), ("a", "b"), "a") for i in range(2000)]
    right = sum(sim.complete("m", p, timeout=1, idempotency_key="k").label == "a" for p in prompts)
    assert 0.76 < right / 2000 < 0.84


@pytest.mark.parametrize("fail, error", [("error", ProviderError), ("timeout", ProviderTimeout)])
def test_simulator_failures(fail, error):
    sim = LocalProvider({"m": ModelProfile(fail_rate=1.0, fail=fail)})
    with pytest.raises(error):
        sim.complete("m", PROMPT, timeout=0.01, idempotency_key="k")


def test_simulated_latency_beyond_the_timeout_is_a_timeout():
    sim = LocalProvider({"m": ModelProfile(latency_ms=500)})
    with pytest.raises(ProviderTimeout):
        sim.complete("m", PROMPT, timeout=0.01, idempotency_key="k")


def test_retries_are_bounded_and_every_attempt_is_reported(server):
    providers = Providers(by_provider={"openai-compatible": OpenAICompatibleProvider(server)}, retries=2,
                          timeout_s=1)
    attempts = providers.call("broken", "openai-compatible", PROMPT, "k")
    assert [a.status for a in attempts] == ["error", "error", "error"]
    assert all(a.provider == "openai-compatible" and "503" in a.error for a in attempts)
    ok = providers.call("gpt-test", "openai-compatible", PROMPT, "k")
    assert [a.status for a in ok] == ["ok"] and ok[0].completion.tokens == 37


def test_models_without_a_configured_provider_use_the_simulator():
    providers = Providers()
    (attempt,) = providers.call("anything", "openai-compatible", PROMPT, "k")
    assert attempt.provider == "local" and attempt.status == "ok"


def test_a_provider_that_raises_anything_is_an_error_attempt_not_a_crash():
    class Buggy:
        name = "buggy"

        def complete(self, model, prompt, *, timeout, idempotency_key):
            raise KeyError("choices")

    attempts = Providers(by_model={"m": Buggy()}, retries=1).call("m", None, PROMPT, "k")
    assert [(a.status, a.error) for a in attempts] == [("error", "KeyError: 'choices'")] * 2
