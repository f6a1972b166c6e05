"""Set, string, network and time operators (contains, starts with, like, in cidr, hour/weekday/age of): one table of meaning."""

from __future__ import annotations

import itertools
import json
import re
from datetime import datetime, timezone

import pytest

from policyengine import load_policy
from policyengine.conditions import ConditionError, Ctx, _all_of, _any_of, compile_expr
from policyengine.syntax import parse_policy

ERROR = "error"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc).timestamp()

# condition, data, result (True, False, or ERROR: a condition error, which denies in a deny rule)
TABLE = [
    ('data.tags contains "pii"', {"tags": ["pii", "x"]}, True),
    ('data.tags contains "pii"', {"tags": ["x"]}, False),
    ('data.tags contains "pii"', {"tags": []}, False),
    ('data.tags contains "pii"', {"tags": "pii"}, ERROR),  # a string is not a list
    ('data.tags contains "pii"', {}, ERROR),
    ("data.tags contains 1", {"tags": [True]}, ERROR),  # 1 is not true
    ('data.tags contains any ["a", "pii"]', {"tags": ["pii"]}, True),
    ('data.tags contains any ["a", "b"]', {"tags": ["pii"]}, False),
    ("data.tags contains any []", {"tags": ["pii"]}, False),
    ('data.tags contains all ["a", "pii"]', {"tags": ["pii", "a", "z"]}, True),
    ('data.tags contains all ["a", "pii"]', {"tags": ["pii"]}, False),
    ("data.tags contains all []", {"tags": ["pii"]}, True),
    ('data.tags contains all ["a"]', {"tags": [1, 2]}, ERROR),
    ('data.name starts with "tmp/"', {"name": "tmp/x"}, True),
    ('data.name starts with "tmp/"', {"name": "x/tmp/"}, False),
    ('data.name starts with "tmp/"', {"name": 5}, ERROR),
    ('data.name ends with ".csv"', {"name": "a.csv"}, True),
    ('data.name ends with ".csv"', {"name": "a.CSV"}, False),  # case matters unless a schema normalises it
    ('data.name like "*draft*"', {"name": "q1/draft/v2"}, True),  # `*` crosses `/` in like
    ('data.name like "v?"', {"name": "v2"}, True),
    ('data.name like "v?"', {"name": "v22"}, False),
    ('data.name like "a[b]"', {"name": "a[b]"}, True),  # only * and ? are special
    ('data.name like "*"', {}, ERROR),
    ('not data.tags contains "x"', {"tags": ["y"]}, True),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "10.1.2.3"}, True),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "11.1.2.3"}, False),
    ('data.ip in cidr ["10.0.0.0/8", "2001:db8::/32"]', {"ip": "2001:db8::1"}, True),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "2001:db8::a01:203"}, False),  # an IPv6 address is not in an IPv4 block
    # but an IPv4-mapped one is the IPv4 host it maps (a deny of a blocked network must not miss it)
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "::ffff:10.1.2.3"}, True),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "::FFFF:a01:203"}, True),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "::ffff:11.1.2.3"}, False),
    ('data.ip in cidr "::ffff:0:0/96"', {"ip": "::ffff:10.1.2.3"}, True),
    ('not data.ip in cidr ["10.0.0.0/8"]', {"ip": "::ffff:10.1.2.3"}, False),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "10.1.2"}, ERROR),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": 167837955}, ERROR),
    ('data.ip in cidr "10.0.0.0/8"', {}, ERROR),
    ("data.ip in cidr data.blocks", {"ip": "10.1.2.3", "blocks": ["10.0.0.0/8"]}, True),
    ("data.ip in cidr data.blocks", {"ip": "10.1.2.3", "blocks": ["nope"]}, ERROR),
    # time: the decision's clock is NOW (Tuesday 2026-03-10 12:00 UTC)
    ("hour of data.at == 9", {"at": "2026-03-10T09:30:00Z"}, True),
    ("hour of data.at == 9", {"at": "2026-03-10T09:30:00+02:00"}, False),  # 07:30 in UTC
    ('hour of data.at at "Europe/Paris" == 10', {"at": "2026-03-10T09:30:00Z"}, True),  # CET: UTC+1
    ('hour of data.at at "Europe/Paris" == 11', {"at": "2026-07-10T09:30:00Z"}, True),  # CEST: UTC+2
    ("hour of data.at >= 9 and hour of data.at < 17", {"at": "2026-03-10T17:00:00Z"}, False),
    ('weekday of data.at in ["sat", "sun"]', {"at": "2026-03-14T10:00:00Z"}, True),
    ('weekday of data.at == "tue"', {"at": "2026-03-10T23:30:00-02:00"}, False),  # Wednesday in UTC
    ('weekday of data.at at "America/Sao_Paulo" == "tue"', {"at": "2026-03-11T01:30:00Z"}, True),
    # only IANA names: "localtime" is the host's zone (UTC on one server, Paris on the author's laptop), and
    # the right/ zones count leap seconds (their 18:00 comes ~27 s late)
    ('hour of data.at at "localtime" == 9', {"at": "2026-03-10T09:30:00Z"}, ERROR),
    ('hour of data.at at "right/Europe/Paris" == 17', {"at": "2026-03-10T17:00:10Z"}, ERROR),
    ('weekday of data.at at "Factory" == "tue"', {"at": "2026-03-10T09:30:00Z"}, ERROR),
    ("age of data.at < 90d", {"at": "2026-01-01T00:00:00Z"}, True),
    ("age of data.at < 60d", {"at": "2026-01-01T00:00:00Z"}, False),
    ("age of data.at >= 2h", {"at": "2026-03-10T10:00:00Z"}, True),
    ("age of data.at < 0 s", {"at": "2026-03-11T00:00:00Z"}, True),  # in the future: a negative age
    ("hour of data.at == 9", {}, ERROR),
    ("hour of data.at == 9", {"at": "2026-03-10 09:00"}, ERROR),  # no offset: not RFC 3339
    ("age of data.at < 90d", {"at": "yesterday"}, ERROR),
    ("age of data.at < 90d", {"at": 1767225600}, ERROR),  # epoch numbers are not timestamps
    ('weekday of data.at == "tue"', {"at": "2026-02-30T09:00:00Z"}, ERROR),  # no such day
    # < <= > >= order numbers only: "9" < "10" is false as text, so numbers sent as strings are an error
    ("data.clearance < data.level", {"clearance": "9", "level": "10"}, ERROR),
    ("data.clearance >= data.level", {"clearance": "5", "level": "3"}, ERROR),
    ('data.clearance < "10"', {"clearance": "9"}, ERROR),
    ("data.clearance < data.level", {"clearance": 9, "level": 10.5}, True),
    ("data.clearance > data.level", {"clearance": 9, "level": 10}, False),
    ("not data.clearance < data.level", {"clearance": "b", "level": "a"}, ERROR),
    # lists and objects inside lists are compared whole, with their types at every depth (not by a shortened text)
    ("data.scope in data.allowed", {"scope": ["tenants", "acme", "projects", "alpha", "secret"],
                                    "allowed": [["tenants", "acme", "projects", "alpha", "public"]]}, False),
    ("data.scope in data.allowed", {"scope": ["tenants", "acme", "projects", "alpha", "secret"],
                                    "allowed": [["tenants", "acme", "projects", "alpha", "secret"]]}, True),
    ("data.allowed contains data.scope", {"scope": ["a" * 40 + "1"], "allowed": [["a" * 40 + "2"]]}, False),
    ("data.allowed contains any data.wanted", {"allowed": [{"k": 1}], "wanted": [{"k": 2}]}, False),
    ("data.allowed contains all data.wanted", {"allowed": [{"k": 1}, {"k": [2]}], "wanted": [{"k": [2]}]}, True),
    ("data.pair == data.other", {"pair": [[True]], "other": [[1]]}, False),
    ("data.pair == data.other", {"pair": [[1, {"x": False}]], "other": [[1.0, {"x": 0}]]}, False),
    ("data.pair == data.other", {"pair": [[1, {"x": "y"}]], "other": [[1.0, {"x": "y"}]]}, True),
    ("data.pair in data.others", {"pair": {"a": [1, 2, 3, 4, 5]}, "others": [{"a": [1, 2, 3, 4, 6]}]}, False),
]


