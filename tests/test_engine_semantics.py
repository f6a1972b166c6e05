"""The meaning of decisions (docs/engine.md "What a decision means"), one table per rule of meaning.

Each row is a request and the decision it must get from the policy below,
written in the language as a compliance author would write it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policyengine import BlockList, Decision, Request, load_policy
from policyengine.diagnostics import PolicyError

REGIONS = """
package common.geo
const EU = ["DE", "FR", "EU"]
const EU_REGIONS = ["eu-west-1", "eu-central-1"]
"""

POLICY = """
package corp.ai
cite "ISO 42001"
import common.geo

role viewer
role analyst extends viewer
role senior_analyst extends analyst
role approver_role
role ap_agent
role ops

agent classifier
    owner "ap@example.com"
    roles ap_agent

agent helper
    roles viewer

model small
    provider "local" region "eu-west-1" hosting internal
    cost 0.20 USD per 1M tokens latency 40 ms
model big
    provider "openai-compatible" region "us-east-1" hosting external
    cost 10 USD per 1M tokens latency 900 ms
model nowhere
    provider "lab" hosting internal

const SECRET = ["restricted", "secret"]

rule viewers_read_reports
    allow role viewer to read dataset "reports/*"
    because "reports are open to viewers"
    cite "Policy 7"

rule analysts_write_exact
    allow role analyst to write dataset "reports/q1"

rule analysts_any_action_tools
    allow role analyst to any tool "calc"

rule no_drafts
    deny any to read dataset "reports/drafts/*"
    because "drafts are private"

rule high_clearance_only
    allow role viewer to read dataset "vault/*"
    when principal.clearance >= 3
    unless data.classification == "secret"

rule agents_invoke
    allow role ap_agent to invoke model "*"
    when context.tokens <= 8000

rule helper_reads_tools
    allow agent helper to read tool "*"

rule analysts_invoke
    allow role analyst to invoke model "*"

rule no_secret_offsite
    deny any to invoke model "*"
    when data has classification and data.classification in SECRET and resource.hosting == "external"
    because "secret data stays internal"

rule viewers_export
    allow role viewer to export dataset "*"
    unless context.dry_run == true

rule no_secret_exports
    deny any to export dataset "*"
    when data.classification == "secret"

escalate big_exports
    when action == "export" and context.rows > 1_000
    to role approver_role

residency eu_data
    when data has origin and data.origin in EU
    require region in EU_REGIONS
    cite "GDPR Art. 44"

escalate big_spend
    when action == "pay" and context.amount > 10_000
    to role approver_role
    within 4h else deny
    require distinct approver
    because "large payments need a second person"

rule ops_pay
    allow role ops to pay tool "bank"

rule ops_never_pay_blocked_vendor
    deny role ops to pay tool "bank"
    when context.vendor == "blocked-co"

route classify
    when context.task == "classify"
    prefer small, big

route summarise
    when context.task == "summarise"
    prefer nowhere, big
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("semantics")
    (root / "geo.policy").write_text(REGIONS)
    (root / "corp.policy").write_text(POLICY)
    return root


@pytest.fixture(scope="module")
def policy(policy_dir: Path):
    return load_policy(policy_dir)


def req(roles=("viewer",), action="read", kind="dataset", rid="reports/x", *, pid="alice", ptype="user",
        pattrs=None, rattrs=None, data=None, context=None, approvals=None) -> dict:
    resource = {"kind": kind, "attrs": rattrs or {}}
    if rid is not None:
        resource["id"] = rid
    out = {
        "principal": {"id": pid, "type": ptype, "roles": list(roles), "attrs": pattrs or {}},
        "action": action,
        "resource": resource,
        "data": data or {},
        "context": context or {},
    }
    if approvals is not None:
        out["approvals"] = approvals
    return out


def rules_of(decision: Decision) -> list[str]:
    return [r.rule for r in decision.reasons]


P = "corp.ai."

