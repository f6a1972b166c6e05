"""Scopes and package-qualified roles: grammar, canonical format, checks and decisions, as tables."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import pytest

from policyengine import ast
from policyengine.check import check_policy
from policyengine.diagnostics import PolicyError, Severity
from policyengine.engine import Policy
from policyengine.format import format_policy
from policyengine.syntax import parse_policy

# --- grammar and format: (source, canonical text) -------------------------------------------

ROUND_TRIPS = [
    ('package p\nscope workflow "invoices"\n',
     'package p\nscope workflow "invoices"\n'),
    ('package p\nscope action approve_payment, "read"\n',
     'package p\nscope action approve_payment, read\n'),
    ('package p\nscope workflow "a"\nscope action x\n',  # two header lines are one scope
     'package p\nscope workflow "a" action x\n'),
    ('package p\nscope action x workflow "a", "b"\n',
     'package p\nscope workflow "a", "b" action x\n'),
    ('package p\nrule r allow any to read dataset "x" applies to workflow "w"\n',
     'package p\n\nrule r\n    allow any to read dataset "x"\n    applies to workflow "w"\n'),
    ('package p\nrule r deny any to read dataset "x" when context.n > 1 applies to action read, list\n',
     'package p\n\nrule r\n    deny any to read dataset "x"\n    applies to action read, list\n    when context.n > 1\n'),
    ('package p\nresidency r applies to workflow "w" require region in ["eu"]\n',
     'package p\n\nresidency r\n    applies to workflow "w"\n    require region in ["eu"]\n'),
    ('package p\nescalate g to role a applies to action send workflow "w"\n',
     'package p\n\nescalate g\n    applies to workflow "w" action send\n    to role a\n'),
    ('package finance.invoices\nrole finance.analyst\nrole "finance.lead" extends finance.analyst\n',
     'package finance.invoices\n\nrole finance.analyst\nrole finance.lead extends finance.analyst\n'),
    ('package p\nrule r allow role p.a to read dataset "x"\n',
     'package p\n\nrule r\n    allow role p.a to read dataset "x"\n'),
    ('package p  # head\nscope workflow "w"  # only the w workflow\n',
     'package p  # head\nscope workflow "w"  # only the w workflow\n'),
]


@pytest.mark.parametrize("source, canonical", ROUND_TRIPS)
def test_round_trip(source: str, canonical: str) -> None:
    tree = parse_policy(source)
    text = format_policy(tree, source)
    assert text == canonical
    assert parse_policy(text) == tree  # formatting never changes meaning
    assert format_policy(parse_policy(text), text) == text  # and is idempotent


def test_scope_nodes_carry_spans() -> None:
    tree = parse_policy('package p\nscope workflow "w"\nrule r allow any to read dataset "x"\n'
                        '    applies to action read\n')
    assert (tree.scope.span.line, tree.scope.span.col) == (2, 1)
    assert (tree.scope.workflows[0].span.line, tree.scope.workflows[0].span.col) == (2, 16)
    applies = tree.decls[0].applies
    assert isinstance(applies, ast.Scope) and (applies.span.line, applies.span.col) == (4, 5)
    with pytest.raises(AttributeError):
        applies.actions = ()  # type: ignore[misc]  # frozen


SYNTAX_ERRORS = [
    ('package p\nscope team "x"\n', "2:7", "expected 'workflow' or 'action' in a scope, found 'team'"),
    ('package p\nrule r allow any to read dataset "x" applies to workflow "a", "a"\n', "2:63",
     "workflow 'a' is named twice in this scope"),
    ('package p\nrule r allow any to read dataset "x" applies to action "a-b"\n', "2:56", "'a-b' is not an action name"),
    ('package p\nrule r allow any to read dataset "x" applies to workflow "a" applies to action b\n', "2:62",
     "rule 'r' has more than one 'applies' clause"),
    ('package p\nscope\n', "2:6", None),
]


@pytest.mark.parametrize("source, at, message", SYNTAX_ERRORS)
def test_scope_syntax_errors(source: str, at: str, message: str | None) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(source, "f.policy")
    finding = caught.value.findings[0]
    assert finding.code == "syntax"
    assert f"{finding.span.line}:{finding.span.col}" == at
    if message is not None:
        assert finding.message == message


# --- checks: one small policy set per finding --------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    texts: tuple[str, ...]
    code: str | None  # None: the set checks clean
    message: str = ""
    at: str = ""  # file index:line:col
    severity: Severity = Severity.ERROR


CHECKS = [
    Case("qualified role in its package", ("package finance.invoices\nrole finance.analyst\n"
                                           'rule r allow role finance.analyst to read dataset "x"\n',), None),
    Case("qualified by the package itself", ("package finance.invoices\nrole finance.invoices.clerk\n",), None),
    Case("qualified by another package", ("package finance.invoices\nrole marketing.analyst\n",),
         "role-name", "role 'marketing.analyst' is qualified by 'marketing', which is not package "
         "finance.invoices or one of its parents", "0:2:6"),
    Case("a prefix that is not a parent package", ("package financial\nrole finance.analyst\n",),
         "role-name", "role 'finance.analyst' is qualified by 'finance', which is not package financial "
         "or one of its parents", "0:2:6"),
    Case("global role in two packages", ("package a\nrole analyst\n", "package b\nrole analyst\n"),
         "role-collision", "role 'analyst' is declared by packages a and b", "1:2:6"),
    Case("the same qualified name in two sub-packages is declared twice",
         ("package f.a\nrole f.analyst\n", "package f.b\nrole f.analyst\n"),
         "duplicate-name", "role 'f.analyst' is declared twice in the policy set", "1:2:6"),
    Case("two packages, each with its own qualified role",
         ("package a\nrole a.analyst\n", "package b\nrole b.analyst\n"), None),
    Case("bare name of qualified roles only", ("package a\nrole a.analyst\n", "package b\nrole b.analyst\n"
                                               'rule r allow role analyst to read dataset "x"\n'),
         "ambiguous-role", "role 'analyst' is only declared package-qualified: a.analyst, b.analyst", "1:3:19"),
    Case("bare shared name where the package has its own", ("package common\nrole analyst\n",
                                                           "package b\nrole b.analyst\n"
                                                           "escalate g to role analyst\n"),
         "ambiguous-role", "role 'analyst' is the shared role, but package b declares 'b.analyst'", "1:3:20",
         Severity.WARNING),
    Case("an agent holding a qualified role", ("package a\nrole a.bot\nagent x roles a.bot\n",), None),
    Case("a scoped unconditional deny does not shadow an unscoped allow",
         ('package p\nscope workflow "w"\nrule d deny any to read dataset "*"\n',
          'package q\nrule a allow any to read dataset "x"\n'), None),
    Case("an unscoped unconditional deny still does", ('package p\nrule d deny any to read dataset "*"\n'
                                                      'rule a allow any to read dataset "x"\n',),
         "shadowed-allow", "allow 'a' never takes effect: rule 'p.d' always denies what it allows", "0:3:6",
         Severity.WARNING),
    Case("budget for a bare name of a qualified role", ("package a\nrole a.x\n"
                                                       'budget b for role x limit 1 USD per day\n',),
         "ambiguous-role", "role 'x' is only declared package-qualified: a.x", "0:3:14"),
    Case("extends a bare name of a qualified role", ("package a\nrole a.analyst\nrole a.lead extends analyst\n",),
         "ambiguous-role", "role 'analyst' is only declared package-qualified: a.analyst", "0:3:21"),
]


@pytest.mark.parametrize("case", CHECKS, ids=[c.id for c in CHECKS])
def test_role_checks(case: Case) -> None:
    files = [parse_policy(textwrap.dedent(t), f"f{i}.policy") for i, t in enumerate(case.texts)]
    result = check_policy(files)
    if case.code is None:
        assert [f.headline() for f in result.findings] == []
        return
    found = [f for f in result.findings if f.code == case.code]
    assert found, [f.headline() for f in result.findings]
    finding = found[0]
    index, line, col = case.at.split(":")
    assert (finding.message, finding.severity) == (case.message, case.severity)
    assert (finding.span.file, finding.span.line, finding.span.col) == (f"f{index}.policy", int(line), int(col))
    assert finding.help
    assert not [f for f in result.findings if f.code == "unknown-role"]  # never reported twice


# --- decisions: (request context, action) -> effect ---------------------------------------------

POLICY = """
package shop
scope workflow "orders"

