"""Another spelling of what a rule protects is refused, never matched past the rule (docs/engine.md).

The policy below is the shape that fails open when spellings slip through: an
allow for every action on every id, and denies for one action, for some ids
and for one role. A request that writes the denied action, id or role another
way (case, space, invisible or full-width characters, a separator in
disguise) must not reach the allow: it is malformed, and the reason names what
to send instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from policyengine import load_policy
from policyengine.identity import id_problem as _id_problem, plain_id as _plain_id

POLICY = """
package ops
role admin
role analyst
role auditor
role contractor

rule admins_do_anything
    allow role admin to any dataset "*"
rule admins_do_anything_deeper
    allow role admin to any dataset "**"
rule no_deletes_in_prod
    deny any to delete dataset "prod/**"
    because "no deletes in prod"
rule analysts_read_reports
    allow role analyst to read dataset "reports/**"
rule secret_reports
    deny any to read dataset "reports/secret/**"
    because "secret reports"
rule no_purge
    deny any to any dataset "**"
    when action == "purge"
    because "purging is never allowed"
rule auditors_may_export
    allow role auditor to any dataset "**"
rule contractors_never_read_reports
    deny role contractor to read dataset "reports/**"
    because "contractors never read reports"

escalate exports_need_approval
    applies to action export_all
    to role admin

budget invoice_workflow
    for workflow "invoice-exceptions"
    limit 1_000 tokens per month
    on exceed deny
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("spellings")
    (root / "ops.policy").write_text(POLICY)
    return load_policy(root)


def req(action: str = "delete", rid: str = "prod/db1", roles: tuple[str, ...] = ("admin",)) -> dict:
    return {"principal": {"id": "u1", "roles": list(roles)}, "action": action,
            "resource": {"kind": "dataset", "id": rid}}


def in_workflow(workflow: object) -> dict:
    """An admin's read that names its workflow: its spend counts against that workflow's budget."""
    return {**req("read", "staging/db1"), "context": {"tokens": 10, "workflow": workflow}}


