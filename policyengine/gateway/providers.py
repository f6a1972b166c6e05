"""Calling the model behind a declared name: an OpenAI-compatible upstream, or the local simulator.

Retries (``Upstream.retries`` extra tries) cover connection errors, timeouts
and 5xx answers before any byte of an answer was passed on; after that the
gateway falls back to the next allowed model. The API key is read from the
environment variable the providers file names, at call time, never stored.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from ..jsontext import Unreadable, loads_safe
from ..store.holds import estimate_tokens
from .config import Upstream


class UpstreamError(Exception):
    """The upstream failed: ``status`` 502 (error answer, unreachable) or 504 (timeout).

    ``spent``: the upstream may have done the work and billed it (it answered
    200 with something unreadable, or went silent after the request was sent),
    so the call's budget hold is charged, not given back.
    """

    def __init__(self, status: int, message: str, *, spent: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.spent = spent


_KIND = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def error_kind(content: bytes) -> str:
    """What an upstream's error answer says of its kind: its ``error.type`` and ``error.code`` when they are
    identifiers, as `` (invalid_request_error)``. Never its message or body: providers' validation errors quote
    the request, and the error goes to the audit log, which keeps no clear text of prompts."""
    try:
        doc = loads_safe(content)
    except (Unreadable, ValueError):
        return ""
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return ""
    kinds = [v for v in (error.get("type"), error.get("code")) if isinstance(v, str) and _KIND.fullmatch(v)]
    return f" ({', '.join(dict.fromkeys(kinds))})" if kinds else ""


# timeouts before the request could reach the upstream: nothing was done there
_UNSENT = (httpx.ConnectTimeout, httpx.PoolTimeout, httpcore.ConnectTimeout, httpcore.PoolTimeout)


@dataclass
class Answer:
    body: dict[str, Any]
    latency_ms: float
    attempts: int


def charged_tokens(usage: dict[str, Any], counted: float) -> tuple[float, str | None]:
    """The tokens to charge for an answer: the ``total_tokens`` its ``usage`` reports, or ``counted`` (what
    the gateway held or saw flow) with why the report was not taken.

    Only a token count is taken (a finite number >= 0, not a boolean): a
    negative total would give budget back, and a total that is not a number
    must not reach a ledger. A missing total is no refusal (``counted``, None).
    A total below the ``prompt_tokens`` and ``completion_tokens`` the same
    usage reports (token counts) contradicts them: their sum is charged.
    """
    total = usage.get("total_tokens")
    if total is None:
        return float(counted), None
    if not _token_count(total):
        return float(counted), (f"usage.total_tokens {json.dumps(total)[:40]} is not a token count; "
                                f"charged {counted:g} tokens instead")
    parts = [usage.get(name) for name in ("prompt_tokens", "completion_tokens")]
    if all(_token_count(part) for part in parts) and total < sum(parts):
        return float(sum(parts)), (f"usage.total_tokens {total:g} is less than its prompt_tokens + "
                                   f"completion_tokens; charged their {sum(parts):g} tokens instead")
    return float(total), None


def _token_count(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value >= 0


class Simulator:
    """Deterministic OpenAI-shaped answers, offline (the default for models without an upstream)."""

    @staticmethod
    def _words(model: str, prompt: str, max_tokens: int) -> list[str]:
        digest = hashlib.sha256(f"{model}\0{prompt}".encode()).hexdigest()
        words = ["Simulated", "answer", "from", model, "for", "prompt", digest[:12] + "."]
        return words[:max(1, max_tokens)]

    def chat(self, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
        words = self._words(model, prompt, max_tokens)
        usage = {"prompt_tokens": estimate_tokens(prompt), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": "chatcmpl-sim-" + hashlib.sha256(prompt.encode()).hexdigest()[:16], "object": "chat.completion",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words)},
                             "finish_reason": "stop"}], "usage": usage}

    async def chat_stream(self, model: str, prompt: str, max_tokens: int) -> AsyncIterator[dict[str, Any]]:
        words = self._words(model, prompt, max_tokens)
        base = {"id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        for index, word in enumerate(words):
            yield {**base, "choices": [{"index": 0, "delta": {"content": (" " if index else "") + word},
                                        "finish_reason": None}]}
        usage = {"prompt_tokens": estimate_tokens(prompt), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}

    def embeddings(self, model: str, inputs: list[str]) -> dict[str, Any]:
        data = []
        for index, text in enumerate(inputs):
            digest = hashlib.sha256(text.encode()).digest()
            data.append({"object": "embedding", "index": index, "embedding": [round(b / 255, 4) for b in digest[:16]]})
        tokens = sum(estimate_tokens(t) for t in inputs)
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
# what httpcore raises for a connection that fails, breaks or speaks wrongly (its timeouts are apart)
_POOL_ERRORS = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
                httpcore.ConnectionNotAvailable, httpcore.ProxyError, OSError)


class UpstreamClient:
    """Pooled keep-alive HTTP clients for every upstream.

    A whole (non-streamed) answer is fetched over httpcore's connection pool,
    the transport under httpx without its request/response layers: about
    0.2 ms less CPU a call on the gateway's event loop (benchmarks/README.md,
    "Gateway added latency by part"). Streams, and every call when a proxy is
    set in the environment (which only httpx reads), go through httpx.
    """

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        self._pool = None if any(os.environ.get(name) for name in _PROXY_ENV) else \
            httpcore.AsyncConnectionPool(max_connections=256, max_keepalive_connections=64)

    async def _send(self, url: str, content: bytes, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
        """POST ``content``; the status and the whole body. Raises httpx's or httpcore's errors."""
        if self._pool is None:
            response = await self._client.post(url, content=content, headers=headers, timeout=timeout)
            return response.status_code, response.content
        answer = await self._pool.request("POST", url, headers=list(headers.items()), content=content,
                                          extensions={"timeout": {"connect": timeout, "read": timeout,
                                                                  "write": timeout, "pool": timeout}})
        return answer.status, answer.content

    def _headers(self, upstream: Upstream) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if upstream.api_key_env:
            key = os.environ.get(upstream.api_key_env)
            if key:
                headers["authorization"] = f"Bearer {key}"
        return headers

    async def post(self, upstream: Upstream, path: str, body: dict[str, Any]) -> Answer:
        """POST ``body`` (its model replaced by the upstream's name) and return the JSON answer."""
        assert upstream.base_url is not None
        # encoded once, outside the retries, and sent as bytes: httpx's json= path re-encodes on every try
        content = json.dumps({**body, "model": upstream.upstream_model}, separators=(",", ":")).encode()
        url, headers = upstream.base_url + path, self._headers(upstream)
        last: UpstreamError | None = None
        spent = False  # an earlier try may have been done upstream (a timeout after sending)
        started = time.perf_counter()
        for attempt in range(1, upstream.retries + 2):
            try:
                status, content_in = await self._send(url, content, headers, upstream.timeout_s)
            except (httpx.TimeoutException, httpcore.TimeoutException) as error:
                spent = spent or not isinstance(error, _UNSENT)
                last = UpstreamError(504, f"{upstream.model}: no answer within {upstream.timeout_s:g} s", spent=spent)
                continue
            except (httpx.HTTPError, *_POOL_ERRORS) as error:
                last = UpstreamError(502, f"{upstream.model}: cannot reach {upstream.base_url}: "
                                          f"{error or type(error).__name__}", spent=spent)
                continue
            if status >= 500:
                last = UpstreamError(502, f"{upstream.model}: HTTP {status} from upstream", spent=spent)
                continue
            if status >= 400:
                raise UpstreamError(502, f"{upstream.model}: HTTP {status} from upstream{error_kind(content_in)}",
                                    spent=spent)
            try:
                doc = loads_safe(content_in)
            except Unreadable as error:
                raise UpstreamError(502, f"{upstream.model}: upstream answer {error}", spent=True) from None
            except ValueError:
                raise UpstreamError(502, f"{upstream.model}: upstream answer is not JSON", spent=True) from None
            if not isinstance(doc, dict):
                raise UpstreamError(502, f"{upstream.model}: upstream answer is not a JSON object", spent=True)
            return Answer(doc, (time.perf_counter() - started) * 1000, attempt)
        assert last is not None
        raise last

    async def stream(self, upstream: Upstream, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The chunks of a streamed chat completion; retried only until the first chunk arrives."""
        assert upstream.base_url is not None
        payload = {**body, "model": upstream.upstream_model, "stream": True,
                   "stream_options": {"include_usage": True}}
        last: UpstreamError | None = None
        spent = False
        for _attempt in range(upstream.retries + 1):
            started = False
            try:
                async with self._client.stream("POST", upstream.base_url + "/chat/completions", json=payload,
                                               headers=self._headers(upstream), timeout=upstream.timeout_s) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        last = UpstreamError(502, f"{upstream.model}: HTTP {response.status_code} from upstream",
                                             spent=spent)
                        if response.status_code < 500:
                            raise last
                        continue
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        try:
                            chunk = loads_safe(data)
                        except ValueError as error:
                            why = f": {error}" if isinstance(error, Unreadable) else ""
                            raise UpstreamError(502, f"{upstream.model}: unreadable stream chunk{why}",
                                                spent=True) from None
                        if not isinstance(chunk, dict):
                            raise UpstreamError(502, f"{upstream.model}: a stream chunk is not a JSON object",
                                                spent=True)
                        started = True
                        yield chunk
                    return
            except httpx.TimeoutException as error:
                spent = spent or not isinstance(error, _UNSENT)
                last = UpstreamError(504, f"{upstream.model}: no answer within {upstream.timeout_s:g} s", spent=spent)
            except httpx.HTTPError as error:
                last = UpstreamError(502, f"{upstream.model}: stream from {upstream.base_url} broke: {error}",
                                     spent=spent or started)
            if started:
                raise last
        assert last is not None
        raise last

    async def close(self) -> None:
        await self._client.aclose()
        if self._pool is not None:
            await self._pool.aclose()
