"""Model providers behind one interface, with bounded retries.

Two providers ship: ``LocalProvider``, a deterministic simulator for demos and
tests (latency, confidence, accuracy and failures configurable per model), and
``OpenAICompatibleProvider``, which speaks the chat-completions HTTP API. The
runner never talks to a provider directly: it goes through ``Providers``, which
maps a model to its provider and applies the retry policy. Falling back to the
*next allowed model* is the runner's job, because "allowed" is the policy's call.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .workflow import Completion, Prompt


class ProviderError(Exception):
    """The provider answered with an error (or an answer that cannot be read)."""

    status = "error"


class ProviderTimeout(ProviderError):
    """The provider did not answer within the timeout."""

    status = "timeout"


class Provider(Protocol):
    name: str

    def complete(self, model: str, prompt: Prompt, *, timeout: float, idempotency_key: str) -> Completion: ...


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from ``parts`` (stable across runs and machines)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """How the simulator behaves for one model.

    ``accuracy``: share of prompts whose ``hint`` it answers; ``confidence``:
    typical confidence when right (lower when wrong); ``fail_rate``: share of
    calls that fail; ``fail``: ``"error"`` or ``"timeout"`` for those calls;
    ``latency_ms``: simulated time per call (``0`` in benchmarks).
    """

    accuracy: float = 0.9
    confidence: float = 0.9
    fail_rate: float = 0.0
    fail: str = "error"
    latency_ms: float = 0.0
    tokens_out: int = 24


@dataclass
class LocalProvider:
    """A deterministic model simulator: the same model and prompt always give the same answer."""

    profiles: Mapping[str, ModelProfile] = field(default_factory=dict)
    default: ModelProfile = field(default_factory=ModelProfile)
    name: str = "local"

    def complete(self, model: str, prompt: Prompt, *, timeout: float, idempotency_key: str) -> Completion:
        p = self.profiles.get(model, self.default)
        text = prompt.text()
        if p.fail_rate and _unit("fail", model, text) < p.fail_rate:
            if p.fail == "timeout":
                time.sleep(min(timeout, 0.001))
                raise ProviderTimeout(f"{model} timed out after {timeout:g}s")
            raise ProviderError(f"{model} returned HTTP 503")
        if p.latency_ms:
            if p.latency_ms / 1000 > timeout:
                time.sleep(timeout)
                raise ProviderTimeout(f"{model} timed out after {timeout:g}s")
            time.sleep(p.latency_ms / 1000)
        right = _unit("acc", model, text) < p.accuracy
        labels = prompt.labels or ((prompt.hint,) if prompt.hint else ("ok",))
        if right and prompt.hint is not None:
            label = prompt.hint
            conf = p.confidence + (1 - p.confidence) * _unit("conf", model, text) * 0.9
        else:
            others = [x for x in labels if x != prompt.hint] or list(labels)
            label = others[int(_unit("pick", model, text) * len(others))]
            conf = p.confidence * (0.55 + 0.35 * _unit("conf", model, text))
        tokens = max(1, len(text) // 4) + min(p.tokens_out, prompt.max_tokens)
        body = json.dumps({"label": label, "confidence": round(conf, 4)})
        return Completion(label=label, confidence=round(conf, 4), text=body, tokens=tokens)


@dataclass
class OpenAICompatibleProvider:
    """Chat completions over HTTP (``POST {base_url}/chat/completions``).

    The API key is read from the environment variable ``api_key_env`` at call
    time, never stored. The model is asked to answer with JSON
    ``{"label": ..., "confidence": ...}``; a plain-text answer becomes the label
    with no confidence. ``Idempotency-Key`` is sent so a retried call is not
    billed twice by providers that honour it.
    """

    base_url: str
    api_key_env: str = "POLICYENGINE_OPENAI_API_KEY"
    name: str = "openai-compatible"

    def complete(self, model: str, prompt: Prompt, *, timeout: float, idempotency_key: str) -> Completion:
        messages = [{"role": role, "content": content} for role, content in prompt.messages]
        if prompt.labels:
            messages.insert(0, {"role": "system", "content": (
                "Answer with JSON {\"label\": one of " + json.dumps(list(prompt.labels))
                + ", \"confidence\": a number between 0 and 1}.")})
        body = json.dumps({"model": model, "messages": messages, "temperature": 0,
                           "max_tokens": prompt.max_tokens}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base_url.rstrip("/") + "/chat/completions", body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise ProviderError(f"{model}: HTTP {exc.code} from {self.base_url}") from None
        except TimeoutError:
            raise ProviderTimeout(f"{model} timed out after {timeout:g}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise ProviderTimeout(f"{model} timed out after {timeout:g}s") from None
            raise ProviderError(f"{model}: cannot reach {self.base_url}: {exc.reason}") from None
        return _read_chat_completion(model, raw)


def _read_chat_completion(model: str, raw: bytes) -> Completion:
    try:
        doc = json.loads(raw)
        text = doc["choices"][0]["message"]["content"] or ""
        usage = doc.get("usage") or {}
        tokens = int(usage.get("total_tokens") or usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProviderError(f"{model}: unreadable chat-completions response") from None
    label, conf = text.strip(), None
    try:
        answer = json.loads(text)
        if isinstance(answer, dict):
            label = str(answer.get("label", label))
            c = answer.get("confidence")
            conf = float(c) if isinstance(c, (int, float)) else None
    except ValueError:
        pass
    return Completion(label=label, confidence=conf, text=text, tokens=tokens)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one model: what the ``model_call`` audit row records."""

    model: str
    provider: str
    status: str  # ok | error | timeout
    latency_ms: float
    completion: Completion | None = None
    error: str | None = None


@dataclass
class Providers:
    """Which provider serves which model, and the retry policy.

    ``by_provider`` maps a registry ``provider "..."`` name to a provider;
    models whose provider is not configured are served by ``default`` (the
    simulator), so the demo runs offline. ``retries`` extra tries per model,
    then the runner falls back to the next allowed model.
    """

    default: Provider = field(default_factory=LocalProvider)
    by_provider: dict[str, Provider] = field(default_factory=dict)
    by_model: dict[str, Provider] = field(default_factory=dict)
    retries: int = 1
    timeout_s: float = 10.0
    backoff_s: float = 0.0

    def provider_for(self, model: str, registry_provider: str | None) -> Provider:
        if model in self.by_model:
            return self.by_model[model]
        if registry_provider and registry_provider in self.by_provider:
            return self.by_provider[registry_provider]
        return self.default

    def call(self, model: str, registry_provider: str | None, prompt: Prompt, idempotency_key: str) -> list[Attempt]:
        """Try ``model`` up to ``1 + retries`` times; return every attempt (the last may be ok)."""
        provider = self.provider_for(model, registry_provider)
        attempts: list[Attempt] = []
        for n in range(self.retries + 1):
            t0 = time.perf_counter()
            try:
                c = provider.complete(model, prompt, timeout=self.timeout_s, idempotency_key=idempotency_key)
                attempts.append(Attempt(model, provider.name, "ok", (time.perf_counter() - t0) * 1000, c))
                return attempts
            except ProviderError as exc:
                attempts.append(Attempt(model, provider.name, exc.status, (time.perf_counter() - t0) * 1000, None,
                                        str(exc)))
            except Exception as exc:  # noqa: BLE001 - a provider's own bug is an error like any other
                attempts.append(Attempt(model, provider.name, "error", (time.perf_counter() - t0) * 1000, None,
                                        f"{type(exc).__name__}: {exc}"))
            if self.backoff_s and n < self.retries:
                time.sleep(self.backoff_s * (2**n))
        return attempts
