"""Contracts of the engine's types: published JSON Schemas, serialisation, immutability,
thread safety, the compile pipeline and the policy hash."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from pydantic import ValidationError

from policyengine import Decision, Request, load_policy
from policyengine.compile import STAGES, compile_pattern
from policyengine.decision import SCHEMAS, schema_text
from tests.threads import together

ROOT = Path(__file__).resolve().parent.parent

POLICY = """
package t
role viewer
role admin extends viewer
agent bot
    roles viewer
model m
    region "eu-west-1" hosting internal
rule read_docs
    allow role viewer to read dataset "docs/*"
rule admins_write
    allow role admin to write dataset "docs/*"
    when context.ticket != "none"
rule no_secrets
    deny any to any dataset "docs/secret*"
escalate big
    when context has rows and context.rows > 1000
    to role admin
    within 1h else deny
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("contracts")
    (root / "t.policy").write_text(POLICY)
    return load_policy(root)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_committed_schemas_equal_the_generated_ones(name):
    committed = (ROOT / "schemas" / name).read_text(encoding="utf-8")
    assert committed == schema_text(name), "run: python -m policyengine.decision schemas"


def _requests():
    for roles in (["viewer"], ["admin"], []):
        for rid in ("docs/a", "docs/secret/x", "other"):
            for action in ("read", "write"):
                for rows in (None, 5000):
                    context = {"ticket": "T-1"} if rows is None else {"ticket": "T-1", "rows": rows}
                    yield {"principal": {"id": "u", "roles": roles}, "action": action,
                           "resource": {"kind": "dataset", "id": rid}, "context": context}


def test_decisions_round_trip_through_json_and_validate(policy):
    effects = set()
    for request in _requests():
        Request.model_validate(request)  # every request we send is valid per the model
        decision = policy.evaluate(request)
        effects.add(decision.effect)
        data = json.loads(decision.to_json())
        assert Decision.model_validate(data) == decision
        assert set(data) == {"effect", "reasons", "obligations", "route", "policy_hash", "errors"}
    assert effects == {"allow", "deny", "escalate"}


def test_decisions_are_immutable(policy):
    decision = policy.evaluate(next(_requests()))
    with pytest.raises(ValidationError):
        decision.effect = "allow"  # type: ignore[misc]
    assert isinstance(decision.reasons, tuple)


def test_eight_threads_get_the_same_decisions(policy):
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)  # fixes escalation deadlines
    requests = list(_requests()) * 20
    expected = [policy.evaluate(r, now=now).to_dict() for r in requests]
    fresh = load_policy(policy.files)  # cold caches, shared by all threads
    results = together(8, lambda: [fresh.evaluate(r, now=now).to_dict() for r in requests])
    assert all(got == expected for got in results)


def test_compile_is_a_tuple_of_named_stages():
    names = [name for name, _ in STAGES]
    assert names == ["roles", "registry", "rules", "index", "gates", "residency", "workflows", "budgets", "routes", "rate_limits",
                     "schemas"]
    assert all(callable(stage) for _, stage in STAGES)


def test_index_keeps_rules_of_other_kinds_out_of_the_way(policy):
    index = policy.compiled.index
    assert set(index) == {("read", "dataset"), ("write", "dataset"), ("*", "dataset")}
    assert [r.id for r in index[("read", "dataset")].by_role["viewer"]] == ["t.read_docs"]


PATTERNS = [
    ("*", "anything", True),
    ("docs/*", "docs/a/b", False),  # '*' stays within one segment
    ("docs/**", "docs/a/b", True),
    ("docs/**", "docs", False),
    ("**", "a/b/c", True),
    ("*", "a/b/c", True),  # '*' alone: every id
    ("docs/*/v1", "docs/a/v1", True),
    ("docs/*/v1", "docs/a/b/v1", False),
    ("docs/**/v1", "docs/a/b/v1", True),
    ("docs/?", "docs//", False),
    ("docs/[!a]", "docs/b", True),
    ("docs/[!a]", "docs//", False),
    ("docs/x*", "docs/xy/z", False),
    ("docs/*", "doc/a", False),
    ("docs/?", "docs/a", True),
    ("docs/?", "docs/ab", False),
    ("docs/[ab]", "docs/b", True),
    ("docs/q1", "docs/q1", True),
    ("docs/q1", "docs/q10", False),
    ("docs/*", None, False),
]


