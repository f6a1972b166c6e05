"""The policy test-file format, its runner, coverage and JUnit output, as specifications.

Every test writes real rule files and real YAML test files into ``tmp_path`` and
runs them through the real engine.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from policyengine.approval_binding import request_hash
from policyengine.engine import load_policy
from policyengine.testing.cases import DEFAULT_NOW, TestFileError, load_test_file, parse_test_file
from policyengine.testing.coverage import CoverageCollector
from policyengine.testing.junit import junit_xml
from policyengine.testing.output import render_report
from policyengine.testing.runner import matches_keyword, run_file, run_paths

POLICY = """\
package shop
role clerk
role manager extends clerk
agent pricing_bot
    roles clerk
model small
    provider "local" region "eu-west-1" hosting internal
    cost 1 USD per 1M tokens latency 10 ms
rule clerks_read_orders
    allow role clerk to read dataset "orders/*"
rule bot_prices
    allow agent pricing_bot to invoke model "*"
    when context.tokens <= 100
rule no_secrets
    deny any to read dataset "*"
    when data has classification and data.classification == "secret"
    cite "Trade Secrets Directive"
budget bot_tokens
    for agent pricing_bot
    limit 1000 tokens per day
    warn at 50%
escalate big_refund
    when context has amount and context.amount > 500
    to role manager
route pricing
    when context.task == "price"
    prefer small
"""


def write(tmp_path: Path, tests: str, policy: str = POLICY, name: str = "shop_test.yaml") -> Path:
    (tmp_path / "shop.policy").write_text(policy, encoding="utf-8")
    path = tmp_path / name
    path.write_text(textwrap.dedent(tests), encoding="utf-8")
    return path


GOOD_CASE = """\
cases:
  - name: clerk reads orders
    principal: {id: kim, roles: [clerk]}
    action: read
    resource: dataset orders/1
    expect: allow
