"""The OpenAPI 3.1 document served at ``GET /openapi.json`` (request and decision schemas from ``decision.py``)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .. import __version__
from ..decision import decision_schema, request_schema


def _body(ref: str, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": {"$ref": ref}}
    if example is not None:
        content["example"] = example
    return {"required": True, "content": {"application/json": content}}


def _answer(description: str, ref: str | None = None) -> dict[str, Any]:
    schema = {"$ref": ref} if ref else {"type": "object"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PROBLEM = _answer("Bad body: every problem named in `problems`.", "#/components/schemas/Problem")
_UNAVAILABLE = _answer("No policy loaded, or the audit log cannot record: never a decision.",
                       "#/components/schemas/Problem")
_EXAMPLE = {"principal": {"id": "alice", "roles": ["analyst"]}, "action": "read",
            "resource": {"kind": "dataset", "id": "erp/invoices/2026-0042"}}
_AUTHZEN_EXAMPLE = {"subject": {"type": "user", "id": "alice", "properties": {"roles": ["analyst"]}},
                    "action": {"name": "read"}, "resource": {"type": "dataset", "id": "erp/invoices/2026-0042"}}


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": body,
                     "responses": {"200": ok, "400": _PROBLEM, "401": _PROBLEM, "413": _PROBLEM, "503": _UNAVAILABLE}}}


def _get(summary: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": ok}}}


@cache
def openapi_document() -> dict[str, Any]:
    request = request_schema()
    decision = decision_schema()
    defs = {**request.pop("$defs", {}), **decision.pop("$defs", {})}
    schemas: dict[str, Any] = {**defs, "Request": request, "Decision": decision}
    schemas["Problem"] = {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string"},
                                         "problems": {"type": "array", "items": {"type": "string"}}}}
    schemas["AuthZENEvaluation"] = {
        "type": "object", "required": ["subject", "action", "resource"],
        "properties": {
            "subject": {"type": "object", "required": ["type", "id"],
                        "properties": {"type": {"enum": ["user", "agent"]}, "id": {"type": "string"},
                                       "properties": {"type": "object"}}},
            "action": {"type": "object", "required": ["name"],
                       "properties": {"name": {"type": "string"}, "properties": {"type": "object"}}},
            "resource": {"type": "object", "required": ["type", "id"],
                         "properties": {"type": {"type": "string"}, "id": {"type": "string"},
                                        "properties": {"type": "object"}}},
            "context": {"type": "object"},
        },
    }
    schemas["AuthZENEvaluations"] = {
        "type": "object",
        "properties": {"subject": {"type": "object"}, "action": {"type": "object"}, "resource": {"type": "object"},
                       "context": {"type": "object"},
                       "evaluations": {"type": "array", "items": {"type": "object"}},
                       "options": {"type": "object", "properties": {"evaluations_semantic": {
                           "enum": ["execute_all", "deny_on_first_deny", "permit_on_first_permit"]}}}},
    }
    schemas["AuthZENDecision"] = {"type": "object", "required": ["decision"],
                                  "properties": {"decision": {"type": "boolean"}, "context": {"type": "object"}}}
    schemas["Charge"] = {"oneOf": [
        {"type": "object", "required": ["request"], "additionalProperties": False,
         "properties": {"request": {"$ref": "#/components/schemas/Request"},
                        "tokens": {"type": "number", "minimum": 0}, "cost": {"type": "number", "minimum": 0},
                        "currency": {"type": "string", "default": "USD"}, "model": {"type": "string"}}},
        {"type": "object", "required": ["reservation"], "additionalProperties": False,
         "properties": {"reservation": {"type": "string"}, "tokens": {"type": "number", "minimum": 0},
                        "cost": {"type": "number", "minimum": 0}}}]}
    schemas["Reserve"] = {"type": "object", "required": ["request"], "additionalProperties": False,
                          "properties": {"request": {"$ref": "#/components/schemas/Request"}}}
    schemas["Release"] = {"type": "object", "required": ["reservation"], "additionalProperties": False,
                          "properties": {"reservation": {"type": "string"}}}
    document = {
        "openapi": "3.1.0",
        "info": {"title": "policyengine decision service", "version": __version__,
                 "description": "Every decision is recorded in the signed audit log before it is answered. "
                                "See docs/server.md."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": {
            "/v1/decide": _post("Decide one request", _body("#/components/schemas/Request", _EXAMPLE),
                                _answer("The decision (audit seq in the X-Audit-Seq header).",
                                        "#/components/schemas/Decision")),
            "/v1/decide/batch": _post("Decide an array of requests",
                                      {"required": True, "content": {"application/json": {"schema": {
                                          "type": "array", "items": {"$ref": "#/components/schemas/Request"}}}}},
                                      _answer("`decisions` in request order and their `audit_seqs`.")),
            "/v1/explain": _post("Decide one request and trace every rule considered",
                                 _body("#/components/schemas/Request", _EXAMPLE),
                                 _answer("`decision`, `trace` (lines) and `audit_seq`.")),
            "/v1/charge": _post("Record actual usage against every budget covering a request, or settle a "
                                "reservation", _body("#/components/schemas/Charge"),
                                _answer("`charged`: the budget scopes.")),
            "/v1/reserve": _post("Decide one request and hold its estimate in every budget covering it",
                                 _body("#/components/schemas/Reserve"),
                                 _answer("`decision`, `reservation` (null when nothing is held) and `audit_seq`.")),
            "/v1/release": _post("Give a reservation's hold back (the call did not happen)",
                                 _body("#/components/schemas/Release"), _answer("`released`: the budget scopes.")),
            "/access/v1/evaluation": _post("AuthZEN 1.0 access evaluation",
                                           _body("#/components/schemas/AuthZENEvaluation", _AUTHZEN_EXAMPLE),
                                           _answer("The AuthZEN decision.", "#/components/schemas/AuthZENDecision")),
            "/access/v1/evaluations": _post("AuthZEN 1.0 access evaluations (batch)",
                                            _body("#/components/schemas/AuthZENEvaluations"),
                                            _answer("`evaluations`: one AuthZEN decision each, in order.")),
            "/.well-known/authzen-configuration": _get("AuthZEN PDP metadata", _answer("Endpoints.")),
            "/v1/policy": _get("The policy being served", _answer("hash, files, loaded_at, signer.")),
            "/health": _get("Liveness (no token needed)", _answer("`{\"status\": \"ok\"}`")),
            "/ready": _get("Readiness: policy loaded and audit log writable (no token needed)",
                           _answer("ready, or 503 naming what is missing")),
            "/metrics": _get("Prometheus metrics", {"description": "text exposition format"}),
            "/openapi.json": _get("This document", _answer("OpenAPI 3.1")),
        },
    }
    # pydantic names its definitions #/$defs/X; here they live among the components
    return json.loads(json.dumps(document).replace('"#/$defs/', '"#/components/schemas/'))