@pytest.mark.parametrize("pattern,rid,matches", PATTERNS)
def test_resource_patterns(pattern, rid, matches):
    matcher = compile_pattern(pattern)
    assert (matcher is None or matcher(rid)) == matches


def test_policy_hash_depends_on_content_not_on_location(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, text in ((a, POLICY), (b, POLICY), (c, POLICY.replace("docs/*", "doc/*"))):
        folder.mkdir()
        (folder / "t.policy").write_text(text)
    ha, hb, hc = (load_policy(x).policy_hash for x in (a, b, c))
    assert ha == hb != hc
    assert len(ha) == 64 and int(ha, 16) >= 0


def test_policy_hash_ignores_layout(tmp_path):
    tidy, messy = tmp_path / "tidy", tmp_path / "messy"
    tidy.mkdir(), messy.mkdir()
    (tidy / "x.policy").write_text('package t\nrole viewer\nrule r\n    allow role viewer to read dataset "d/*"\n')
    (messy / "x.policy").write_text('package t\n\n\nrole   viewer\nrule r allow role viewer\n  to read dataset "d/*"\n')
    assert load_policy(tidy).policy_hash == load_policy(messy).policy_hash


def test_a_formatter_failure_is_not_hidden_by_hashing_the_bytes(tmp_path, monkeypatch):
    from policyengine import engine

    (tmp_path / "t.policy").write_text(POLICY)

    def broken(file, source=None):
        raise RuntimeError("formatter bug")

    monkeypatch.setattr(engine, "format_policy", broken)
    monkeypatch.setattr(engine, "_CACHE", {})
    with pytest.raises(RuntimeError, match="formatter bug"):
        load_policy(tmp_path)


def test_every_shipped_rule_file_formats_for_the_policy_hash():
    from policyengine.engine import policy_hash
    from policyengine.loader import load_files

    result = load_files([ROOT / "rules"], cache=False)
    assert result.ok and len(policy_hash(result.files)) == 64


def test_load_policy_parses_the_bytes_it_keys_the_cache_with(tmp_path, monkeypatch):
    """An edit between hashing and parsing must not cache the new policy under the old content."""
    from policyengine import engine, loader

    old, new = POLICY, POLICY.replace("docs/*", "doc/*")
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "t.policy").write_text(old)
    expected = load_policy(tmp_path / "ref").policy_hash
    target = tmp_path / "live" / "t.policy"
    target.parent.mkdir()
    target.write_text(old)
    monkeypatch.setattr(engine, "_CACHE", {})
    loader._MEMORY.clear()
    real = Path.read_bytes
    reads = []

    def edited_after_first_read(self):
        data = real(self)
        if self == target:
            reads.append(data)
            if len(reads) == 1:
                target.write_text(new)  # someone saves the file right after our first read
        return data

    monkeypatch.setattr(Path, "read_bytes", edited_after_first_read)
    first = load_policy(target)
    assert len(reads) == 1, "the file was read more than once"
    assert first.policy_hash == expected
    monkeypatch.setattr(Path, "read_bytes", real)
    assert load_policy(target).policy_hash != expected  # the edit is seen on the next load
    target.write_text(old)
    assert load_policy(target).policy_hash == expected