# (what, request, what its one error says)
REFUSED = [
    ("action in upper case", req("DELETE"),
     "action: 'DELETE' differs only in case from the action 'delete' the rules name"),
    ("action in title case", req("Delete"), "action: 'Delete' differs only in case"),
    ("action with a trailing space", req("delete "), 'action: "delete " is not an action name'),
    ("action with a zero-width space", req("dele\u200bte"), 'action: "dele\\u200bte" is not an action name'),
    ("action in full-width letters", req("\uff44elete"), 'action: "\\uff44elete" is not an action name'),
    ("action with a separator", req("delete:all"), 'action: "delete:all" is not an action name'),
    ("action '*'", req("*"), 'action: "*" is not an action name'),
    ("action named only in a condition, in upper case", req("PURGE"),
     "action: 'PURGE' differs only in case from the action 'purge'"),
    ("action named only by 'applies to', in another case", req("Export_All", roles=("auditor",)),
     "action: 'Export_All' differs only in case from the action 'export_all'"),
    ("id whose first segment differs in case", req(rid="Prod/db1"),
     "resource.id: \"Prod/db1\": 'Prod' differs only in case from 'prod', which the rules name"),
    ("id whose deeper segment differs in case", req("read", "reports/Secret/q1", ("analyst",)),
     "resource.id: \"reports/Secret/q1\": 'reports/Secret' differs only in case from 'reports/secret'"),
    ("id with a backslash", req(rid="prod\\db1"), "resource.id: \"prod\\\\db1\" contains a backslash"),
    ("id with an encoded slash", req(rid="prod%2Fdb1"), "resource.id: \"prod%2Fdb1\" holds a percent-encoded"),
    ("id with an encoded backslash", req(rid="prod%5cdb1"), "resource.id: \"prod%5cdb1\" holds a percent-encoded"),
    ("id with an encoded dot segment", req(rid="x/%2e%2E/prod/db1"), "holds a percent-encoded '/', backslash, dot"),
    # a server that decodes twice reads %252F as '/': x%252F..%252Fprod%252Fdb1 would be prod/db1 to it
    ("id with a slash encoded twice", req(rid="x%252F..%252Fprod%252Fdb1"), "holds a percent-encoded '/', backslash"),
    ("id with a dot segment encoded twice", req(rid="x/%252e%252e/prod/db1"), "holds a percent-encoded '/', backslash"),
    ("id with an encoded NUL", req(rid="prod/db1%00.txt"), "holds a percent-encoded '/', backslash, dot segment or "
                                                           "control character"),
    ("id with a zero-width space", req(rid="prod\u200b/db1"),
     "resource.id: \"prod\\u200b/db1\" contains an invisible character (U+200B ZERO WIDTH SPACE)"),
    ("id with a no-break space", req(rid="prod\u00a0x/db1"), "contains an invisible character (U+00A0 NO-BREAK SPACE)"),
    ("id in full-width letters", req(rid="\uff50rod/db1"),
     "resource.id: \"\\uff50rod/db1\" is not in NFKC form (U+FF50 FULLWIDTH LATIN SMALL LETTER P stands for 'p')"),
    ("id with a ligature", req(rid="\ufb01les/x"), "is not in NFKC form (U+FB01 LATIN SMALL LIGATURE FI stands for 'fi')"),
    ("role in another case", req("read", "reports/q1", ("analyst", "Contractor")),
     "principal.roles: role 'Contractor' differs only in case from the declared role 'contractor'; names are exact"),
    ("role with a leading space", req("read", "reports/q1", ("analyst", " contractor")),
     "principal.roles: role ' contractor' is the declared role 'contractor' written with other characters"),
    ("role with a zero-width space", req("read", "reports/q1", ("analyst", "contractor\u200b")),
     "principal.roles: role 'contractor\\u200b' is the declared role 'contractor' written with other characters"),
    ("role in full-width letters", req("read", "reports/q1", ("analyst", "\uff43ontractor")),
     "is the declared role 'contractor' written with other characters"),
    ("role with a space inside", req("read", "reports/q1", ("analyst", "con tractor")),
     "is the declared role 'contractor' written with other characters"),
    ("id with a Cyrillic letter in a Latin segment", req(rid="pr\u043ed/db1"),
     "resource.id: \"pr\\u043ed/db1\" mixes letters of the scripts CYRILLIC, LATIN in one word"),
    ("role with a Cyrillic letter", req("read", "reports/q1", ("analyst", "c\u043entractor")),
     "principal.roles: role \"c\\u043entractor\" mixes letters of the scripts CYRILLIC, LATIN in one word"),
    # Latin letters of phonetic notation that NFKC keeps and that read as plain ones
    ("id with a small capital", req(rid="\u1d18rod/db1"),
     "resource.id: \"\\u1d18rod/db1\" holds U+1D18 LATIN LETTER SMALL CAPITAL P, a phonetic letter that reads as 'p'"),
    ("id in small capitals", req(rid="\u1d18\u0280\u1d0f\u1d05/db1"), "a phonetic letter that reads as 'p'"),
    ("id with a script g", req("read", "reports/secret/\u0261", ("analyst",)),
     "holds U+0261 LATIN SMALL LETTER SCRIPT G, a phonetic letter that reads as 'g'"),
    ("role with a small capital", req("read", "reports/q1", ("analyst", "\u1d04ontractor")),
     "principal.roles: role '\u1d04ontractor' is the declared role 'contractor' written with other characters"),
    ("budgeted workflow in another case", in_workflow("Invoice-Exceptions"),
     "context.workflow: 'Invoice-Exceptions' differs only in case from the workflow 'invoice-exceptions' a budget"),
    ("budgeted workflow with a trailing space", in_workflow("invoice-exceptions "),
     "is the workflow 'invoice-exceptions' a budget names written with other characters"),
    ("budgeted workflow with a zero-width space", in_workflow("invoice\u200b-exceptions"),
     "is the workflow 'invoice-exceptions' a budget names written with other characters"),
    ("budgeted workflow in full-width letters", in_workflow("\uff49nvoice-exceptions"),
     "is the workflow 'invoice-exceptions' a budget names written with other characters"),
    ("budgeted workflow with a Unicode hyphen", in_workflow("invoice\u2010exceptions"),
     "is the workflow 'invoice-exceptions' a budget names written with other characters"),
    ("budgeted workflow with a minus sign", in_workflow("invoice\u2212exceptions"),
     "is the workflow 'invoice-exceptions' a budget names written with other characters"),
    ("workflow with a Cyrillic letter in a Latin word", in_workflow("inv\u043eice-exceptions"),
     "context.workflow: \"inv\\u043eice-exceptions\" mixes letters of the scripts CYRILLIC, LATIN in one word"),
    ("workflow in a list", in_workflow(["invoice-exceptions"]),
     "context.workflow: must be a non-empty string (the workflow's name), not list"),
    ("workflow as a number", in_workflow(7), "context.workflow: must be a non-empty string (the workflow's name), not int"),
    ("empty workflow", in_workflow(""), "context.workflow: must be a non-empty string (the workflow's name)"),
]