# (case, request, effect, rule ids of the reasons)
COMBINATION = [
    ("allow by role", req(), "allow", [P + "viewers_read_reports"]),
    ("inherited role (two levels)", req(roles=["senior_analyst"]), "allow", [P + "viewers_read_reports"]),
    ("deny wins over a matching allow", req(rid="reports/drafts/1"), "deny", [P + "no_drafts"]),
    ("no allow: default deny", req(rid="hr/salaries"), "deny", ["<default-deny>"]),
    ("unknown role holds nothing", req(roles=["ghost"]), "deny", ["<default-deny>"]),
    ("role does not inherit downwards", req(roles=["viewer"], action="write", rid="reports/q1"), "deny",
     ["<default-deny>"]),
    ("exact id fast path", req(roles=["analyst"], action="write", rid="reports/q1"), "allow",
     [P + "analysts_write_exact"]),
    ("exact id is not a prefix", req(roles=["analyst"], action="write", rid="reports/q10"), "deny",
     ["<default-deny>"]),
    ("glob does not match other prefix", req(rid="reportsX/1"), "deny", ["<default-deny>"]),
    ("any action", req(roles=["analyst"], action="launch", kind="tool", rid="calc"), "allow",
     [P + "analysts_any_action_tools"]),
    ("wrong kind", req(kind="tool", rid="reports/x"), "deny", ["<default-deny>"]),
    ("deny by role-scoped deny", req(roles=["ops"], action="pay", kind="tool", rid="bank",
                                     context={"vendor": "blocked-co"}), "deny", [P + "ops_never_pay_blocked_vendor"]),
]

def export(data=None, context=None) -> dict:
    return req(action="export", rid="reports/x", data=data, context={"rows": 10, "dry_run": False, **(context or {})})


# A comparison reading a missing attribute (absent or null) or values of two types is a condition error.
# In a deny rule, residency or escalation it denies (listed in Decision.errors); an allow rule (its when
# or its unless) does not apply. `has` tests presence and never errors.
MISSING_ATTRIBUTES = [
    ("when holds", req(rid="vault/a", pattrs={"clearance": 3}, data={"classification": "x"}), "allow",
     [P + "high_clearance_only"]),
    ("when false", req(rid="vault/a", pattrs={"clearance": 2}), "deny", ["<default-deny>"]),
    ("allow: missing attribute, rule does not apply", req(rid="vault/a"), "deny", ["<default-deny>"]),
    ("allow: null attribute, rule does not apply", req(rid="vault/a", pattrs={"clearance": None}), "deny",
     ["<default-deny>"]),
    ("allow: type mismatch, rule does not apply", req(rid="vault/a", pattrs={"clearance": "5"}), "deny",
     ["<default-deny>"]),
    ("unless true blocks the allow", req(rid="vault/a", pattrs={"clearance": 5}, data={"classification": "secret"}),
     "deny", ["<default-deny>"]),
    ("allow: unless on a missing attribute, rule does not apply", req(rid="vault/a", pattrs={"clearance": 5}),
     "deny", ["<default-deny>"]),
    ("allow: unless 1 == true is an error, not true and not false",
     export({"classification": "public"}, {"dry_run": 1}), "deny", ["<default-deny>"]),
    ("has guards a deny", req(roles=["analyst"], action="invoke", kind="model", rid="big"), "allow",
     [P + "analysts_invoke"]),
    ("deny and escalation conditions hold: not applicable", export({"classification": "public"}), "allow",
     [P + "viewers_export"]),
    ("deny: condition holds", export({"classification": "secret"}), "deny", [P + "no_secret_exports"]),
    ("deny: missing attribute denies", export({}), "deny", [P + "no_secret_exports"]),
    ("deny: null attribute denies", export({"classification": None}), "deny", [P + "no_secret_exports"]),
    ("deny: a list where a string is compared denies", export({"classification": ["secret"]}), "deny",
     [P + "no_secret_exports"]),
    ("deny: a number where a string is compared denies", export({"classification": 1}), "deny",
     [P + "no_secret_exports"]),
    ("escalation: condition holds", export({"classification": "public"}, {"rows": 5000}), "escalate",
     [P + "big_exports", P + "viewers_export"]),
    ("escalation: missing attribute denies", export({"classification": "public"}, {"rows": None}), "deny",
     [P + "big_exports"]),
    ("escalation: a number as a string denies", export({"classification": "public"}, {"rows": "5000"}), "deny",
     [P + "big_exports"]),
    ("escalation: a bool where a number is ordered denies", export({"classification": "public"}, {"rows": True}),
     "deny", [P + "big_exports"]),
    ("residency: missing attribute guarded by has", req(data={"region": "x"}), "allow", [P + "viewers_read_reports"]),
    ("residency: an origin of the wrong type denies", req(data={"origin": 7}), "deny", [P + "eu_data"]),
]