role clerk

rule clerks_read
    allow role clerk to read, write dataset "orders/*"

rule no_drafts
    deny any to read dataset "orders/*"
    applies to action read
    when data.draft == true

residency eu_orders
    applies to action write
    require region in ["eu-west-1"]

escalate big_orders
    when context.amount > 100
    to role clerk
"""

OTHER = """
package other
role clerk_other
rule any_read allow any to read dataset "orders/*"
"""


def _policy() -> Policy:
    files = [parse_policy(POLICY, "shop.policy"), parse_policy(OTHER, "other.policy")]
    result = check_policy(files)
    assert result.policy is not None, [f.headline() for f in result.findings]
    return Policy(result.policy, policy_hash="test")


DECISIONS = [
    # in the workflow, every declaration applies
    ({"workflow": "orders", "amount": 1}, "read", {"draft": False}, "allow", ["other.any_read", "shop.clerks_read"]),
    ({"workflow": "orders", "amount": 1}, "read", {"draft": True}, "deny", ["shop.no_drafts"]),
    ({"workflow": "orders", "amount": 1}, "read", {}, "deny", ["shop.no_drafts"]),  # condition error: fail closed
    ({"workflow": "orders"}, "read", {"draft": False}, "deny", ["shop.big_orders"]),  # the gate's, too
    ({"workflow": "orders", "amount": 101}, "read", {"draft": False}, "escalate", None),
    ({"workflow": "orders", "region": "us-east-1"}, "write", {}, "deny", ["shop.eu_orders"]),
    ({"workflow": "orders", "region": "eu-west-1", "amount": 1}, "write", {}, "allow", ["shop.clerks_read"]),
    # outside it none does: no allow of its own, no deny, no residency, no gate, no condition error
    ({}, "read", {}, "allow", ["other.any_read"]),
    ({"workflow": "billing", "amount": 101}, "read", {"draft": True}, "allow", ["other.any_read"]),
    ({"workflow": "billing", "region": "us-east-1"}, "write", {}, "deny", ["<default-deny>"]),
    ({"workflow": ["orders"]}, "read", {}, "allow", ["other.any_read"]),  # not a string: outside, never an error
    # a name that only looks like the scoped workflow is refused, not taken for another workflow past no_drafts
    ({"workflow": "Orders"}, "read", {"draft": True}, "deny", ["<request>"]),
    ({"workflow": "orders "}, "read", {"draft": True}, "deny", ["<request>"]),
    ({"workflow": "\uff4frders"}, "read", {"draft": True}, "deny", ["<request>"]),
    ({"workflow": "ord\u200bers"}, "read", {"draft": True}, "deny", ["<request>"]),
]


@pytest.mark.parametrize("context, action, data, effect, rules", DECISIONS)
def test_scoped_decisions(context: dict, action: str, data: dict, effect: str, rules: list | None) -> None:
    policy = _policy()
    request = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": action,
               "resource": {"kind": "dataset", "id": "orders/1"}, "context": context, "data": data}
    decision = policy.evaluate(request)
    assert decision.effect == effect, decision.reasons
    if rules is not None:
        assert sorted(r.rule for r in decision.reasons) == rules


def test_explain_says_a_declaration_is_outside_its_scope() -> None:
    request = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "orders/1"}, "context": {"workflow": "billing"}}
    text = _policy().explain(request).text()
    assert ("rule shop.no_drafts [deny] shop.policy:10: no match: outside its scope (workflow 'orders' and "
            "action read; this request: workflow 'billing', action 'read')") in text
    assert "escalate shop.big_orders: does not match: outside its scope (workflow 'orders'" in text
    assert "residency shop.eu_orders: does not apply: outside its scope (workflow 'orders' and action write" in text


# A rule whose head names an action group is checked as a copy listing the actions: the copy is still in its
# file, under the file's scope (it was looked up by object and lost the scope: it allowed in every workflow).
GROUPED = """
package shop
scope workflow "orders"
role clerk
const READS = ["read", "list"]
rule clerks_read_and_list
    allow role clerk to READS dataset "orders/*"
rule no_list_of_drafts
    deny any to READS dataset "orders/*"
    when data.draft == true
"""


@pytest.mark.parametrize("workflow, action, data, effect, rules", [
    ("orders", "read", {"draft": False}, "allow", ["shop.clerks_read_and_list"]),
    ("orders", "list", {"draft": True}, "deny", ["shop.no_list_of_drafts"]),
    ("billing", "read", {"draft": False}, "deny", ["<default-deny>"]),
    ("billing", "list", {"draft": True}, "deny", ["<default-deny>"]),
    (None, "read", {}, "deny", ["<default-deny>"]),
])
def test_a_rule_naming_an_action_group_keeps_its_files_scope(workflow, action, data, effect, rules) -> None:
    result = check_policy([parse_policy(GROUPED, "shop.policy")])
    assert result.policy is not None, [f.headline() for f in result.findings]
    request = {"principal": {"id": "pat", "roles": ["clerk"]}, "action": action, "data": data,
               "resource": {"kind": "dataset", "id": "orders/1"},
               "context": {} if workflow is None else {"workflow": workflow}}
    decision = Policy(result.policy, policy_hash="test").evaluate(request)
    assert (decision.effect, [r.rule for r in decision.reasons]) == (effect, rules)
