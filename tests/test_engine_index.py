"""The candidate index (policyengine/index.py) finds exactly the rules a scan of every rule would.

Random policies whose id patterns share literal prefixes of one to three
segments, with globs at every depth, and random requests whose ids walk into,
past and beside those prefixes (including first segments no rule names): the
decision must equal one built by scanning every compiled rule, whether the
candidate lookup was a miss (first request of its kind), a hit (the same again)
or came after the cache had dropped its oldest entries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from policyengine import evaluate as evaluate_module
from policyengine import index as index_module
from policyengine import load_policy
from policyengine.globs import glob_match
from policyengine.decision import Decision, Reason, make_decision
from policyengine.evaluate import DEFAULT_DENY
from policyengine.index import ROOT, CandidateIndex, literal_prefix, prefix_key
from tests.threads import together

LITERALS = ["a", "b", "ab"]
GLOBS = ["*", "a*", "?", "[ab]", "[!a]"]
SEGMENTS_OF_IDS = ["a", "b", "ab", "c", "ba"]  # "c" and "ba" are in no pattern: fresh segments

segment_st = st.one_of(st.sampled_from(LITERALS), st.sampled_from(GLOBS))
pattern_st = st.one_of(
    st.sampled_from(["*", "**"]),
    st.lists(segment_st, min_size=1, max_size=4).map("/".join),
    st.lists(st.sampled_from(LITERALS), min_size=1, max_size=3).map(lambda s: "/".join(s) + "/**"),
)
rule_st = st.tuples(
    st.sampled_from(["allow", "allow", "deny"]),
    st.sampled_from(["any", "role r0", "role r1", "role r2", "agent bot"]),
    st.sampled_from(["read", "write", "any", "read, write"]),
    st.sampled_from(["dataset", "tool"]),
    pattern_st,
    st.sampled_from([None, "context.n > 3", "context.n <= 3"]),
)
id_st = st.lists(st.sampled_from(SEGMENTS_OF_IDS), min_size=1, max_size=5).map("/".join)
request_st = st.fixed_dictionaries({
    "principal": st.one_of(
        st.fixed_dictionaries({"id": st.just("u"), "roles": st.lists(st.sampled_from(["r0", "r1", "r2"]),
                                                                       max_size=2)}),
        st.just({"id": "bot", "type": "agent"}),
    ),
    "action": st.sampled_from(["read", "write", "delete"]),
    "resource": st.fixed_dictionaries({"kind": st.sampled_from(["dataset", "tool"]), "id": id_st}),
    "context": st.fixed_dictionaries({"n": st.integers(0, 6)}),
})


def policy_text(rules) -> str:
    lines = ["package ix", "role r0", "role r1 extends r0", "role r2", "agent bot", "    roles r2"]
    for i, (effect, who, actions, kind, pattern, when) in enumerate(rules):
        lines += [f"rule x{i}", f'    {effect} {who} to {actions} {kind} "{pattern}"']
        if when:
            lines.append(f"    when {when}")
    return "\n".join(lines) + "\n"


def load(rules):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "ix.policy").write_text(policy_text(rules))
        return load_policy(tmp)


def brute_force(policy, request) -> Decision:
    """The decision from a scan of every compiled rule (no index, no cache): deny wins, else allow, else deny."""
    ctx = policy._evaluator.context(request)
    agent = ctx.pid if ctx.ptype == "agent" else None
    matched: dict[str, list[Reason]] = {"allow": [], "deny": []}
    for rule in policy.compiled.rules:
        if rule.principal_kind == "role" and rule.principal_name not in ctx.roles:
            continue
        if rule.principal_kind == "agent" and rule.principal_name != agent:
            continue
        if "*" not in rule.actions and "any" not in rule.actions and ctx.action not in rule.actions:
            continue
        if rule.kind != ctx.kind:
            continue
        if not glob_match(rule.scoped.decl.resource_pattern, ctx.rid):
            continue
        if rule.when(ctx) and (rule.unless is None or not rule.unless(ctx)):
            matched[rule.effect].append(rule.reason)
    if matched["deny"]:
        return make_decision("deny", tuple(matched["deny"]), (), None, policy.policy_hash, ())
    if matched["allow"]:
        return make_decision("allow", tuple(matched["allow"]), (), None, policy.policy_hash, ())
    return make_decision("deny", (DEFAULT_DENY,), (), None, policy.policy_hash, ())


@settings(max_examples=80, deadline=None)
@given(rules=st.lists(rule_st, min_size=1, max_size=30), requests=st.lists(request_st, min_size=1, max_size=12))
def test_indexed_decisions_equal_a_brute_force_scan(rules, requests):
    policy = load(rules)
    for request in requests * 2:  # the second round is served from the candidate cache
        assert policy.evaluate(request) == brute_force(policy, request), request


@settings(max_examples=40, deadline=None)
@given(rules=st.lists(rule_st, min_size=1, max_size=30), requests=st.lists(request_st, min_size=1, max_size=8))
def test_a_miss_and_a_hit_return_the_same_decision(rules, requests):
    policy = load(rules)
    shared = policy.with_blocked(frozenset())  # one evaluator for every request: misses, then hits
    for request in requests:
        fresh = policy.with_blocked(frozenset())  # a new evaluator: its first lookup is a miss
        miss = fresh.evaluate(request)
        hit = fresh.evaluate(request)
        assert miss == hit == shared.evaluate(request) == brute_force(policy, request), request


def test_the_candidate_cache_drops_its_oldest_entry_instead_of_clearing(monkeypatch):
    rules = [("allow", "role r0", "read", "dataset", f"p{i}/*", None) for i in range(40)]
    policy = load(rules)
    monkeypatch.setattr(evaluate_module, "_CACHE_LIMIT", 8)
    evaluator = policy.with_blocked(frozenset())._evaluator
    seen = []
    for i in range(40):
        request = {"principal": {"id": "u", "roles": ["r0"]}, "action": "read",
                   "resource": {"kind": "dataset", "id": f"p{i}/doc"}}
        assert evaluator.evaluate(request).reasons[0].rule == f"ix.x{i}"
        seen.append(i)
        assert len(evaluator._candidates_cache) == min(len(seen), 8)  # full: one out, one in; never emptied
    again = {"principal": {"id": "u", "roles": ["r0"]}, "action": "read",
             "resource": {"kind": "dataset", "id": "p0/doc"}}
    assert evaluator.evaluate(again).reasons[0].rule == "ix.x0"  # evicted long ago: looked up again, same answer


def test_fresh_ids_share_one_cache_entry():
    """Ids whose first segment no rule names all reach the root: one entry, not one per id."""
    policy = load([("allow", "any", "read", "dataset", "known/*", None), ("deny", "any", "read", "dataset", "*", None)])
    evaluator = policy.with_blocked(frozenset())._evaluator
    for j in range(50):
        decision = evaluator.evaluate({"principal": {"id": "u"}, "action": "read",
                                       "resource": {"kind": "dataset", "id": f"new{j}/doc"}})
        assert [r.rule for r in decision.reasons] == ["ix.x1"]
    assert len(evaluator._candidates_cache) == 1


@pytest.mark.parametrize(("pattern", "prefix"), [
    ("erp/invoices/*", ("erp", "invoices")),
    ("calc", ("calc",)),
    ("*", ()),
    ("**", ()),
    ("e*/x", ()),
    ("a/b/c", ("a", "b", "c")),
    ("a/[bc]/d", ("a",)),
    ("a/b?/**", ("a",)),
    ("a/b/**", ("a", "b")),
    ("/x*", ("",)),
    ("a//b*", ("a", "")),
    ("", ("",)),
])
def test_literal_prefix(pattern, prefix):
    assert literal_prefix(pattern) == prefix


def _prefix_by_segments(pattern: str) -> tuple[str, ...]:
    """The definition, segment by segment (``literal_prefix`` finds the first glob character instead)."""
    out = []
    for segment in pattern.split("/"):
        if set("*?[") & set(segment):
            break
        out.append(segment)
    return tuple(out)


def test_literal_prefix_agrees_with_its_definition_on_every_short_pattern():
    """Every string of up to 6 characters over ``a / * ? [``: empty segments, a leading ``/``, globs anywhere."""
    import itertools
    for size in range(7):
        for chars in itertools.product("a/*?[", repeat=size):
            pattern = "".join(chars)
            assert literal_prefix(pattern) == _prefix_by_segments(pattern), pattern


def test_loading_files_every_short_pattern_under_its_prefix_key():
    """The index's inline grouping against ``prefix_key`` (and so ``literal_prefix``) on every short pattern."""
    import itertools
    from types import SimpleNamespace
    patterns = ["".join(chars) for size in range(7) for chars in itertools.product("a/*?[", repeat=size)]
    rules = [SimpleNamespace(key=i, kind="tool", actions=("read",), principal_kind="any", principal_name=None,
                             effect="allow", pattern=pattern) for i, pattern in enumerate(patterns)]
    index = CandidateIndex(rules)
    assert index.size == len(patterns)
    filed: dict = {}  # prefix key -> ids of the rules filed there (read once a key: the root holds thousands)
    for rule, pattern in zip(rules, patterns):
        key = prefix_key(pattern)
        assert key == (ROOT if not literal_prefix(pattern) else "/".join(literal_prefix(pattern))), pattern
        if key not in filed:
            filed[key] = {id(r) for r in index.rules_at(key)}
        assert id(rule) in filed[key], pattern


def test_the_index_files_each_rule_under_its_literal_prefix():
    policy = load([("allow", "role r0", "read", "dataset", "a/b/*", None),
                   ("deny", "any", "any", "dataset", "a/**", None),
                   ("allow", "agent bot", "read, write", "dataset", "*", None)])
    index: CandidateIndex = policy.compiled.candidates
    assert index.size == 3
    deep = index.node("a/b/c")
    assert deep == "a/b"
    assert index.chain(deep) == (ROOT, "a", "a/b")
    assert [r.id for r in index.rules_at("a")] == ["ix.x1"]
    assert index.node("zzz/b") is ROOT
    assert [r.id for r in index.lookup(deep, "read", "dataset", frozenset({"r0"}), None)] == ["ix.x0", "ix.x1"]
    assert [r.id for r in index.lookup(deep, "read", "dataset", frozenset(), "bot")] == ["ix.x1", "ix.x2"]
    assert [r.id for r in index.lookup(deep, "read", "tool", frozenset({"r0"}), "bot")] == []


def test_make_decision_equals_model_construct():
    reason = Reason(rule="a.b", message="m")
    fields = {"effect": "allow", "reasons": (reason,), "obligations": (), "route": "m1", "policy_hash": "h",
              "errors": ("e",)}
    fast, slow = make_decision(**fields), Decision.model_construct(**fields)
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.to_json() == slow.to_json()
    assert fast.model_copy(update={"route": None}).route is None


def _request(rid: str, roles=("r1",), action: str = "read", n: int = 5) -> dict:
    return {"principal": {"id": "u", "roles": list(roles)}, "action": action,
            "resource": {"kind": "dataset", "id": rid}, "context": {"n": n}}


# Rules whose runs (root, node, any principal, a role, an agent) hold interleaved or separate key ranges:
# a miss concatenates runs that do not overlap and merges those that do; either way declaration order.
MERGE_CASES = [
    pytest.param([("deny", "any", "read", "dataset", "*", "context.n > 9"),
                  ("allow", "role r1", "read", "dataset", "a/*", None),
                  ("allow", "any", "read", "dataset", "a/*", None)], id="root-first"),
    pytest.param([("allow", "role r1", "read", "dataset", "a/*", None),
                  ("allow", "any", "read", "dataset", "a/*", None),
                  ("allow", "any", "read", "dataset", "**", None)], id="root-last"),
    pytest.param([("allow", "role r1", "read", "dataset", "a/*", None),
                  ("allow", "any", "read", "dataset", "**", None),
                  ("allow", "any", "read", "dataset", "a/*", None),
                  ("allow", "role r0", "any", "dataset", "a/**", None),
                  ("allow", "role r1", "read", "dataset", "a/*", None)], id="interleaved"),
    pytest.param([("allow", "role r0", "read", "dataset", "a/*", None),
                  ("deny", "any", "read", "dataset", "a/b", "context.n > 3"),
                  ("allow", "role r1", "read", "dataset", "a/*", None),
                  ("deny", "role r1", "any", "dataset", "*", "context.n > 3"),
                  ("allow", "any", "read", "dataset", "a/[bc]", None)], id="denies-interleaved"),
    pytest.param([("allow", "role r1", "any", "dataset", "a/*", None),
                  ("allow", "any", "read, write", "dataset", "a/**", None),
                  ("allow", "any", "any", "dataset", "*", None)], id="wildcard-actions"),
]


@pytest.mark.parametrize("rules", MERGE_CASES)
@pytest.mark.parametrize("request_", [_request("a/b"), _request("a/b", n=5, action="list"), _request("a/c", ("r0",)),
                                      _request("a/b", (), action="write"), _request("zz", ("r1", "r0"))])
def test_a_miss_merges_runs_in_declaration_order(rules, request_):
    policy = load(rules)
    miss = policy.with_blocked(frozenset()).evaluate(request_)
    assert miss == brute_force(policy, request_)
    evaluator = policy._evaluator
    ctx = evaluator.context(request_)
    denies, allows = evaluator._pairs(ctx)
    for run in (denies, allows):
        assert [r.key for _, r in run] == sorted(r.key for _, r in run)


# ``prefix*`` patterns test the id and the condition in one closure: it must agree with the glob and the condition
@pytest.mark.parametrize("pattern", ["a/*", "a/b*", "a*", "a/b/*"])
@pytest.mark.parametrize("when", [None, "context.n > 3"])
@pytest.mark.parametrize("rid", ["a", "a/b", "a/bc", "a/b/c", "ab", "b/a", "a/bb/c", "a/b/c/d"])
def test_prefix_star_rules_match_as_their_glob_says(pattern, when, rid):
    policy = load([("allow", "any", "read", "dataset", pattern, when)])
    (rule,) = policy.compiled.rules
    for n in (2, 5):
        request = _request(rid, n=n)
        expected = glob_match(pattern, rid) and (when is None or n > 3)
        assert bool(rule.matches(policy._evaluator.context(request))) is expected, (pattern, when, rid, n)
        assert policy.evaluate(request).allowed is expected


def test_a_lookup_stops_at_leaves_and_keeps_the_deepest_prefix_with_rules():
    policy = load([("allow", "any", "read", "dataset", "a/b/c/d", None), ("allow", "any", "read", "dataset", "a/*", None)])
    index: CandidateIndex = policy.compiled.candidates
    assert index.node("a/b/c/d/e/f") == "a/b/c/d"
    assert index.chain("a/b/c/d") == ("a", "a/b/c/d")
    assert index.node("a/b/c") == "a"  # "a/b" and "a/b/c" hold no rules: the deepest with rules is "a"
    assert index.node("a/b/x") == "a"
    assert index.node("q/b") is ROOT
    assert index.chain(ROOT) == ()
    assert policy.evaluate(_request("a/b/c/d")).allowed and policy.evaluate(_request("a/x")).allowed
    assert not policy.evaluate(_request("a/b/c")).allowed


@pytest.fixture(params=[0, 3, 1000], ids=["split-all", "split-some", "scan-all"])
def scan_limit(request):
    """Prefixes of more than this many rules are split on first use, the others read rule by rule."""
    saved = index_module.SCAN
    index_module.SCAN = request.param
    yield request.param
    index_module.SCAN = saved


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # (set once)
@given(rules=st.lists(rule_st, min_size=1, max_size=30), requests=st.lists(request_st, min_size=1, max_size=8))
def test_split_and_scanned_prefixes_decide_alike(scan_limit, rules, requests):
    """Whether a prefix's rules are read one by one or split by (action, kind) and principal, the same decision."""
    policy = load(rules)
    for request in requests:
        fresh = policy.with_blocked(frozenset())
        assert fresh.evaluate(request) == fresh.evaluate(request) == brute_force(policy, request), request


@pytest.mark.parametrize("per_prefix", [2, 40], ids=["scanned", "split-on-first-use"])
def test_threads_deciding_a_never_built_prefix_at_once_agree(per_prefix):
    """Many threads reach the same prefixes for the first time together: every decision equals a scan's."""
    rules = [("allow" if i % 3 else "deny", f"role r{i % 3}", "read" if i % 2 else "write", "dataset",
              f"p{i % 4}/*", "context.n > 3" if i % 5 == 0 else None) for i in range(4 * per_prefix)]
    rules.append(("deny", "any", "any", "dataset", "*/secret", None))
    policy = load(rules)
    requests = [_request(f"p{j % 4}/{'secret' if j % 7 == 0 else 'doc'}", roles=(f"r{j % 3}",),
                         action="read" if j % 2 else "write", n=j % 6) for j in range(48)]
    expected = [brute_force(policy, q) for q in requests]
    for _ in range(5):
        shared = policy.with_blocked(frozenset())  # one evaluator, on an index of its own: no prefix split yet
        shared._evaluator._candidate_index = type(policy.compiled.candidates)(policy.compiled.rules)
        got = together(8, lambda: [shared.evaluate(q) for q in requests])
        assert all(decisions == expected for decisions in got)


# (id, what ``case_twin`` finds beside rules on "prod/**", "reports/secret/*", "Mixed/a" and "mixed/a")
TWIN_CASES = [
    ("prod/db1", None),
    ("Prod/db1", ("Prod", "prod")),
    ("PROD", ("PROD", "prod")),
    ("reports/secret/q1", None),
    ("reports/Secret/q1", ("reports/Secret", "reports/secret")),
    ("Reports/secret/q1", ("Reports", "reports")),
    ("reports/other/q1", None),  # leaves the prefixes where no spelling of "other" is named
    ("staging/db1", None),
    ("mixed/a", None),  # both spellings are named: each is exact
    ("MIXED/a", ("MIXED", "Mixed")),
]


@pytest.mark.parametrize("rid,twin", TWIN_CASES, ids=[t[0] for t in TWIN_CASES])
def test_an_id_that_leaves_the_prefixes_in_another_case_names_its_twin(rid, twin):
    policy = load([("deny", "any", "delete", "dataset", "prod/**", None),
                   ("deny", "any", "read", "dataset", "reports/secret/*", None),
                   ("allow", "any", "read", "dataset", "Mixed/a", None),
                   ("allow", "any", "read", "dataset", "mixed/a", None)])
    found = policy.compiled.candidates.case_twin(rid)
    if twin is not None and twin[1] in ("Mixed", "mixed"):  # either spelling may be the one named back
        assert found is not None and found[0] == twin[0] and found[1] in ("Mixed", "mixed")
    else:
        assert found == twin
