"""AuthZEN Authorization API 1.0 <-> policyengine requests and decisions.

Mapping (docs/server.md has the table):

- ``subject.type`` -> ``principal.type`` (``user`` or ``agent``), ``subject.id`` -> ``principal.id``,
  ``subject.properties.roles`` -> ``principal.roles``, other subject properties -> ``principal.attrs``
- ``resource.type`` -> ``resource.kind``, ``resource.id`` -> ``resource.id``,
  ``resource.properties`` -> ``resource.attrs``
- ``action.name`` -> ``action``; ``action.properties`` -> ``context`` keys (one also in ``context`` with
  another value is refused, as are ``data`` and ``approvals`` there: they belong in ``context``)
- ``context.data`` -> ``data``, ``context.approvals`` -> ``approvals``, the rest of ``context`` -> ``context``

The answer's ``decision`` is true only for ``allow``; ``context`` carries the
effect, reasons, obligations, route, policy hash, errors and the audit seq.
"""

from __future__ import annotations

from typing import Any

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")


def _object(value: Any, where: str, problems: list[str], *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: must be an object" if value is not None else f"{where}: required")
        return {}
    return value


def _string(value: Any, where: str, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: must be a non-empty string" if value is not None else f"{where}: required")
        return None
    return value


def to_request(evaluation: dict[str, Any], where: str = "") -> tuple[dict[str, Any], list[str]]:
    """Our request for one AuthZEN evaluation and every problem found (field by field).

    The request is returned also when there are problems (its malformed parts left out): the
    log records it, in the shape the audit masks name (``subject.properties.email`` is
    ``/request/principal/attrs/email``), so a malformed evaluation is no way around them.
    """
    problems: list[str] = []
    subject = _object(evaluation.get("subject"), f"{where}subject", problems)
    action = _object(evaluation.get("action"), f"{where}action", problems)
    resource = _object(evaluation.get("resource"), f"{where}resource", problems)
    context = dict(_object(evaluation.get("context"), f"{where}context", problems, required=False))
    principal: dict[str, Any] = {}
    if subject:
        kind = _string(subject.get("type"), f"{where}subject.type", problems)
        if kind is not None and kind not in ("user", "agent"):
            problems.append(f"{where}subject.type: must be \"user\" or \"agent\", not {kind!r}")
        principal_id = _string(subject.get("id"), f"{where}subject.id", problems)
        properties = dict(_object(subject.get("properties"), f"{where}subject.properties", problems, required=False))
        roles = properties.pop("roles", [])
        principal = {"id": principal_id, "type": kind, "roles": roles, "attrs": properties}
    name = _string(action.get("name"), f"{where}action.name", problems) if action else None
    action_properties = _object(action.get("properties"), f"{where}action.properties", problems,
                                required=False) if action else {}
    for key in ("data", "approvals"):  # as context keys they would reach no rule about the request's data
        if key in action_properties:
            problems.append(f"{where}action.properties.{key}: send it as context.{key}, which becomes the "
                            f"request's {key}")
    for key in action_properties.keys() & context.keys():  # which one counts would be a guess a PEP may not share
        mine, theirs = action_properties[key], context[key]
        if mine.__class__ is not theirs.__class__ or mine != theirs:
            problems.append(f"{where}action.properties.{key}: also in context with another value; send it once")
    target: dict[str, Any] = {}
    if resource:
        target = {
            "kind": _string(resource.get("type"), f"{where}resource.type", problems),
            "id": _string(resource.get("id"), f"{where}resource.id", problems),
            "attrs": _object(resource.get("properties"), f"{where}resource.properties", problems, required=False),
        }
    request: dict[str, Any] = {"principal": principal, "action": name, "resource": target}
    if "data" in context:
        request["data"] = context.pop("data")
    if "approvals" in context:
        request["approvals"] = context.pop("approvals")
    request["context"] = {**action_properties, **context}
    return request, problems


def answer(decision: dict[str, Any], seq: int | None) -> dict[str, Any]:
    """The AuthZEN response for one of our decisions (a ``Decision.to_dict()``)."""
    context: dict[str, Any] = {
        "effect": decision["effect"],
        "reasons": decision["reasons"],
        "obligations": decision["obligations"],
        "route": decision["route"],
        "policy_hash": decision["policy_hash"],
        "audit_seq": seq,
    }
    if decision.get("errors"):
        context["errors"] = decision["errors"]
    return {"decision": decision["effect"] == "allow", "context": context}


def expand(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The evaluations of an ``/access/v1/evaluations`` body (defaults filled in), the semantic, and envelope problems.

    Top-level ``subject``, ``action``, ``resource`` and ``context`` are defaults;
    an evaluation's own member replaces the default whole.
    """
    problems: list[str] = []
    items = body.get("evaluations")
    if items is None:
        items = [{}]
    if not isinstance(items, list):
        problems.append("evaluations: must be an array")
        items = []
    options = body.get("options", {})
    if not isinstance(options, dict):
        problems.append("options: must be an object")
        options = {}
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in SEMANTICS:
        problems.append(f"options.evaluations_semantic: must be one of {', '.join(SEMANTICS)}")
    defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
    expanded = []
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(f"evaluations[{position}]: must be an object")
            continue
        expanded.append({**defaults, **item})
    return expanded, semantic, problems


def configuration(base_url: str) -> dict[str, Any]:
    """``/.well-known/authzen-configuration`` (AuthZEN 1.0 PDP metadata)."""
    return {
        "policy_decision_point": base_url,
        "access_evaluation_endpoint": f"{base_url}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base_url}/access/v1/evaluations",
    }
