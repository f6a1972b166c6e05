"""The indexed, cached evaluator agrees with a plain linear reading of the rules.

Random policies (roles with inheritance, rules by role / agent / any, actions,
kinds, id globs, conditions) and random requests: the effect and the deciding
rules must equal those of a reference that scans every rule and matches ids
segment by segment with ``fnmatch`` (``*`` stays in its segment, ``**`` spans).
"""

from __future__ import annotations

import fnmatch
import tempfile
from pathlib import Path

from hypothesis import given, settings, strategies as st

from policyengine import load_policy

ROLES = ["r0", "r1", "r2", "r3"]  # r1 extends r0, r3 extends r2
ACTIONS = ["read", "write", "any"]
KINDS = ["dataset", "tool"]
PATTERNS = ["*", "p0/*", "p1/*", "p0/x", "p?/y", "[pq]0/*", "q0/x/*", "p1", "q0/**", "**"]
IDS = ["p0/x", "p0/y", "p1/y", "p1", "q0/x/z", "q0/y", "p2/y"]
CONDITIONS = [None, "context.n > 3", 'principal.dept == "d1"', 'data.tag in ["a", "b"]', "context.n <= 3",
              'not (context.flag == true)']
UNLESS = [None, "context.n == 5", 'data.tag == "b"']

rule_st = st.tuples(
    st.sampled_from(["allow", "allow", "deny"]),
    st.sampled_from(["any", "role r0", "role r1", "role r2", "role r3", "agent bot"]),
    st.sampled_from(ACTIONS),
    st.sampled_from(KINDS),
    st.sampled_from(PATTERNS),
    st.sampled_from(CONDITIONS),
    st.sampled_from(UNLESS),
)

request_st = st.fixed_dictionaries({
    "principal": st.one_of(
        st.fixed_dictionaries({"id": st.just("u"), "type": st.just("user"),
                               "roles": st.lists(st.sampled_from(ROLES), max_size=2),
                               "attrs": st.fixed_dictionaries({}, optional={"dept": st.sampled_from(["d1", "d2"])})}),
        st.just({"id": "bot", "type": "agent"}),
    ),
    "action": st.sampled_from(["read", "write", "delete"]),
    "resource": st.fixed_dictionaries({"kind": st.sampled_from(KINDS), "id": st.sampled_from(IDS)}),
    "data": st.fixed_dictionaries({}, optional={"tag": st.sampled_from(["a", "b", "c"])}),
    "context": st.fixed_dictionaries({}, optional={"n": st.integers(0, 6), "flag": st.booleans()}),
})


def policy_text(rules) -> str:
    lines = ["package ref", "role r0", "role r1 extends r0", "role r2", "role r3 extends r2",
             "agent bot", "    roles r1"]
    for i, (effect, who, action, kind, pattern, when, unless) in enumerate(rules):
        lines.append(f"rule x{i}")
        lines.append(f'    {effect} {who} to {action} {kind} "{pattern}"')
        if when:
            lines.append(f"    when {when}")
        if unless:
            lines.append(f"    unless {unless}")
    return "\n".join(lines) + "\n"


def holds(cond: str | None, request: dict) -> bool | None:
    """The reference meaning of each condition used above; None: a condition error (an attribute missing)."""
    ctx, data, attrs = request["context"], request["data"], request["principal"].get("attrs", {})
    if cond is None:
        return True
    needs = {"context.n": ctx.get("n"), "principal.dept": attrs.get("dept"), "data.tag": data.get("tag"),
             "context.flag": ctx.get("flag")}
    if needs[cond.removeprefix("not (").split(" ")[0]] is None:
        return None
    return {
        "context.n > 3": ctx.get("n", 0) > 3,
        'principal.dept == "d1"': attrs.get("dept") == "d1",
        'data.tag in ["a", "b"]': data.get("tag") in ("a", "b"),
        "context.n <= 3": ctx.get("n", 0) <= 3,
        'not (context.flag == true)': ctx.get("flag") is not True,
        "context.n == 5": ctx.get("n") == 5,
        'data.tag == "b"': data.get("tag") == "b",
    }[cond]