@pytest.mark.parametrize("what,request_,error", REFUSED, ids=[r[0] for r in REFUSED])
def test_another_spelling_of_a_protected_action_id_or_role_is_refused(policy, what, request_, error):
    decision = policy.evaluate(request_)
    assert decision.effect == "deny"
    assert [r.rule for r in decision.reasons] == ["<request>"]
    assert len(decision.errors) == 1 and error in decision.errors[0], decision.errors
    assert decision.errors[0].startswith(("action: ", "resource.id: ", "principal.roles: ", "context.workflow: "))


# (what, request, effect, deciding rule): the spellings the rules name, and ids and actions no rule protects
DECIDED = [
    ("the denied action as written", req(), "deny", "ops.no_deletes_in_prod"),
    ("the denied id as written", req("read", "reports/secret/q1", ("analyst",)), "deny", "ops.secret_reports"),
    ("the action a condition denies", req("purge", "staging/db1"), "deny", "ops.no_purge"),
    ("the gated action", req("export_all", "staging/db1", ("auditor",)), "escalate", "ops.exports_need_approval"),
    ("an action no rule names", req("archive"), "allow", "ops.admins_do_anything"),
    ("an upper-case action no rule names in another case", req("ARCHIVE"), "allow", "ops.admins_do_anything"),
    ("an id no rule names, in any case", req(rid="Staging/DB1"), "allow", "ops.admins_do_anything"),
    ("the protected id's prefix on its own", req(rid="prod"), "allow", "ops.admins_do_anything"),
    ("a percent sign that hides no separator", req(rid="promos/10%off"), "allow", "ops.admins_do_anything"),
    ("non-ASCII text in NFKC form", req(rid="donn\u00e9es/\u65e5\u672c"), "allow", "ops.admins_do_anything"),
    ("segments of one script each", req(rid="docs/\u043e\u0442\u0447\u0451\u0442"), "allow",
     "ops.admins_do_anything"),
    ("a case-differing id that a deny decides anyway", req(rid="Prod/db1", roles=()), "deny", "<default-deny>"),
    ("the denied role as written", req("read", "reports/q1", ("analyst", "contractor")), "deny",
     "ops.contractors_never_read_reports"),
    ("a role no rule names", req("read", "reports/q1", ("analyst", "intern")), "allow", "ops.analysts_read_reports"),
    ("the budgeted workflow as written", in_workflow("invoice-exceptions"), "allow", "ops.admins_do_anything"),
    ("a workflow no budget names", in_workflow("Other-Flow"), "allow", "ops.admins_do_anything"),
]


@pytest.mark.parametrize("what,request_,effect,rule", DECIDED, ids=[d[0] for d in DECIDED])
def test_names_the_rules_spell_and_names_they_do_not_protect_are_decided(policy, what, request_, effect, rule):
    decision = policy.evaluate(request_)
    assert decision.errors == ()
    assert decision.effect == effect and decision.reasons[0].rule == rule


_CASINGS = st.lists(st.booleans(), min_size=6, max_size=6).map(
    lambda upper: "".join(c.upper() if u else c for c, u in zip("delete", upper)))


@given(_CASINGS)
def test_no_casing_of_a_denied_action_is_allowed(policy, casing):
    decision = policy.evaluate(req(casing))
    assert decision.effect == "deny"
    assert (decision.reasons[0].rule == "ops.no_deletes_in_prod") is (casing == "delete")


@given(st.text(min_size=1, max_size=10))
def test_an_action_is_a_name_or_the_request_is_malformed(policy, action):
    decision = policy.evaluate(req(action, "staging/db1"))
    if decision.effect == "allow":
        assert action.isascii() and (action[0].isalpha() or action[0] == "_")
        assert all(c.isalnum() or c == "_" for c in action)
        assert action.casefold() not in ("delete", "read", "purge", "export_all") or action == action.casefold()


# Ids built from the characters every rule of canonical ids is about, and from anywhere in Unicode.
_ID_TEXT = st.text(st.one_of(st.sampled_from("/. a\t\n\r\\%2fFeE5cC\x0b\x1f\x7f\x85\x9f\xa0\u200b\u2028\u3000\uff50"),
                             st.characters()), min_size=1, max_size=12)


@given(_ID_TEXT)
@example("a/..")
@example("x/\n")
@example("\u3000x")
@example("x ")
@example(" x")
@example("x/")
@example("/x")
@example("x//y")
@example("./x")
@example("a/%2E")
@example("\ufb01")
@example("e\u0301")
def test_the_fast_canonical_id_check_never_passes_an_id_the_definition_refuses(rid):
    # `_plain_id` is a shortcut taken before `_id_problem`, which defines a canonical id: it may send a good
    # id on to the definition, never let a bad one through.
    if _plain_id(rid):
        assert _id_problem(rid) is None