def test_condition_errors_are_listed_in_the_decision(policy):
    decision = policy.evaluate(export({"classification": ["secret"]}))
    assert decision.effect == "deny"
    assert decision.errors == ('rule corp.ai.no_secret_exports: condition error: data.classification: expected '
                               'string to compare with "secret", got list ["secret"]',)
    assert "fail closed" in decision.reasons[0].message
    missing = policy.evaluate(export({"classification": "public"}, {"rows": None}))
    assert missing.errors == ("escalation corp.ai.big_exports: condition error: context.rows is missing",)
    assert policy.evaluate(req(rid="vault/a")).errors == ()  # an allow rule that errors is just not applying


AGENTS = [
    ("declared agent gets its declared roles",
     req(roles=[], pid="classifier", ptype="agent", action="invoke", kind="model", rid="small",
         context={"tokens": 100}), "allow", [P + "agents_invoke"]),
    ("roles an agent claims are ignored",
     req(roles=["viewer", "analyst"], pid="classifier", ptype="agent"), "deny", ["<default-deny>"]),
    ("undeclared agent is denied even with roles",
     req(roles=["viewer"], pid="rogue", ptype="agent"), "deny", ["<agent-identity>"]),
    ("agent-scoped rule", req(roles=[], pid="helper", ptype="agent", kind="tool", rid="grep"), "allow",
     [P + "helper_reads_tools"]),
    ("agent-scoped rule is not for users of that name",
     req(roles=[], pid="helper", ptype="user", kind="tool", rid="grep"), "deny", ["<default-deny>"]),
    ("agent inherits through its declared roles",
     req(roles=[], pid="helper", ptype="agent"), "allow", [P + "viewers_read_reports"]),
    ("agent over its token limit",
     req(roles=[], pid="classifier", ptype="agent", action="invoke", kind="model", rid="small",
         context={"tokens": 9000}), "deny", ["<default-deny>"]),
]

REGISTRY = [
    ("registry hosting merged into resource",
     req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"classification": "secret"}),
     "deny", [P + "no_secret_offsite"]),
    ("internal model passes the same deny",
     req(roles=["analyst"], action="invoke", kind="model", rid="small", data={"classification": "secret"}),
     "allow", [P + "analysts_invoke"]),
    ("registry wins over attributes the request claims",
     req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"classification": "secret"},
         rattrs={"hosting": "internal"}), "deny", [P + "no_secret_offsite"]),
    ("undeclared model uses request attributes",
     req(roles=["analyst"], action="invoke", kind="model", rid="other", data={"classification": "secret"},
         rattrs={"hosting": "external"}), "deny", [P + "no_secret_offsite"]),
]

RESIDENCY = [
    ("context region inside the list", req(data={"origin": "DE"}, context={"region": "eu-west-1"}), "allow",
     [P + "viewers_read_reports"]),
    ("context region outside the list", req(data={"origin": "DE"}, context={"region": "us-east-1"}), "deny",
     [P + "eu_data"]),
    ("unknown region is denied", req(data={"origin": "FR"}), "deny", [P + "eu_data"]),
    ("does not apply when its condition is false", req(data={"origin": "US"}), "allow",
     [P + "viewers_read_reports"]),
    ("model region from the registry (inside)",
     req(roles=["analyst"], action="invoke", kind="model", rid="small", data={"origin": "EU"}), "allow",
     [P + "analysts_invoke"]),
    ("model region from the registry (outside)",
     req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"origin": "EU"}), "deny",
     [P + "eu_data"]),
    ("an allowed context region does not carry data to a model declared outside the list",
     req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"origin": "EU"},
         context={"region": "eu-central-1"}), "deny", [P + "eu_data"]),
    ("a context region outside the list denies a model declared inside it",
     req(roles=["analyst"], action="invoke", kind="model", rid="small", data={"origin": "EU"},
         context={"region": "us-east-1"}), "deny", [P + "eu_data"]),
    ("a context region and a declared region both in the list",
     req(roles=["analyst"], action="invoke", kind="model", rid="small", data={"origin": "EU"},
         context={"region": "eu-central-1"}), "allow", [P + "analysts_invoke"]),
    ("a context region for a model declared without one",
     req(roles=["analyst"], action="invoke", kind="model", rid="nowhere", data={"origin": "EU"},
         context={"region": "eu-west-1"}), "allow", [P + "analysts_invoke"]),
    ("two regions are checked only where a residency applies",
     req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"origin": "US"},
         context={"region": "eu-central-1"}), "allow", [P + "analysts_invoke"]),
    ("model without a region is unknown",
     req(roles=["analyst"], action="invoke", kind="model", rid="nowhere", data={"origin": "EU"}), "deny",
     [P + "eu_data"]),
]

