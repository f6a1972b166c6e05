"""Request schemas: the declaration, its checks, validation before any rule runs, and JSON Schema export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from policyengine import ast, load_policy
from policyengine.check import check_policy
from policyengine.format import format_policy
from policyengine.schema import AttributeSpec, SchemaRule, SchemaSet, _attribute_check
from policyengine.syntax import parse_policy

POLICY = """
package t
role clerk

const STATUSES = ["active", "sanctioned"]

schema payments
    for action pay
    attribute data.vendor_status enum STATUSES required normalise nfkc, trim, casefold
    attribute context.amount number min 0 required
    attribute data.tags set of string normalise casefold
    attribute context.at timestamp
    attribute principal.attrs.vip bool
    attribute context.confidence number min 0 max 1

schema everything
    attribute data.label string normalise trim

rule clerks_pay
    allow role clerk to pay tool "bank"
    when context.amount <= 100

rule clerks_read
    allow role clerk to read tool "bank"

rule no_sanctioned
    deny any to pay tool "bank"
    when data.vendor_status == "sanctioned"

rule no_secret_tags
    deny any to pay tool "bank"
    when data has tags and "secret" in data.tags

rule no_drafts
    deny any to read tool "bank"
    when data has label and data.label == "draft"
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("schema")
    (root / "t.policy").write_text(POLICY)
    return load_policy(root)


def pay(data: dict | None = None, context: dict | None = None, action: str = "pay", pattrs: dict | None = None) -> dict:
    return {"principal": {"id": "c", "roles": ["clerk"], "attrs": pattrs or {}}, "action": action,
            "resource": {"kind": "tool", "id": "bank"},
            "data": {"vendor_status": "active", **(data or {})}, "context": {"amount": 5, **(context or {})}}