def applies(effect: str, when: str | None, unless: str | None, request: dict) -> bool:
    """when holds and unless does not; a condition error makes a deny apply and an allow not (fail closed)."""
    w = holds(when, request)
    if w is None:
        return effect == "deny"
    if not w:
        return False
    u = holds(unless, request) if unless is not None else False
    if u is None:
        return effect == "deny"
    return not u


def glob(pattern: str, rid: str) -> bool:
    """The reference glob: segment by segment with fnmatch; '*' or '**' alone, or a trailing '/**', spans segments."""
    if pattern in ("*", "**"):
        return True
    pats, ids = pattern.split("/"), rid.split("/")
    if pats[-1] == "**":
        return len(ids) > len(pats) - 1 and all(fnmatch.fnmatchcase(i, p) for i, p in zip(ids, pats[:-1]))
    return len(ids) == len(pats) and all(fnmatch.fnmatchcase(i, p) for i, p in zip(ids, pats))


def reference(rules, request) -> tuple[str, list[str]]:
    p = request["principal"]
    if p["type"] == "agent":
        held = {"r1", "r0"}
    else:
        held = set()
        for r in p["roles"]:
            held |= {"r1": {"r1", "r0"}, "r3": {"r3", "r2"}}.get(r, {r})
    matched = {"allow": [], "deny": []}
    for i, (effect, who, action, kind, pattern, when, unless) in enumerate(rules):
        if who.startswith("role ") and who[5:] not in held:
            continue
        if who == "agent bot" and not (p["type"] == "agent" and p["id"] == "bot"):
            continue
        if action != "any" and action != request["action"]:
            continue
        if kind != request["resource"]["kind"]:
            continue
        if not glob(pattern, request["resource"]["id"]):
            continue
        if not applies(effect, when, unless, request):
            continue
        matched[effect].append(f"ref.x{i}")
    if matched["deny"]:
        return "deny", matched["deny"]
    if matched["allow"]:
        return "allow", matched["allow"]
    return "deny", ["<default-deny>"]


MATCHING_IDS = {"*": IDS, "p0/*": ["p0/x", "p0/y"], "p1/*": ["p1/y"], "p0/x": ["p0/x"],
                "p?/y": ["p0/y", "p1/y", "p2/y"], "[pq]0/*": ["p0/x", "q0/y"], "q0/x/*": ["q0/x/z"], "p1": ["p1"],
                "q0/**": ["q0/x/z", "q0/y"], "**": IDS}


def aimed_at(rule, draw) -> dict:
    """A request that gets past the principal, action, kind and id of ``rule`` (conditions vary)."""
    _, who, action, kind, pattern, _, _ = rule
    request = draw(request_st)
    if who == "agent bot":
        request["principal"] = {"id": "bot", "type": "agent"}
    elif who.startswith("role "):
        request["principal"] = {**request["principal"], "type": "user", "id": "u",
                                "roles": [draw(st.sampled_from({"r0": ["r0", "r1"], "r1": ["r1"], "r2": ["r2", "r3"],
                                                                "r3": ["r3"]}[who[5:]]))]}
    request["action"] = draw(st.sampled_from(["read", "write"])) if action == "any" else action
    request["resource"] = {"kind": kind, "id": draw(st.sampled_from(MATCHING_IDS[pattern]))}
    return request


@settings(max_examples=60, deadline=None)
@given(rules=st.lists(rule_st, min_size=1, max_size=25), data=st.data())
def test_indexed_evaluation_equals_a_linear_scan(rules, data):
    requests = [aimed_at(rule, data.draw) for rule in rules] + data.draw(st.lists(request_st, max_size=5))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ref.policy").write_text(policy_text(rules))
        policy = load_policy(tmp)
    for request in requests * 2:  # the second pass is served from the caches
        decision = policy.evaluate(request)
        assert (decision.effect, [r.rule for r in decision.reasons]) == reference(rules, request), request