TABLES = {
    "combination": COMBINATION,
    "missing": MISSING_ATTRIBUTES,
    "agents": AGENTS,
    "registry": REGISTRY,
    "residency": RESIDENCY,
}


@pytest.mark.parametrize(
    "case,request_,effect,rules",
    [pytest.param(*row, id=f"{table}: {row[0]}") for table, rows in TABLES.items() for row in rows],
)
def test_meaning(policy, case, request_, effect, rules):
    decision = policy.evaluate(request_)
    assert (decision.effect, rules_of(decision)) == (effect, rules), case
    assert decision.route is None
    assert decision.policy_hash == policy.policy_hash


def test_reasons_carry_file_line_because_and_cites(policy, policy_dir):
    decision = policy.evaluate(req())
    (reason,) = decision.reasons
    assert reason.file.endswith("corp.policy")
    assert reason.line == POLICY.splitlines().index("rule viewers_read_reports") + 1
    assert reason.message == "reports are open to viewers"
    assert reason.cites == ("Policy 7", "ISO 42001")


def test_residency_reason_names_region_and_citation(policy):
    decision = policy.evaluate(req(data={"origin": "DE"}, context={"region": "us-east-1"}))
    (reason,) = decision.reasons
    assert "us-east-1" in reason.message and "GDPR Art. 44" in reason.cites


def test_a_declared_region_outside_the_list_is_named_beside_the_context_region(policy):
    decision = policy.evaluate(req(roles=["analyst"], action="invoke", kind="model", rid="big", data={"origin": "EU"},
                                   context={"region": "eu-central-1"}))
    (reason,) = decision.reasons
    assert reason.rule == P + "eu_data"
    assert "compute region 'us-east-1', where model 'big' is declared (context.region 'eu-central-1')" in reason.message


# --- routing -----------------------------------------------------------------------

ROUTING = [
    # case, roles, context, data, effect, route, reason rules
    ("first candidate allowed", ["analyst"], {"task": "classify"}, {}, "allow", "small", [P + "analysts_invoke"]),
    ("both candidates fail residency", ["analyst"], {"task": "summarise"}, {"origin": "EU"}, "deny", None,
     [P + "summarise", P + "eu_data", P + "eu_data"]),
    ("first candidate allowed (no residency applies)", ["analyst"], {"task": "summarise"}, {}, "allow", "nowhere",
     [P + "analysts_invoke"]),
    ("first candidate denied by residency, second too", ["analyst"], {"task": "classify", "region": "us-east-1"},
     {"origin": "DE"}, "deny", None, [P + "classify", P + "eu_data", P + "eu_data"]),
    ("every candidate default-denied", ["viewer"], {"task": "classify"}, {}, "deny", None,
     [P + "classify", "<default-deny>", "<default-deny>"]),
    ("no route matches and no id", ["analyst"], {"task": "other"}, {}, "deny", None, ["<request>"]),
]


@pytest.mark.parametrize("case,roles,context,data,effect,route,rules", ROUTING, ids=[r[0] for r in ROUTING])
def test_routing(policy, case, roles, context, data, effect, route, rules):
    decision = policy.evaluate(req(roles=roles, action="invoke", kind="model", rid=None, context=context, data=data))
    assert (decision.effect, decision.route, rules_of(decision)) == (effect, route, rules)


def test_routing_skips_a_denied_first_candidate(policy):
    decision = policy.evaluate(req(roles=["analyst"], action="invoke", kind="model", rid=None,
                                   context={"task": "classify"}, data={"origin": "DE"},
                                   ))
    assert (decision.effect, decision.route) == ("allow", "small")
    denied_first = policy.evaluate(req(roles=["analyst"], action="invoke", kind="model", rid=None,
                                       context={"task": "classify"}, data={"classification": "secret"}))
    assert (denied_first.effect, denied_first.route) == ("allow", "small")
    blocked = policy.with_blocked(frozenset({"small"})).evaluate(
        req(roles=["analyst"], action="invoke", kind="model", rid=None, context={"task": "classify"}))
    assert (blocked.effect, blocked.route) == ("allow", "big")