"""

# --- bad test files: file:line: message ------------------------------------------------------

BAD_FILES = [
    ("unknown case field", GOOD_CASE + "    expct: allow\n", 7, "unknown field 'expct' in a case"),
    ("unknown effect", GOOD_CASE.replace("expect: allow", "expect: permit"), 6, "unknown expected effect 'permit'"),
    ("effect of the wrong type", GOOD_CASE.replace("expect: allow", "expect: [allow]"), 6, "unknown expected effect a list"),
    ("principal of the wrong shape", GOOD_CASE.replace("{id: kim, roles: [clerk]}", "[kim, clerk]"), 3,
     "'principal' must be a mapping, got a list"),
    ("context that is not a mapping", GOOD_CASE + "    context: 5\n", 7, "'context' must be a mapping"),
    ("resource kind unknown", GOOD_CASE.replace("dataset orders/1", "file orders/1"), 5, "unknown resource 'file orders/1'"),
    ("resource mapping without kind", GOOD_CASE.replace("dataset orders/1", "{id: orders/1}"), 5, "a resource needs a 'kind'"),
    ("roles not strings", GOOD_CASE.replace("[clerk]", "[{a: 1}]"), 3, "each item of 'roles' must be a non-empty string"),
    ("missing expect", GOOD_CASE.replace("    expect: allow\n", ""), 2, "needs 'expect: allow|deny|escalate'"),
    ("missing action", GOOD_CASE.replace("    action: read\n", ""), 2, "the request needs a 'action'"),
    ("unknown top-level field", "polcy: x\n" + GOOD_CASE, 1, "unknown field 'polcy' in the test file"),
    ("unknown principal fixture", GOOD_CASE.replace("{id: kim, roles: [clerk]}", "kim"), 3, "unknown principal 'kim'"),
    ("duplicate case names", GOOD_CASE + GOOD_CASE[7:], 7, "duplicate case name 'clerk reads orders'"),
    ("invalid YAML", GOOD_CASE + "    context: {a: 1\n", 8, "invalid YAML"),
    ("no cases", "cases: []\n", 1, "'cases' is empty"),
    ("cases missing", "now: 2026-01-01T00:00:00Z\n", 1, "missing field 'cases'"),
    ("request both ways", GOOD_CASE + "    request: {action: read}\n", 3, "either under 'request' or inline"),
    ("unknown obligation kind", GOOD_CASE + "    obligations: [{approval: manager}]\n", 7, "unknown field 'approval' in an obligation"),
    ("unknown obligation field", GOOD_CASE + "    obligations: [{approval_required: manager, budget: x}]\n", 7,
     "unknown field 'budget' for approval_required"),
    ("usage amount not a number", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: lots}}\n", 7,
     "usage of 'shop.bot_tokens' in tokens must be a non-negative number, got 'lots'"),
    ("usage amount negative", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: -1000}}\n", 7,
     "usage of 'shop.bot_tokens' in tokens must be a non-negative number, got -1000"),
    ("usage amount NaN", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: .nan}}\n", 7, "must be a non-negative number, got nan"),
    ("usage amount NaN as a word", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: nan}}\n", 7,
     "must be a non-negative number, got 'nan'"),
    ("usage amount infinite", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: .inf}}\n", 7, "must be a non-negative number, got inf"),
    ("usage amount a list", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: [1]}}\n", 7, "must be a non-negative number, got a list"),
    ("usage amount on its own line", GOOD_CASE + "    usage:\n      shop.bot_tokens:\n        tokens: 1\n        USD: -3\n", 10,
     "usage of 'shop.bot_tokens' in USD must be a non-negative number, got -3"),
    ("usage with a bad amount and unknown units", GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: -1000, furlongs: 7, USD: 3}}\n",
     7, "usage of 'shop.bot_tokens' in tokens must be a non-negative number, got -1000"),
    ("bad now", "now: yesterday\n" + GOOD_CASE, 1, "'now' must be a date-time"),
    ("missing policy path", "policy: nowhere.policy\n" + GOOD_CASE, 1, "policy path 'nowhere.policy' does not exist"),
    # names checked against the loaded policy
    ("unknown rule id", GOOD_CASE + "    rules: [shop.clerk_read_orders]\n", 7,
     "unknown rule id 'shop.clerk_read_orders' in 'rules' (did you mean 'shop.clerks_read_orders'?)"),
    ("unknown budget in usage", GOOD_CASE + "    usage: {shop.tokens: {tokens: 1}}\n", 7, "unknown budget 'shop.tokens' in 'usage'"),
    ("unknown unit in usage", GOOD_CASE + "    usage: {shop.bot_tokens: {furlongs: 7}}\n", 7,
     "unknown unit 'furlongs' in 'usage' of budget 'shop.bot_tokens' (its limits count: tokens)"),
    ("currency the budget does not count", GOOD_CASE + "    usage: {shop.bot_tokens: {USD: 3}}\n", 7,
     "unknown unit 'USD' in 'usage' of budget 'shop.bot_tokens' (its limits count: tokens)"),
    ("misspelt unit in usage", GOOD_CASE + "    usage: {bot_tokens: {token: 7}}\n", 7,
     "unknown unit 'token' in 'usage' of budget 'shop.bot_tokens' (its limits count: tokens) (did you mean 'tokens'?)"),
    ("unit in the wrong case", GOOD_CASE + "    usage: {shop.bot_tokens: {Tokens: 7}}\n", 7, "(did you mean 'tokens'?)"),
    ("unknown unit after a good one, on its own line", GOOD_CASE + "    usage:\n      shop.bot_tokens:\n        tokens: 1\n        furlongs: 7\n",
     10, "unknown unit 'furlongs' in 'usage' of budget 'shop.bot_tokens'"),
    ("unit a scope's budgets do not count", GOOD_CASE + "    usage: {agent:pricing_bot: {USD: 3}}\n", 7,
     "unknown unit 'USD' in 'usage' of scope 'agent:pricing_bot' (its limits count: tokens)"),
    ("unknown unit for a scope without budgets", GOOD_CASE + "    usage: {workflow:none: {furlongs: 7}}\n", 7,
     "unknown unit 'furlongs' in 'usage' of scope 'workflow:none' (no budget has this scope; a limit counts 'tokens' or a currency code"),
    ("unknown route model", GOOD_CASE + "    route: large\n", 2, "'route' names unknown model 'large'"),
]


@pytest.mark.parametrize(("what", "text", "line", "message"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_test_file_names_file_and_line(tmp_path: Path, what: str, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    results, errors, _ = run_file(path)
    assert results == []
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{path}:{line}: "), str(errors[0])
    assert message in errors[0].message


def test_usage_of_zero_or_in_a_unit_a_budget_counts_runs(tmp_path: Path) -> None:
    """The usage checks reject only what the engine would misread or never read."""
    text = GOOD_CASE + "    usage: {shop.bot_tokens: {tokens: 0}, agent:pricing_bot: {tokens: 1_000}, workflow:none: {EUR: 5}}\n"
    results, errors, _ = run_file(write(tmp_path, text))
    assert errors == []
    assert [r.passed for r in results] == [True]


def test_policy_that_does_not_load_is_an_error_at_the_policy_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CASE, policy="package shop\nrule r\n    allow role nobody to read dataset \"x\"\n")
    _, errors, _ = run_file(path)
    assert [e.line for e in errors] == [1]
    assert "the policy under test does not load" in errors[0].message
    assert "shop.policy:3" in errors[0].message


def test_an_engine_failure_is_reported_on_the_file_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import policyengine.engine

    def broken(*args: object, **kwargs: object) -> None:
        raise AssertionError("simulated engine bug")

    monkeypatch.setattr(policyengine.engine, "load_policy", broken)
    path = write(tmp_path, GOOD_CASE)
    _, errors, _ = run_file(path)
    assert [str(e) for e in errors] == [
        f"{path}:1: internal error while loading the policy under test: AssertionError: simulated engine bug"
    ]


# --- the format: shorthands and fixtures expand to the request JSON of docs/engine.md --------------


def test_fixtures_and_shorthands_expand_to_the_request_shape(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        now: 2026-05-01T08:30:00Z
        fixtures:
          principals:
            kim: {roles: [clerk], attrs: {team: emea}}
            boss: {id: b-1, roles: [manager]}
            bot: {type: agent, id: pricing_bot}
          resources:
            orders: {kind: dataset, id: orders/7, attrs: {size: 3}}
        x-common: &common
          context: {tokens: 10}
        cases:
          - name: everything
            principal: {fixture: kim, attrs: {level: 2}}
            action: read
            resource: orders
            data: {classification: internal}
            <<: *common
            approvals: [{gate: shop.big_refund, approver: boss}]
            expect: allow
          - name: shorthands
            request:
              principal: agent pricing_bot
              action: invoke
              resource: model
            now: 2026-05-02T00:00:00Z
            expect: allow
        """)
    first, second = load_test_file(path).cases
    assert first.request == {
        "principal": {"id": "kim", "type": "user", "roles": ["clerk"], "attrs": {"team": "emea", "level": 2}},
        "action": "read",
        "resource": {"kind": "dataset", "id": "orders/7", "attrs": {"size": 3}},
        "data": {"classification": "internal"},
        "context": {"tokens": 10},
        "approvals": [{"gate": "shop.big_refund", "approver": "b-1", "roles": ["manager"],
                       # bound to this case's request and given at its now (docs/policy-tests.md)
                       "ts": "2026-05-01T08:30:00Z", "request_hash": request_hash(first.request)}],
    }
    assert first.now.isoformat() == "2026-05-01T08:30:00+00:00"
    assert second.request["principal"] == {"id": "pricing_bot", "type": "agent", "roles": [], "attrs": {}}
    assert second.request["resource"] == {"kind": "model", "id": None, "attrs": {}}
    assert second.now.isoformat() == "2026-05-02T00:00:00+00:00"