def test_an_edited_imported_package_is_not_served_from_the_cache(tmp_path):
    """A file given alone loads the package it imports from beside it; editing that package counts."""
    (tmp_path / "common").mkdir()
    (tmp_path / "app").mkdir()
    limits = tmp_path / "common" / "limits.policy"
    limits.write_text("package common.limits\nconst MAX_ROWS = 10\n")
    main = tmp_path / "app" / "main.policy"
    main.write_text('package app\nimport common.limits\nrole clerk\nrule small_reads\n'
                    '    allow role clerk to read dataset "d/*"\n    when context.rows <= MAX_ROWS\n')
    request = {"principal": {"id": "kim", "roles": ["clerk"]}, "action": "read",
               "resource": {"kind": "dataset", "id": "d/1"}, "context": {"rows": 50}}
    assert load_policy(main).evaluate(request).effect == "deny"
    limits.write_text("package common.limits\nconst MAX_ROWS = 100\n")
    assert load_policy(main).evaluate(request).effect == "allow"


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
))
def test_evaluate_never_raises_and_fails_closed_on_junk(policy, junk):
    decision = policy.evaluate(junk)
    assert decision.effect == "deny"
    assert decision.errors


@settings(max_examples=150, deadline=None)
@given(
    roles=st.lists(st.sampled_from(["viewer", "admin", "ghost", ""]), max_size=3),
    action=st.sampled_from(["read", "write", "delete"]),
    rid=st.sampled_from(["docs/a", "docs/secret", "x"]),
    context=st.dictionaries(st.sampled_from(["ticket", "rows"]),
                            st.none() | st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2)),
)
def test_wellformed_requests_fail_closed_on_condition_errors_and_deny_wins(policy, roles, action, rid, context):
    request = {"principal": {"id": "u", "roles": roles}, "action": action,
               "resource": {"kind": "dataset", "id": rid}, "context": context}
    decision = policy.evaluate(request)
    assert all(": condition error: " in e for e in decision.errors), decision.errors  # never a shape error
    if decision.errors:
        assert decision.effect == "deny"
    rows = context.get("rows")
    if decision.effect != "deny" and "rows" in context and rows is not None:
        assert rows.__class__ is int  # a mistyped row count never gets past the escalation
    if rid.startswith("docs/secret"):
        assert (decision.effect, decision.reasons[0].rule) == ("deny", "t.no_secrets")


GUARDS = [
    ('action == "pay" and context.x > 1', {"pay"}),
    ('action in ["a", "b"]', {"a", "b"}),
    ('action == "pay" and context.amount > 10 or context.confidence < 0.5', None),
    ("context.x > 1", None),
    ('(action == "a" or action == "b") and context.x > 1', {"a", "b"}),
    ('action == "a" and action == "b"', set()),
    ('action != "a"', None),
]


def test_gates_are_indexed_by_the_actions_their_condition_names(tmp_path):
    text = "package g\nrole boss\n" + "".join(
        f"escalate g{i}\n    when {cond}\n    to role boss\n" for i, (cond, _) in enumerate(GUARDS))
    (tmp_path / "g.policy").write_text(text)
    gates = load_policy(tmp_path).compiled.gates
    assert [None if g.actions is None else set(g.actions) for g in gates] == [want for _, want in GUARDS]


def test_checker_warnings_are_kept_on_the_policy(tmp_path):
    (tmp_path / "w.policy").write_text(
        'package w\nrole a\nrule never\n    allow role a to read dataset "x"\n    when context.n > 5 and context.n < 2\n')
    policy = load_policy(tmp_path)
    assert policy.warnings and all(not f.is_error for f in policy.warnings)
    assert policy.with_blocked(frozenset()).warnings == policy.warnings


