"""What goes into the engine (``Request``) and what comes out (``Decision``).

Both are frozen pydantic models so that they are typed, immutable, JSON
serialisable and publish a JSON Schema (``schemas/*.schema.json``). The engine
accepts plain dicts too and never runs pydantic validation on its hot path: it
checks the few fields it needs by hand and builds decisions from precomputed
parts (see ``evaluate.py``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

Effect = Literal["allow", "deny", "escalate"]
PrincipalType = Literal["user", "agent"]
ResourceKind = Literal["model", "dataset", "tool", "agent", "workflow"]
RESOURCE_KINDS: frozenset[str] = frozenset(("model", "dataset", "tool", "agent", "workflow"))

_FROZEN = ConfigDict(frozen=True, extra="forbid")
# Requests tolerate unknown keys (as the dict path does); the fields they use are typed.
_REQUEST = ConfigDict(frozen=True)
# Attributes written beside id (instead of under attrs) are kept and read as attributes.
_OPEN = ConfigDict(frozen=True, extra="allow")


# --- request ----------------------------------------------------------------------


class Principal(BaseModel):
    """Who asks. An agent's ``roles`` are ignored: its declaration is its authority."""

    model_config = _OPEN
    id: str
    type: PrincipalType = "user"
    roles: tuple[str, ...] = ()
    attrs: dict[str, Any] = Field(default_factory=dict)


class Resource(BaseModel):
    """What is acted on. ``id`` may be left out for an ``invoke`` that a route decides."""

    model_config = _OPEN
    kind: ResourceKind
    id: str | None = None
    attrs: dict[str, Any] = Field(default_factory=dict)


class Approval(BaseModel):
    """A human's approval of an escalation gate (``gate`` is the gate's rule id)."""

    model_config = _REQUEST
    gate: str
    approver: str
    roles: tuple[str, ...] | None = None
    ts: str | None = None  # when it was given (ISO 8601): it counts for 7 days (``approval_binding``)
    run_id: str | None = None  # the run it approves (the request's ``context.run_id``)...
    request_hash: str | None = None  # ...or the request itself (``approval_binding.request_hash``)
    signature: str | None = None  # the approver's Ed25519 signature, base64: ``serve`` checks it (approval_signature)


class Request(BaseModel):
    """One question to the engine, in the JSON shape of docs/engine.md (Requests)."""

    model_config = _REQUEST
    principal: Principal
    action: str
    resource: Resource
    data: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    approvals: tuple[Approval, ...] = ()


# --- decision -------------------------------------------------------------------


class Reason(BaseModel):
    """One rule (or built-in check) that decided the effect, with where it is written.

    ``rule`` is a rule id (``package.name``) or, for built-in checks, a name in
    angle brackets such as ``<default-deny>`` or ``<request>``. ``candidate``
    names the route candidate the reason was found for, when routing.
    """

    model_config = _FROZEN
    rule: str
    file: str | None = None
    line: int | None = None
    message: str
    cites: tuple[str, ...] = ()
    candidate: str | None = None


class BudgetWarning(BaseModel):
    """Usage (including this request's estimate) has passed a budget's ``warn at``."""

    model_config = _FROZEN
    kind: Literal["budget_warning"] = "budget_warning"
    budget: str
    used: float
    limit: float
    unit: str
    window: Literal["hour", "day", "month"]
    percent: float


class ApprovalRequired(BaseModel):
    """A human holding ``role`` must approve ``gate`` before the request may proceed."""

    model_config = _FROZEN
    kind: Literal["approval_required"] = "approval_required"
    gate: str
    role: str
    deadline_seconds: int | None = None
    deadline_at: str | None = None
    on_timeout: Literal["deny", "allow"] = "deny"
    distinct_approver: bool = False


Obligation = Annotated[Union[BudgetWarning, ApprovalRequired], Field(discriminator="kind")]