def test_default_policy_is_the_folder_plus_its_imports(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("", encoding="utf-8")  # the project root bounds the search
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "lists.policy").write_text('package common.lists\nconst BIG = 500\n', encoding="utf-8")
    area = tmp_path / "area"
    area.mkdir()
    path = write(area, GOOD_CASE, policy=POLICY.replace("package shop\n", "package shop\nimport common.lists\n"))
    test_file = load_test_file(path)
    assert [Path(f).name for f in test_file.policy_files] == ["shop.policy"]  # imports: the loader's job
    policy = load_policy(list(test_file.policy_files))
    assert sorted(Path(f).name for f in policy.files) == ["lists.policy", "shop.policy"]
    assert DEFAULT_NOW.year == 2026


# --- running: expectations ----------------------------------------------------------------------

RUN_CASES = """\
fixtures:
  principals:
    kim: {roles: [clerk]}
    max: {roles: [manager]}
    bot: {type: agent, id: pricing_bot}
cases:
  - name: pass allow with rules
    principal: kim
    action: read
    resource: dataset orders/1
    expect: allow
    rules: [shop.clerks_read_orders]
  - name: fail effect
    principal: kim
    action: write
    resource: dataset orders/1
    expect: allow
  - name: fail rules
    principal: kim
    action: read
    resource: dataset orders/1
    data: {classification: secret}
    expect: deny
    rules: [shop.clerks_read_orders]
  - name: pass escalate with obligation
    principal: kim
    action: read
    resource: dataset orders/1
    context: {amount: 501}
    expect: escalate
    obligations: [{approval_required: manager, gate: shop.big_refund}]
  - name: fail obligation
    principal: kim
    action: read
    resource: dataset orders/1
    context: {amount: 501}
    expect: escalate
    obligations: []
  - name: pass approved
    principal: kim
    action: read
    resource: dataset orders/1
    context: {amount: 501}
    approvals: [{gate: shop.big_refund, approver: max}]
    expect: allow
  - name: pass route
    principal: bot
    action: invoke
    resource: model
    context: {task: price, tokens: 10}
    expect: allow
    route: small
  - name: fail route
    principal: bot
    action: invoke
    resource: model
    context: {task: price, tokens: 10}
    expect: allow
    route: null
  - name: pass budget warning from usage
    principal: bot
    action: invoke
    resource: model small
    context: {tokens: 10}
    usage: {shop.bot_tokens: {tokens: 490}}
    expect: allow
    obligations: [{budget_warning: shop.bot_tokens, percent: 50}]
  - name: pass usage does not leak into the next case
    principal: bot
    action: invoke
    resource: model small
    context: {tokens: 10}
    expect: allow
    obligations: []
  - name: pass cites
    principal: kim
    action: read
    resource: dataset orders/1
    data: {classification: secret}
    expect: deny
    cites: ["Trade Secrets Directive"]
  - name: fail cites
    principal: kim
    action: read
    resource: dataset orders/1
    data: {classification: secret}
    expect: deny
    cites: ["GDPR Art. 5", "Trade Secrets Directive"]
  - name: pass over budget by scope key
    principal: bot
    action: invoke
    resource: model small
    context: {tokens: 10}
    usage: {agent:pricing_bot: {tokens: 991}}
    expect: deny
    rules: [shop.bot_tokens]
"""