def test_all_denied_route_names_each_candidate(policy):
    decision = policy.evaluate(req(roles=["viewer"], action="invoke", kind="model", rid=None,
                                   context={"task": "classify"}))
    assert [r.candidate for r in decision.reasons] == [None, "small", "big"]


def test_explicit_id_is_not_routed(policy):
    decision = policy.evaluate(req(roles=["analyst"], action="invoke", kind="model", rid="big",
                                   context={"task": "classify"}))
    assert (decision.effect, decision.route) == ("allow", None)


# --- escalation gates -----------------------------------------------------------------

GATE = P + "big_spend"


def pay(amount=20_000, approvals=None, roles=("ops",), pid="bob", vendor="acme", pattrs=None):
    """A payment request; its approvals are bound to its run and given now (docs/engine.md)."""
    from datetime import UTC, datetime

    bound = [{"run_id": "r-pay", "ts": datetime.now(UTC).isoformat(), **a} for a in approvals or ()] or None
    return req(roles=roles, pid=pid, action="pay", kind="tool", rid="bank", pattrs=pattrs,
               context={"amount": amount, "vendor": vendor, "run_id": "r-pay"}, approvals=bound)


GATES = [
    ("below threshold: allow", pay(amount=50), "allow"),
    ("matching gate without approval: escalate", pay(), "escalate"),
    ("approval by a holder of the role", pay(approvals=[{"gate": GATE, "approver": "carol", "roles": ["approver_role"]}]),
     "allow"),
    ("approval by short gate name", pay(approvals=[{"gate": "big_spend", "approver": "carol",
                                                    "roles": ["approver_role"]}]), "allow"),
    ("approver without the role", pay(approvals=[{"gate": GATE, "approver": "carol", "roles": ["viewer"]}]),
     "escalate"),
    ("approval for another gate", pay(approvals=[{"gate": "corp.ai.other", "approver": "carol",
                                                  "roles": ["approver_role"]}]), "escalate"),
    ("requester approving self (distinct approver)",
     pay(roles=("ops", "approver_role"), approvals=[{"gate": GATE, "approver": "bob", "roles": ["approver_role"]}]),
     "escalate"),
    ("approval without roles and no directory", pay(approvals=[{"gate": GATE, "approver": "carol"}]), "escalate"),
    ("gate never turns a deny into escalate", pay(vendor="blocked-co"), "deny"),
    ("gate never turns default deny into escalate", pay(roles=("viewer",)), "deny"),
]


@pytest.mark.parametrize("case,request_,effect", GATES, ids=[g[0] for g in GATES])
def test_gates(policy, case, request_, effect):
    assert policy.evaluate(request_).effect == effect


def by(approver):
    """An approval of the distinct-approver gate by ``approver``, who holds its role."""
    return [{"gate": GATE, "approver": approver, "roles": ["approver_role"]}]


# The orchestrator's principal is the agent; the person who started the run is principal.attrs.requested_by.
# Either is the requester of a gate that requires a distinct approver. (case, principal id, attrs, approver, effect)
DISTINCT = [
    ("someone else approves", "pay-agent", {"requested_by": "alice"}, "carol", "allow"),
    ("the person the agent acts for approves", "pay-agent", {"requested_by": "alice"}, "alice", "escalate"),
    ("... spelled in another case", "pay-agent", {"requested_by": "alice"}, " ALICE", "escalate"),
    ("... written in the request in another case", "pay-agent", {"requested_by": "Alice "}, "alice", "escalate"),
    ("the principal itself approves", "pay-agent", {"requested_by": "alice"}, "pay-agent", "escalate"),
    ("no requested_by: another person approves", "pay-agent", {}, "alice", "allow"),
    ("requested_by not a string: nobody can be told apart", "pay-agent", {"requested_by": 7}, "carol", "escalate"),
    ("requested_by with an invisible character", "pay-agent", {"requested_by": "ali\u200bce"}, "carol", "escalate"),
]