INPUTS = [
    # text, [(line, request or None, error fragment or None)]
    ('{"a": 1}', [(1, {"a": 1}, None)]),
    ('\n\n{\n  "a": 1\n}\n', [(3, {"a": 1}, None)]),
    ('[{"a": 1}, {"b": 2}]', [(1, {"a": 1}, None), (1, {"b": 2}, None)]),
    ('{"a": 1}\n\n{"b": 2}\n', [(1, {"a": 1}, None), (3, {"b": 2}, None)]),
    ('{"a": 1}\n{oops\n"s"\n', [(1, {"a": 1}, None), (2, None, "not valid JSON"), (3, "s", None)]),
    ('{oops\n{"b": 2}\n', [(1, None, "not valid JSON"), (2, {"b": 2}, None)]),
    ("", []),
    ("  \n", []),
    # nesting: a line past MAX_DEPTH is one unreadable item; the next line is still read
    ('[' * 100_000 + ']' * 100_000 + '\n{"b": 2}\n', [(1, None, "nested too deeply"), (2, {"b": 2}, None)]),
    ('{"a": 1}\n' + '{"a":' * 5000 + '1' + '}' * 5000 + '\n{"b": 2}',
     [(1, {"a": 1}, None), (2, None, "nested too deeply"), (3, {"b": 2}, None)]),
    ('{"a": 1}\n' + '[' * 129 + ']' * 129, [(1, {"a": 1}, None), (2, None, "more than 128 levels")]),
    ('{"a": 1}\n' + '[' * 3000 + ']' * 3000, [(1, {"a": 1}, None), (2, None, "nested too deeply")]),
    ('[' * 128 + ']' * 128, [(1, "DEEP-128", None)]),
    ('\n{"x":\n' + '[' * 3000 + ']' * 3000 + '\n}\n', [(2, None, "nested too deeply")]),
]


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 2):  # the batch array and the innermost list are two levels
        value = [value]
    return value


@pytest.mark.parametrize("text,want", INPUTS)
def test_reading_requests(text, want):
    from policyengine.engine import read_requests

    got = [(i.line, i.request, i.error) for i in read_requests(text)]
    want = [(line, _nested(128) if req == "DEEP-128" else req, err) for line, req, err in want]
    assert [(line, req) for line, req, _ in got] == [(line, req) for line, req, _ in want]
    for (_, _, error), (_, _, fragment) in zip(got, want, strict=True):
        assert (error is None) == (fragment is None) and (fragment is None or fragment in error)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    principal=st.fixed_dictionaries({}, optional={"id": JSON | st.just("u"), "type": JSON | st.just("agent"),
                                                   "roles": JSON | st.just(["admin"]), "attrs": JSON}),
    action=JSON | st.sampled_from(["read", "write"]),
    resource=st.fixed_dictionaries({}, optional={"kind": JSON | st.just("dataset"), "id": JSON | st.just("docs/a"),
                                                  "attrs": JSON}),
    data=JSON, context=JSON, approvals=JSON,
)
def test_junk_in_any_field_is_named_never_an_internal_error(policy, principal, action, resource, data, context,
                                                           approvals):
    request = {"principal": principal, "action": action, "resource": resource, "data": data, "context": context,
               "approvals": approvals}
    decision = policy.evaluate(request)
    assert not any("internal error" in e for e in decision.errors), decision.errors
    assert decision.effect in ("allow", "deny", "escalate")


def test_rules_that_cannot_apply_are_never_candidates(tmp_path):
    """The index, not a scan: adding rules about other kinds, actions, roles or ids adds no candidates."""
    base = POLICY
    noise = "".join(
        f'rule n{i}\n    allow role {"admin" if i % 2 else "viewer"} to {("run", "read")[i % 2]} '
        f'{("tool", "model")[i % 2] if i % 3 else "dataset"} "{"other" if i % 3 == 0 else "x"}{i}/*"\n'
        for i in range(300))
    counts = []
    for name, text in (("small", base), ("large", base + noise)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "t.policy").write_text(text)
        policy = load_policy(folder)
        ctx = policy._evaluator.context({"principal": {"id": "u", "roles": ["admin"]}, "action": "read",
                                         "resource": {"kind": "dataset", "id": "docs/a"}})
        denies, allows = policy._evaluator.candidates(ctx)
        counts.append(([r.id for r in denies], [r.id for r in allows]))
    assert counts[0] == counts[1] == (["t.no_secrets"], ["t.read_docs"])