def test_each_expectation_is_compared(tmp_path: Path) -> None:
    path = write(tmp_path, RUN_CASES)
    results, errors, _ = run_file(path)
    assert errors == []
    outcome = {r.case.name: r.mismatches for r in results}
    assert [n for n, m in outcome.items() if not m] == [n for n in outcome if n.startswith("pass")]
    assert outcome["fail effect"] == ("effect: expected allow, got deny",)
    assert outcome["fail rules"] == ("deciding rules: expected ['shop.clerks_read_orders'], got ['shop.no_secrets']",)
    assert outcome["fail route"] == ("route: expected None, got small",)
    assert outcome["fail obligation"] == ("obligations: unexpected approval_required(gate='shop.big_refund', role='manager')",)
    assert outcome["fail cites"] == ("citations: expected ['GDPR Art. 5'] among ['Trade Secrets Directive']",)


@pytest.mark.parametrize(("flag", "mismatch"), [
    ("false", None),
    # 0 == False in Python: the case passed, though the gate's four-eyes flag was never written as a boolean
    ("0", "obligations: missing approval_required(distinct_approver=0, gate='shop.big_refund', role='manager'); "
          "unexpected approval_required(gate='shop.big_refund', role='manager')"),
])
def test_an_expected_obligation_flag_is_a_boolean_not_a_number(tmp_path: Path, flag: str, mismatch: str | None) -> None:
    path = write(tmp_path, f"""\
        cases:
          - name: a big refund needs a manager
            principal: {{id: kim, roles: [clerk]}}
            action: read
            resource: dataset orders/1
            context: {{amount: 501}}
            expect: escalate
            obligations: [{{approval_required: manager, gate: shop.big_refund, distinct_approver: {flag}}}]
        """)
    (result,), errors, _ = run_file(path)
    assert errors == [] and result.mismatches == ((mismatch,) if mismatch else ())


