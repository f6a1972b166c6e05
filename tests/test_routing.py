"""Route strategies and bounds, and rate limits on allow rules: parse, format, check, compile, decide."""

from __future__ import annotations

import pytest

from policyengine import ast
from policyengine.check import check_policy
from policyengine.diagnostics import PolicyError
from policyengine.engine import load_policy
from policyengine.format import format_policy
from policyengine.routing import RoutePlan
from policyengine.syntax import parse_policy

MODELS = """\
package r.test
role caller
model cheap
    cost 0.5 USD per 1M tokens latency 300 ms
model quick
    cost 5 USD per 1M tokens latency 20 ms
model mid
    cost 2 USD per 1M tokens latency 80 ms
model euro
    cost 0.1 EUR per 1M tokens latency 5 ms
model bare
rule callers
    allow role caller to invoke model "*"
"""


def parse(text: str) -> ast.PolicyFile:
    return parse_policy(MODELS + text, "t.policy")


def findings(text: str) -> list[tuple[str, str]]:
    result = check_policy([parse(text)])
    return [(f.code, f.severity.value) for f in result.findings]


def route(text: str) -> ast.RouteDecl:
    return next(d for d in parse(text).decls if isinstance(d, ast.RouteDecl))


def test_strategy_among_and_bounds_parse() -> None:
    decl = route("route r prefer cheapest among cheap, quick within latency 0.5 s under cost 2 USD per 1K tokens\n")
    assert decl.strategy is not None and decl.strategy.value == "cheapest"
    assert [n.value for n in decl.prefer] == ["cheap", "quick"]
    assert decl.max_latency_ms == 500
    assert decl.max_cost is not None and (decl.max_cost.amount, decl.max_cost.currency) == (2000, "USD")  # per 1M


def test_strategy_without_among_means_every_declared_model() -> None:
    decl = route("route r prefer fastest\n")
    assert decl.strategy is not None and decl.strategy.value == "fastest" and decl.prefer == ()


def test_rate_limits_parse_with_key_as_the_default_scope() -> None:
    text = 'rule lim allow role caller to invoke model "*" limit 60 requests per minute limit 1000 tokens per day for team\n'
    rule = next(d for d in parse(text).decls if isinstance(d, ast.RuleDecl) and d.name.value == "lim")
    assert [(x.amount, x.unit, x.window, x.scope) for x in rule.limits] == \
        [(60, "requests", "minute", "key"), (1000, "tokens", "day", "team")]


