"""Set and string operators (contains, contains any/all, starts with, ends with, like): one table of meaning."""

from __future__ import annotations

import pytest

from policyengine.conditions import ConditionError, Ctx, compile_expr
from policyengine.syntax import parse_policy

ERROR = "error"

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
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "::ffff:10.1.2.3"}, False),  # an IPv6 address is not in an IPv4 block
    ('data.ip in cidr "10.0.0.0/8"', {"ip": "10.1.2"}, ERROR),
    ('data.ip in cidr "10.0.0.0/8"', {"ip": 167837955}, ERROR),
    ('data.ip in cidr "10.0.0.0/8"', {}, ERROR),
    ("data.ip in cidr data.blocks", {"ip": "10.1.2.3", "blocks": ["10.0.0.0/8"]}, True),
    ("data.ip in cidr data.blocks", {"ip": "10.1.2.3", "blocks": ["nope"]}, ERROR),
]


@pytest.mark.parametrize("condition,data,result", TABLE, ids=[f"{t[0]} {t[1]}" for t in TABLE])
def test_operator_meaning(condition, data, result):
    when = parse_policy(f'package t\nrule r deny any to read dataset "x" when {condition}\n', "t.policy").decls[0].when
    predicate = compile_expr(when, {"EU": None})
    ctx = Ctx("u", "user", frozenset(), {}, "read", "dataset", "x", {}, None, data, {}, ())
    if result is ERROR:
        with pytest.raises(ConditionError):
            predicate(ctx)
    else:
        assert predicate(ctx) is result