# (case, request, effect, rules, errors)
VALIDATION = [
    ("well typed", pay(), "allow", ["t.clerks_pay"], ()),
    ("capitals are normalised", pay({"vendor_status": "SANCTIONED"}), "deny", ["t.no_sanctioned"], ()),
    ("padding is normalised", pay({"vendor_status": "  sanctioned\t"}), "deny", ["t.no_sanctioned"], ()),
    ("full-width is normalised (NFKC)", pay({"vendor_status": "ｓａｎｃｔｉｏｎｅｄ"}), "deny", ["t.no_sanctioned"], ()),
    ("set members are normalised", pay({"tags": ["SECRET"]}), "deny", ["t.no_secret_tags"], ()),
    ("an unknown enum value", pay({"vendor_status": "frozen"}), "deny", ["<request>"],
     ('data.vendor_status: expected one of "active", "sanctioned", got "frozen"',)),
    ("a list for an enum", pay({"vendor_status": ["sanctioned"]}), "deny", ["<request>"],
     ('data.vendor_status: expected one of "active", "sanctioned", got list ["sanctioned"]',)),
    ("a number as a string", pay(context={"amount": "999999999"}), "deny", ["<request>"],
     ('context.amount: expected a number >= 0, got string "999999999"',)),
    ("a bool for a number", pay(context={"amount": True}), "deny", ["<request>"],
     ("context.amount: expected a number >= 0, got bool true",)),
    # a number outside its declared bounds is malformed: a payment of -250,000 must not pass under a gate on > 10,000
    ("a number below its min", pay(context={"amount": -5}), "deny", ["<request>"],
     ("context.amount: expected a number >= 0, got -5",)),
    ("a number at its min", pay(context={"amount": 0}), "allow", ["t.clerks_pay"], ()),
    ("a number above its max", pay(context={"confidence": 1.5}), "deny", ["<request>"],
     ("context.confidence: expected a number from 0 to 1, got 1.5",)),
    ("a number at its max", pay(context={"confidence": 1}), "allow", ["t.clerks_pay"], ()),
    ("a negative zero is in range", pay(context={"amount": -0.0}), "allow", ["t.clerks_pay"], ()),
    ("missing required", {**pay(), "data": {}}, "deny", ["<request>"],
     ('data.vendor_status: missing (required one of "active", "sanctioned")',)),
    ("null is missing", pay({"vendor_status": None}), "deny", ["<request>"],
     ('data.vendor_status: missing (required one of "active", "sanctioned")',)),
    ("every problem is named", {**pay(context={"amount": "1"}), "data": {"tags": "x"}}, "deny",
     ["<request>", "<request>", "<request>"],
     ('data.vendor_status: missing (required one of "active", "sanctioned")',
      'context.amount: expected a number >= 0, got string "1"',
      'data.tags: expected a list of strings, got string "x"')),
    ("a timestamp", pay(context={"at": "2026-03-10T09:00:00Z"}), "allow", ["t.clerks_pay"], ()),
    ("not a timestamp", pay(context={"at": "2026-02-30T09:00:00Z"}), "deny", ["<request>"],
     ('context.at: expected an RFC 3339 timestamp, got "2026-02-30T09:00:00Z"',)),
    ("principal attributes", pay(pattrs={"vip": "yes"}), "deny", ["<request>"],
     ('principal.vip: expected bool, got string "yes"',)),
    ("another action skips the action's schema", {**pay(), "action": "read", "data": {}}, "allow",
     ["t.clerks_read"], ()),
    ("a schema without 'for' applies to every action", {**pay(), "action": "read", "data": {"label": " draft "}},
     "deny", ["t.no_drafts"], ()),
    # what no normalisation folds is refused where an attribute is normalised, not taken for another value
    ("a zero-width space in a normalised value", pay({"vendor_status": "sanc\u200btioned"}), "deny", ["<request>"],
     ('data.vendor_status: "sanc\\u200btioned" contains an invisible or control character '
      "(U+200B ZERO WIDTH SPACE)",)),
    ("a soft hyphen in a normalised set member", pay({"tags": ["se\u00adcret"]}), "deny", ["<request>"],
     ('data.tags: "se\\u00adcret" contains an invisible or control character (U+00AD SOFT HYPHEN)',)),
    ("a NUL after a normalised value", {**pay(), "action": "read", "data": {"label": "draft\u0000"}}, "deny",
     ["<request>"], ('data.label: "draft\\u0000" contains an invisible or control character '
                     "(U+0000 unnamed character)",)),
    ("a Cyrillic letter inside a Latin word", {**pay(), "action": "read", "data": {"label": "dr\u0430ft"}}, "deny",
     ["<request>"], ('data.label: "dr\\u0430ft" mixes letters of the scripts CYRILLIC, LATIN in one word; '
                     "a look-alike letter could make it pass for another name",)),
    ("words of one script each, and tabs, are values", {**pay(), "action": "read",
                                                       "data": {"label": "\u0447\u0435\u0440\u043d\u043e\u0432\u0438\u043a draft\t"}},
     "allow", ["t.clerks_read"], ()),
    ("an attribute without normalise is exact", pay({"extra": "x\u200b"}), "allow", ["t.clerks_pay"], ()),
]


@pytest.mark.parametrize("case,request_,effect,rules,errors", VALIDATION, ids=[v[0] for v in VALIDATION])
def test_requests_are_validated_before_any_rule_runs(policy, case, request_, effect, rules, errors):
    for _ in range(2):  # the second time through the cached validator
        decision = policy.evaluate(request_)
        assert (decision.effect, [r.rule for r in decision.reasons], decision.errors) == (effect, rules, errors)


def test_constants_compared_with_a_normalised_attribute_are_normalised_too(tmp_path):
    (tmp_path / "o.policy").write_text('package o\nrole a\nschema s attribute data.origin string normalise casefold\n'
                                       'rule eu deny any to read tool "x" when data.origin in ["DE", "FR"]\n'
                                       'rule ok allow role a to read tool "x"\n')
    origin = load_policy(tmp_path)
    effects = [origin.evaluate({"principal": {"id": "u", "roles": ["a"]}, "action": "read",
                                "resource": {"kind": "tool", "id": "x"}, "data": {"origin": o}}).effect
               for o in ("DE", "de", "De", "US")]
    assert effects == ["deny", "deny", "deny", "allow"]