@pytest.mark.parametrize("condition,data,result", TABLE, ids=[f"{t[0]} {t[1]}" for t in TABLE])
def test_operator_meaning(condition, data, result):
    when = parse_policy(f'package t\nrule r deny any to read dataset "x" when {condition}\n', "t.policy").decls[0].when
    predicate = compile_expr(when, {"EU": None})
    ctx = Ctx("u", "user", frozenset(), {}, "read", "dataset", "x", {}, None, data, {}, (), NOW)
    if result is ERROR:
        with pytest.raises(ConditionError):
            predicate(ctx)
    else:
        assert predicate(ctx) is result


# rule head actions: an action group (a const list) allows exactly its actions
GROUPS = """package t
role analyst
const READ_ACTIONS = ["read", "list"]
rule reads allow role analyst to READ_ACTIONS dataset "x"
rule no_export_of_reads deny any to export dataset "x" when data.kind in READ_ACTIONS
rule exports allow any to export dataset "x"
"""


@pytest.mark.parametrize("action,data,effect,rules", [
    ("read", {}, "allow", ["t.reads"]),
    ("list", {}, "allow", ["t.reads"]),
    ("write", {}, "deny", ["<default-deny>"]),
    ("READ_ACTIONS", {}, "deny", ["<default-deny>"]),  # the group's name is not an action
    ("export", {"kind": "list"}, "deny", ["t.no_export_of_reads"]),
    ("export", {"kind": "write"}, "allow", ["t.exports"]),
])
def test_action_groups_in_rule_heads(tmp_path, action, data, effect, rules):
    (tmp_path / "t.policy").write_text(GROUPS, encoding="utf-8")
    decision = load_policy(tmp_path).evaluate({
        "principal": {"id": "ana", "type": "user", "roles": ["analyst"]},
        "action": action, "resource": {"kind": "dataset", "id": "x"}, "data": data})
    assert (decision.effect, sorted(r.rule for r in decision.reasons)) == (effect, rules)


