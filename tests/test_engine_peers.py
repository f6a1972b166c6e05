"""Public example policies of other engines, translated into the language, decided on every request of a small
domain against the decisions the other engine made (stored: tests/oracles/peers/, made by its generate.py).

Our engine may be stricter than a peer where docs/engine.md says so (a condition error denies in a deny rule,
where Cedar skips an erroring forbid), never looser: no request we allow may be one the peer's policy denies.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from policyengine import load_policy

PEERS = Path(__file__).parent / "oracles" / "peers"
MISSING = object()  # an attribute the request does not carry

# (clearance, level, tags, mfa, (principal dept, resource dept), (owner, name, private)): what varies per request
_CEDAR_DOMAIN = (
    [MISSING, 3, 5, "5", True],
    [MISSING, 3, "3"],
    [MISSING, [], ["secret"]],
    [MISSING, True, False, "false"],
    [(MISSING, MISSING), ("a", "a"), ("a", "b"), (1, "1")],
    [(MISSING, MISSING, MISSING), ("alice", "alice", True), ("bob", "alice", True), ("bob", "alice", "yes")],
    [False, True],  # holds Role::"admin"
    ["read", "write", "delete"],
)


def _put(attrs: dict, name: str, value: object) -> None:
    if value is not MISSING:
        attrs[name] = value


def cedar_cases():
    """(our request, Cedar's request and entities) for every combination of ``_CEDAR_DOMAIN``."""
    for clearance, level, tags, mfa, (pdept, rdept), (owner, name, private), admin, action in \
            itertools.product(*_CEDAR_DOMAIN):
        pattrs: dict = {}
        rattrs: dict = {}
        context: dict = {}
        for attrs, key, value in ((pattrs, "clearance", clearance), (pattrs, "dept", pdept), (pattrs, "name", name),
                                  (rattrs, "level", level), (rattrs, "tags", tags), (rattrs, "dept", rdept),
                                  (rattrs, "owner", owner), (rattrs, "private", private), (context, "mfa", mfa)):
            _put(attrs, key, value)
        ours = {"principal": {"id": "u", "roles": ["admin"] if admin else [], "attrs": pattrs}, "action": action,
                "resource": {"kind": "dataset", "id": "d", "attrs": rattrs}, "context": context}
        entities = [{"uid": {"type": "User", "id": "u"}, "attrs": pattrs,
                     "parents": [{"type": "Role", "id": "admin"}] if admin else []},
                    {"uid": {"type": "Role", "id": "admin"}, "attrs": {}, "parents": []},
                    {"uid": {"type": "Doc", "id": "d"}, "attrs": rattrs, "parents": []}]
        theirs = {"principal": 'User::"u"', "action": f'Action::"{action}"', "resource": 'Doc::"d"', "context": context}
        yield ours, (theirs, entities)


_SUBJECTS = ["alice", "bob", "carol", "dave", "staff", "data2_admin", "contractor", "lead", "eve"]
_SEGMENTS = ["data1", "data2", "secret", "reports", "internal", "x"]


def casbin_cases():
    """(our request, Casbin's (sub, obj, act)) for every subject, path of 1-3 segments and action."""
    paths = ["/".join(p) for n in (1, 2, 3) for p in itertools.product(_SEGMENTS, repeat=n)]
    for sub, path, act in itertools.product(_SUBJECTS, paths, ["read", "write"]):
        yield ({"principal": {"id": sub, "roles": [sub]}, "action": act, "resource": {"kind": "dataset", "id": path}},
               (sub, "/" + path, act))


def read_bits(name: str, count: int) -> list[bool]:
    bits = bin(int((PEERS / name).read_text().strip(), 16))[3:]  # written with a leading 1 bit
    assert len(bits) == count, f"{name}: {len(bits)} decisions for {count} requests (run generate.py again)"
    return [b == "1" for b in bits]


@pytest.mark.parametrize("name, cases, same", [("cedar_documents", cedar_cases, False),
                                               ("casbin_rbac_deny", casbin_cases, True)])
def test_a_translated_policy_never_allows_what_its_source_denies(tmp_path, name, cases, same):
    (tmp_path / f"{name}.policy").write_text((PEERS / f"{name}.policy").read_text())
    policy = load_policy(tmp_path)
    requests = [ours for ours, _ in cases()]
    theirs = read_bits(f"{name}.allowed", len(requests))
    ours = [d.effect == "allow" for d in policy.evaluate_many(requests)]
    looser = [r for r, o, t in zip(requests, ours, theirs) if o and not t]
    assert not looser, (len(looser), looser[:3])
    if same:  # nothing in this one reads an attribute: the decisions are the same
        assert ours == theirs
