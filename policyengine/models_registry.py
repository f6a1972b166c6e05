"""Model and agent versions: which version each alias (``production``, ...) names, and when it changed.

A model or agent declares its released versions in the rules (``model
classifier_small version "2.3.1", "2.4.0"``). Which of them an alias such as
``production`` names is not in the rules but in the audit log: every change is a
signed ``model_version`` event (who, why, from which version to which), so the
log is the registry and its history answers "which version was in production at
time T" (``report model_versions --param at=T``). Until a change is recorded, an
alias names the first version declared.

A change is itself decided by the policy: the request ``{principal: the user,
action: promote | rollback, resource: {kind: model | agent, id: NAME, attrs:
{version, alias, previous}}}``. Allowed, it is recorded; denied, it is refused
with the deciding rule; escalated, it is recorded as a ``model_version_requested``
event and waits for ``models approve | reject`` by a user holding the gate's role
(four-eyes: the checks of ``orchestrator.approvals``, as for workflow gates).

Deciding a request against a model (or agent) with versions, ``stamp`` resolves
the version the request names (a version, an alias, or nothing: ``production``)
into ``resource.version`` / ``resource.alias`` (``principal.version`` for an
agent) so rules may read them, and returns the version actually used, which the
decision and its audit record carry as ``model_version``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from .reporting.db import has_table, open_readonly, open_readwrite, sql
from .reporting.errors import ReportError
from .store.files import StoreError, open_duckdb

CHANGED = "model_version"  # an alias now names another version (applied)
REQUESTED = "model_version_requested"  # a change that waits for an approval
REJECTED = "model_version_rejected"  # a requested change an approver refused
DEFAULT_ALIAS = "production"


class VersionError(ReportError):
    """A change the registry, the rules or four-eyes refuse (one line, exit 1)."""


@dataclass(frozen=True, slots=True)
class Versioned:
    """A declared model or agent with versions."""

    name: str
    kind: str  # "model" | "agent"
    versions: tuple[str, ...]


def declared(policy_set: Any) -> dict[str, Versioned]:
    """Every model and agent of ``policy_set`` that declares versions, by name."""
    found: dict[str, Versioned] = {}
    for kind, table in (("model", policy_set.models), ("agent", policy_set.agents)):
        for name, scoped in table.items():
            if scoped.decl.versions:
                found[name] = Versioned(name, kind, tuple(scoped.decl.versions))
    return found


@dataclass(frozen=True, slots=True)
class Change:
    """One ``model_version`` event: ``alias`` of ``name`` moved from ``previous`` to ``version``."""

    seq: int
    ts: datetime
    name: str
    alias: str
    version: str
    previous: str | None
    change: str  # promote | rollback
    by: str
    reason: str
    approved_by: str | None

    def row(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts.isoformat(), "name": self.name, "alias": self.alias,
                "version": self.version, "previous": self.previous, "change": self.change, "by": self.by,
                "reason": self.reason, "approved_by": self.approved_by}


@dataclass(frozen=True, slots=True)
class Pending:
    """A ``model_version_requested`` event not yet approved or rejected."""

    request_id: str
    seq: int
    ts: datetime
    payload: Mapping[str, Any]


def _events(con: duckdb.DuckDBPyConnection, events: Sequence[str]) -> list[tuple[int, datetime, str, dict]]:
    if not has_table(con, "audit_log"):
        return []
    rows = con.execute(sql("model_version_events"), {"events": list(events)}).fetchall()
    out = []
    for seq, ts, event, payload in rows:
        try:
            body = json.loads(payload) if payload else {}
        except ValueError:
            body = {}
        out.append((int(seq), ts if ts.tzinfo else ts.replace(tzinfo=UTC), event, body if isinstance(body, dict) else {}))
    return out


def history(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[Change]:
    """Every applied change (of ``name``, or of all), oldest first."""
    out = []
    for seq, ts, _, p in _events(con, [CHANGED]):
        if name is not None and p.get("name") != name:
            continue
        out.append(Change(seq, ts, str(p.get("name")), str(p.get("alias", DEFAULT_ALIAS)), str(p.get("version")),
                          p.get("previous"), str(p.get("change", "promote")), str(p.get("by")),
                          str(p.get("reason", "")), p.get("approved_by")))
    return out


def aliases(changes: Sequence[Change], decl: Mapping[str, Versioned],
            at: datetime | None = None) -> dict[str, dict[str, str]]:
    """name -> alias -> version after ``changes`` (up to ``at``), starting from the first declared version."""
    table: dict[str, dict[str, str]] = {n: {DEFAULT_ALIAS: v.versions[0]} for n, v in decl.items()}
    for c in changes:
        if at is not None and c.ts > at:
            break
        table.setdefault(c.name, {})[c.alias] = c.version
    return table


def pending(con: duckdb.DuckDBPyConnection) -> dict[str, Pending]:
    """Requested changes with no approval or rejection yet, by request id."""
    open_: dict[str, Pending] = {}
    for seq, ts, event, p in _events(con, [REQUESTED, CHANGED, REJECTED]):
        rid = p.get("request_id")
        if not isinstance(rid, str):
            continue
        if event == REQUESTED:
            open_[rid] = Pending(rid, seq, ts, p)
        else:
            open_.pop(rid, None)
    return open_


# --- resolving a request's version (the decision path) -------------------------------------------


def stamp(request: Any, decl: Mapping[str, Versioned],
          table: Mapping[str, Mapping[str, str]]) -> tuple[Any, str | None]:
    """The request with the version it uses set in its attributes, and that version (None: not versioned).

    ``resource.version`` (or ``resource.attrs.version``) may name a version or an
    alias; absent, the request uses ``production``. An unknown name is left as
    given (rules see it; no version is claimed for it).
    """
    if not isinstance(request, Mapping):
        return request, None
    resource, principal = request.get("resource"), request.get("principal")
    if isinstance(resource, Mapping) and resource.get("kind") in ("model", "agent"):
        v = decl.get(resource.get("id")) if isinstance(resource.get("id"), str) else None
        if v is not None and v.kind == resource.get("kind"):
            resource, used = _stamped(resource, v, table)
            return {**request, "resource": resource}, used
    if isinstance(principal, Mapping) and principal.get("type") == "agent":
        v = decl.get(principal.get("id")) if isinstance(principal.get("id"), str) else None
        if v is not None and v.kind == "agent":
            principal, used = _stamped(principal, v, table)
            return {**request, "principal": principal}, used
    return request, None


def _stamped(entity: Mapping[str, Any], v: Versioned,
             table: Mapping[str, Mapping[str, str]]) -> tuple[dict[str, Any], str | None]:
    attrs = entity.get("attrs") if isinstance(entity.get("attrs"), Mapping) else {}
    asked = entity.get("version", attrs.get("version"))
    named = table.get(v.name, {})
    if asked is None:
        asked = DEFAULT_ALIAS
    if not isinstance(asked, str):
        return dict(entity), None
    if asked in named:
        used, alias = named[asked], asked
    elif asked in v.versions:
        used, alias = asked, next((a for a, x in sorted(named.items()) if x == asked), None)
    else:
        return dict(entity), None
    out = {k: x for k, x in entity.items() if k != "version"}
    out["attrs"] = {**attrs, "version": used, "alias": alias}
    return out, used


class Resolver:
    """``resolver(policy, request) -> (request, version used or None)``, with aliases as the log had them.

    Built once (``load_resolver``) by a command or server that decides; what the
    policy declares is worked out once per policy hash (a reload may change it).
    """

    def __init__(self, changes: Sequence[Change] = ()) -> None:
        self.changes = tuple(changes)
        self._by_hash: dict[str, tuple[dict[str, Versioned], dict[str, dict[str, str]]]] = {}

    def __call__(self, policy: Any, request: Any) -> tuple[Any, str | None]:
        entry = self._by_hash.get(policy.policy_hash)
        if entry is None:
            decl = declared(policy.policy_set)
            entry = self._by_hash[policy.policy_hash] = (decl, aliases(self.changes, decl))
        if not entry[0]:
            return request, None
        return stamp(request, *entry)


def load_resolver(db: str | Path | None) -> Resolver:
    """The aliases recorded in ``db`` (read-only; none when it does not exist yet)."""
    if db is None or not Path(db).is_file():
        return Resolver()
    con = open_readonly(db)
    try:
        return Resolver(history(con))
    finally:
        con.close()


def with_version(decision: Mapping[str, Any], used: str | None) -> Mapping[str, Any]:
    """The decision's JSON with ``model_version`` (only when a version was used: other decisions are unchanged)."""
    return decision if used is None else {**decision, "model_version": used}