VERSIONED = """\
package ml
model classifier
    provider "local" region "eu-west-1" hosting internal
    version "2.3.1", "2.4.0"
rule use_production
    allow any to invoke model "classifier"
    when resource.alias == "production"
rule not_the_old_one
    deny any to invoke model "classifier"
    when resource.version == "2.3.1" and context has retired
"""

VERSIONED_CASES = """\
cases:
  - name: production, by default
    principal: {id: app}
    action: invoke
    resource: model classifier
    expect: allow
    rules: [ml.use_production]
  - name: the production alias, named
    principal: {id: app}
    action: invoke
    resource: {kind: model, id: classifier, attrs: {version: production}}
    expect: allow
    rules: [ml.use_production]
  - name: a version named, not production
    principal: {id: app}
    action: invoke
    resource: {kind: model, id: classifier, attrs: {version: "2.4.0"}}
    expect: deny
    rules: ["<default-deny>"]
  - name: the retired version
    principal: {id: app}
    action: invoke
    resource: model classifier
    context: {retired: true}
    expect: deny
    rules: [ml.not_the_old_one]
"""


def test_cases_about_versioned_models_are_decided_as_eval_decides_them(tmp_path: Path) -> None:
    """A request for a model that declares versions is stamped with the version it uses (the default aliases:
    a test has no log of promotions), as eval and serve stamp it; else a rule on resource.alias or
    resource.version would read nothing, and the test would pass or fail unlike production."""
    (tmp_path / "ml.policy").write_text(VERSIONED, encoding="utf-8")
    path = tmp_path / "ml_test.yaml"
    path.write_text(VERSIONED_CASES, encoding="utf-8")
    results, errors, _ = run_file(path)
    assert errors == []
    assert {r.case.name: r.mismatches for r in results} == {
        "production, by default": (), "the production alias, named": (), "a version named, not production": (),
        "the retired version": ()}


def test_failure_report_shows_request_expected_actual_and_explanation(tmp_path: Path) -> None:
    report = run_paths([write(tmp_path, RUN_CASES)], keyword="fail effect")
    text = render_report(report)
    assert text.splitlines()[-1] == "0 passed, 1 failed"
    assert report.deselected == 12
    for part in ('action: "write"', "expected: allow", "actual:   deny", "explanation:",
                 "reason <default-deny> at built-in", "decision: deny",
                 "rules about other principals, actions or kinds not shown"):
        assert part in text


@pytest.mark.parametrize(
    ("keyword", "nodeid", "selected"),
    [
        (None, "a_test.yaml::x", True),
        ("budget", "a_test.yaml::over BUDGET", True),
        ("budget", "a_test.yaml::route", False),
        ("not budget", "a_test.yaml::route", True),
        ("not budget", "a_test.yaml::budget", False),
        ("a_test", "a_test.yaml::route", True),
    ],
)
def test_keyword_selection(keyword: str | None, nodeid: str, selected: bool) -> None:
    assert matches_keyword(nodeid, keyword) is selected


# --- coverage -------------------------------------------------------------------------------------


def test_coverage_names_unexercised_declarations_and_clauses(tmp_path: Path) -> None:
    path = write(tmp_path, RUN_CASES)
    collector = CoverageCollector()
    run_paths([path], observer=collector)
    cov = collector.report([str(tmp_path / "shop.policy")])
    assert [(d.kind, d.id) for d in cov.missed_decls] == []  # every declaration took part in a decision
    assert cov.decl_percent == 100.0
    assert cov.missed_clauses == [] and cov.clause_percent == 100.0
    only_first = CoverageCollector()
    run_paths([path], keyword="pass allow with rules", observer=only_first)
    cov = only_first.report()
    missed = {(d.kind, d.id, d.line) for d in cov.missed_decls}
    assert missed == {("rule", "shop.bot_prices", 11), ("rule", "shop.no_secrets", 14), ("budget", "shop.bot_tokens", 18),
                      ("escalate", "shop.big_refund", 22), ("route", "shop.pricing", 25)}
    clauses = {(c.text, c.line, c.col) for c in cov.missed_clauses}
    assert ('data.classification == "secret"', 16, 38) in clauses
    assert ("context.tokens <= 100", 13, 10) in clauses
    assert cov.decl_percent == pytest.approx(100 / 6)


