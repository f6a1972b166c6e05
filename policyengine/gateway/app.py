"""The governed gateway: OpenAI's chat-completions, embeddings and models API, with policy in the path.

Each call: virtual key -> principal; guards screen the prompt and fill
``context.guard``; per-minute limits; the policy decides the requested model
and then its fallbacks (a denied model is rerouted to the first allowed
fallback); the budgets covering the call reserve its estimate; the upstream is
called (the next allowed model on an upstream error); the answer is screened
(streams in a held-back buffer) and decided again with ``context.guard.response``;
usage is settled; and one ``model_call`` audit record is appended and awaited
durable before the answer (or a stream's last event) is sent. A ``model`` that
names a policy ``route`` is served by its candidates in strategy order
(``traffic``); a call an approval gate holds may wait for an approver
(``holds``, ``--hold-for-approval``). The HTTP
plumbing (body limits, lifespan, metrics, durable audit) is the decision
server's (``policyengine.server.app``).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..audit import AuditError
from ..server.app import DecisionApp, Exchange, Response, ServerOptions
from ..server.body import HTTPError, header_map
from ..server.audit_writer import DurableAudit
from ..server.metrics import Metrics
from ..server.policy_source import ActivePolicy, PolicyHolder
from ..store.files import StoreError
from ..store.protocols import BudgetLedger
from . import guards as g
from .config import GatewayConfig, Upstream, VirtualKey, hash_key
from ..store.ratelimit import InProcessRateLimiter, RateLimiter
from .limits import Hold, MemoryReservingLedger, release, reserve, settle
from .providers import Simulator, UpstreamClient, UpstreamError, charged_tokens, estimate_tokens
from .quality import response_quality
from . import holds
from . import traffic
from ..identity import IdentityError, canonical_identity
from ..jsontext import Unreadable, bad_numbers, decode, may_hold_bad_numbers
from ..routing import LatencyMeter

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_denied",
          404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error", 451: "permission_denied",
          502: "upstream_error", 503: "service_unavailable", 504: "upstream_timeout"}
HOLD_BACK = 96  # characters of a stream kept unreleased until the text after them is screened
# top-level body fields with which routing upstreams (LiteLLM, OpenRouter) serve another model, provider or endpoint
# than the one the body's ``model`` names: the gateway would relay them, and record the model the policy decided
UPSTREAM_CHOICES = frozenset({"models", "fallbacks", "context_window_fallbacks", "provider", "route", "api_base",
                              "base_url", "api_key"})


class GatewayError(HTTPError):
    """An OpenAI-shaped error answer, with the rule and reasons that caused it."""

    def __init__(self, status: int, message: str, code: str, *, rule: str | None = None,
                 reasons: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code
        self.rule = rule
        self.reasons = reasons or []
        self.extra = extra or {}
        self.audit_seq: int | None = None  # the call's audit record, once written
        self.escalated: tuple[str, dict[str, Any]] | None = None  # (model, request) held by an approval gate

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": str(self), "type": _TYPES.get(self.status, "api_error"), "param": None,
                                 "code": self.code, "rule": self.rule, "reasons": self.reasons, **self.extra}
        if self.audit_seq is not None:
            error["audit_seq"] = self.audit_seq
        return {"error": error}


@dataclass
class Call:
    """What one gateway call did, for its audit record."""

    route: str
    key: VirtualKey | None = None
    key_hash: str | None = None
    requested: str | None = None
    model: str | None = None
    provider: str | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    guard: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    tokens: float = 0
    cost: float = 0
    latency_ms: float = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    rule: str | None = None
    stream: bool = False
    prompt_sha256: str | None = None
    response_sha256: str | None = None
    prompt_masked: str | None = None
    response_masked: str | None = None
    counted: list[tuple[Any, float, float]] = field(default_factory=list)  # rate-limit counters taken (traffic.acquire)
    approved_gates: set[str] = field(default_factory=set)  # gates an approver opened while the call was held
    versions: dict[str, str] = field(default_factory=dict)  # model -> the version its request resolved (--registry)
    charge_error: str | None = None  # the answered call's budget settle failed: its hold stays (charged on expiry)
    limit_error: str | None = None  # the rate limits' token correction failed (the estimate stays counted)
    recorded: bool = False  # the call's model_call record is appended (one record per call)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_body(exchange: Exchange) -> Any:
    """The request body, read only where it has one reading (400 otherwise): a key repeated in an object
    (the upstream's parser may keep the other value), a number without an IEEE-754 double (``NaN`` would go
    upstream as ``NaN``), nesting past ``MAX_DEPTH`` (the parser's stack)."""
    try:
        text = (exchange.body or b"null").decode("utf-8")
        body = decode(text)
    except Unreadable as error:
        raise GatewayError(400, f"body: {error}", "invalid_request") from None
    except ValueError as error:
        raise GatewayError(400, f"body is not JSON: {error}", "invalid_json") from None
    if may_hold_bad_numbers(text):
        problems = bad_numbers(body)
        if problems:
            raise GatewayError(400, "; ".join(f"{path or 'body'}: {why}" for path, why in problems), "invalid_request")
    return body


def _message_parts(content: Any) -> list[str]:
    """The texts of a message's content: the string, or its text parts in order."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):  # content parts: keep the text ones
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def _message_text(content: Any) -> str:
    return "\n".join(_message_parts(content))


def _masks(leaves: list[tuple[g.Path, str]], found: list[g.Screening],
           masker: Callable[[str, g.Screening], str]) -> dict[g.Path, str]:
    """The strings of a body that ``masker`` (the configured types) changes, by path. A key holding a type it
    redacts is refused: keys are not rewritten."""
    out: dict[g.Path, str] = {}
    for (path, text), screening in zip(leaves, found, strict=True):
        if not screening.masked:
            continue
        if path[-1] == g.KEY:
            where = ".".join(map(str, path[:-2])) or "the body"  # not the key itself: it holds the finding
            raise GatewayError(400, f"an object key in {where} holds {', '.join(screening.masked)}, which is "
                                    "masked, and keys are not rewritten", "invalid_request", rule="<guard>")
        out[path] = masker(text, screening)
    return out


def _conversation(lines: g.Screening, end_to_end: g.Screening, messages: Sequence[Sequence[str]],
                  parts: dict[str, g.Screening], masked: Collection[str]) -> tuple[g.Screening, set[str]]:
    """The screening of ``messages`` joined by line breaks (``lines``) with every finding of the end-to-end
    join (``end_to_end``) and of each part (``parts``, by text) placed in it: a card written across two parts
    after a dash, or read only within its own part, is masked in the audit record's ``prompt_masked`` too.

    Second, the ``masked`` types a join finds where no part's own finding of that type overlaps it: written
    across parts or messages, so no one string holds it to redact (another of its type elsewhere redacts
    nothing of it)."""
    starts: list[tuple[int, int]] = []  # (where a part starts end to end, where it starts in ``lines``' text)
    flat = at = 0
    for message_parts in messages:
        for index, text in enumerate(message_parts):
            starts.append((flat, at))
            flat += len(text)
            at += len(text) + (index < len(message_parts) - 1)
        at += 1  # the line break after the message

    def placed(position: int) -> int:
        start, line_start = starts[bisect.bisect_right(starts, (position, math.inf)) - 1]
        return line_start + position - start

    joined = [*lines.findings,
              *(g.Finding(f.kind, placed(f.start), placed(f.end - 1) + 1) for f in end_to_end.findings)]
    own = [g.Finding(f.kind, line_start + f.start, line_start + f.end)
           for (_, line_start), text in zip(starts, (t for each in messages for t in each), strict=True)
           for f in parts[text].findings]
    across = {j.kind for j in joined if j.kind in masked
              and not any(o.kind == j.kind and o.start < j.end and j.start < o.end for o in own)}
    return dataclasses.replace(lines, findings=[*joined, *own]), across


def _respelled(answer: dict[str, Any]) -> dict[str, Any]:
    """A masked answer without what spells its text another way, which masking cannot reach: each choice's
    ``logprobs`` (its tokens one by one, and their bytes) are dropped; audio, which says the text, cannot be
    masked, so an answer with audio is refused (``GatewayError``)."""
    choices = answer.get("choices")
    if not isinstance(choices, list):
        return answer
    kept = []
    for choice in choices:
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict) and message.get("audio") is not None:
                raise GatewayError(502, "its audio says what is masked in its text, and audio cannot be masked",
                                   "response_blocked", rule="<guard>")
            if choice.get("logprobs") is not None:
                choice = {**choice, "logprobs": None}
        kept.append(choice)
    return {**answer, "choices": kept}


class GatewayApp(DecisionApp):
    """ASGI app of ``policyengine gateway``."""

    def __init__(self, holder: PolicyHolder, audit: DurableAudit, metrics: Metrics, config: GatewayConfig,
                 keys: dict[str, VirtualKey], teams: dict[str, Any], upstreams: dict[str, Upstream],
                 ledger: BudgetLedger, limiter: RateLimiter | None = None, access_log: bool = True,
                 versions: Any = None) -> None:
        # versions: the --registry aliases (server.policy_source.VersionSource), as serve's; None: none resolved
        super().__init__(holder, audit, metrics, ServerOptions(max_body=config.max_body, body_timeout=config.timeout,
                                                               access_log=access_log, model_versions=versions))
        self.config = config
        self.keys = keys
        self.teams = teams
        self.upstreams = upstreams
        self.ledger = ledger
        # a ledger with I/O (DuckDB) is called off the event loop, one call at a time
        self._ledger_pool = None if isinstance(ledger, MemoryReservingLedger) else \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-ledger")
        self.limiter = limiter or InProcessRateLimiter()
        self.simulator = Simulator()
        self.client = UpstreamClient()
        self.latency = LatencyMeter()  # measured upstream latency per model, for routes
        self.desk = holds.ApprovalDesk()  # calls held for an approval (--hold-for-approval)
        self.routes = {
            ("POST", "/v1/chat/completions"): self.chat_completions,
            ("POST", "/v1/embeddings"): self.embeddings,
            ("GET", "/v1/models"): self.list_models,
            ("GET", "/v1/approvals"): self.list_approvals,
            ("POST", "/v1/approvals"): self.decide_approval,
            ("GET", "/health"): self.health,
            ("GET", "/ready"): self.ready,
            ("GET", "/metrics"): self.render_metrics,
        }
        for path in set(self._latency) - {path for _, path in self.routes}:
            metrics.latency.remove(path)  # the decision server's routes are not served here
        self._paths = {path for _, path in self.routes}
        self._latency = {path: metrics.latency.labels(path) for path in self._paths}

    # -- ASGI: like the decision server's, plus streamed answers and OpenAI error bodies ----------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = header_map(scope["headers"])
        stream: AsyncIterator[bytes] | None = None
        try:
            result = await self._respond(method, path, headers, receive)
            if isinstance(result, Response):
                response = result
            else:
                response, stream = result
        except GatewayError as error:
            response = Response(error.status, json.dumps(error.body()).encode(),
                                headers=error.headers, note={"code": error.code})
        except HTTPError as error:
            body = {"error": {"message": str(error), "type": _TYPES.get(error.status, "api_error"), "param": None,
                              "code": None, "problems": error.problems}}
            response = Response(error.status, json.dumps(body).encode(), headers=error.headers)
        except Exception as error:  # noqa: BLE001 - one line to the client, never a traceback
            body = {"error": {"message": f"internal error: {type(error).__name__}: {error}", "type": "api_error",
                              "param": None, "code": "internal_error"}}
            response = Response(500, json.dumps(body).encode())
        extra = list(response.headers or [])
        if stream is None:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(b"content-type", response.content_type),
                                    (b"content-length", str(len(response.body)).encode()), *extra]})
            await send({"type": "http.response.body", "body": response.body})
        else:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *extra]})
            async for part in stream:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        self._observe(scope, headers, response, started)

    # -- who, what, how much -------------------------------------------------------------------

    def _caller(self, exchange: Exchange, call: Call) -> VirtualKey:
        scheme, _, token = exchange.headers.get(b"authorization", b"").partition(b" ")
        digest = hash_key(token.strip().decode("latin-1")) if scheme.lower() == b"bearer" and token.strip() else None
        call.key_hash = digest[:12] if digest else None
        key = self.keys.get(digest) if digest else None
        if key is None:
            raise GatewayError(401, "unknown or missing API key (send Authorization: Bearer <virtual key>)",
                               "invalid_api_key", headers=[(b"www-authenticate", b"Bearer")])
        call.key = key
        return key

    def _request(self, active: ActivePolicy, key: VirtualKey, model: str, tokens: float,
                 guard: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The policy request of a call by ``key`` to ``model``, and the model version it uses (``--registry``).

        With a registry the request carries ``resource.version``/``alias`` resolved as ``serve`` resolves them.
        """
        principal = dict(key.principal)
        attrs = dict(principal.get("attrs") or {})
        if key.team is not None:
            attrs.setdefault("team", key.team)
        principal["attrs"] = attrs
        context: dict[str, Any] = {**key.context, "tokens": tokens, "guard": guard, "api": "openai"}
        if key.workflow is not None:
            context.setdefault("workflow", key.workflow)
        if key.team is not None:
            context.setdefault("team", key.team)
        request = {"principal": principal, "action": "invoke", "resource": {"kind": "model", "id": model},
                   "data": dict(key.data), "context": context}
        if self.options.model_versions is None:
            return request, None
        return self.options.model_versions(active.policy, request)

    def _screen(self, texts: list[str], call: Call, where: str) -> list[g.Screening]:
        """Run the detectors; a detector that raises or overruns its time budget fails the call closed."""
        started = time.perf_counter()
        try:
            seen: dict[str, g.Screening] = {}  # a body repeats "role", "user", "content": screened once each
            found = [seen[t] if t in seen else seen.setdefault(t, g.screen(t, self.config.guards)) for t in texts]
        except Exception as error:  # noqa: BLE001 - fail closed, say why
            call.guard[f"{where}_failed"] = f"{type(error).__name__}: {error}"
            raise GatewayError(503, f"{where} guard failed ({type(error).__name__}); the call is refused",
                               "guard_failed", rule="<guard>") from None
        spent = time.perf_counter() - started
        if spent > self.config.guards.timeout_s:
            call.guard[f"{where}_failed"] = f"timeout after {spent * 1000:.1f} ms"
            raise GatewayError(503, f"{where} guard took {spent * 1000:.0f} ms, over its "
                                    f"{self.config.guards.timeout_s * 1000:.0f} ms budget; the call is refused",
                               "guard_failed", rule="<guard>")
        return found

    def _limit(self, active: ActivePolicy, call: Call, key: VirtualKey, tokens: float) -> None:
        """Count the call against the key's and team's limits and the ``limit`` clauses of the rules that
        allowed its first allowed model (``traffic``): all or nothing; 429 with ``Retry-After``."""
        counters = traffic.key_counters(key, self.teams)
        allowed = next((d for d in call.decisions if d.get("effect") == "allow"), None)
        if allowed is not None and active.policy.compiled.rate_limits:
            counters += traffic.rule_counters(active.policy.compiled, allowed["rules"], key, allowed["model"])
        try:
            call.counted = traffic.acquire(self.limiter, counters, tokens)
        except traffic.Refused as refused:
            raise GatewayError(429, str(refused), "rate_limited", rule=refused.counter.rule,
                               headers=[(b"retry-after", str(refused.retry_after).encode())]) from None

    def _refusal(self, active: ActivePolicy, decisions: list[dict[str, Any]]) -> GatewayError:
        """The error for a call whose every candidate model the policy refused (first candidate's reasons)."""
        first = decisions[0]
        reasons = first["reasons"]
        rule = reasons[0]["rule"] if reasons else None
        residency = {r.id for r in active.policy.compiled.residencies}
        budgets = {b.id for b in active.policy.compiled.budgets}
        why = "; ".join(r["message"] for r in reasons) or "denied"
        if first["effect"] == "escalate":
            approvals = [o for o in first["obligations"] if o.get("kind") == "approval_required"]
            return GatewayError(403, f"needs approval: {why}", "approval_required", rule=rule, reasons=reasons,
                                extra={"approvals": approvals})
        if any(r["rule"] in residency for r in reasons):
            return GatewayError(451, f"data residency: {why}", "residency", rule=rule, reasons=reasons)
        if any(r["rule"] in budgets for r in reasons):
            return GatewayError(429, f"budget exhausted: {why}", "budget_exhausted", rule=rule, reasons=reasons)
        return GatewayError(403, f"denied by policy: {why}", "policy_denied", rule=rule, reasons=reasons)

    def _candidates(self, active: ActivePolicy, key: VirtualKey, model: str, tokens: float,
                    guard: dict[str, Any], call: Call) -> list[tuple[str, dict[str, Any]]]:
        """The allowed models for a call to ``model``, in order: the model, then its fallbacks.

        Like a policy ``route``: denied models are skipped (rerouted), and when the first model
        not denied needs an approval, the call gets 403 naming it rather than a way around the gate.
        """
        compiled = active.policy.compiled
        if model not in compiled.registry and model not in self.upstreams:
            names = self._routed(compiled, model)
        else:
            fallbacks = self.upstreams[model].fallbacks if model in self.upstreams else ()
            names = [model, *(f for f in fallbacks if f != model)]
        allowed: list[tuple[str, dict[str, Any]]] = []
        first_refusal: dict[str, Any] | None = None
        for name in names:
            request, used = self._request(active, key, name, tokens, guard)
            # read from the Decision; dumped to a dict (pydantic, ~40 µs) only for a refusal's error body
            decision = active.policy.evaluate(request)
            decided = {"model": name, "effect": decision.effect, "rules": [r.rule for r in decision.reasons]}
            if used is not None:
                call.versions[name] = decided["model_version"] = used
            call.decisions.append(decided)
            if decision.effect == "allow":
                allowed.append((name, request))
            elif decision.effect == "escalate" and not allowed:
                refusal = self._refusal(active, [decision.to_dict()])  # as a route: the first model not denied decides
                refusal.escalated = (name, request)
                raise refusal
            elif first_refusal is None:
                first_refusal = decision.to_dict()
        if not allowed:
            raise self._refusal(active, [first_refusal])  # type: ignore[list-item]
        return allowed

    def _routed(self, compiled: Any, name: str) -> list[str]:
        """The models a call naming the route ``name`` tries, in order (``traffic.route_models``)."""
        route = traffic.find_route(compiled, name)
        if route is None:
            raise GatewayError(404, f"the model {name!r} does not exist (neither a declared model nor a route)",
                               "model_not_found")
        names = list(traffic.route_models(route, compiled, self.latency.values))
        if not names:
            raise GatewayError(403, f"route {route.id}: no candidate model is within its bounds",
                               "policy_denied", rule=route.id)
        return names

    async def _admitted(self, active: ActivePolicy, key: VirtualKey, model: str, tokens: float,
                        guard: dict[str, Any], call: Call) -> list[tuple[str, dict[str, Any]]]:
        """The candidates; with ``hold_for_approval``, a call held by one gate waits for its approval."""
        try:
            return self._candidates(active, key, model, tokens, guard, call)
        except GatewayError as error:
            gates = error.extra.get("approvals") or []
            if error.escalated is None or self.config.hold_for_approval <= 0 or len(gates) != 1:
                raise
            return [await self._hold(active, call, error, gates[0])]

    async def _hold(self, active: ActivePolicy, call: Call, error: GatewayError,
                    gate: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Wait (bounded) for an approver; the model and its request with the approval, or raise."""
        assert error.escalated is not None
        model, request = error.escalated
        limit = self.config.hold_for_approval
        if isinstance(gate.get("deadline_seconds"), (int, float)):
            limit = min(limit, float(gate["deadline_seconds"]))
        held = self.desk.open(gate["gate"], gate["role"], model, request)
        call.decisions.append({"model": model, "stage": "held", "id": held.id, "gate": held.gate})
        try:
            decided = await holds.wait(held, limit)
        finally:
            self.desk.close(held)
        if not decided:
            raise GatewayError(403, f"{error}; not approved within {limit:g} s (held as {held.id})",
                               "approval_required", rule=error.rule, reasons=error.reasons, extra=error.extra)
        if held.rejected_by is not None or held.approved is None:
            raise GatewayError(403, f"approval of {held.gate} rejected by {held.rejected_by}", "approval_rejected",
                               rule=held.gate)
        decision = active.policy.evaluate(held.approved, directory=held.directory).to_dict()
        call.decisions.append({"model": model, "stage": "approved", "effect": decision["effect"],
                               "rules": [r["rule"] for r in decision["reasons"]]})
        if decision["effect"] != "allow":
            raise self._refusal(active, [decision])
        call.approved_gates.add(held.gate)
        return model, held.approved

    def _roles(self, active: ActivePolicy, key: VirtualKey) -> set[str]:
        """The roles a key approves held calls with: a person's, never an agent's (an escalation gate asks a
        person; an agent key's roles are a claim the policy does not grant it, as its own calls show)."""
        if key.principal.get("type") == "agent":
            return set()
        closure = active.policy.compiled.role_closure
        return {r for role in key.principal.get("roles") or () for r in closure.get(role, (role,))}

    async def list_approvals(self, exchange: Exchange) -> Response:
        """The held calls the caller may approve (its key's principal holds the gate's role)."""
        active = self.holder.active
        if active is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        key = self._caller(exchange, Call(route="approvals"))
        data = self.desk.visible_to(self._roles(active, key))
        return Response(200, json.dumps({"object": "list", "data": data}).encode())

    async def decide_approval(self, exchange: Exchange) -> Response:
        """``{"id", "decision": "approve"|"reject"}`` by a holder of the gate's role; recorded before the answer."""
        active = self.holder.active
        if active is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        key = self._caller(exchange, Call(route="approvals"))
        body = _json_body(exchange)
        if not isinstance(body, dict) or body.get("decision") not in ("approve", "reject"):
            raise GatewayError(400, 'body must be {"id": ..., "decision": "approve" | "reject"}', "invalid_request")
        held = self.desk.held.get(body.get("id")) if isinstance(body.get("id"), str) else None
        if held is None:
            raise GatewayError(404, "no call is held with this id (decided, timed out, or never held)", "not_found")
        if held.role not in self._roles(active, key):
            raise GatewayError(403, f"approving {held.gate} needs role {held.role}", "policy_denied", rule=held.gate)
        approver = str(key.principal["id"])
        outcome = "rejected" if body["decision"] == "reject" else "approved"
        if outcome == "approved":
            request = holds.ApprovalDesk.approval(held, approver)
            try:  # the engine looks approvers up by their canonical id
                directory = {canonical_identity(approver): list(key.principal.get("roles") or ())}
            except IdentityError as error:
                raise GatewayError(403, f"approver: {error}", "approval_not_accepted", rule=held.gate) from None
            decision = active.policy.evaluate(request, directory=directory)
            if decision.effect != "allow":  # still gated, or denied by rules loaded since the call was held
                why = "; ".join(r.message for r in decision.reasons)
                raise GatewayError(403, f"this approval does not open the gate: {why}", "approval_not_accepted",
                                   rule=decision.reasons[0].rule if decision.reasons else held.gate,
                                   reasons=[r.model_dump() for r in decision.reasons])
            held.approved, held.directory = request, directory
        else:
            held.rejected_by = approver
        payload = {"gate": held.gate, "requester": held.requester, "approver": approver, "outcome": outcome,
                   "role": held.role, "model": held.model, "held_id": held.id,
                   "request_hash": holds.request_hash(held.request)}
        try:
            seq = self.audit.append("approval", payload, actor=approver, policy_hash=active.policy_hash)
            await self.audit.durable(seq)
        except AuditError as error:
            raise GatewayError(503, f"approval not recorded, so not applied: {error}", "audit_unavailable") from None
        held.done.set()
        return Response(200, json.dumps({"id": held.id, "outcome": outcome, "audit_seq": seq}).encode())

    async def _on_ledger(self, function: Callable[..., Any], *args: Any) -> Any:
        if self._ledger_pool is None:
            return function(self.ledger, *args)
        return await asyncio.get_running_loop().run_in_executor(self._ledger_pool, function, self.ledger, *args)

    async def _settle(self, hold: Hold, tokens: float, cost: float) -> None:
        await self._on_ledger(settle, hold, tokens, cost)

    async def _charge(self, call: Call, hold: Hold, tokens: float, cost: float) -> None:
        """Settle a call the upstream may have done; never raises. A settle that fails (the ledger unreachable
        after the PostgreSQL pool's one retry) keeps the hold, never releases it: the call happened, and a hold
        nobody settles is charged at its estimate when it expires. The call's record notes ``charge_error``."""
        try:
            await self._settle(hold, tokens, cost)
        except Exception as error:  # noqa: BLE001 - the call happened: record it and answer, the hold stays
            call.charge_error = (f"{type(error).__name__}: {error}; the hold stays and is charged at its estimate "
                                 "when it expires")

    @staticmethod
    def _internal(error: Exception) -> GatewayError:
        """The answer to an unexpected error, recorded like any refusal: shared state down is 503."""
        if isinstance(error, StoreError):
            return GatewayError(503, f"shared state unavailable: {error}", "state_unavailable")
        return GatewayError(500, f"internal error: {type(error).__name__}: {error}", "internal_error")

    async def _release(self, hold: Hold) -> None:
        await self._on_ledger(release, hold)

    async def _reserve(self, active: ActivePolicy, request: dict[str, Any], model: str, tokens: float) -> Hold:
        reg = active.policy.compiled.registry.get(model) or {}
        cost = tokens * float(reg.get("cost_per_1m_tokens", 0)) / 1_000_000
        budgets = active.policy.budgets_for(request)
        if not budgets:
            return Hold(())
        hold = await self._on_ledger(reserve, budgets, tokens, cost, reg.get("currency"))
        if hold.refused_by is not None:
            raise GatewayError(429, f"budget {hold.refused_by} has no room for this call's estimate of "
                                    f"{tokens:g} tokens ({hold.refused_unit})", "budget_exhausted",
                               rule=hold.refused_by)
        return hold

    def _price(self, active: ActivePolicy, model: str, tokens: float) -> float:
        reg = active.policy.compiled.registry.get(model) or {}
        return round(tokens * float(reg.get("cost_per_1m_tokens", 0)) / 1_000_000, 10)

    # -- audit -----------------------------------------------------------------------------------

    def _append(self, call: Call, active: ActivePolicy | None) -> int:
        payload: dict[str, Any] = {
            "model": call.model, "requested_model": call.requested, "provider": call.provider,
            "tokens": int(call.tokens), "cost_usd": call.cost, "latency_ms": round(call.latency_ms, 3),
            "status": call.status, "http_status": call.http_status, "route": call.route, "stream": call.stream,
            "key": call.key_hash, "team": call.key.team if call.key else None, "decisions": call.decisions,
            "guard": call.guard, "usage": call.usage, "attempts": call.attempts, "rule": call.rule,
            "prompt_sha256": call.prompt_sha256, "response_sha256": call.response_sha256, "outcome": call.status,
        }
        if call.model in call.versions:  # the version of the model actually called (after routing and fallback)
            payload["model_version"] = call.versions[call.model]
        if call.error:
            payload["error"] = call.error
        if call.charge_error:
            payload["charge_error"] = call.charge_error
        if call.limit_error:
            payload["limit_error"] = call.limit_error
        if self.config.audit_prompts == "masked":
            payload["prompt_masked"] = call.prompt_masked
            payload["response_masked"] = call.response_masked
        actor = call.key.principal.get("id") if call.key else None
        return self.audit.append("model_call", payload, actor=actor,
                                 workflow=call.key.workflow if call.key else None,
                                 policy_hash=active.policy_hash if active else None)

    async def _audit_call(self, call: Call, active: ActivePolicy | None) -> int:
        """Append the call's record and wait until it is durable; a log that cannot take it fails the call."""
        try:
            seq = self._append(call, active)
            call.recorded = True
            await self.audit.durable(seq)
        except AuditError as error:
            raise GatewayError(503, f"call not recorded, so not answered: {error}", "audit_unavailable") from None
        return seq

    async def _fail(self, call: Call, active: ActivePolicy | None, error: GatewayError) -> GatewayError:
        call.http_status = error.status
        call.status = {401: "unauthenticated", 429: "limited", 451: "denied", 403: "denied", 503: "blocked",
                       502: "error", 504: "timeout", 500: "error"}.get(error.status, "rejected")
        if error.code in ("state_unavailable", "cut_off"):
            call.status = "error"
        call.error = str(error)
        call.rule = error.rule
        error.audit_seq = await self._audit_call(call, active)
        return error

    # -- routes ----------------------------------------------------------------------------------

    def _begin(self, exchange: Exchange, call: Call, active: ActivePolicy | None) -> tuple[VirtualKey, dict[str, Any]]:
        """What every model route checks first, in this order: a policy is loaded, the key is known, the body
        names a model."""
        if active is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        key = self._caller(exchange, call)
        body = self._body(exchange)
        call.requested = body["model"]
        return key, body

    def _screen_prompt(self, texts: list[str], call: Call, messages: Sequence[Sequence[str]] = ()
                       ) -> tuple[list[g.Screening], dict[str, Any], g.Screening | None]:
        """Screen the prompt's texts; the merged findings go to the policy request and the audit record.

        ``messages`` (each message's content texts, its parts in order; each one of ``texts``) are screened
        joined as well, by a line break (as the audit record's ``prompt_masked`` shows them) and directly,
        every part of every message end to end, for what is written across messages or across the parts of
        one (``Ignore all previ`` / ``ous instructions``, ``jane.doe@`` / ``example.com``): it counts for the
        decision, and a masked entity found only there (no part's own finding of its type overlaps it) is
        refused, since no single string holds it to redact.
        The screening of the line-break join comes back third, holding every finding of the conversation
        (its own, the end-to-end join's and each part's, placed in it), so that masking it leaves none.
        """
        joined = ["\n".join("\n".join(parts) for parts in messages),
                  "".join(text for parts in messages for text in parts)] if messages else []
        found = self._screen([*texts, *joined], call, "prompt")
        guard = call.guard["prompt"] = g.merge(found)
        if not joined:
            return found, guard, None
        found, (lines, end_to_end) = found[:len(texts)], found[len(texts):]
        conversation, across = _conversation(lines, end_to_end, messages, dict(zip(texts, found, strict=True)),
                                             self.config.guards.mask)
        if across:
            raise GatewayError(400, f"{', '.join(sorted(across))} is written across messages or content parts, "
                                    "so it cannot be masked; send it in one string", "invalid_request",
                               rule="<guard>")
        return found, guard, conversation

    def _redacted(self, body: dict[str, Any], leaves: list[tuple[g.Path, str]],
                  found: list[g.Screening]) -> dict[str, Any]:
        """``body`` with the configured types masked in every string ``leaves`` names (screened: ``found``)."""
        return g.replace_texts(body, _masks(leaves, found, g.masker(self.config.guards)))

    def _body(self, exchange: Exchange) -> dict[str, Any]:
        body = _json_body(exchange)
        if not isinstance(body, dict):
            raise GatewayError(400, "body must be a JSON object", "invalid_request")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "model: required, the name of a declared model", "invalid_request")
        chooses = sorted(UPSTREAM_CHOICES.intersection(body))
        if chooses:
            raise GatewayError(400, f"{', '.join(chooses)}: the policy decides which model serves and where; a "
                                    "field that lets the upstream choose another is refused", "invalid_request")
        return body

    async def chat_completions(self, exchange: Exchange) -> Any:
        call = Call(route="chat.completions")
        active = self.holder.active
        try:
            key, body = self._begin(exchange, call, active)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise GatewayError(400, "messages: required, a non-empty list of message objects", "invalid_request")
            call.stream = bool(body.get("stream"))
            answers = 1 if body.get("n") is None else body["n"]
            if not isinstance(answers, int) or isinstance(answers, bool) or answers < 1:
                raise GatewayError(400, "n: a positive integer (how many answers)", "invalid_request")
            if call.stream and answers > 1:
                raise GatewayError(400, "n: a stream is screened as one answer; ask for n > 1 without stream",
                                   "invalid_request")
            contents = [_message_parts(m.get("content")) for m in messages]
            prompt = "\n".join("\n".join(parts) for parts in contents)
            call.prompt_sha256 = _sha(prompt)
            leaves = g.texts_of(body)
            found, guard, conversation = self._screen_prompt([t for _, t in leaves], call, contents)
            if self.config.audit_prompts == "masked" and conversation is not None:  # every finding, as read
                call.prompt_masked = g.mask(prompt, conversation.findings)
            if guard["masked"]:
                body = self._redacted(body, leaves, found)
                prompt = "\n".join(_message_text(m.get("content")) for m in body["messages"])  # as sent
            max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
            upstream = self.upstreams.get(call.requested)
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                max_tokens = upstream.max_tokens if upstream else 512
            # all the text that goes upstream, and every answer asked for: n answers of max_tokens each
            estimate = estimate_tokens("\n".join(t for p, t in leaves if p[-1] != g.KEY)) + max_tokens * answers
            candidates = await self._admitted(active, key, call.requested, estimate, guard, call)
            self._limit(active, call, key, estimate)
            body = {**body, "max_tokens": max_tokens}
            body.pop("max_completion_tokens", None)
            if call.stream:
                return await self._chat_stream(active, call, candidates, body, estimate, prompt, max_tokens)
            return await self._chat_once(active, call, candidates, body, estimate, prompt, max_tokens)
        except GatewayError as error:
            raise await self._fail(call, active, error) from None
        except Exception as error:  # noqa: BLE001 - recorded like a refusal: the call may have reached the upstream
            raise await self._fail(call, active, self._internal(error)) from error
        except asyncio.CancelledError:  # the gateway stopping: the call may have reached the upstream
            await self._stopped(call, active)
            raise

    async def _chat_once(self, active: ActivePolicy, call: Call, candidates: list[tuple[str, dict[str, Any]]],
                         body: dict[str, Any], estimate: float, prompt: str, max_tokens: int) -> Response:
        model, request, answer = await self._answer(
            active, call, candidates, estimate, "/chat/completions", body,
            lambda model: self.simulator.chat(model, prompt, max_tokens))
        text = ""
        try:
            text = answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            pass
        finish = None
        try:
            finish = answer["choices"][0].get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
        main = ("choices", 0, "message", "content")
        # the whole answer is screened (every choice, tool-call arguments, refusals), the first text as the answer
        others = [(p, t) for p, t in g.texts_of(answer) if p != main]
        found = self._screen_response(active, call, request, text, finish, [t for _, t in others])
        if any(s.masked for s in found):
            try:
                answer = _respelled(self._redacted(answer, [(main, text), *others], found))
            except GatewayError as error:
                raise GatewayError(502, f"answer withheld: {error}", "response_blocked", rule="<guard>") from None
        answer["model"] = model
        seq = await self._audit_call(call, active)
        headers = [(b"x-audit-seq", str(seq).encode()), (b"x-policyengine-model", model.encode())]
        return Response(200, json.dumps(answer).encode(), headers=headers, note={"audit_seq": seq, "model": model})

    async def _answer(self, active: ActivePolicy, call: Call, candidates: list[tuple[str, dict[str, Any]]],
                      estimate: float, path: str, body: dict[str, Any],
                      simulate: Callable[[str], dict[str, Any]]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A whole answer from the first allowed model whose upstream answers (``path`` on it, or ``simulate``).

        Each try holds the model's budget for the estimate and gives it back if the
        call did not happen (upstream error: the next model is tried); the answer's
        usage settles the budget and the token rate limits. Returns (model, its
        policy request, answer); ``GatewayError`` when every model failed upstream.
        """
        last: UpstreamError | None = None
        for model, request in candidates:
            hold = await self._reserve(active, request, model, estimate)
            upstream = self.upstreams.get(model)
            started = time.perf_counter()
            try:
                if upstream is None or upstream.base_url is None:
                    answer = simulate(model)
                    call.provider = "simulator"
                else:
                    answer = (await self.client.post(upstream, path, body)).body
                    call.provider = upstream.base_url
            except UpstreamError as error:
                call.attempts.append(await self._unanswered(active, call, hold, model, estimate, error))
                last = error
                continue
            except BaseException as error:  # cancelled (the gateway stopping) or unexpected: the call may be done
                call.attempts.append(await self._cut_off(active, call, hold, model, estimate, upstream, error))
                raise
            call.latency_ms = (time.perf_counter() - started) * 1000
            if call.provider != "simulator":
                self.latency.record(model, call.latency_ms)
            call.model = model
            usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
            call.usage = usage
            call.tokens, refused = charged_tokens(usage, estimate)
            call.attempts.append({"model": model, "status": 200, **({"usage_refused": refused} if refused else {})})
            call.cost = self._price(active, model, call.tokens)
            await self._charge(call, hold, call.tokens, call.cost)
            self._limit_settle(call, estimate)
            return model, request, answer
        assert last is not None
        raise GatewayError(last.status, f"every allowed model failed upstream: {last}", "upstream_error")

    async def _unanswered(self, active: ActivePolicy, call: Call, hold: Hold, model: str, estimate: float,
                          error: UpstreamError) -> dict[str, Any]:
        """End the hold of a try the upstream did not answer usably, and its attempt record: given back when
        nothing was done upstream, charged at the estimate when it may have been (``error.spent``)."""
        attempt: dict[str, Any] = {"model": model, "status": error.status, "error": str(error)}
        if error.spent:
            await self._charge(call, hold, estimate, self._price(active, model, estimate))
            attempt["charged_tokens"] = estimate
        else:
            await self._release(hold)
        return attempt

    async def _cut_off(self, active: ActivePolicy, call: Call, hold: Hold, model: str, estimate: float,
                       upstream: Upstream | None, error: BaseException) -> dict[str, Any]:
        """End the hold of a try cut off by something other than the upstream's answer: the task cancelled
        while the request was out (the gateway stopping) or an unexpected error. A request that may have
        reached an upstream is charged at its estimate (the work may be done and billed); the simulator's
        is given back."""
        sent = upstream is not None and upstream.base_url is not None
        why = f"{model}: call cut off ({type(error).__name__}{f': {error}' if str(error) else ''})"
        return await self._unanswered(active, call, hold, model, estimate, UpstreamError(502, why, spent=sent))

    async def _stopped(self, call: Call, active: ActivePolicy | None) -> None:
        """Record a call the gateway's shutdown cancelled before it was recorded; never raises. Its record is
        appended at once (the log's close commits it), its durable wait may be cut off in turn."""
        if call.recorded:
            return
        try:
            await self._fail(call, active, GatewayError(503, "the gateway stopped before the call was answered",
                                                        "cut_off"))
        except BaseException:  # noqa: BLE001 - the cancellation is what goes on; the record is appended
            pass

    def _limit_settle(self, call: Call, estimate: float) -> None:
        """Correct the tokens counted against the rate limits from the estimate to the actual usage; never
        raises. The limits already counted the estimate at admission, so a limiter that fails now (Redis down)
        leaves that count and the call's record notes ``limit_error``: the call happened and is recorded."""
        try:
            traffic.correct_tokens(self.limiter, call.counted, call.tokens)
        except Exception as error:  # noqa: BLE001 - the call happened: record it and answer
            call.limit_error = f"{type(error).__name__}: {error}; the estimate stays counted"

    def _screen_response(self, active: ActivePolicy, call: Call, request: dict[str, Any], text: str,
                         finish: str | None = None, others: Sequence[str] = ()) -> list[g.Screening]:
        """Screen a whole answer (``text``, and the ``others`` strings that go back with it), decide it again
        with ``context.guard.response``; each text's screening, for masking."""
        found = self._screen([text, *others], call, "response")
        call.response_sha256 = _sha(text)
        if self.config.audit_prompts == "masked":
            call.response_masked = g.mask(text, found[0].findings)
        merged = g.merge(found)
        response = {"pii": merged["pii"], "secrets": merged["secrets"], "masked": merged["masked"],
                    "quality": response_quality(text, finish)}
        if "toxicity" in merged:
            response["toxicity"] = merged["toxicity"]
        self._decide_response(active, call, request, response)
        return found

    def _decide_response(self, active: ActivePolicy, call: Call, request: dict[str, Any],
                         response_guard: dict[str, Any]) -> None:
        """Decide the call again with ``context.guard.response``; raise ``GatewayError`` when the answer is refused."""
        call.guard["response"] = response_guard
        context = dict(request["context"])
        context["guard"] = {**context["guard"], "response": response_guard}
        context["tokens"] = 0  # the call was admitted and its budget held: this stage decides the content only
        content = {k: v for k, v in request.items() if k != "approvals"}  # an approval binds the admitted request
        decided_by = active.policy.evaluate({**content, "context": context})
        decided = {"model": call.model, "stage": "response", "effect": decided_by.effect,
                   "rules": [r.rule for r in decided_by.reasons]}
        if call.model in call.versions:
            decided["model_version"] = call.versions[call.model]
        call.decisions.append(decided)
        if decided_by.effect == "allow":
            return
        decision = decided_by.to_dict()  # a refusal: its reasons go into the error body
        gates = {o.get("gate") for o in decision["obligations"] if o.get("kind") == "approval_required"}
        if decision["effect"] == "escalate" and gates and gates <= call.approved_gates:
            return  # the gate an approver opened for this call holds again: its content is not the question
        if decision["effect"] != "allow":
            reasons = decision["reasons"]
            raise GatewayError(403, "response withheld by policy: " + "; ".join(r["message"] for r in reasons),
                               "response_blocked", rule=reasons[0]["rule"] if reasons else None, reasons=reasons)

    async def _chat_stream(self, active: ActivePolicy, call: Call, candidates: list[tuple[str, dict[str, Any]]],
                           body: dict[str, Any], estimate: float, prompt: str,
                           max_tokens: int) -> tuple[Response, AsyncIterator[bytes]]:
        from .streaming import stream_chat

        return await stream_chat(self, active, call, candidates, body, estimate, prompt, max_tokens)

    async def embeddings(self, exchange: Exchange) -> Response:
        call = Call(route="embeddings")
        active = self.holder.active
        try:
            key, body = self._begin(exchange, call, active)
            inputs = body.get("input")
            if isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
                raise GatewayError(400, "input: required, a string or a list of strings", "invalid_request")
            call.prompt_sha256 = _sha("\n".join(inputs))
            leaves = g.texts_of(body)
            found, guard, _ = self._screen_prompt([t for _, t in leaves], call)
            if guard["masked"]:
                body = self._redacted(body, leaves, found)
                inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
            estimate = sum(estimate_tokens(t) for t in inputs)
            candidates = await self._admitted(active, key, call.requested, estimate, guard, call)
            self._limit(active, call, key, estimate)
            model, _, answer = await self._answer(active, call, candidates, estimate, "/embeddings", body,
                                                  lambda model: self.simulator.embeddings(model, inputs))
            answer["model"] = model
            seq = await self._audit_call(call, active)
            return Response(200, json.dumps(answer).encode(), headers=[(b"x-audit-seq", str(seq).encode())],
                            note={"audit_seq": seq, "model": model})
        except GatewayError as error:
            raise await self._fail(call, active, error) from None
        except Exception as error:  # noqa: BLE001 - recorded like a refusal: the call may have reached the upstream
            raise await self._fail(call, active, self._internal(error)) from error
        except asyncio.CancelledError:  # the gateway stopping: the call may have reached the upstream
            await self._stopped(call, active)
            raise

    async def list_models(self, exchange: Exchange) -> Response:
        """The declared models the caller's policy lets it call (decided now, not recorded: no call is made)."""
        active = self.holder.active
        if active is None:
            raise GatewayError(503, "no policy loaded", "not_ready")
        key = self._caller(exchange, Call(route="models"))
        data = []
        for name, reg in active.policy.compiled.registry.items():
            decision = active.policy.evaluate(self._request(active, key, name, 1, g.merge([]))[0])
            if decision.effect == "allow":
                data.append({"id": name, "object": "model", "created": 0, "owned_by": reg.get("provider") or "local"})
        return Response(200, json.dumps({"object": "list", "data": data}).encode())