# record consts: LIMITS[key] is the entry; a key the record lacks is an error (a deny rule denies)
RECORD_TABLE = [
    ("data.amount > LIMITS[data.region]", {"amount": 10_001, "region": "eu"}, True),
    ("data.amount > LIMITS[data.region]", {"amount": 10_000, "region": "eu"}, False),
    ("data.amount > LIMITS[data.region]", {"amount": 10_001, "region": "us"}, False),
    ("data.amount > LIMITS[data.region]", {"amount": 1, "region": "asia"}, ERROR),
    ("data.amount > LIMITS[data.region]", {"amount": 1, "region": "EU"}, ERROR),  # keys are exact
    ("data.amount > LIMITS[data.region]", {"amount": 1}, ERROR),
    ("data.amount > LIMITS[data.region]", {"amount": 1, "region": ["eu"]}, ERROR),
    ('data.team in OWNERS["payments"]', {"team": "ap"}, True),
    ('data.team in OWNERS["payments"]', {"team": "it"}, False),
]
RECORD_CONSTS = """package t
const LIMITS = {"eu": 10_000, "us": 20_000}
const AP = "ap"
const OWNERS = {"payments": [AP, "treasury"]}
"""


@pytest.mark.parametrize("condition,data,result", RECORD_TABLE, ids=[f"{t[0]} {t[1]}" for t in RECORD_TABLE])
def test_record_lookup_meaning(condition, data, result):
    file = parse_policy(RECORD_CONSTS + f'rule r deny any to read dataset "x" when {condition}\n', "t.policy")
    consts = {d.name.value: d.value for d in file.decls[:-1]}
    predicate = compile_expr(file.decls[-1].when, consts)
    ctx = Ctx("u", "user", frozenset(), {}, "read", "dataset", "x", {}, None, data, {}, (), NOW)
    if result is ERROR:
        with pytest.raises(ConditionError):
            predicate(ctx)
    else:
        assert predicate(ctx) is result


def test_age_is_measured_against_the_decisions_clock_in_decisions_and_explanations(tmp_path):
    """``age of`` reads the ``now`` a decision is given (replays, tests), not the wall clock."""
    (tmp_path / "t.policy").write_text(
        'package t\nrule fresh deny any to read dataset "x" when age of data.changed_at < 14 days\n'
        'rule reads allow any to read dataset "x"\n', encoding="utf-8")
    policy = load_policy(tmp_path)
    request = {"principal": {"id": "u", "type": "user"}, "action": "read",
               "resource": {"kind": "dataset", "id": "x"}, "data": {"changed_at": "2026-03-01T00:00:00Z"}}
    for now, effect in ((datetime(2026, 3, 14, 23, 59, tzinfo=timezone.utc), "deny"),
                        (datetime(2026, 3, 15, 0, 0, tzinfo=timezone.utc), "allow")):
        assert policy.evaluate(request, now=now).effect == effect
        explained = policy.explain(request, now=now)
        assert explained.decision.effect == effect
        fresh = next(line for line in explained.trace if "t.fresh" in line)
        assert ("no match: when is false" in fresh) == (effect == "allow"), fresh


def test_coverage_reads_age_at_the_cases_now(tmp_path):
    """A policy test's ``now:`` is the clock ``age of`` reads in coverage too, not the day the tests run."""
    from policyengine.testing.coverage import CoverageCollector
    from policyengine.testing.runner import run_paths

    (tmp_path / "t.policy").write_text(
        'package t\nrule fresh deny any to read dataset "x" when age of data.changed_at < 14 days\n'
        'rule reads allow any to read dataset "x"\n', encoding="utf-8")
    (tmp_path / "t_test.yaml").write_text(
        "policy: t.policy\nnow: 2026-03-10T09:00:00Z\ncases:\n"
        "  - name: changed a day ago\n    principal: {id: u}\n    action: read\n    resource: dataset x\n"
        "    data: {changed_at: '2026-03-09T09:00:00Z'}\n    expect: deny\n    rules: [t.fresh]\n"
        "  - name: changed long ago\n    principal: {id: u}\n    action: read\n    resource: dataset x\n"
        "    data: {changed_at: '2025-01-01T00:00:00Z'}\n    expect: allow\n", encoding="utf-8")
    collector = CoverageCollector()
    run_paths([tmp_path / "t_test.yaml"], observer=collector)
    assert collector.report([str(tmp_path / "t.policy")]).missed_clauses == []


