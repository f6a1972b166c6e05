"""The decision service as one lean ASGI application (no framework: a route table and JSON).

Every decision is appended to the audit log and awaited durable (group commit,
``audit_writer``) before its answer is sent; if the log cannot take it, the
answer is 503 and never a decision. Bodies that are not the request a route
expects get 400 naming every problem; a malformed request is still decided
(deny, audited) so the log shows what was asked.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..approval_signature import signature_errors
from ..audit import AuditError
from ..engine import not_json, read_document, read_items, read_requests, read_value
from ..jsontext import Unreadable
from ..store.holds import NO_HOLD, Hold, hold_from_token, hold_token, release, settle
from . import authzen
from .audit_writer import DurableAudit
from .body import HTTPError, answer_lifespan, check_encoding, header_map, read_body
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .openapi import openapi_document
from .policy_source import ActivePolicy, PolicyHolder

JSON = b"application/json"


NO_DIRECTORY = ("approvals: this server has no user directory to judge approvers by, and does not trust the "
                "roles an approval claims; start it with --directory FILE")


_TOKEN_STATEMENT = b"policyengine reservation v1\n"  # what a reservation token's signature covers, before it


def _ephemeral_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..audit.keys import SigningKey

    return SigningKey.from_key(Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class ServerOptions:
    """What ``policyengine serve`` configures beyond the policy and the log."""

    auth_token: str | None = None  # bearer token every route but /health and /ready needs
    max_body: int = 1 << 20  # bytes; larger bodies get 413 unread
    body_timeout: float = 10.0  # seconds to receive a whole body
    max_batch: int = 10_000  # requests in one batch
    access_log: bool = True  # one JSON line per request on stderr
    tracer: Any = None  # an OpenTelemetry tracer, when --otel is given
    tls: bool = False  # served over HTTPS (the AuthZEN metadata names https URLs)
    model_versions: Any = None  # models_registry.Resolver: stamps the version a request uses (model_version)
    shadow: Any = None  # server.shadow.Shadow: a candidate policy decided beside the live one (--shadow)
    inbox: Any = None  # the approver inbox (``server.inbox.InboxApp``) mounted at /inbox: its own sign-in
    directory: Mapping[str, Sequence[str]] | None = None  # approver id -> roles (--directory); None: no approvals
    approver_keys: Mapping[str, Any] = field(default_factory=dict)  # approver id -> audit.keys.PublicKey
    token_key: Any = None  # audit.keys.SigningKey sealing reservation tokens (serve: --key, shared by the workers)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] | None = None
    note: dict[str, Any] | None = None  # fields for the access log (audit seq, effect)


def _dumps(value: Any) -> bytes:
    """Compact JSON: orjson (a fifth of ``json.dumps``' time), else ``json`` for what orjson refuses (big ints)."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":")).encode()


def _json(status: int, value: Any, **note: Any) -> Response:
    return Response(status, _dumps(value), note=note or None)


def _amounts(body: dict[str, Any], problems: list[str]) -> dict[str, float]:
    """The ``tokens`` and ``cost`` of a charge (default 0), each a non-negative finite number."""
    amounts: dict[str, float] = {}
    for name in ("tokens", "cost"):
        value = body.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            problems.append(f"{name}: must be a non-negative finite number")
        else:
            amounts[name] = float(value)
    return amounts


def _problem(status: int, message: str, problems: list[str]) -> Response:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return _json(status, body)


Handler = Callable[["Exchange"], Awaitable[Response]]


@dataclass
class Exchange:
    """One HTTP request as the handlers see it."""

    method: str
    path: str
    headers: dict[bytes, bytes]
    body: bytes


class DecisionApp:
    """ASGI app: ``await app(scope, receive, send)``."""

    def __init__(self, holder: PolicyHolder, audit: DurableAudit, metrics: Metrics,
                 options: ServerOptions = ServerOptions()) -> None:
        self.holder = holder
        self.audit = audit
        self.metrics = metrics
        self.options = options
        self._token_key = options.token_key or _ephemeral_key()  # tokens this process alone can open
        self.routes: dict[tuple[str, str], Handler] = {
            ("POST", "/v1/decide"): self.decide,
            ("POST", "/v1/decide/batch"): self.decide_batch,
            ("POST", "/v1/explain"): self.explain,
            ("POST", "/v1/charge"): self.charge,
            ("POST", "/v1/reserve"): self.reserve,
            ("POST", "/v1/release"): self.release,
            ("GET", "/v1/policy"): self.describe_policy,
            ("POST", "/access/v1/evaluation"): self.authzen_evaluation,
            ("POST", "/access/v1/evaluations"): self.authzen_evaluations,
            ("GET", "/.well-known/authzen-configuration"): self.authzen_configuration,
            ("GET", "/health"): self.health,
            ("GET", "/ready"): self.ready,
            ("GET", "/metrics"): self.render_metrics,
            ("GET", "/openapi.json"): self.openapi,
        }
        self.open_routes = {"/health", "/ready"}  # answered without the bearer token (probes)
        self._paths = {path for _, path in self.routes}
        self._latency = {path: metrics.latency.labels(path) for path in self._paths}
        self._log_lines: list[str] = []  # access-log lines not yet written (``_log_line``)

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.options.inbox is not None and self.options.inbox.mounts(scope["path"]):
            await self.options.inbox(scope, receive, send)  # signs approvers in itself; not the bearer token
            return
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        headers = header_map(scope["headers"])
        try:
            response = await self._respond(method, path, headers, receive)
        except HTTPError as error:
            response = _problem(error.status, str(error), error.problems)
            response.headers = error.headers
        except Exception as error:  # noqa: BLE001 - one line to the client, never a traceback, never an allow
            response = _problem(500, f"internal error: {type(error).__name__}: {error}", [])
        request_id = headers.get(b"x-request-id")
        extra = list(response.headers or [])
        if request_id is not None:
            extra.append((b"x-request-id", request_id))
        await send({
            "type": "http.response.start",
            "status": response.status,
            "headers": [(b"content-type", response.content_type), (b"content-length", str(len(response.body)).encode()),
                        *extra],
        })
        await send({"type": "http.response.body", "body": response.body})
        self._observe(scope, headers, response, started)

    def _observe(self, scope: dict[str, Any], headers: dict[bytes, bytes], response: Response, started: float) -> None:
        """Count one answered request in the metrics and write its JSON access-log line (the gateway's too)."""
        method, path = scope["method"], scope["path"]
        elapsed = time.perf_counter() - started
        route = path if path in self._paths else "<other>"
        self.metrics.answered(route, response.status)
        if route in self._latency:
            self._latency[route].observe(elapsed)
        if self.options.access_log:
            entry = {"ts": datetime.now().astimezone().isoformat(timespec="milliseconds"), "method": method,
                     "path": path, "status": response.status, "ms": round(elapsed * 1000, 3),
                     "client": (scope.get("client") or ("", 0))[0],
                     "bytes_in": int(headers.get(b"content-length", 0) or 0)}
            if response.note:
                entry.update(response.note)
            request_id = headers.get(b"x-request-id")
            if request_id is not None:
                entry["request_id"] = request_id.decode("latin-1")
            self._log_line(_dumps(entry).decode() + "\n")

    def _log_line(self, line: str) -> None:
        """Queue one access-log line; the lines of one turn of the event loop go to stderr in one write."""
        if not self._log_lines:
            try:
                asyncio.get_running_loop().call_soon(self._write_log)
            except RuntimeError:  # no loop (called from a test): write now
                sys.stderr.write(line)
                return
        self._log_lines.append(line)

    def _write_log(self) -> None:
        lines, self._log_lines = self._log_lines, []
        sys.stderr.write("".join(lines))

    async def _respond(self, method: str, path: str, headers: dict[bytes, bytes], receive: Any) -> Response:
        handler = self.routes.get((method, path))
        if handler is None:
            if path in self._paths:
                allowed = ", ".join(m for m, p in self.routes if p == path)
                raise HTTPError(405, f"{method} not allowed on {path} (use {allowed})",
                                headers=[(b"allow", allowed.encode())])
            raise HTTPError(404, f"no route {path}")
        if self.options.auth_token is not None and path not in self.open_routes:
            self._authenticate(headers)
        body = await self._read_body(headers, receive) if method == "POST" else b""
        return await handler(Exchange(method, path, headers, body))

    def _authenticate(self, headers: dict[bytes, bytes]) -> None:
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        expected = self.options.auth_token
        assert expected is not None
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), expected.encode()):
            raise HTTPError(401, "missing or wrong bearer token", headers=[(b"www-authenticate", b"Bearer")])

    async def _read_body(self, headers: dict[bytes, bytes], receive: Any) -> bytes:
        check_encoding(headers)
        return await read_body(headers, receive, self.options.max_body, self.options.body_timeout)

    # -- parsing ---------------------------------------------------------------

    @staticmethod
    def _text(body: bytes) -> str:
        if not body.strip():
            raise HTTPError(400, "bad request body", ["body: empty; send a JSON object"])
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as error:
            problem = f"body: not UTF-8 ({error.reason} at byte {error.start})"
            raise HTTPError(400, "bad request body", [problem]) from None

    def _one_object(self, body: bytes) -> tuple[Any, str | None]:
        """The single JSON object the body holds, or (what it holds, why unusable) for a body that is JSON-ish but
        not one object: read as one document (``read_value``), never line by line, never an array's element."""
        text = self._text(body)
        item = read_value(text)
        if item.error is not None and item.request is None:
            values = sum(1 for _ in read_requests(text))  # several values (JSON Lines) get their own 400
            if values > 1:
                raise HTTPError(400, "bad request body", [f"body: holds {values} JSON values; send one object "
                                                          "(several requests go to the batch endpoint)"])
        elif item.error is None and not isinstance(item.request, dict):
            return item.request, f"body: must be a JSON object, not {type(item.request).__name__}"
        return item.request, item.error

    def _only_field(self, body: bytes, name: str, kind: type, shape: str) -> Any:
        """The value of the body's one field ``name`` (a ``kind``), or 400 naming the ``shape`` it must have."""
        value, problem = self._one_object(body)
        if problem is None and (not isinstance(value.get(name), kind) or set(value) != {name}):
            problem = f"body must be {shape}"
        if problem is not None:
            raise HTTPError(400, "bad request body", [problem])
        return value[name]

    # -- deciding --------------------------------------------------------------

    def _active(self) -> ActivePolicy:
        active = self.holder.active
        if active is None:
            raise HTTPError(503, "no policy loaded")
        return active

    def _count(self, decision: dict[str, Any]) -> None:
        reasons = decision["reasons"]
        self.metrics.decided(decision["effect"], reasons[0]["rule"] if reasons else "")

    async def _durable(self, seq: int) -> None:
        try:
            await self.audit.durable(seq)
        except AuditError as error:
            raise HTTPError(503, f"decision not recorded, so not answered: {error}") from None

    def _record(self, request: Any, decision: dict[str, Any]) -> int:
        try:
            return self.audit.record_decision(request, decision)
        except AuditError as error:
            raise HTTPError(503, f"decision not recorded, so not answered: {error}") from None

    def _decide(self, active: ActivePolicy, request: Any, problems: str | list[str] | None,
                decision: Any = None, used: str | None = None) -> tuple[dict[str, Any], int]:
        """Decide (malformed input: deny naming the ``problems``) and append to the log; return the decision and seq.

        The decision comes back as its JSON dict, built once for both the log and the answer.
        """
        policy = active.policy
        if isinstance(problems, str):
            problems = [problems]
        if decision is None and not problems:
            problems = self._unjudged(request)
        if decision is None and problems:
            decision = policy.malformed(problems)
        elif decision is None:
            request, used = self._stamped(policy, request)
            decision = policy.evaluate(request, directory=self.options.directory)
        data = decision.to_dict()
        if used is not None:
            data["model_version"] = used
        tracer = self.options.tracer
        if tracer is None:
            seq = self._record(request, data)
        else:
            with tracer.start_as_current_span("policyengine.decision") as span:
                seq = self._record(request, data)
                span.set_attribute("policyengine.effect", data["effect"])
                span.set_attribute("policyengine.rule", data["reasons"][0]["rule"] if data["reasons"] else "")
                span.set_attribute("policyengine.policy_hash", data["policy_hash"])
                span.set_attribute("policyengine.audit_seq", seq)
        if self.options.shadow is not None and not problems:  # runs once this handler yields: not in the answer's way
            asyncio.get_running_loop().call_soon(self.options.shadow.check, request, data, seq, self._shadow_record,
                                                 self.options.directory)
        return data, seq

    def _stamped(self, policy: Any, request: Any) -> tuple[Any, str | None]:
        """``request`` with the model version its alias names (``--registry``), and that version; as is without."""
        if self.options.model_versions is None:
            return request, None
        return self.options.model_versions(policy, request)

    def _unjudged(self, request: Any) -> list[str] | None:
        """Approvals this server cannot judge, each with why: malformed (a deny naming why), never trusted.

        Without a directory only the request vouches for an approver's roles; with
        one, it says what roles the approver holds but not that they approved, so
        an entry counts only signed by the approver's key in it (``approval_signature``).
        Anyone who can send a request could otherwise open any gate.
        """
        if not isinstance(request, dict) or not request.get("approvals"):
            return None
        if self.options.directory is None:
            return [NO_DIRECTORY]
        return signature_errors(request["approvals"], self.options.directory, self.options.approver_keys) or None

    def _shadow_record(self, payload: dict[str, Any], actor: str | None) -> None:
        self.audit.append("shadow_diff", payload, actor=actor, policy_hash=payload["live"]["policy_hash"] or None)

    async def decide(self, exchange: Exchange) -> Response:
        active = self._active()
        request, problem = self._one_object(exchange.body)
        data, seq = self._decide(active, request, problem)
        await self._durable(seq)
        self._count(data)
        note = {"audit_seq": seq, "effect": data["effect"]}
        if data["errors"]:
            response = _json(400, {"error": "malformed request", "problems": data["errors"], "decision": data,
                                   "audit_seq": seq}, **note)
        else:
            response = _json(200, data, **note)
        response.headers = [(b"x-audit-seq", str(seq).encode())]
        return response

    async def decide_batch(self, exchange: Exchange) -> Response:
        active = self._active()
        text = self._text(exchange.body)
        try:  # the whole body is one array: never read line by line, where a broken array's lines would pass
            values = read_document(text)
        except Unreadable as error:
            raise HTTPError(400, "bad request body", [f"body: {error}"]) from None
        except json.JSONDecodeError as error:
            raise HTTPError(400, "bad request body", [f"body: {not_json(error)}"]) from None
        if not isinstance(values, list):
            raise HTTPError(400, "bad request body", ["body: must be a JSON array of requests"])
        if len(values) > self.options.max_batch:
            raise HTTPError(413, f"batch of {len(values)} requests is over the limit of {self.options.max_batch}")
        items = list(read_items(values, text))
        decisions: list[dict[str, Any]] = []
        seqs: list[int] = []
        for index, item in enumerate(items):
            problem = item.error
            if problem is None and not isinstance(item.request, dict):
                problem = f"must be a JSON object, not {type(item.request).__name__}"
            data, seq = self._decide(active, item.request, f"[{index}]: {problem}" if problem else None)
            decisions.append(data)
            seqs.append(seq)
        if seqs:
            await self._durable(seqs[-1])
        for data in decisions:
            self._count(data)
        return _json(200, {"decisions": decisions, "audit_seqs": seqs}, decisions=len(decisions),
                     audit_seq=seqs[-1] if seqs else None)

    async def explain(self, exchange: Exchange) -> Response:
        active = self._active()
        request, problem = self._one_object(exchange.body)
        trace: tuple[str, ...] = ()
        explained = None
        used = None
        problems = [problem] if problem is not None else self._unjudged(request)
        if not problems:
            request, used = self._stamped(active.policy, request)  # explained as /v1/decide decides it
            explanation = active.policy.explain(request, directory=self.options.directory)
            explained, trace = explanation.decision, explanation.trace
        data, seq = self._decide(active, request, problems, explained, used)
        await self._durable(seq)
        self._count(data)
        answer = {"decision": data, "trace": list(trace), "audit_seq": seq}
        if data["errors"]:  # named as /v1/decide names them
            return _json(400, {"error": "malformed request", "problems": data["errors"], **answer}, audit_seq=seq,
                         effect=data["effect"])
        return _json(200, answer, audit_seq=seq, effect=data["effect"])

    async def reserve(self, exchange: Exchange) -> Response:
        """``{"request": ...}``: decide it and, when allowed, hold its estimate in every budget covering it
        before answering, so concurrent callers cannot all pass one budget check. A request whose hold is
        refused is denied. The answer carries ``reservation``: pass it to ``/v1/charge`` or ``/v1/release``."""
        active = self._active()
        request = self._only_field(exchange.body, "request", dict,
                                   '{"request": {...}} (the request to decide and reserve for)')
        problems = self._unjudged(request)
        decision = None
        hold = NO_HOLD
        used = None
        if not problems:
            request, used = self._stamped(active.policy, request)  # decided as /v1/decide decides it
            decision = active.policy.evaluate(request, directory=self.options.directory)
            if decision.effect == "allow":
                try:
                    hold = active.policy.reserve(request)
                except ValueError as error:
                    raise HTTPError(400, "cannot reserve", [str(error)]) from None
                if hold.refused_by is not None:
                    decision = active.policy.budget_refusal(hold)
        try:
            token = self._sealed(hold) if hold.reservations or hold.unheld else None
            data, seq = self._decide(active, request, problems, decision, used)
            await self._durable(seq)
        except BaseException:  # not recorded or not durable (or the caller left): not answered, nothing stays held
            release(active.policy.ledger, hold)
            raise
        self._count(data)
        status = 400 if data["errors"] else 200
        return _json(status, {"decision": data, "reservation": token, "audit_seq": seq}, audit_seq=seq,
                     effect=data["effect"])

    def _sealed(self, hold: Hold) -> str:
        """``hold`` as the token /v1/reserve answers, signed: a client keeps it, and cannot edit it (a charge
        moved to another month or scope, a release of holds it did not take) or make one up."""
        token = hold_token(hold)
        signature = self._token_key.sign(_TOKEN_STATEMENT + token.encode("ascii"))
        return f"{token}.{base64.urlsafe_b64encode(signature).decode('ascii').rstrip('=')}"

    def _opened(self, sealed: str) -> Hold:
        """The ``Hold`` of a token ``_sealed`` made with this server's key; ``ValueError`` for any other."""
        token, dot, signature = sealed.rpartition(".")
        try:
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            genuine = bool(dot) and self._token_key.public.verify(raw, _TOKEN_STATEMENT + token.encode("ascii"))
        except ValueError:  # not base64, not ASCII
            genuine = False
        if not genuine:
            raise ValueError("not a reservation this server issued (edited, made up, or sealed by another key)")
        return hold_from_token(token)

    async def release(self, exchange: Exchange) -> Response:
        """``{"reservation": ...}``: the call did not happen; give its hold back."""
        active = self._active()
        token = self._only_field(exchange.body, "reservation", str,
                                 '{"reservation": "..."} (as /v1/reserve answered it)')
        try:
            hold = self._opened(token)
        except ValueError as error:
            raise HTTPError(400, "bad release", [f"reservation: {error}; send the one /v1/reserve answered"]) from None
        release(active.policy.ledger, hold)
        return _json(200, {"released": [r.scope_key for r, _ in hold.reservations]})

    async def charge(self, exchange: Exchange) -> Response:
        active = self._active()
        body, problem = self._one_object(exchange.body)
        if problem is not None:
            raise HTTPError(400, "bad request body", [problem])
        if "reservation" in body:
            return self._settle(active, body)
        problems: list[str] = []
        request = body.get("request")
        if not isinstance(request, dict):
            problems.append("request: required, the request (JSON object) the usage was decided for")
        amounts = _amounts(body, problems)
        currency = body.get("currency", "USD")
        if not isinstance(currency, str) or not currency:
            problems.append("currency: must be a non-empty string such as \"USD\"")
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            problems.append("model: must be a non-empty string (the model a route chose)")
        unknown = sorted(set(body) - {"request", "tokens", "cost", "currency", "model"})
        if unknown:
            problems.append(f"unknown fields: {', '.join(unknown)}")
        if problems:
            raise HTTPError(400, "bad charge", problems)
        checked = active.policy.evaluate(request, directory=self.options.directory)
        if checked.errors:
            raise HTTPError(400, "bad charge", [f"request.{e}" for e in checked.errors])
        units = active.policy.budget_currencies(request)
        if amounts["cost"] and units and currency not in units:  # "usd" for USD: spend no budget would read
            raise HTTPError(400, "bad charge", [f"currency: {currency!r} is not the currency of the budgets "
                                                f"covering this request ({', '.join(units)}); the cost would "
                                                "count against none of them"])
        scopes = active.policy.charge(request, tokens=amounts["tokens"], cost=amounts["cost"], currency=currency,
                                      model=model)
        for scope in scopes:
            if amounts["tokens"]:
                self.metrics.spend.labels(scope, "tokens").inc(amounts["tokens"])
            if amounts["cost"]:
                self.metrics.spend.labels(scope, currency).inc(amounts["cost"])
        return _json(200, {"charged": list(scopes), "tokens": amounts["tokens"], "cost": amounts["cost"],
                           "currency": currency})

    def _settle(self, active: ActivePolicy, body: dict[str, Any]) -> Response:
        """``/v1/charge`` of a reservation: charge the real usage where it was held and drop the holds."""
        problems: list[str] = []
        amounts = _amounts(body, problems)
        unknown = sorted(set(body) - {"reservation", "tokens", "cost"})
        if unknown:
            problems.append(f"unknown fields: {', '.join(unknown)} (a reservation's charge goes where it was held)")
        hold = NO_HOLD
        if not isinstance(body["reservation"], str):
            problems.append("reservation: must be the string /v1/reserve answered")
        else:
            try:
                hold = self._opened(body["reservation"])
            except ValueError as error:
                problems.append(f"reservation: {error}; send the one /v1/reserve answered")
        if problems:
            raise HTTPError(400, "bad charge", problems)
        settle(active.policy.ledger, hold, amounts["tokens"], amounts["cost"])
        held = [(r.scope_key, unit) for r, unit in hold.reservations] + list(hold.unheld)
        for scope, unit in held:
            amount = amounts["tokens"] if unit == "tokens" else amounts["cost"]
            if amount:
                self.metrics.spend.labels(scope, unit).inc(amount)
        currency = next((unit for _, unit in held if unit != "tokens"), None)
        return _json(200, {"charged": list(dict.fromkeys(scope for scope, _ in held)), "tokens": amounts["tokens"],
                           "cost": amounts["cost"], "currency": currency})

    # -- AuthZEN ---------------------------------------------------------------

    async def authzen_evaluation(self, exchange: Exchange) -> Response:
        active = self._active()
        body, problem = self._one_object(exchange.body)
        problems = [problem] if problem is not None else []
        request = body
        if not problems:
            request, problems = authzen.to_request(body)  # also when malformed: the log masks our shape
        data, seq = self._decide(active, request, problems)
        await self._durable(seq)
        self._count(data)
        answer = authzen.answer(data, seq)
        if data["errors"] or problems:
            answer = {"error": "bad evaluation request", "problems": problems or list(data["errors"]), **answer}
            return _json(400, answer, audit_seq=seq, effect=data["effect"])
        return _json(200, answer, audit_seq=seq, effect=data["effect"])

    async def authzen_evaluations(self, exchange: Exchange) -> Response:
        active = self._active()
        body, problem = self._one_object(exchange.body)
        if problem is not None:
            raise HTTPError(400, "bad evaluations request", [problem])
        evaluations, semantic, problems = authzen.expand(body)
        if problems:
            raise HTTPError(400, "bad evaluations request", problems)
        answers: list[dict[str, Any]] = []
        last = 0
        for index, evaluation in enumerate(evaluations):
            request, item_problems = authzen.to_request(evaluation, f"evaluations[{index}].")
            data, last = self._decide(active, request, item_problems)
            answers.append(authzen.answer(data, last))
            if semantic == "deny_on_first_deny" and data["effect"] != "allow":
                break
            if semantic == "permit_on_first_permit" and data["effect"] == "allow":
                break
        if answers:
            await self._durable(last)
        for answer in answers:
            self._count({"effect": answer["context"]["effect"], "reasons": answer["context"]["reasons"]})
        return _json(200, {"evaluations": answers}, decisions=len(answers))

    async def authzen_configuration(self, exchange: Exchange) -> Response:
        host = exchange.headers.get(b"host", b"127.0.0.1").decode("latin-1")
        scheme = "https" if self.options.tls else "http"
        forwarded = exchange.headers.get(b"x-forwarded-proto")
        if forwarded:
            scheme = forwarded.decode("latin-1")
        return _json(200, authzen.configuration(f"{scheme}://{host}"))

    # -- about -----------------------------------------------------------------

    async def describe_policy(self, exchange: Exchange) -> Response:
        return _json(200, self._active().describe())

    async def health(self, exchange: Exchange) -> Response:
        return _json(200, {"status": "ok"})

    async def ready(self, exchange: Exchange) -> Response:
        problems = []
        if self.holder.active is None:
            problems.append("no policy loaded")
        if not await asyncio.get_running_loop().run_in_executor(None, self.audit.writable):
            problems.append(f"audit log not writable: {self.audit.failed}")
        if problems:
            return _json(503, {"status": "not ready", "problems": problems})
        active = self.holder.active
        assert active is not None
        return _json(200, {"status": "ready", "policy_hash": active.policy_hash, "audit_size": self.audit.log.size})

    async def render_metrics(self, exchange: Exchange) -> Response:
        return Response(200, self.metrics.render(), METRICS_CONTENT_TYPE.encode())

    async def openapi(self, exchange: Exchange) -> Response:
        return _json(200, openapi_document())
