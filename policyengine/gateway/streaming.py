"""Streamed chat completions (``stream: true``): screened in a held-back buffer, counted as they flow.

Text is released only once the text after it has been screened: the last
``HOLD_BACK`` characters stay in the buffer, so an entity split across chunks is
masked or blocked before any part of it leaves. When the policy withholds the
response, or the stream would use more tokens than its budget reservation
holds, the stream ends with an ``error`` event (never partial forbidden
content), after the call's audit record is durable. The upstream is tried
(with fallbacks) until its first chunk arrives; errors before that are ordinary
HTTP errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..server.app import Response
from . import guards as g
from .providers import UpstreamError, charged_tokens, estimate_tokens
from .quality import response_quality

if TYPE_CHECKING:
    from ..server.policy_source import ActivePolicy
    from .app import Call, GatewayApp


def _event(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _simulated(app: GatewayApp, model: str, prompt: str, max_tokens: int) -> AsyncIterator[dict[str, Any]]:
    async for chunk in app.simulator.chat_stream(model, prompt, max_tokens):
        yield chunk


async def stream_chat(app: GatewayApp, active: ActivePolicy, call: Call, candidates: list[tuple[str, dict[str, Any]]],
                      body: dict[str, Any], estimate: float, prompt: str,
                      max_tokens: int) -> tuple[Response, AsyncIterator[bytes]]:
    from .app import HOLD_BACK, GatewayError

    last: UpstreamError | None = None
    for model, request in candidates:
        hold = await app._reserve(active, request, model, estimate)
        upstream = app.upstreams.get(model)
        started = time.perf_counter()
        if upstream is None or upstream.base_url is None:
            chunks = _simulated(app, model, prompt, max_tokens)
            call.provider = "simulator"
        else:
            chunks = app.client.stream(upstream, body)
            call.provider = upstream.base_url
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = None
        except UpstreamError as error:
            call.attempts.append(await app._unanswered(active, call, hold, model, estimate, error))
            last = error
            continue
        except BaseException as error:  # cancelled (the gateway stopping) or unexpected: the call may be done
            call.attempts.append(await app._cut_off(active, call, hold, model, estimate, upstream, error))
            raise
        call.attempts.append({"model": model, "status": 200})
        call.model = model
        break
    else:
        assert last is not None
        raise GatewayError(last.status, f"every allowed model failed upstream: {last}", "upstream_error")

    prompt_tokens = estimate_tokens(prompt)
    created = int(time.time())
    cid = "chatcmpl-gw-" + call.prompt_sha256[:16] if call.prompt_sha256 else "chatcmpl-gw"

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
        out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            out["usage"] = usage
        return _event(out)

    async def events() -> AsyncIterator[bytes]:
        buffer = ""
        released = 0  # characters of ``buffer`` screened and sent (masked) to the client
        flowed = 0  # completion tokens counted as the chunks arrive
        usage: dict[str, Any] | None = None
        finish = "stop"
        pii: set[str] = set()  # entity types found in the answer so far
        secrets: set[str] = set()
        masked: set[str] = set()
        toxicity: list[float] = []  # the highest toxicity of the text screened so far (the guard on)
        ended = False
        settled = False  # the hold was settled (or its settle failed and noted): never twice
        yield chunk({"role": "assistant", "content": ""})

        def screen_and_cut(upto: int) -> str:
            """Screen the unreleased text, decide again when new types appear or its toxicity is the highest yet
            (the guard on), with the quality of the text so far; the masked text up to ``upto``.

            Only ``buffer[released:]`` is screened each time (linear in the answer), so an entity
            longer than ``HOLD_BACK`` characters that began in released text is out of reach.
            """
            nonlocal released
            window = buffer[released:]
            found = app._screen([window], call, "response")[0]
            rises = (found.toxicity is not None and bool(window.strip())
                     and (not toxicity or found.toxicity > toxicity[0]))
            if rises or not (set(found.pii) <= pii and set(found.secrets) <= secrets and set(found.masked) <= masked):
                pii.update(found.pii)
                secrets.update(found.secrets)
                masked.update(found.masked)
                if rises:
                    toxicity[:] = [found.toxicity]
                guard: dict[str, Any] = {"pii": sorted(pii), "secrets": sorted(secrets), "masked": sorted(masked),
                                         "quality": response_quality(buffer),  # of the text so far
                                         **({"toxicity": toxicity[0]} if toxicity else {})}
                app._decide_response(active, call, request, guard)  # raises when refused
            cut = upto - released
            for f in found.findings:  # never cut an entity in two
                if f.start < cut < f.end:
                    cut = f.start
            if cut <= 0:
                return ""
            inside = [f for f in found.findings if f.end <= cut and f.kind in app.config.guards.mask]
            released += cut
            return g.mask(window[:cut], inside)

        async def fail(error: GatewayError, charged: float) -> bytes:
            if not settled:
                call.tokens = charged
                call.cost = app._price(active, model, charged)
                await app._charge(call, hold, call.tokens, call.cost)
            call.latency_ms = (time.perf_counter() - started) * 1000
            return _event((await app._fail(call, active, error)).body())

        async def pieces() -> AsyncIterator[dict[str, Any]]:
            if first is not None:
                yield first
            async for item in chunks:
                yield item

        try:
            async for piece in pieces():
                if isinstance(piece.get("usage"), dict):
                    usage = piece["usage"]
                for choice in piece.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if isinstance(text, str) and text:
                        buffer += text
                        flowed += max(1, len(text) // 8)  # a chunk is about one token; long ones count more
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                if prompt_tokens + flowed > estimate:
                    yield await fail(GatewayError(429, f"stream passed its reservation of {estimate:g} tokens; "
                                                       "cut off", "budget_exhausted", rule="<reservation>"),
                                     estimate)
                    ended = True
                    return
                text = screen_and_cut(len(buffer) - HOLD_BACK)
                if text:
                    yield chunk({"content": text})
            rest = screen_and_cut(len(buffer))
            app._screen_response(active, call, request, buffer, finish)  # the whole answer once: record, decision
            call.latency_ms = (time.perf_counter() - started) * 1000
            if usage is None:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": flowed,
                         "total_tokens": prompt_tokens + flowed}
            call.usage = usage
            call.tokens, refused = charged_tokens(usage, prompt_tokens + flowed)
            if refused:
                call.attempts[-1]["usage_refused"] = refused
            call.cost = app._price(active, model, call.tokens)
            await app._charge(call, hold, call.tokens, call.cost)
            settled = True
            app._limit_settle(call, estimate)
            if rest:
                yield chunk({"content": rest})
            await app._audit_call(call, active)  # durable before the stream's last events
            yield chunk({}, finish, usage)
            yield b"data: [DONE]\n\n"
            ended = True
        except GatewayError as error:
            if not ended:
                yield await fail(error, float(prompt_tokens + flowed))
        except UpstreamError as error:
            if not ended:
                yield await fail(GatewayError(error.status, f"upstream stream broke: {error}", "upstream_error"),
                                 float(prompt_tokens + flowed))
        except Exception as error:  # noqa: BLE001 - the call reached the upstream: charge and record it
            if not ended:
                yield await fail(app._internal(error), float(prompt_tokens + flowed))
        except asyncio.CancelledError:  # the gateway stopping mid-stream: charge what flowed, record, go on
            if not ended and not call.recorded:
                try:
                    await fail(GatewayError(503, "the gateway stopped before the stream ended", "cut_off"),
                               float(prompt_tokens + flowed))
                except BaseException:  # noqa: BLE001 - the cancellation is what goes on; the record is appended
                    pass
            raise

    return Response(200, b"", headers=[(b"x-policyengine-model", model.encode())], note={"model": model}), events()
