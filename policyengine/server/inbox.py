"""The approver inbox: a small web page where an approver signs in and approves or rejects waiting runs.

One lean ASGI application, in the style of ``server/app.py`` (a route table, no
framework). Handlers parse, call the library and render; the decision itself is
``Orchestrator.approve`` / ``reject`` inside a ``Session``, exactly what
``policyengine approve`` and ``reject`` run, so four-eyes, the gate's role, the
deadline and the policy the run was started with are enforced by that one code
path, and every decision is signed into the audit log the same way.

Sign-in: the approver pastes a token minted by ``policyengine inbox token``;
the directory beside the database holds only its SHA-256 (``token_sha256``).
The session is a random id in an ``HttpOnly; SameSite=Strict`` cookie, kept in
this process's memory, and it ends when the user's token is re-minted or
removed from the directory. Every POST but sign-in carries the session's CSRF
token; cross-site POSTs are refused by their ``Origin`` / ``Sec-Fetch-Site``
headers too. Pages carry no script and load one stylesheet from this app, under
a Content-Security-Policy that forbids everything else.

DuckDB lets one process open a file for writing and then nobody else may open
it, so the inbox holds the database only while it answers: a page opens it
read-only, a decision opens a ``Session`` and closes it again, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..identity import IdentityError, canonical_identity
from ..network import is_loopback
from ..store.files import packaged_sql
from . import inbox_pages as pages
from .body import HTTPError, answer_lifespan, read_body

SESSION_COOKIE = "pe_inbox"
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
MAX_FORM = 64 * 1024  # bytes of a form body
FORM_TIMEOUT = 30.0  # seconds to send it
MAX_NOTE = 2000  # characters of a comment
MAX_SESSIONS = 1000
MAX_LISTED = 500  # waiting runs read for one page


class InboxError(Exception):
    """A setting or file that keeps the inbox from starting (one line)."""


@dataclass(frozen=True)
class InboxConfig:
    db: Path
    key: Path
    rules: tuple[Path, ...] = ()  # empty: the shipped rules
    mask: Path | None = None
    prefix: str = ""  # where the app is mounted ("" standalone, "/inbox" inside `serve --inbox`)
    session_seconds: float = 8 * 3600
    secure_cookie: bool = False  # add ``Secure`` (served over HTTPS)
    state: str | None = None  # postgresql://...: the runs and approvals (``db`` keeps the inbox's audit log)

    @property
    def where(self) -> str:
        """Where the runs are read from, for people (a URL without its password)."""
        from ..orchestrator.session import RunView

        return RunView(self.db, state=self.state).where


@dataclass
class _SignedIn:
    user: str
    token_sha256: str
    csrf: str
    expires: float
    flashes: list[pages.Flash] = field(default_factory=list)


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: bytes = b"text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def token_digest(token: str) -> str:
    """The SHA-256 (hex) of a sign-in token: what the directory stores."""
    return hashlib.sha256(token.strip().encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh sign-in token (256 random bits)."""
    return "pei_" + secrets.token_urlsafe(32)


def _decision_errors() -> tuple[type[BaseException], ...]:
    """What a refused or impossible decision raises: shown to the approver as one line (as the CLI prints it)."""
    import duckdb

    from ..orchestrator.approvals import ApprovalRefused
    from ..orchestrator.runner import RecordError, RunError
    from ..orchestrator.session import SessionError
    from ..store import StoreError

    return (SessionError, RunError, ApprovalRefused, RecordError, IdentityError, StoreError, duckdb.Error)