# Every deny below is written as its author means it; none may let the request through. The schema
# normalises data.status only in pay requests, data.tags and resource.provider in every request.
NORMALISED_DENIES = """
package n
role clerk
model m1
    provider "OpenAI" region "eu-west-1" hosting external
const BLOCKED = {"eu": "SANCTIONED"}
schema payments
    for action pay
    attribute data.status string normalise casefold
schema everything
    attribute data.tags set of string normalise casefold
    attribute resource.provider string normalise casefold
rule clerks_do_anything
    allow role clerk to any tool "**"
rule clerks_invoke
    allow role clerk to any model "**"
rule status_on_the_right
    deny any to pay tool "bank" when "SANCTIONED" == data.status
rule tag_on_the_right
    deny any to read tool "bank" when "PII" in data.tags
rule status_in_a_list_with_an_attribute
    deny any to pay tool "vault" when data.status in ["SANCTIONED", context.also_blocked]
rule status_from_a_record
    deny any to pay tool "safe" when data.status == BLOCKED["eu"]
rule status_in_any_action
    deny any to any tool "desk" when data.status == "SANCTIONED"
rule provider_from_the_registry
    deny any to invoke model "**" when resource.provider == "OpenAI"
"""


def _asks(action: str, rid: str, data: dict, kind: str = "tool", context: dict | None = None) -> dict:
    return {"principal": {"id": "c", "roles": ["clerk"]}, "action": action, "resource": {"kind": kind, "id": rid},
            "data": data, "context": context or {"also_blocked": "x"}}


# (case, request, the deny that must decide it)
NORMALISED_CASES = [
    ("a constant left of a normalised attribute", _asks("pay", "bank", {"status": "sanctioned"}),
     "n.status_on_the_right"),
    ("a constant left of a normalised set", _asks("read", "bank", {"tags": ["pii"]}), "n.tag_on_the_right"),
    ("a constant in a list beside an attribute", _asks("pay", "vault", {"status": "Sanctioned"}),
     "n.status_in_a_list_with_an_attribute"),
    ("a record's entry", _asks("pay", "safe", {"status": "sanctioned"}), "n.status_from_a_record"),
    ("normalised where the schema applies", _asks("pay", "desk", {"status": "sanctioned"}), "n.status_in_any_action"),
    ("exact where it does not (the constant is not folded)", _asks("read", "desk", {"status": "SANCTIONED"}),
     "n.status_in_any_action"),
    ("a declared model's registry value", _asks("invoke", "m1", {}, "model"), "n.provider_from_the_registry"),
    ("a request's value of an undeclared model", _asks("invoke", "m9", {}, "model") | {
        "resource": {"kind": "model", "id": "m9", "attrs": {"provider": "OPENAI"}}}, "n.provider_from_the_registry"),
]


@pytest.mark.parametrize("case,request_,rule", NORMALISED_CASES, ids=[c[0] for c in NORMALISED_CASES])
def test_a_deny_compares_its_constants_in_the_form_the_attribute_is_read(tmp_path, case, request_, rule):
    (tmp_path / "n.policy").write_text(NORMALISED_DENIES)
    decision = load_policy(tmp_path).evaluate(request_)
    assert (decision.effect, [r.rule for r in decision.reasons]) == ("deny", [rule])


def test_validation_never_changes_the_callers_request(policy):
    request = pay({"vendor_status": " SANCTIONED ", "tags": ["A"]})
    before = json.dumps(request, sort_keys=True)
    policy.evaluate(request)
    assert json.dumps(request, sort_keys=True) == before