# --- and/or of any length: plain closures that evaluate left to right and stop where Python's all/any stop ---


@pytest.mark.parametrize("n", range(0, 8))
def test_and_or_of_n_conditions_equal_all_any_and_stop_at_the_same_item(n):
    for values in itertools.product([True, False], repeat=n):
        for join, reference in ((_all_of, all), (_any_of, any)):
            seen: list[int] = []
            preds = tuple((lambda i, v: lambda c: seen.append(i) or v)(i, v) for i, v in enumerate(values))
            assert join(preds)(None) is reference(values)
            stop = next((i for i, v in enumerate(values) if v is (reference is any)), n - 1)
            assert seen == list(range(stop + 1)) if n else seen == []


# --- every comparison on every pair of a small pool of values, against docs/engine.md's table -----------------

def _kind(v):
    if v is None:
        return None
    return {bool: "bool", int: "number", float: "number", str: "string", list: "list", dict: "object"}[type(v)]


def _key(v):  # equal exactly when the table calls two values equal: types apart at every depth, 1 == 1.0
    k = _kind(v)
    if k == "list":
        return k, tuple(_key(i) for i in v)
    if k == "object":
        return k, frozenset((a, _key(b)) for a, b in v.items())
    return k, v


def _member(v, items):
    if v is None or _kind(items) != "list" or (items and _kind(v) not in {_kind(i) for i in items}):
        raise ValueError
    return _key(v) in {_key(i) for i in items}


def _table(op, a, b):
    """What docs/engine.md's table says ``a op b`` is: True, False or ERROR."""
    try:
        if op in ("==", "!="):
            if a is None or b is None or _kind(a) != _kind(b):
                raise ValueError
            return (_key(a) == _key(b)) == (op == "==")
        if op in ("<", "<=", ">", ">="):
            if _kind(a) != "number" or _kind(b) != "number":
                raise ValueError
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        if op in ("in", "not in"):
            return _member(a, b) == (op == "in")
        if op == "contains":
            if _kind(a) != "list" or b is None:
                raise ValueError
            return bool(a) and _member(b, a)
        if op in ("contains any", "contains all"):
            if _kind(a) != "list" or _kind(b) != "list" or any(w is None or (a and _kind(w) not in {_kind(i) for i in a})
                                                               for w in b):
                raise ValueError
            found = [_key(w) in {_key(i) for i in a} for w in b]
            return any(found) if op == "contains any" else all(found)
        if _kind(a) != "string" or _kind(b) != "string":
            raise ValueError
        if op == "like":
            return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in b), a, re.S) \
                is not None
        return a.startswith(b) if op == "starts with" else a.endswith(b)
    except ValueError:
        return ERROR


_SCALARS = [None, "a", "b", "A", "", "a*", "1", "9", "10", 1, 2, 1.0, 1.5, 0, -1, True, False]
_LISTS = [[], ["a"], ["a", "b"], [1], [1.0, 2], [True], [1, "a"], [["a"]], [[1]], [[True]], [[1.0]], [{"k": 1}],
          [{"k": True}], [["a", "b", "c", "d", "e"]], [["a", "b", "c", "d", "f"]]]
_POOL = _SCALARS + _LISTS + [{"k": 1}, {"k": "a"}]
_LITERALS = [v for v in _SCALARS + _LISTS if v is not None and not (
    isinstance(v, list) and any(isinstance(i, (list, dict)) for i in v))]
_OPS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "contains any", "contains all", "starts with",
        "ends with", "like"]


def _literal(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)


@pytest.mark.parametrize("op", _OPS)
def test_every_comparison_of_a_value_pool_is_what_the_table_says(op):
    wrong = []
    for a, b, literal in itertools.product(_POOL, _POOL, (False, True)):
        if literal and b not in _LITERALS:
            continue
        right = _literal(b) if literal else "data.y"
        when = parse_policy(f'package t\nrule r deny any to read dataset "x" when data.x {op} {right}\n',
                            "t.policy").decls[0].when
        data = {k: v for k, v in (("x", a), ("y", None if literal else b)) if v is not None}
        ctx = Ctx("u", "user", frozenset(), {}, "read", "dataset", "x", {}, None, data, {}, (), NOW)
        try:
            got = compile_expr(when, {})(ctx)
        except ConditionError:
            got = ERROR
        if got != _table(op, a, b):
            wrong.append((a, b, "literal" if literal else "attribute", got))
    assert not wrong, wrong[:10]