class InboxApp:
    """ASGI app: ``await app(scope, receive, send)``; paths under ``config.prefix``."""

    def __init__(self, config: InboxConfig) -> None:
        from ..diagnostics import PolicyError
        from ..engine import load_policy
        from ..orchestrator.session import default_rules

        self.config = config
        self.rules = list(config.rules) or default_rules()
        try:
            # the roles each role extends, to list the gates a user may decide (the decision re-checks under a Session)
            self._closure = load_policy(self.rules).policy_set.roles_of
        except PolicyError as exc:
            first = exc.findings[0] if getattr(exc, "findings", None) else None
            raise InboxError(f"rules: {first.headline() if first else exc}") from None
        self._db_lock = threading.Lock()  # one open of the database at a time, from this process
        self._sessions: dict[str, _SignedIn] = {}
        p = config.prefix
        self.routes: dict[tuple[str, str], Callable[[dict[bytes, bytes], dict[str, str], str | None],
                                                    Awaitable[_Reply]]] = {
            ("GET", p + "/"): self.inbox,
            ("GET", p + "/login"): self.login_form,
            ("POST", p + "/login"): self.login,
            ("POST", p + "/logout"): self.logout,
            ("POST", p + "/decide"): self.decide,
            ("GET", p + "/inbox.css"): self.stylesheet,
            ("GET", "/favicon.ico"): self.no_icon,  # browsers ask for it at the root whatever the prefix
        }
        self._paths = {path for _, path in self.routes}

    # -- ASGI ------------------------------------------------------------------

    def mounts(self, path: str) -> bool:
        """Whether ``path`` is the inbox's (when the decision server mounts it under its prefix)."""
        prefix = self.config.prefix
        return path == prefix or path.startswith(prefix + "/") or path == "/favicon.ico"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        reply = await self.respond(scope, receive)
        await self.send_reply(send, reply)

    async def respond(self, scope: dict[str, Any], receive: Any) -> _Reply:
        """The reply to one HTTP request (also called by the decision server when it mounts the inbox)."""
        method, path = scope["method"], scope["path"]
        if path == self.config.prefix:
            return self._redirect(self.config.prefix + "/")
        headers = dict(scope["headers"])
        try:
            handler = self.routes.get((method, path))
            if handler is None:
                if path in self._paths:
                    raise _Refused(405, f"{method} is not allowed on {path}")
                raise _Refused(404, f"no page at {path}")
            form: dict[str, str] = {}
            if method == "POST":
                self._same_origin(headers)
                form = _parse_form(await _read_body(headers, receive))
            return await handler(headers, form, _cookie(headers, SESSION_COOKIE))
        except _Refused as refused:
            return _Reply(refused.status, pages.error_page(self.config.prefix, refused.status,
                                                           str(refused)).encode())
        except Exception as error:  # noqa: BLE001 - one line to the approver, never a traceback, never a decision
            return _Reply(500, pages.error_page(self.config.prefix, 500,
                                                f"internal error: {type(error).__name__}: {error}").encode())

    async def send_reply(self, send: Any, reply: _Reply) -> None:
        await send({"type": "http.response.start", "status": reply.status, "headers": [
            (b"content-type", reply.content_type), (b"content-length", str(len(reply.body)).encode()),
            (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
            *reply.headers]})
        await send({"type": "http.response.body", "body": reply.body})

    # -- handlers --------------------------------------------------------------

    async def stylesheet(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        return _Reply(200, pages.STYLESHEET, b"text/css; charset=utf-8")

    async def no_icon(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        return _Reply(204, b"", b"image/x-icon")

    async def login_form(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        if self._session(sid) is not None:
            return self._redirect(self.config.prefix + "/")
        return _Reply(200, pages.login_page(self.config.prefix).encode())

    async def login(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        token = form.get("token", "").strip()
        user = self._user_of_token(token) if token else None
        if user is None:
            return _Reply(401, pages.login_page(self.config.prefix,
                                                "unknown or revoked token: sign in with the token "
                                                "`policyengine inbox token` printed for you").encode())
        self._drop(sid)
        new_sid = secrets.token_urlsafe(32)
        if len(self._sessions) >= MAX_SESSIONS:
            self._sweep(force=True)
        self._sessions[new_sid] = _SignedIn(user, token_digest(token), secrets.token_urlsafe(32),
                                            time.monotonic() + self.config.session_seconds)
        reply = self._redirect(self.config.prefix + "/")
        reply.headers.append((b"set-cookie", self._cookie(new_sid, int(self.config.session_seconds))))
        return reply

    async def logout(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        signed = self._session(sid)
        if signed is not None:
            self._check_csrf(signed, form)
            self._drop(sid)
        reply = self._redirect(self.config.prefix + "/login")
        reply.headers.append((b"set-cookie", self._cookie("", 0)))
        return reply

    async def inbox(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        signed = self._session(sid)
        if signed is None:
            return self._redirect(self.config.prefix + "/login")
        directory = self._directory()
        who = directory.users.get(signed.user) if directory is not None else None
        if who is None:
            self._drop(sid)
            return self._redirect(self.config.prefix + "/login")
        problem, items = None, []
        try:
            items = await asyncio.to_thread(self._pending_for, who)
        except _decision_errors() as exc:
            problem = f"cannot read the runs: {exc}"
        flashes, signed.flashes = signed.flashes, []
        body = pages.inbox_page(self.config.prefix, who.id, who.name, who.roles, signed.csrf, items, flashes,
                                self.config.where, problem)
        return _Reply(503 if problem else 200, body.encode())

    async def decide(self, headers: dict[bytes, bytes], form: dict[str, str], sid: str | None) -> _Reply:
        signed = self._session(sid)
        if signed is None:
            raise _Refused(401, "sign in first (your session ended or was never started)")
        self._check_csrf(signed, form)
        action, run_id = form.get("action", ""), form.get("run_id", "").strip()
        if action not in ("approve", "reject"):
            raise _Refused(400, "action must be approve or reject")
        if not run_id:
            raise _Refused(400, "run_id is missing")
        gates = frozenset(g for g in form.get("gates", "").split(",") if g.strip())
        if not gates:
            raise _Refused(400, "the form names no gate: reload the inbox and decide what it shows")
        note = form.get("note", "").strip() or None
        if note is not None and len(note) > MAX_NOTE:
            raise _Refused(400, f"the comment is longer than {MAX_NOTE} characters")
        verb = "approved" if action == "approve" else "rejected"
        try:
            status = await asyncio.to_thread(self._decide, action, run_id, signed.user, note, gates)
            signed.flashes.append(pages.Flash(True, f"{run_id} {verb} by {signed.user}; {status}"))
        except _decision_errors() as exc:
            signed.flashes.append(pages.Flash(False, f"{run_id}: not {verb}: {exc}"))
        return self._redirect(self.config.prefix + "/")

    # -- the library -------------------------------------------------------------

    def _decide(self, action: str, run_id: str, user: str, note: str | None, gates: frozenset[str]) -> str:
        """What ``policyengine approve|reject RUN --as USER --note NOTE`` does, in this process, once the run
        waits for ``user`` at exactly the ``gates`` the page showed (``_check_gates``)."""
        from ..orchestrator.session import Session, SessionConfig

        config = SessionConfig(db=self.config.db, key=self.config.key, rules=self.rules, mask=self.config.mask,
                               command=f"inbox {action}", state=self.config.state)
        with self._db_lock, Session(config) as session:
            orch = session.orchestrator
            _check_gates(orch, run_id, user, gates)
            result = (orch.approve if action == "approve" else orch.reject)(run_id, user, note)
        tail = (f" (waiting again: {result.reason})" if result.status == "waiting_approval"
                else f" ({result.reason})" if result.status == "running" else "")
        return f"run {result.status}, outcome {result.outcome}{tail}"

    def _pending_for(self, who: Any) -> list[pages.PendingItem]:
        """Pending gates whose role ``who`` holds, newest run first, with the request and reasons recorded.

        Four queries whatever the number of runs (waiting runs, their gates, then the steps and
        recorded decisions of the runs listed): one query per run made a page of 200 cost ~0.6 s.
        """
        from ..orchestrator.session import RunView

        held = self._closure(who.roles)
        out = []
        with self._db_lock, RunView(self.config.db, state=self.config.state) as view:
            runs = view.runs(status="waiting_approval", limit=MAX_LISTED)
            pending = view.pending_of_runs([run.run_id for run in runs])
            gates_of = {run_id: [g for g in gates if g.role in held] for run_id, gates in pending.items()}
            listed = [run for run in runs if gates_of.get(run.run_id)]
            ids = [run.run_id for run in listed]
            steps_of = view.store.steps_of_runs(ids)
            decisions_of = self._recorded_decisions(view.conn, ids)
            for run in listed:
                decisions = decisions_of.get(run.run_id, [])
                steps = tuple((s.step, s.status, s.effect or "") for s in steps_of.get(run.run_id, ()))
                decides = tuple(sorted({pages.gate_key(gate) for gate in gates_of[run.run_id]}))  # one decision's
                for gate in gates_of[run.run_id]:
                    recorded = next((d for d in reversed(decisions) if d.get("step") == gate.step), {})
                    out.append(pages.PendingItem(
                        run_id=run.run_id, workflow=run.workflow, item_id=run.item_id, requested_by=run.requested_by,
                        step=gate.step, gate=gate.gate, role=gate.role, requested_at=gate.requested_at,
                        deadline_at=gate.deadline_at, on_timeout=gate.on_timeout, overdue=view.overdue(gate),
                        own_run=_same(who.id, (run.requested_by, gate.requester)), request=recorded.get("request"),
                        reasons=tuple(r for r in (recorded.get("decision") or {}).get("reasons", [])
                                      if isinstance(r, dict)),
                        steps=steps, decides=decides))
        return out

    def _recorded_decisions(self, conn: Any, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The ``decision`` records of ``run_ids`` by run, from the audit log of ``conn`` (the runs database).

        With ``--state`` (``conn`` None) the runs are in PostgreSQL and each worker signs its own log: the
        records are read from the inbox's ``--db`` when it exists, so only the steps that log saw show them.
        """
        from ..orchestrator.session import connect

        if not run_ids or (conn is None and not self.config.db.exists()):
            return {}
        own = conn is None
        if own:
            conn = connect(self.config.db, read_only=True)
        try:
            rows = conn.execute(packaged_sql("policyengine.server", "inbox_decisions_of_runs"),
                                {"run_ids": run_ids}).fetchall()
        finally:
            if own:
                conn.close()
        out: dict[str, list[dict[str, Any]]] = {}
        for run_id, payload in rows:
            out.setdefault(run_id, []).append(json.loads(payload))
        return out

    def _directory(self) -> Any:
        """The user directory in force for the database, read now (a re-minted token ends old sessions)."""
        from ..orchestrator.approvals import Directory
        from ..orchestrator.session import resolved_directory
        from ..store.files import StoreError

        try:
            return Directory.load(resolved_directory(self.config.db))
        except (ValueError, StoreError) as exc:  # no directory: nobody signs in (fail closed)
            print(f"inbox: {exc}", file=sys.stderr, flush=True)
            return None

    def _user_of_token(self, token: str) -> str | None:
        directory = self._directory()
        if directory is None:
            return None
        digest = token_digest(token)
        found = None
        for user in directory.users.values():  # every entry compared, in constant time each
            if user.token_sha256 is not None and hmac.compare_digest(user.token_sha256, digest):
                found = user.id
        return found

    # -- sessions, CSRF, cookies ---------------------------------------------------

    def _session(self, sid: str | None) -> _SignedIn | None:
        """The signed-in session of ``sid``, if it has not expired and the user's token is still the one in force."""
        self._sweep()
        signed = self._sessions.get(sid) if sid else None
        if signed is None:
            return None
        directory = self._directory()
        user = directory.users.get(signed.user) if directory is not None else None
        if user is None or user.token_sha256 is None or not hmac.compare_digest(user.token_sha256,
                                                                                 signed.token_sha256):
            self._drop(sid)
            return None
        return signed

    def _sweep(self, force: bool = False) -> None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]
        if force and len(self._sessions) >= MAX_SESSIONS:
            for sid in sorted(self._sessions, key=lambda s: self._sessions[s].expires)[:len(self._sessions) // 10 + 1]:
                del self._sessions[sid]

    def _drop(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    @staticmethod
    def _check_csrf(signed: _SignedIn, form: dict[str, str]) -> None:
        if not hmac.compare_digest(form.get("csrf", "").encode(), signed.csrf.encode()):
            raise _Refused(403, "the form's CSRF token is missing or wrong: reload the inbox and try again")

    @staticmethod
    def _same_origin(headers: dict[bytes, bytes]) -> None:
        """Refuse a POST a browser says comes from another site."""
        site = headers.get(b"sec-fetch-site")
        if site is not None and site not in (b"same-origin", b"none"):
            raise _Refused(403, f"cross-site form posts are refused (Sec-Fetch-Site: {site.decode(errors='replace')})")
        origin, host = headers.get(b"origin"), headers.get(b"host")
        if origin is not None and origin != b"null" and host is not None:
            if origin.split(b"://", 1)[-1] != host:
                raise _Refused(403, "cross-origin form posts are refused (Origin does not match Host)")

    def _cookie(self, value: str, max_age: int) -> bytes:
        path = self.config.prefix or "/"
        secure = "; Secure" if self.config.secure_cookie else ""
        return f"{SESSION_COOKIE}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}".encode()

    @staticmethod
    def _redirect(location: str) -> _Reply:
        return _Reply(303, b"", headers=[(b"location", location.encode())])


def _check_gates(orch: Any, run_id: str, user: str, shown: frozenset[str]) -> None:
    """Refuse a decision unless the run waits for ``user`` at exactly the gates the page ``shown``
    (``pages.gate_key``: the step, the gate, when it was requested).

    ``approve`` and ``reject`` decide every pending gate of the run the user holds
    the role for, whatever the page showed: without this check a page loaded
    before the run moved on (another approver decided, the run waits at its next
    step) approves a gate and a request its approver never saw. No gate of the
    user's to decide (``check_decider``, as ``approve`` judges it), or one past its deadline: the decision goes
    ahead, to be refused with ``approve``'s own reason. Overdue gates are recorded as expired first (what
    ``approve`` does first), so a run their expiry moved on is judged where it waits now.
    """
    from ..orchestrator.approvals import ApprovalRefused, check_decider
    from ..orchestrator.state import naive_utc

    orch.expire()
    run = orch.store.run(run_id)
    if run is None or run.status != "waiting_approval":
        return
    now = naive_utc(orch.clock())
    pending = [gate for gate in orch.store.approvals(run.run_id) if gate.status == "pending"]
    if any(gate.deadline_at is not None and gate.deadline_at <= now for gate in pending):
        return
    waiting = set()
    for gate in pending:
        try:
            check_decider(run, gate, user, orch.directory, orch.policy.policy_set.roles_of)
        except ApprovalRefused:
            continue
        waiting.add(pages.gate_key(gate))
    if waiting and waiting != shown:
        raise ApprovalRefused(f"run {run_id} now waits for you at {pages.gates_text(waiting)}, not at the "
                              f"{pages.gates_text(shown)} the page showed; nothing was decided: reload the inbox "
                              f"and decide what it shows now")


def _same(user: str, requesters: Iterable[str]) -> bool:
    """Whether ``user`` is one of ``requesters`` (canonical ids; one that is not canonical counts as the same)."""
    for requester in requesters:
        try:
            if canonical_identity(requester) == user:
                return True
        except IdentityError:
            return True
    return False


def _cookie(headers: dict[bytes, bytes], name: str) -> str | None:
    raw = headers.get(b"cookie", b"").decode("latin-1")
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


async def _read_body(headers: dict[bytes, bytes], receive: Any) -> bytes:
    try:
        return await read_body(headers, receive, MAX_FORM, FORM_TIMEOUT)
    except HTTPError as error:
        raise _Refused(error.status, f"form {error}") from None


def _parse_form(body: bytes) -> dict[str, str]:
    """A URL-encoded form: each field once, UTF-8; anything else is refused with the reason."""
    try:
        text = body.decode("utf-8")
        parsed = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(400, f"the form is not URL-encoded UTF-8: {exc}") from None
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise _Refused(400, f"form fields given more than once: {', '.join(repeated)}")
    return {k: v[0] for k, v in parsed.items()}


# -- running it ----------------------------------------------------------------------


def make_inbox(config: InboxConfig) -> InboxApp:
    """The inbox app for ``config``, or ``InboxError`` naming the missing database, key, state or broken rules.

    With ``state`` the runs are in PostgreSQL: it is opened once here (the one opening every command uses), so a
    wrong URL stops the inbox at start; ``db`` is then only the inbox's audit log, created by its first decision.
    """
    if config.state is not None:
        from ..orchestrator.session import SessionError, open_shared_state

        try:
            open_shared_state(config.state, "the inbox shares runs through postgresql://...; "
                                            "the embedded run state is the --db file").close()
        except SessionError as error:
            raise InboxError(str(error)) from None
    elif not config.db.exists():
        raise InboxError(f"{config.db}: no such database (runs are recorded by `policyengine run` or "
                         f"`policyengine demo`)")
    if not config.key.is_file():
        raise InboxError(f"{config.key}: signing key not found (decisions are signed into the audit log with it)")
    return InboxApp(config)


def serve_inbox(config: InboxConfig, host: str = "127.0.0.1", port: int = 8282) -> int:
    """Serve the inbox until SIGINT/SIGTERM; return the exit status."""
    import uvicorn

    from .run import ServeError, _listen

    app = make_inbox(config)
    try:
        sock = _listen(host, port, reuse_port=False)
    except ServeError as exc:
        raise InboxError(str(exc)) from None
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                           server_header=False, date_header=False))
    if not is_loopback(host) and not config.secure_cookie:
        print(f"warning: listening on {host} over plain http without --secure-cookie: sign-in tokens and session "
              f"cookies cross the network in clear; serve it behind a TLS proxy with --secure-cookie",
              file=sys.stderr, flush=True)
    bound_host, bound_port = sock.getsockname()[:2]
    print(f"listening on http://{bound_host}:{bound_port}{config.prefix}/ (inbox of {config.where}, pid {os.getpid()})",
          file=sys.stderr, flush=True)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return 0


__all__ = ["CSP", "SESSION_COOKIE", "InboxApp", "InboxConfig", "InboxError", "make_inbox", "new_token", "serve_inbox",
           "token_digest"]