@pytest.mark.parametrize("case,pid,pattrs,approver,effect", DISTINCT, ids=[d[0] for d in DISTINCT])
def test_a_distinct_approver_is_neither_the_principal_nor_whom_it_acts_for(policy, case, pid, pattrs, approver,
                                                                          effect):
    assert policy.evaluate(pay(pid=pid, pattrs=pattrs, approvals=by(approver))).effect == effect
    directory = {"alice": ["approver_role"], "carol": ["approver_role"], "pay-agent": ["approver_role"]}
    assert policy.evaluate(pay(pid=pid, pattrs=pattrs, approvals=by(approver)), directory=directory).effect == effect


def test_escalation_obligation_names_role_deadline_and_distinct_approver(policy):
    from datetime import datetime, timezone

    now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)
    decision = policy.evaluate(pay(), now=now)
    assert decision.effect == "escalate"
    assert rules_of(decision) == [GATE, P + "ops_pay"]
    (ob,) = decision.obligations
    assert ob.model_dump() == {
        "kind": "approval_required", "gate": GATE, "role": "approver_role", "deadline_seconds": 4 * 3600,
        "deadline_at": "2026-11-24T16:00:00+00:00", "on_timeout": "deny", "distinct_approver": True,
    }


def test_approver_roles_from_a_directory(policy):
    approval = [{"gate": GATE, "approver": "carol"}]
    assert policy.evaluate(pay(approvals=approval), directory={"carol": ["approver_role"]}).effect == "allow"
    assert policy.evaluate(pay(approvals=approval), directory={"carol": ["ops"]}).effect == "escalate"
    claimed = [{"gate": GATE, "approver": "mallory", "roles": ["approver_role"]}]
    assert policy.evaluate(pay(approvals=claimed)).effect == "allow"  # no directory: the entry's roles
    assert policy.evaluate(pay(approvals=claimed), directory={"carol": ["approver_role"]}).effect == "escalate"


# --- blocked models -------------------------------------------------------------------


def test_blocked_model_is_denied_until_unblocked(policy_dir):
    blocked = BlockList()
    policy = load_policy(policy_dir, blocked=blocked)
    request = req(roles=["analyst"], action="invoke", kind="model", rid="small")
    assert policy.evaluate(request).effect == "allow"
    blocked.block("small")
    decision = policy.evaluate(request)
    assert (decision.effect, rules_of(decision)) == ("deny", ["<blocked-model>"])
    blocked.unblock("small")
    assert policy.evaluate(request).effect == "allow"


# --- malformed requests ------------------------------------------------------------------

GOOD = req()


def without(key):
    return {k: v for k, v in GOOD.items() if k != key}


def with_(path, value):
    import copy

    out = copy.deepcopy(GOOD)
    target = out
    *parents, last = path
    for p in parents:
        target = target[p]
    target[last] = value
    return out


MALFORMED = [
    ("not an object", ["a", "list"], "request: must be a JSON object"),
    ("a string", "read everything", "request: must be a JSON object"),
    ("missing principal", without("principal"), "principal: missing"),
    ("principal not an object", with_(["principal"], "alice"), "principal: must be an object"),
    ("principal id missing", with_(["principal", "id"], None), "principal.id: must be a non-empty string"),
    ("principal id a number", with_(["principal", "id"], 7), "principal.id: must be a non-empty string"),
    ("principal type unknown", with_(["principal", "type"], "robot"), 'principal.type: must be "user" or "agent"'),
    ("roles not a list", with_(["principal", "roles"], "viewer"), "principal.roles: must be a list of strings"),
    ("roles with a number", with_(["principal", "roles"], ["viewer", 3]), "principal.roles: must be a list of strings"),
    ("principal attrs a list", with_(["principal", "attrs"], []), "principal.attrs: must be an object"),
    ("missing action", without("action"), "action: missing"),
    ("action a number", with_(["action"], 1), "action: must be a non-empty string"),
    ("missing resource", without("resource"), "resource: missing"),
    ("resource kind unknown", with_(["resource", "kind"], "database"),
     "resource.kind: must be one of agent, dataset, model, tool, workflow"),
    ("resource id empty", with_(["resource", "id"], ""), "resource.id: must be a non-empty string"),
    ("resource attrs a string", with_(["resource", "attrs"], "x"), "resource.attrs: must be an object"),
    ("data a list", with_(["data"], [1]), "data: must be an object"),
    ("context a string", with_(["context"], "prod"), "context: must be an object"),
    ("approvals an object", with_(["approvals"], {"gate": "x"}), "approvals: must be a list"),
    ("approval without approver", with_(["approvals"], [{"gate": "x"}]),
     "approvals[0]: needs string fields gate and approver"),
    ("dataset without id", with_(["resource"], {"kind": "dataset"}),
     "resource.id: missing (only a routed model invoke may leave it out)"),
]