def test_a_clause_counts_only_when_its_rule_is_reached(tmp_path: Path) -> None:
    """tokens <= 100 holding for a clerk's read does not cover the bot's rule."""
    path = write(tmp_path, """\
        cases:
          - name: clerk read with tokens
            principal: {id: kim, roles: [clerk]}
            action: read
            resource: dataset orders/1
            context: {tokens: 5}
            expect: allow
        """)
    collector = CoverageCollector()
    run_paths([path], observer=collector)
    assert "context.tokens <= 100" in {c.text for c in collector.report().missed_clauses}


def test_untested_policy_files_count_as_uncovered(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD_CASE)
    other = tmp_path / "other"
    other.mkdir()
    (other / "hr.policy").write_text('package hr\nrule r\n    allow any to read dataset "x"\n', encoding="utf-8")
    collector = CoverageCollector()
    run_paths([path], observer=collector)
    missed = {d.id for d in collector.report([str(other / "hr.policy")]).missed_decls}
    assert "hr.r" in missed


# --- JUnit XML ------------------------------------------------------------------------------------

# The structure of the common JUnit schema (Jenkins' junit-10.xsd, which the CI
# systems that read JUnit accept), reduced to the elements and attributes we emit.
JUNIT_XSD = """<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:element name="failure"><xs:complexType mixed="true">
    <xs:attribute name="type" type="xs:string"/><xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="error"><xs:complexType mixed="true">
    <xs:attribute name="type" type="xs:string"/><xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="skipped"><xs:complexType mixed="true">
    <xs:attribute name="message" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="properties"><xs:complexType><xs:sequence>
    <xs:element name="property" minOccurs="0" maxOccurs="unbounded"><xs:complexType>
      <xs:attribute name="name" type="xs:string" use="required"/><xs:attribute name="value" type="xs:string" use="required"/>
    </xs:complexType></xs:element>
  </xs:sequence></xs:complexType></xs:element>
  <xs:element name="system-out" type="xs:string"/>
  <xs:element name="system-err" type="xs:string"/>
  <xs:element name="testcase"><xs:complexType>
    <xs:sequence>
      <xs:choice minOccurs="0" maxOccurs="unbounded">
        <xs:element ref="skipped"/><xs:element ref="error"/><xs:element ref="failure"/>
        <xs:element ref="system-out"/><xs:element ref="system-err"/>
      </xs:choice>
    </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="classname" type="xs:string"/>
    <xs:attribute name="time" type="xs:decimal"/>
    <xs:attribute name="file" type="xs:string"/>
    <xs:attribute name="line" type="xs:nonNegativeInteger"/>
  </xs:complexType></xs:element>
  <xs:element name="testsuite"><xs:complexType>
    <xs:sequence>
      <xs:element ref="properties" minOccurs="0"/>
      <xs:element ref="testcase" minOccurs="0" maxOccurs="unbounded"/>
      <xs:element ref="system-out" minOccurs="0"/>
      <xs:element ref="system-err" minOccurs="0"/>
    </xs:sequence>
    <xs:attribute name="name" type="xs:string" use="required"/>
    <xs:attribute name="tests" type="xs:nonNegativeInteger" use="required"/>
    <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
    <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
    <xs:attribute name="skipped" type="xs:nonNegativeInteger"/>
    <xs:attribute name="time" type="xs:decimal"/>
    <xs:attribute name="timestamp" type="xs:dateTime"/>
    <xs:attribute name="hostname" type="xs:string"/>
    <xs:attribute name="id" type="xs:string"/>
    <xs:attribute name="package" type="xs:string"/>
  </xs:complexType></xs:element>
  <xs:element name="testsuites"><xs:complexType>
    <xs:sequence><xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded"/></xs:sequence>
    <xs:attribute name="name" type="xs:string"/>
    <xs:attribute name="tests" type="xs:nonNegativeInteger"/>
    <xs:attribute name="failures" type="xs:nonNegativeInteger"/>
    <xs:attribute name="errors" type="xs:nonNegativeInteger"/>
    <xs:attribute name="time" type="xs:decimal"/>
  </xs:complexType></xs:element>
</xs:schema>
"""


def test_junit_holds_control_characters_as_escapes(tmp_path: Path) -> None:
    """A case named with a control character (``"\\e"`` in YAML) made JUnit XML that no parser reads."""
    path = write(tmp_path, GOOD_CASE.replace("name: clerk reads orders", 'name: "clerk \\e reads"')
                 .replace("expect: allow", "expect: deny"))
    xml = junit_xml(run_paths([path]))
    xmlschema.XMLSchema(JUNIT_XSD).validate(xml)
    (case,) = ET.fromstring(xml).iter("testcase")
    assert case.get("name") == "clerk \\x1b reads"
    assert case.find("failure").get("message") == "effect: expected deny, got allow"