# --- changing an alias ---------------------------------------------------------------------------


def request_id(payload: Mapping[str, Any]) -> str:
    """A short, stable id for a requested change (its content and time)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "mv-" + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # changed | requested | approved | rejected
    seq: int
    payload: Mapping[str, Any]


def change(db: str | Path, policy: Any, directory: Any, *, name: str, to: str | None, user: str, reason: str,
           alias: str = DEFAULT_ALIAS, verb: str = "promote", key: str | Path) -> Outcome:
    """Promote (or roll back) ``alias`` of ``name`` to version ``to``, as the policy decides.

    ``rollback`` without ``to`` goes back to the version the alias named before
    the current one. Refused (``VersionError``) when the version is not declared,
    already in place, or the policy denies; escalated, the change waits.
    """
    decl = declared(policy.policy_set)
    v = decl.get(name)
    if v is None:
        known = ", ".join(sorted(decl)) or "none"
        raise VersionError(f"{name!r} declares no versions in the rules (models and agents with versions: {known})")
    if not reason.strip():
        raise VersionError("--reason: say why the version changes (it is kept in the audit log)")
    if Path(db).is_dir():
        raise VersionError(f"{db}: is a directory, not a DuckDB database file")
    con = _open(db) if Path(db).exists() else None  # the first change of a deployment creates the log, when written
    try:
        changes = history(con, name) if con is not None else []
        current = aliases(changes, decl).get(name, {}).get(alias)
        if to is None:
            before = [c.previous for c in changes if c.alias == alias and c.previous is not None]
            if verb != "rollback" or not before:
                raise VersionError(f"--to: name the version (declared for {name}: {', '.join(v.versions)})")
            to = before[-1]
        if to not in v.versions:
            raise VersionError(f"version {to!r} of {name} is not declared (declared: {', '.join(v.versions)})")
        if to == current:
            raise VersionError(f"{alias} of {name} is already version {to}")
        decision = policy.evaluate(_change_request(directory, user, verb, v.kind, name, to, alias, current, reason))
        payload: dict[str, Any] = {"name": name, "kind": v.kind, "alias": alias, "version": to, "previous": current,
                                   "change": verb, "by": user, "reason": reason,
                                   "rules": [r.rule for r in decision.reasons], "policy_hash": policy.policy_hash}
        if decision.effect == "deny":
            why = "; ".join(f"{r.rule}: {r.message}" for r in decision.reasons) or "denied"
            raise VersionError(f"{user} may not {verb} {name} to {to}: {why}")
        for p in (pending(con) if con is not None else {}).values():
            if p.payload.get("name") == name and p.payload.get("alias") == alias:
                raise VersionError(f"a change of {alias} of {name} already waits for approval ({p.request_id}): "
                                   f"approve or reject it first")
        if con is None:
            con = _open(db)
        with _writer(con, key, db, policy) as log:
            if decision.effect == "escalate":
                gate = next((o for o in decision.obligations if o.kind == "approval_required"), None)
                payload |= {"gate": gate.gate if gate else None, "role": gate.role if gate else None,
                            "requested_at": datetime.now(UTC).isoformat()}
                if gate is not None and gate.deadline_at is not None:  # ``within``: approved by then, or its else
                    payload |= {"deadline": gate.deadline_at, "on_timeout": gate.on_timeout}
                payload["request_id"] = request_id(payload)
                seq = log.append(REQUESTED, actor=user, payload=payload, policy_hash=policy.policy_hash)
                return Outcome("requested", seq, payload)
            payload |= {"request_id": None, "approved_by": None}
            seq = log.append(CHANGED, actor=user, payload=payload, policy_hash=policy.policy_hash)
            return Outcome("changed", seq, payload)
    finally:
        if con is not None:
            con.close()


def _open(db: str | Path) -> duckdb.DuckDBPyConnection:
    try:
        return open_duckdb(Path(db))
    except StoreError as e:
        raise VersionError(str(e)) from None


def decide(db: str | Path, policy: Any, directory: Any, *, rid: str, user: str, approve: bool,
           note: str | None, key: str | Path) -> Outcome:
    """Approve (apply) or reject the requested change ``rid``; four-eyes as for workflow gates."""
    from .orchestrator.approvals import ApprovalRefused, check_decider
    from .orchestrator.state import ApprovalRecord, RunRecord

    con = open_readwrite(db)
    try:
        waiting = pending(con).get(rid)
        if waiting is None:
            raise VersionError(f"no model version change {rid!r} waits for approval "
                               f"(waiting: {', '.join(sorted(pending(con))) or 'none'})")
        p = dict(waiting.payload)
        if p.get("role") is None:
            raise VersionError(f"change {rid} names no approver role; it cannot be approved")
        now = datetime.now(UTC)
        if approve and p.get("deadline") is not None and p.get("on_timeout") != "allow" and _passed(p["deadline"], now):
            raise VersionError(f"change {rid}: its approval deadline passed at {p['deadline']} (the gate's else: "
                               f"deny); reject {rid} and request it again")
        run = RunRecord(rid, None, "model_version", p.get("name"), str(p.get("by")), "waiting_approval", None,
                        None, None, p.get("policy_hash"), 0, 0.0, waiting.ts, waiting.ts)
        gate = ApprovalRecord(rid, str(p.get("change")), str(p.get("gate")), str(p.get("role")), str(p.get("by")),
                              waiting.ts, None, "deny", True, "pending", None, None, None)
        try:
            who = check_decider(run, gate, user, directory, policy.policy_set.roles_of)
        except ApprovalRefused as e:
            raise VersionError(str(e)) from None
        decl = declared(policy.policy_set)
        if approve and p.get("version") not in (decl[p["name"]].versions if p.get("name") in decl else ()):
            raise VersionError(f"version {p.get('version')!r} of {p.get('name')} is no longer declared in the rules; "
                               f"reject {rid} and request again")
        if approve:  # the rules in force now decide: a freeze added since the request is not approved past
            again = policy.evaluate(_change_request(directory, str(p.get("by")), str(p.get("change")), p.get("kind"),
                                                    p.get("name"), p.get("version"), p.get("alias"),
                                                    p.get("previous"), p.get("reason")))
            if again.effect == "deny":
                why = "; ".join(f"{r.rule}: {r.message}" for r in again.reasons) or "denied"
                raise VersionError(f"the rules now deny this change ({why}); reject {rid}")
        if approve:
            current = aliases(history(con, p["name"]), decl).get(p["name"], {}).get(p["alias"])
            p |= {"previous": current, "approved_by": who.id, "note": note, "approved_at": now.isoformat(),
                  "directory_sha256": directory.sha256}
        else:
            p |= {"rejected_by": who.id, "note": note, "rejected_at": now.isoformat(),
                  "directory_sha256": directory.sha256}
        with _writer(con, key, db, policy) as log:
            seq = log.append(CHANGED if approve else REJECTED, actor=who.id, payload=p,
                             policy_hash=policy.policy_hash)
        return Outcome("approved" if approve else "rejected", seq, p)
    finally:
        con.close()


def _passed(deadline: Any, now: datetime) -> bool:
    """Whether ``deadline`` (ISO 8601, as the decision gave it) is at or before ``now``; one that does not parse has."""
    try:
        return now >= datetime.fromisoformat(str(deadline))
    except (ValueError, TypeError):
        return True


def _change_request(directory: Any, user: str, verb: str, kind: Any, name: Any, to: Any, alias: Any,
                    current: Any, reason: Any) -> dict[str, Any]:
    """The request a version change is decided as: when asked for, and again when approved."""
    roles = directory.roles().get(user, ())
    return {
        "principal": {"id": user, "type": "user", "roles": list(roles)},
        "action": verb,
        "resource": {"kind": kind, "id": name, "attrs": {"version": to, "alias": alias, "previous": current}},
        "context": {"reason": reason},
    }


@contextmanager
def _writer(con: duckdb.DuckDBPyConnection, key: str | Path, db: str | Path, policy: Any) -> Iterator[Any]:
    """The signed audit log on ``con``, masked as every writing command masks; closed (signed) on exit."""
    from .reporting.monitor import _audit_writer

    log = _audit_writer(con, key, db, policy)
    try:
        yield log
    finally:
        log.close()


__all__ = ["CHANGED", "DEFAULT_ALIAS", "REJECTED", "REQUESTED", "Change", "Outcome", "Pending", "Resolver",
           "VersionError", "Versioned", "aliases", "change", "declared", "decide", "history", "load_resolver",
           "pending", "stamp", "with_version"]