@pytest.mark.parametrize("case,request_,error", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_are_denied_with_the_bad_field(policy, case, request_, error):
    decision = policy.evaluate(request_)
    assert decision.effect == "deny"
    assert any(error in r.message for r in decision.reasons), [r.message for r in decision.reasons]
    assert error in decision.errors


def test_every_error_is_reported_not_just_the_first(policy):
    decision = policy.evaluate({"principal": {"id": 5}, "resource": {"kind": "db"}})
    assert decision.errors == (
        "principal.id: must be a non-empty string", "action: missing",
        "resource.kind: must be one of agent, dataset, model, tool, workflow",
    )


def test_request_model_and_dict_decide_alike(policy):
    for row in [*COMBINATION, *AGENTS, *RESIDENCY]:
        request = row[1]
        assert policy.evaluate(Request.model_validate(request)) == policy.evaluate(request), row[0]


def test_bad_rule_files_raise_policy_error_with_findings(tmp_path):
    (tmp_path / "bad.policy").write_text("package x\nrule r\n    allow role nobody to read dataset \"*\"\n")
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.findings and all(f.span.file.endswith("bad.policy") for f in info.value.findings)


@pytest.mark.parametrize(("where", "beside", "under"), [
    ("principal", 1, 4),          # the value attrs held was the one that counted: a reader of the other is denied
    ("principal", 4, 1),
    ("principal", 4, 4.0),        # equal numbers of two types are still two spellings
    ("principal", True, 1),
    ("resource", "public", "secret"),
])
def test_an_attribute_written_beside_id_and_under_attrs_with_two_values_is_malformed(policy, where, beside, under):
    request = req(rid="vault/a", data={"classification": "x"})
    request[where]["clearance"] = beside
    request[where]["attrs"] = {"clearance": under}
    decision = policy.evaluate(request)
    assert decision.effect == "deny" and decision.errors == (
        f"{where}.clearance: written beside id and under attrs with two values; write it once",)


def test_missing_rule_path_raises_policy_error(tmp_path):
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "nope.policy")


def test_attributes_beside_id_count_as_attrs(policy):
    request = req(rid="vault/a", data={"classification": "x"})
    request["principal"]["clearance"] = 4
    assert policy.evaluate(request).effect == "allow"
    request["principal"]["attrs"] = {"clearance": 4}  # the same value in both places: one attribute
    assert policy.evaluate(request).effect == "allow"
    model = req(roles=["analyst"], action="invoke", kind="model", rid="other", data={"classification": "secret"})
    model["resource"]["hosting"] = "external"
    assert [r.rule for r in policy.evaluate(model).reasons] == [P + "no_secret_offsite"]


def test_now_may_be_an_iso_string(policy):
    decision = policy.evaluate(pay(), now="2026-11-24T12:00:00Z")
    assert decision.obligations[0].deadline_at == "2026-11-24T16:00:00+00:00"


UNHASHABLE = [
    ("kind a list", with_(["resource", "kind"], ["dataset"]), "resource.kind: must be one of"),
    ("type a dict", with_(["principal", "type"], {"t": 1}), 'principal.type: must be "user" or "agent"'),
    ("roles with a list", with_(["principal", "roles"], [["viewer"]]), "principal.roles: must be a list of strings"),
    ("action a list", with_(["action"], ["read"]), "action: must be a non-empty string"),
]


@pytest.mark.parametrize("case,request_,error", UNHASHABLE, ids=[u[0] for u in UNHASHABLE])
def test_unhashable_values_are_named_not_crashed_on(policy, case, request_, error):
    decision = policy.evaluate(request_)
    assert decision.effect == "deny"
    assert any(e.startswith(error) for e in decision.errors), decision.errors