def test_the_declaration_parses_and_formats():
    file = parse_policy(POLICY, "t.policy")
    schema = next(d for d in file.decls if isinstance(d, ast.SchemaDecl))
    assert [a.value for a in schema.actions] == ["pay"]
    first = schema.attributes[0]
    assert (first.path.dotted, first.type, first.required, [n.value for n in first.normalise]) == (
        "data.vendor_status", "enum", True, ["nfkc", "trim", "casefold"])
    assert [a.type for a in schema.attributes] == ["enum", "number", "set", "timestamp", "bool", "number"]
    assert [(a.minimum, a.maximum) for a in schema.attributes if a.type == "number"] == [(0, None), (0, 1)]
    text = format_policy(file)
    assert "    attribute data.tags set of string normalise casefold\n" in text
    assert "    attribute context.amount number min 0 required\n" in text
    assert "    attribute context.confidence number min 0 max 1\n" in text
    assert parse_policy(text, "t.policy") == file


SYNTAX_ERRORS = [
    ("package t\nschema s\n", "schema 's' declares no attribute"),
    ("package t\nschema s attribute data.x integer\n", "'integer' is not an attribute type"),
    ("package t\nschema s attribute data.x list of string\n", "'list of string' is not an attribute type"),
    ("package t\nschema s for role a attribute data.x string\n", "a schema is for actions, not 'role'"),
    ("package t\nschema s attribute data.x number min 1 min 2\n", "'min' is written twice in one attribute"),
]


@pytest.mark.parametrize("source,message", SYNTAX_ERRORS, ids=[s[1] for s in SYNTAX_ERRORS])
def test_schema_syntax_errors(source, message):
    from policyengine.diagnostics import PolicyError

    with pytest.raises(PolicyError) as error:
        parse_policy(source, "s.policy")
    assert error.value.findings[0].message == message


CHECKS = [
    ('schema s attribute principal.roles string\n', "schema-attribute", "'principal.roles' cannot be declared in a schema"),
    ('schema s attribute data.x string normalise lower\n', "unknown-normalisation", "unknown normalisation 'lower'"),
    ('schema s attribute data.x number normalise trim\n', "type-mismatch", "a number has no text to normalise"),
    ('schema s attribute data.x enum [1, 2]\n', "type-mismatch", "an enum lists its values as quoted strings"),
    ('schema s attribute data.x string\nschema u attribute data.x number\n', "schema-conflict",
     "'data.x' is declared again with another type, normalisation or bounds"),
    ('schema s attribute data.x number min 0\nschema u attribute data.x number\n', "schema-conflict",
     "'data.x' is declared again with another type, normalisation or bounds"),
    ('schema s attribute data.x string min 0\n', "type-mismatch", "'min' and 'max' bound numbers, not a string"),
    ('schema s attribute data.x number min 2 max 1\n', "empty-range", "min 2 is above max 1: no value would be accepted"),
    ('schema s attribute context.n number\nrule r allow any to read tool "x" when context.n == "5"\n',
     "type-mismatch", 'comparing a number with a string: context.n == "5" is never true'),
    ('schema s attribute data.s enum ["a", "b"]\nrule r allow any to read tool "x" when data.s == "c"\n',
     "type-mismatch", '"c" is not a value of data.s (the schema\'s enum: a, b)'),
    ('schema s attribute data.s string\nrule r allow any to read tool "x" when data.t == "a"\n',
     "undeclared-attribute", "'data.t' is read but no schema declares it"),
]


@pytest.mark.parametrize("text,code,message", CHECKS, ids=[c[1] + ": " + c[2] for c in CHECKS])
def test_check_type_checks_conditions_against_the_schema(text, code, message):
    file = parse_policy("package t\n" + text, "c.policy")
    found = [(f.code, f.message) for f in check_policy([file]).findings]
    assert (code, message) in found, found


def test_the_caret_points_at_the_mistyped_value():
    text = 'package t\nschema s attribute context.n number\nrule r allow any to read tool "x" when context.n > "5"\n'
    (finding,) = [f for f in check_policy([parse_policy(text, "c.policy")]).findings if f.code == "type-mismatch"]
    assert (finding.span.line, finding.span.col) == (3, 52)