@pytest.mark.parametrize("text, message", [
    ('rule x allow any to invoke model limit 5 calls per minute\n', "counts 'requests' or 'tokens'"),
    ('rule x allow any to invoke model limit 5 requests per week\n', "per second, minute, hour or day"),
    ('rule x allow any to invoke model limit 5 requests per minute for tenant\n', "key, team, model or principal"),
    ('rule x allow any to invoke model limit 0 requests per minute\n', "above 0"),
    ('route r prefer cheapest within latency 5 years\n', "latency is in 'ms' or 's'"),
    ('route r prefer cheapest prefer fastest\n', "more than one 'prefer'"),
])
def test_malformed_clauses_are_one_syntax_error(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize("text", [
    "route r\n    prefer cheapest among cheap, quick\n    within latency 500 ms\n    under cost 2 USD per 1M tokens\n",
    "route r\n    when context.tier == 1\n    prefer fastest\n",
    'route r\n    prefer "cheapest", quick\n',  # a model named like a strategy stays a model
    'rule lim\n    allow role caller to invoke model "*"\n    limit 60 requests per minute\n'
    '    limit 100_000 tokens per hour for principal\n',
])
def test_format_round_trip(text: str) -> None:
    source = "package r.test\n\n" + text
    tree = parse_policy(source, "t.policy")
    formatted = format_policy(tree, source)
    assert formatted == source
    assert parse_policy(formatted, "t.policy") == tree


def test_a_model_named_cheapest_is_quoted_where_the_strategy_word_would_be_read() -> None:
    source = 'package r.test\n\nmodel cheapest\n\nroute r\n    prefer "cheapest", other\n'
    tree = parse_policy(source, "t.policy")
    decl = tree.decls[-1]
    assert isinstance(decl, ast.RouteDecl) and decl.strategy is None and decl.prefer[0].value == "cheapest"
    assert format_policy(tree, source) == source


def test_clean_strategy_routes_check_without_findings() -> None:
    assert findings("route r prefer cheapest among cheap, quick, mid within latency 100 ms\n") == []


@pytest.mark.parametrize("text, code", [
    ("route r prefer cheapest among cheap, nowhere\n", "unknown-model"),
    ("route r prefer cheapest among cheap, quick within latency 10 ms\n", "route-impossible"),
    ("route r prefer fastest among cheap, quick under cost 0.1 USD per 1M tokens\n", "route-impossible"),
    ("route r prefer fastest among cheap within latency 0 ms\n", "route-bound"),
    ("route r prefer fastest among cheap under cost -1 USD per 1M tokens\n", "route-bound"),
    ("rule lim deny role caller to invoke model \"*\" limit 5 requests per minute\n", "limit-on-deny"),
])
def test_errors(text: str, code: str) -> None:
    assert (code, "error") in findings(text)


@pytest.mark.parametrize("text, code", [
    ("route r prefer cheapest among cheap, bare\n", "route-unknown-cost"),
    ("route r prefer fastest among cheap, bare\n", "route-unknown-latency"),
    ("route r prefer cheapest among cheap, euro under cost 2 USD per 1M tokens\n", "route-unknown-cost"),  # EUR
    ('rule lim allow role caller to invoke model "*" limit 5 requests per minute limit 9 requests per minute\n',
     "duplicate-limit"),
])
def test_warnings(text: str, code: str) -> None:
    assert (code, "warning") in findings(text)


def test_impossible_route_error_points_at_the_bound_and_lists_what_candidates_declare() -> None:
    result = check_policy([parse("route r prefer cheapest among cheap, quick within latency 10 ms\n")])
    error = next(f for f in result.findings if f.code == "route-impossible")
    assert "within latency 10 ms" in error.message
    assert error.help is not None and "cheap (300 ms, 0.5 USD per 1M)" in error.help


def _policy(tmp_path, text: str):  # noqa: ANN001, ANN202
    (tmp_path / "r.policy").write_text(MODELS + text, encoding="utf-8")
    return load_policy([str(tmp_path / "r.policy")])


@pytest.mark.parametrize("text, order", [
    ("route r prefer cheapest among quick, mid, cheap\n", ("cheap", "mid", "quick")),
    ("route r prefer fastest among cheap, mid, quick\n", ("quick", "mid", "cheap")),
    ("route r prefer cheapest among quick, mid, cheap within latency 100 ms\n", ("mid", "quick")),
    ("route r prefer fastest among quick, mid, cheap under cost 3 USD per 1M tokens\n", ("mid", "cheap")),
    ("route r prefer quick, cheap within latency 100 ms\n", ("quick",)),  # an explicit order, bounded
    ("route r prefer cheapest among bare, mid\n", ("mid", "bare")),  # no declared cost: last
])
def test_compiled_order(tmp_path, text: str, order: tuple[str, ...]) -> None:  # noqa: ANN001
    assert _policy(tmp_path, text).compiled.routes[0].prefer == order


def test_strategy_without_among_orders_every_declared_model(tmp_path) -> None:  # noqa: ANN001
    assert _policy(tmp_path, "route r prefer fastest\n").compiled.routes[0].prefer == \
        ("euro", "quick", "mid", "cheap", "bare")


def test_measured_latency_takes_the_declared_ones_place() -> None:
    registry = {"cheap": {"latency_ms": 300, "cost_per_1m_tokens": 0.5, "currency": "USD"},
                "quick": {"latency_ms": 20, "cost_per_1m_tokens": 5, "currency": "USD"},
                "bare": {}}
    fastest = RoutePlan(("cheap", "quick", "bare"), "fastest")
    assert fastest.order(registry) == ("quick", "cheap", "bare")
    assert fastest.order(registry, {"cheap": 4.0, "quick": 45.0}) == ("cheap", "quick", "bare")
    assert fastest.order(registry, {"bare": 1.0}) == ("bare", "quick", "cheap")
    bounded = RoutePlan(("cheap", "quick", "bare"), "cheapest", max_latency_ms=100)
    assert bounded.order(registry) == ("quick",)
    assert bounded.order(registry, {"cheap": 50.0, "quick": 150.0}) == ("cheap",)


def test_a_routed_decision_takes_the_first_allowed_candidate_in_strategy_order(tmp_path) -> None:  # noqa: ANN001
    policy = _policy(tmp_path, 'route r prefer cheapest among quick, mid, cheap\n'
                               'rule no_cheap deny any to invoke model "cheap"\n')
    decision = policy.evaluate({"principal": {"id": "bob", "roles": ["caller"]}, "action": "invoke",
                                "resource": {"kind": "model"}})
    assert decision.effect == "allow" and decision.route == "mid"  # cheap is denied, mid is next cheapest


def test_rate_limits_are_compiled_by_allow_rule(tmp_path) -> None:  # noqa: ANN001
    policy = _policy(tmp_path, 'rule lim allow role caller to invoke model "quick" limit 5 requests per minute\n')
    limits = policy.compiled.rate_limits
    assert list(limits) == ["r.test.lim"]
    assert [(x.amount, x.unit, x.window, x.scope) for x in limits["r.test.lim"]] == [(5, "requests", "minute", "key")]