class Decision(BaseModel):
    """The engine's answer: effect, the reasons for it, and what the caller must do."""

    model_config = _FROZEN
    effect: Effect
    reasons: tuple[Reason, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    route: str | None = None
    policy_hash: str = ""
    errors: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    def to_dict(self) -> dict[str, Any]:
        """``model_dump(mode="json")``, with the reasons' dicts built from their fields.

        Every audited decision pays this (the server's answer, its ``decision``
        record): this costs about half of ``model_dump``'s time (2.1 against
        4.4 us for a one-reason allow); tests/test_eval_batch.py holds the two equal. Obligations, rare, still
        go through ``model_dump``.
        """
        d = self.__dict__
        obligations = d["obligations"]
        return {
            "effect": d["effect"], "reasons": [_reason_dict(r.__dict__) for r in d["reasons"]],
            "obligations": [o.model_dump(mode="json") for o in obligations] if obligations else [],
            "route": d["route"], "policy_hash": d["policy_hash"], "errors": list(d["errors"])}

    def to_json(self) -> str:
        """One compact JSON line, as ``policyengine eval`` prints it: the text of ``to_dict()``."""
        return _compact(self.to_dict())


_compact = json.JSONEncoder(separators=(",", ":")).encode


def _reason_dict(r: dict[str, Any]) -> dict[str, Any]:
    """``Reason.model_dump(mode="json")`` from the reason's ``__dict__`` (every field a str, int, None or tuple)."""
    return {"rule": r["rule"], "file": r["file"], "line": r["line"], "message": r["message"],
            "cites": list(r["cites"]), "candidate": r["candidate"]}


_new = object.__new__
_set = object.__setattr__
_DECISION_FIELDS = ("effect", "reasons", "obligations", "route", "policy_hash", "errors")
_DECISION_FIELDS_SET = set(_DECISION_FIELDS)  # one set for every decision: no allocation per miss


def make_decision(effect: str, reasons: tuple, obligations: tuple, route: str | None, policy_hash: str,
                  errors: tuple) -> Decision:
    """``Decision.model_construct`` with all six fields given, without its per-call work (~0.4 us, not ~4 us).

    Sets what pydantic's ``model_construct`` sets for a model without private
    attributes, extras or post-init (tests/test_engine_index.py compares the two).
    """
    decision = _new(Decision)
    _set(decision, "__dict__", {"effect": effect, "reasons": reasons, "obligations": obligations, "route": route,
                                "policy_hash": policy_hash, "errors": errors})
    _set(decision, "__pydantic_fields_set__", _DECISION_FIELDS_SET)  # shared, as reasons' (see below)
    _set(decision, "__pydantic_extra__", None)
    _set(decision, "__pydantic_private__", None)
    return decision


# The fields a compiled declaration's reason is given, one set shared by all of them (~700 bytes a
# rule otherwise). pydantic never changes a model's fields-set in place: copies (``model_copy``,
# ``copy``) copy the set before adding to it, and a frozen ``Reason`` cannot be assigned to.
_REASON_FIELDS_SET = {"rule", "file", "line", "message", "cites"}


def make_reason(rule: str, file: str | None, line: int | None, message: str, cites: tuple[str, ...]) -> Reason:
    """``Reason(rule=..., file=..., line=..., message=..., cites=...)`` built without validating known-good values.

    For the reason of every compiled rule, gate and budget (~10 us and ~1 KB each
    through the validator, 100,000 of them at scale); tests/test_engine_load_cache.py
    compares the two.
    """
    reason = _new(Reason)
    _set(reason, "__dict__", {"rule": rule, "file": file, "line": line, "message": message, "cites": cites,
                              "candidate": None})
    _set(reason, "__pydantic_fields_set__", _REASON_FIELDS_SET)
    _set(reason, "__pydantic_extra__", None)
    _set(reason, "__pydantic_private__", None)
    return reason


def request_schema() -> dict[str, Any]:
    return Request.model_json_schema()


def decision_schema() -> dict[str, Any]:
    return Decision.model_json_schema(mode="serialization")


SCHEMAS = {"request.schema.json": request_schema, "decision.schema.json": decision_schema}


def schema_text(name: str) -> str:
    """The published JSON Schema ``name`` as committed under ``schemas/``."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **SCHEMAS[name]()}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # python -m policyengine.decision schemas/  (regenerates the files)
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")
    target.mkdir(parents=True, exist_ok=True)
    for schema_name in SCHEMAS:
        (target / schema_name).write_text(schema_text(schema_name), encoding="utf-8")
        print(f"wrote {target / schema_name}")