def test_strict_check_requires_every_read_attribute_declared(tmp_path):
    path = tmp_path / "p.policy"
    path.write_text('package t\nschema s attribute data.s string\nrule r allow any to read tool "x" when data.t == "a"\n')
    run = [sys.executable, "-m", "policyengine", "check"]
    assert subprocess.run([*run, str(path)], cwd=tmp_path, capture_output=True).returncode == 0
    strict = subprocess.run([*run, "--strict", str(path)], cwd=tmp_path, capture_output=True, text=True)
    assert strict.returncode == 1 and "undeclared-attribute" in strict.stdout


def test_policyengine_schema_exports_json_schema(tmp_path):
    import jsonschema
    (tmp_path / "t.policy").write_text(POLICY)
    out = subprocess.run([sys.executable, "-m", "policyengine", "schema", str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    jsonschema.Draft202012Validator.check_schema(doc)
    validator = jsonschema.Draft202012Validator(doc)
    assert validator.is_valid(pay())
    assert not validator.is_valid(pay(context={"amount": "5"}))
    assert not validator.is_valid(pay(context={"amount": -5})) and validator.is_valid(pay(context={"amount": 0}))
    assert not validator.is_valid(pay(context={"confidence": 1.5}))
    assert not validator.is_valid({**pay(), "data": {}})  # vendor_status is required for pay
    assert validator.is_valid({**pay(), "action": "read", "data": {}})
    assert doc["allOf"][0]["then"]["properties"]["data"]["properties"]["vendor_status"] == {
        "type": "string", "enum": ["active", "sanctioned"]}


def test_policyengine_schema_reports_policy_errors(tmp_path):
    (tmp_path / "bad.policy").write_text("package t\nschema s attribute data.x integer\n")
    out = subprocess.run([sys.executable, "-m", "policyengine", "schema", str(tmp_path)], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "'integer' is not an attribute type" in out.stderr and "Traceback" not in out.stderr


def test_shipped_rules_export_a_schema():
    root = Path(__file__).resolve().parent.parent / "rules"
    doc = json.loads(subprocess.run([sys.executable, "-m", "policyengine", "schema", str(root)],
                                    capture_output=True, text=True, check=True).stdout)
    assert "restricted" in doc["properties"]["data"]["properties"]["classification"]["enum"]


# --- the validator runs a check only for attributes the request holds: same result as running every check ---

SPECS = (
    AttributeSpec(("data", ("a",)), "enum", ("x", "y"), True, ("casefold",)),
    AttributeSpec(("data", ("b", "c")), "number"),
    AttributeSpec(("context", ("t",)), "timestamp"),
    AttributeSpec(("principal", ("vip",)), "bool"),
    AttributeSpec(("data", ("b", "d")), "string", normalise=("trim",)),
    AttributeSpec(("context", ("n",)), "number", required=True),
    AttributeSpec(("resource", ("s",)), "set", normalise=("casefold",)),
    AttributeSpec(("context", ("a",)), "string"),
)
VALUES = st.sampled_from([None, "X", " y ", "x", 3, 2.5, True, ["A", "b"], "2026-03-10T09:00:00Z", "nope",
                          {"c": 1, "d": " q "}, {"c": "1"}, {}])
SLOT = st.dictionaries(st.sampled_from(["a", "b", "t", "vip", "s", "n", "zz"]), VALUES, max_size=5)


def every_check(slots, errors):
    work = list(slots)
    for spec in SPECS:
        _attribute_check(spec)(work, errors)
    return tuple(work)


@settings(max_examples=400, deadline=None)
@given(st.tuples(SLOT, SLOT, SLOT, SLOT))
def test_the_validator_equals_running_every_check_in_declaration_order(slots):
    validate = SchemaSet((SchemaRule(frozenset(), SPECS),)).validator("pay")
    errors: list = []
    expected_errors: list = []
    assert tuple(validate(slots, errors)) == every_check(slots, expected_errors)
    assert errors == expected_errors