def test_unhashable_attribute_values_are_condition_errors_not_crashes(policy):
    assert policy.evaluate(req(rid="vault/a", pattrs={"clearance": [5]}, data={"classification": {"x": 1}})).effect \
        == "deny"
    decision = policy.evaluate(req(data={"origin": ["DE"]}))  # residency `in EU` cannot be decided: denies
    assert decision.effect == "deny" and decision.errors == (
        'residency corp.ai.eu_data: condition error: data.origin: expected string, got list ["DE"]',)


# --- canonical ids and exact names -----------------------------------------------------------

MALFORMED_IDS = [
    ("reports/../vault/a", "has a '.' or '..' segment"),
    ("reports/./x", "has a '.' or '..' segment"),
    ("..", "has a '.' or '..' segment"),
    ("reports//x", "has an empty segment"),
    ("/reports/x", "has an empty segment"),
    ("reports/x/", "has an empty segment"),
    (" reports/x", "has leading or trailing whitespace"),
    ("reports/x\t", "contains a control character"),
    ("reports/x\u0000", "contains a control character"),
    ("reports/\u2028x", "contains a control character"),
]


@pytest.mark.parametrize("rid,problem", MALFORMED_IDS, ids=[m[0] for m in MALFORMED_IDS])
def test_a_resource_id_that_is_not_canonical_is_malformed(policy, rid, problem):
    decision = policy.evaluate(req(rid=rid))
    assert decision.effect == "deny" and rules_of(decision) == ["<request>"]
    assert len(decision.errors) == 1 and decision.errors[0].startswith("resource.id: ") and problem in decision.errors[0]


@pytest.mark.parametrize("rid", ["reports/x.y", "reports/.hidden", "meta-llama/Llama-3.1-8B", "a..b/c"])
def test_dots_inside_a_segment_are_ordinary_characters(policy, rid):
    assert policy.evaluate(req(rid=rid)).errors == ()


CASE_SPELLINGS = [
    ("model", req(roles=["analyst"], action="invoke", kind="model", rid="BIG", data={"classification": "secret"}),
     "resource.id: model 'BIG' differs only in case from the declared model 'big'; names are exact"),
    ("role", req(roles=["Viewer"]), "principal.roles: role 'Viewer' differs only in case from the declared role "
     "'viewer'; names are exact"),
    ("agent", req(roles=[], pid="Classifier", ptype="agent"), "principal.id: agent 'Classifier' differs only in "
     "case from the declared agent 'classifier'; names are exact"),
]


@pytest.mark.parametrize("what,request_,error", CASE_SPELLINGS, ids=[c[0] for c in CASE_SPELLINGS])
def test_a_name_that_differs_only_in_case_is_refused(policy, what, request_, error):
    for _ in range(2):  # the second time from the caches
        decision = policy.evaluate(request_)
        assert (decision.effect, decision.errors) == ("deny", (error,))


QUOTED = """
package q
role "data-steward"
model "gpt-4o"
    hosting external
model "meta-llama/Llama-3.1-8B"
    hosting internal
rule stewards_invoke
    allow role "data-steward" to invoke model "*"
rule no_secret_offsite
    deny any to invoke model "*"
    when data.classification == "secret" and resource.hosting == "external"
route pick
    when context.task == "x"
    prefer "gpt-4o", "meta-llama/Llama-3.1-8B"
"""


def test_quoted_names_are_declared_and_decided_like_any_other(tmp_path):
    (tmp_path / "q.policy").write_text(QUOTED)
    quoted = load_policy(tmp_path)
    steward = {"principal": {"id": "s", "roles": ["data-steward"]}, "action": "invoke",
               "data": {"classification": "secret"}}
    llama = quoted.evaluate({**steward, "resource": {"kind": "model", "id": "meta-llama/Llama-3.1-8B"}})
    gpt = quoted.evaluate({**steward, "resource": {"kind": "model", "id": "gpt-4o"}})
    routed = quoted.evaluate({**steward, "resource": {"kind": "model"}, "context": {"task": "x"}})
    assert (llama.effect, gpt.effect, gpt.reasons[0].rule) == ("allow", "deny", "q.no_secret_offsite")
    assert (routed.effect, routed.route) == ("allow", "meta-llama/Llama-3.1-8B")
    upper = quoted.evaluate({**steward, "resource": {"kind": "model", "id": "GPT-4o"}})
    assert upper.errors == ("resource.id: model 'GPT-4o' differs only in case from the declared model 'gpt-4o'; "
                            "names are exact",)