def test_junit_validates_and_counts_match_the_summary(tmp_path: Path) -> None:
    good = write(tmp_path, RUN_CASES)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    write(bad_dir, GOOD_CASE.replace("expect: allow", "expect: maybe"), name="broken_test.yaml")
    report = run_paths([good, bad_dir / "broken_test.yaml"])
    xml = junit_xml(report)
    xmlschema.XMLSchema(JUNIT_XSD).validate(xml)
    root = ET.fromstring(xml)
    summary = render_report(report).splitlines()[-1]
    assert summary == "8 passed, 5 failed, 1 error"
    passed, failed, errored = (int(part.split()[0]) for part in summary.split(", "))
    tests, failures, errors = (int(root.get(k)) for k in ("tests", "failures", "errors"))
    assert (failures, errors, tests - failures - errors) == (failed, errored, passed) == (5, 1, 8)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [str(good), str(bad_dir / "broken_test.yaml")]
    assert sum(int(s.get("tests")) for s in suites) == tests
    assert len(root.findall(".//testcase")) == tests
    failure = root.find(".//testcase[@name='fail effect']/failure")
    assert failure is not None and failure.get("message") == "effect: expected allow, got deny"
    assert "request:" in failure.text and "explanation:" in failure.text
    assert "unknown expected effect 'maybe'" in root.find(".//error").get("message")


# --- robustness -------------------------------------------------------------------------------------

_YAML_BITS = st.sampled_from([
    "cases:", "  - name: x", "    principal: ana", "    principal: {id: 1}", "    action: read", "    action: [1]",
    "    resource: dataset d", "    resource: {kind: 3}", "    expect: allow", "    expect: 7", "    rules: x",
    "    obligations: [1]", "    usage: {a: {b: c}}", "    usage: [1]", "    approvals: [x]", "    context: null",
    "fixtures: {principals: {ana: [1]}}", "fixtures: 3", "now: 2026-01-01", "policy: [1, 2]", "x-a: &a {k: 1}",
    "    <<: *a", "    <<: *missing", "  - !!python/object:os.system {}", "{", "]", "\t", ": :", "- - -", "'",
])


@settings(max_examples=150, deadline=None)
@given(st.lists(_YAML_BITS, max_size=12))
def test_any_test_file_text_parses_or_raises_test_file_error(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> None:
    """No input makes the loader fail with anything but a ``file:line`` TestFileError."""
    base = tmp_path_factory.getbasetemp()
    (base / "p.policy").write_text("package p\n", encoding="utf-8")
    try:
        parse_test_file("\n".join(lines) + "\n", "t_test.yaml", base=base)
    except TestFileError as exc:
        assert str(exc).startswith("t_test.yaml:") and exc.span.line >= 1


UNDECLARED = [
    # what the case's request names, the mismatch reported (None: the case passes)
    ("principal: {id: kim, roles: [clerc]}\n    action: read\n    resource: dataset orders/1",
     "request: role 'clerc' is not declared in the policy under test"),
    ("principal: {id: pricing_bot, type: agent}\n    action: invoke\n    resource: model smal",
     "request: model 'smal' is not declared in the policy under test"),
    # the engine itself denies an undeclared agent and says so: that is what such a case tests
    ("principal: {id: shadow_bot, type: agent}\n    action: invoke\n    resource: model small", None),
    ("principal: {id: kim, roles: [manager]}\n    action: read\n    resource: dataset secret/1", None),
]


@pytest.mark.parametrize("request_text, mismatch", UNDECLARED, ids=["role typo", "model typo", "agent", "declared"])
def test_a_request_naming_undeclared_roles_or_models_fails_its_case(tmp_path, request_text, mismatch):
    path = write(tmp_path, f"cases:\n  - name: typo\n    {request_text}\n    expect: deny\n")
    results, errors, _ = run_file(path)
    assert errors == []
    (result,) = results
    if mismatch is None:
        assert result.passed, result.mismatches
    else:
        assert mismatch in result.mismatches