def _deep(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("depth", [100, 900, 5000, 100_000])
@pytest.mark.parametrize("field", ["data", "context", "attrs", "rows", "approvals"])
def test_deeply_nested_requests_never_crash_evaluate_or_explain(policy, depth, field):
    """Python dicts have no parser limit: evaluate must still decide (or deny), never raise."""
    request = {"principal": {"id": "u", "roles": ["admin"]}, "action": "write",
               "resource": {"kind": "dataset", "id": "docs/a"}, "context": {"ticket": "T-1"}}
    if field == "attrs":
        request["principal"]["attrs"] = {"x": _deep(depth)}
    elif field == "rows":
        request["context"]["rows"] = _deep(depth)  # read by the escalation gate's condition
    elif field == "approvals":
        request["approvals"] = [{"gate": "t.big", "approver": _deep(depth), "roles": ["admin"]}]
    else:
        request[field] = {"x": _deep(depth)}
    decision = policy.evaluate(request)
    assert decision.effect in ("allow", "deny", "escalate")
    json.loads(decision.to_json())
    explanation = policy.explain(request)  # the trace shows the values conditions read
    assert explanation.decision == decision and explanation.text()


WHERE = [
    # text, where each item is said to be
    ('{"a": 1}\n[{"b": 2}, 3]\n', ["line 1", "line 2 item 1", "line 2 item 2"]),
    ('[\n  {"a": 1},\n\n  {"b":\n 2}, 3\n]\n', ["line 2 item 1", "line 4 item 2", "line 5 item 3"]),
    ('\n\n[{"a": "[,]\\"\\n"},\n {"b": 2}]', ["line 3 item 1", "line 4 item 2"]),
    ('\ufeff{"a": 1}\n{"b": 2}\n', ["line 1", "line 2"]),
    ('\ufeff{\n"a": 1}\n', ["line 1"]),
    ('\ufeff\n[\n1]', ["line 3 item 1"]),
]


@pytest.mark.parametrize("text,want", WHERE)
def test_items_are_named_by_line_and_array_position(text, want):
    from policyengine.engine import read_requests

    items = list(read_requests(text))
    assert [i.where for i in items] == want
    assert all(i.error is None for i in items)


SURROGATES = [
    # JSON text, [(request as read, error fragment or None)]
    ('{"principal": {"id": "u\\ud800"}}',
     [({"principal": {"id": "u\\ud800"}}, 'principal.id: not valid Unicode text (lone surrogate in "u\\ud800")')]),
    ('[{"a": "\\ud83d\\ude00"}, {"b": ["\\udc00"]}, {"\\udbffk": 1}]',
     [({"a": "\U0001F600"}, None), ({"b": ["\\udc00"]}, "b[0]: not valid Unicode text"),
      ({"\\udbffk": 1}, "\\udbffk: not valid Unicode text (lone surrogate in a key)")]),
    ('{"a": "\\u00e9\\\\ud800"}', [({"a": "\u00e9\\ud800"}, None)]),  # an escaped backslash: plain text
    ('{"a": "x\udcff"}', [({"a": "x\\udcff"}, "a: not valid Unicode text")]),  # an undecodable byte kept
]


@pytest.mark.parametrize("text,want", SURROGATES)
def test_lone_surrogates_are_unreadable_and_kept_in_escaped_form(text, want):
    from policyengine.engine import read_requests

    items = list(read_requests(text))
    assert [i.request for i in items] == [request for request, _ in want]
    for item, (_, fragment) in zip(items, want, strict=True):
        assert (item.error is None) == (fragment is None) and (fragment is None or fragment in item.error)
        json.dumps(item.request).encode("utf-8")  # the safe form always encodes