# --- a key given twice ------------------------------------------------------------------------------------
# Parsers keep different values of a repeated key (Python and orjson the last, others the first), so the
# caller and the engine could read different requests from one text. Such a text is malformed, on every path.

DUPLICATES = [
    ("top level", '{"action": "read", "action": "delete", "principal": {"id": "u1"}}', "action"),
    ("in an object", '{"principal": {"id": "u1", "roles": ["admin"], "roles": []}}', "roles"),
    ("deep", '{"context": {"a": {"b": {"c": 1, "c": 2}}}}', "c"),
    ("spaced from the colon", '{"action" : "read", "action":"delete"}', "action"),
    ("a key with an escaped quote", '{"a\\"b": 1, "a\\"b": 2}', 'a"b'),
    ("a quote written as \\u0022", '{"k": "x\\u0022:", "k": 1}', "k"),
    ("an escaped and a plain spelling", '{"act\\u0069on": "read", "action": "delete"}', "action"),
    ('a string holding \'":\' beside a repeat', '{"a":"\\u0022:","b":1,"b":2}', "b"),  # one '":' more, one less
    ("compact", '{"action":"read","action":"delete"}', "action"),
    ("beside a number past int()'s digit limit", '{"n": ' + "9" * 5000 + ', "n": 1}', "n"),
]


@pytest.mark.parametrize("what,text,key", DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_a_key_given_twice_makes_the_line_malformed(what, text, key):
    from policyengine.jsontext import Unreadable, decode
    from policyengine.jsonl import _CAREFUL, quick_value
    from policyengine.jsontext import repeated_key

    assert quick_value(text.encode()) is _CAREFUL  # the fast reader never takes it
    with pytest.raises(Unreadable, match="duplicate key"):
        decode(text)
    assert repeated_key(text) == key


@pytest.mark.parametrize("what,text,key", DUPLICATES, ids=[d[0] for d in DUPLICATES])
def test_every_reader_of_json_refuses_a_key_given_twice(tmp_path, what, text, key):
    """Workflow input files and audit exports are read by the same rule as requests, not by a second one."""
    from policyengine.audit.export import _DuplicateKey, strict_json
    from policyengine.orchestrator.workflows import load_items

    shown = json.dumps(key, ensure_ascii=True)
    for name, content, line in (("items.jsonl", "{}\n" + text + "\n", 2),
                                ("items.json", "[{},\n" + text + "]", 2),
                                ("one.json", text, 1)):
        (tmp_path / name).write_text(content)
        with pytest.raises(ValueError, match=re.escape(f"{name}:{line}: duplicate key {shown} in an object")):
            load_items(tmp_path / name)
    with pytest.raises(_DuplicateKey, match=re.escape(f"duplicate key {key!r}")):
        strict_json(text)


KEYS = st.sampled_from(["a", "b", "action", 'q"', "\u00e9", "x:y"])
SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(['"s"', '"a\\":b"', '"\\u0022:"', "true", "null", "1.5"]))


@st.composite
def objects(draw, depth: int = 0) -> tuple[str, bool]:
    """JSON object text with its members written out one by one (so a key may repeat), and whether one does."""
    keys = draw(st.lists(KEYS, max_size=4))
    repeats = len(set(keys)) != len(keys)
    members = []
    for key in keys:
        if depth < 2 and draw(st.booleans()):
            inner, inner_repeats = draw(objects(depth + 1))
            repeats = repeats or inner_repeats
            value = inner
        else:
            value = str(draw(SCALARS))
        colon = draw(st.sampled_from([":", ": ", " :", "\n:"]))
        members.append(f"{json.dumps(key)}{colon}{value}")
    return "{" + draw(st.sampled_from([",", ", "])).join(members) + "}", repeats


@given(objects())
def test_a_repeated_key_is_found_wherever_it_is_and_only_then(drawn):
    from policyengine.jsontext import Unreadable, decode
    from policyengine.jsonl import _CAREFUL, quick_value

    text, repeats = drawn
    if repeats:
        assert quick_value(text.encode()) is _CAREFUL
        with pytest.raises(Unreadable, match="duplicate key"):
            decode(text)
    else:
        assert decode(text) == json.loads(text)
        value = quick_value(text.encode())
        assert value is _CAREFUL or value == json.loads(text)  # the careful reader may be asked; it agrees
