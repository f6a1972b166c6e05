"""The rules language parser: what each construct means, and what a broken file says.

Construct tables pair a snippet with the AST it must produce (spans are ignored by
equality, so the expected trees are written without real positions). Error
messages are golden files: ``tests/golden/syntax/NAME.policy`` renders to
``NAME.expected``; set ``UPDATE_GOLDEN=1`` to rewrite them after a deliberate change.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine import ast
from policyengine.diagnostics import PolicyError, SourceCache, Span, render_finding
from policyengine.syntax import MAX_NESTING, Builder, _parser, parse_policy

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "syntax"
S = Span("<t>", 1, 1, 1, 1)


# --- tiny builders for expected trees -----------------------------------------------


def N(value: str) -> ast.Name:
    return ast.Name(value, span=S)


def L(value: object) -> ast.Literal:
    return ast.Literal(value, span=S)  # type: ignore[arg-type]


def P(dotted: str) -> ast.Path:
    root, *parts = dotted.split(".")
    return ast.Path(root, tuple(parts), span=S)


def C(name: str) -> ast.ConstRef:
    return ast.ConstRef(name, span=S)


def Cmp(left: ast.Expr, op: str, right: ast.Expr) -> ast.Compare:
    return ast.Compare(op, left, right, span=S)  # type: ignore[arg-type]


def Lst(*items: ast.Expr) -> ast.ListExpr:
    return ast.ListExpr(tuple(items), span=S)


def T(part: str, of: ast.Expr, zone: str | None = None) -> ast.TimeOf:
    return ast.TimeOf(part, of, zone, span=S)


def And(*items: ast.Expr) -> ast.And:
    return ast.And(tuple(items), span=S)


def Or(*items: ast.Expr) -> ast.Or:
    return ast.Or(tuple(items), span=S)


def Not(operand: ast.Expr) -> ast.Not:
    return ast.Not(operand, span=S)


def D(seconds: int) -> ast.Duration:
    return ast.Duration(seconds, span=S)


def rule(effect: str = "allow", principal: ast.PrincipalMatch | None = None, actions=("read",), kind="dataset",
         pattern="x", **kw: object) -> ast.RuleDecl:
    return ast.RuleDecl(N("r"), effect, principal or ast.PrincipalMatch("role", N("analyst"), span=S),  # type: ignore[arg-type]
                        tuple(N(a) for a in actions), N(kind), pattern, span=S, **kw)  # type: ignore[arg-type]


def one(source: str) -> ast.Decl:
    """The single declaration of ``source`` (a package line is added)."""
    file = parse_policy("package t\n" + source, "t.policy")
    assert len(file.decls) == 1, file.decls
    return file.decls[0]


def when_of(condition: str) -> ast.Expr:
    decl = one(f'rule r allow role analyst to read dataset "x"\n    when {condition}\n')
    assert isinstance(decl, ast.RuleDecl) and decl.when is not None
    return decl.when


# --- the README's sample ---------------------------------------------------------------


def test_design_sample_parses_to_every_construct() -> None:
    path = ROOT / "rules" / "design_sample.policy"
    file = parse_policy(path.read_text(encoding="utf-8"), str(path))
    assert file.package == N("finance.invoices")
    assert file.owner == "ap-governance@example.com"
    assert file.cites == ("SOX 404", "EU AI Act Art. 14")
    assert file.imports == (ast.Import(N("common.regions"), span=S),)
    kinds = [type(d).__name__ for d in file.decls]
    assert kinds == ["RoleDecl"] * 4 + ["AgentDecl", "ModelDecl", "ModelDecl", "ConstDecl"] + ["RuleDecl"] * 3 + [
        "ResidencyDecl", "BudgetDecl", "EscalateDecl", "RouteDecl", "RouteDecl", "BiasDecl", "DriftDecl"]
    gate = file.decls[13]
    assert gate == ast.EscalateDecl(
        N("large_payment"),
        Or(And(Cmp(P("action"), "==", L("approve_payment")), Cmp(P("context.amount"), ">", L(10_000))),
           And(Cmp(P("context"), "has", L("confidence")), Cmp(P("context.confidence"), "<", L(0.85)))),
        N("senior_analyst"), within=D(4 * 3600), on_timeout="deny", distinct_approver=True, span=S)
    assert len(file.comments) == 17 and all(c.text.startswith("#") for c in file.comments)
    strategy = file.decls[15]
    assert isinstance(strategy, ast.RouteDecl) and strategy.strategy == N("cheapest")
    assert strategy.prefer == (N("classifier_small"), N("frontier_llm")) and strategy.max_latency_ms is None


def test_every_example_rule_file_parses() -> None:
    paths = sorted((ROOT / "rules").rglob("*.policy"))
    assert len(paths) >= 7
    for path in paths:
        parse_policy(path.read_text(encoding="utf-8"), str(path))


# --- declarations ----------------------------------------------------------------------------

DECLARATIONS = [
    ('model "gpt-4o"', ast.ModelDecl(N("gpt-4o"), span=S)),
    ('model "meta-llama/Llama-3.1-8B" hosting internal',
     ast.ModelDecl(N("meta-llama/Llama-3.1-8B"), hosting="internal", span=S)),
    ('model "small"', ast.ModelDecl(N("small"), span=S)),  # quoting a plain name changes nothing
    ('agent "ap-bot" roles "data-steward", analyst',
     ast.AgentDecl(N("ap-bot"), None, (N("data-steward"), N("analyst")), span=S)),
    ('role "data-steward" extends "x.y"', ast.RoleDecl(N("data-steward"), (N("x.y"),), span=S)),
    ("role analyst", ast.RoleDecl(N("analyst"), span=S)),
    ("role lead extends analyst, auditor", ast.RoleDecl(N("lead"), (N("analyst"), N("auditor")), span=S)),
    ('agent bot\n    owner "a@x"\n    roles ap, clerk',
     ast.AgentDecl(N("bot"), "a@x", (N("ap"), N("clerk")), span=S)),
    ("agent bot roles ap", ast.AgentDecl(N("bot"), None, (N("ap"),), span=S)),
    ('model m\n    provider "local" region "eu-west-1" hosting internal\n    cost 0.20 USD per 1M tokens latency 40 ms',
     ast.ModelDecl(N("m"), "local", "eu-west-1", "internal", ast.Money(0.2, "USD", span=S), 40.0, span=S)),
    ("model m latency 1.5 s cost 3 eur per 1M tokens",
     ast.ModelDecl(N("m"), latency_ms=1500.0, cost_per_1m_tokens=ast.Money(3.0, "EUR", span=S), span=S)),
    ("model bare", ast.ModelDecl(N("bare"), span=S)),
    ("model k cost 0.002 USD per 1K tokens", ast.ModelDecl(N("k"), cost_per_1m_tokens=ast.Money(2.0, "USD", span=S), span=S)),
    ("model n cost 0.0005 USD per 1000 tokens",
     ast.ModelDecl(N("n"), cost_per_1m_tokens=ast.Money(0.5, "USD", span=S), span=S)),
    ('const EU = ["FR", "DE"]', ast.ConstDecl(N("EU"), Lst(L("FR"), L("DE")), span=S)),
    ("const LIMIT = 10_000", ast.ConstDecl(N("LIMIT"), L(10_000), span=S)),
    ("const ALIAS = EU", ast.ConstDecl(N("ALIAS"), C("EU"), span=S)),
    ("const EMPTY = []", ast.ConstDecl(N("EMPTY"), Lst(), span=S)),
    ('residency r\n    when data.origin in EU\n    require region in ["eu-west-1"]\n    because "law"\n    cite "GDPR"',
     ast.ResidencyDecl(N("r"), Cmp(P("data.origin"), "in", C("EU")), Lst(L("eu-west-1")), "law", ("GDPR",), span=S)),
    ("residency r require region in EU_REGIONS", ast.ResidencyDecl(N("r"), None, C("EU_REGIONS"), span=S)),
    ('budget b\n    for workflow "w"\n    limit 2_000_000 tokens per month\n    limit 500 USD per day\n    warn at 80%\n'
     "    on exceed deny",
     ast.BudgetDecl(N("b"), ast.BudgetScope("workflow", "w", span=S),
                    (ast.BudgetLimit(2_000_000.0, "tokens", "month", span=S), ast.BudgetLimit(500.0, "USD", "day", span=S)),
                    80.0, ast.DenyAction(span=S), span=S)),
    ("budget b for agent bot limit 5 usd per hour on exceed escalate to role lead",
     ast.BudgetDecl(N("b"), ast.BudgetScope("agent", "bot", span=S), (ast.BudgetLimit(5.0, "USD", "hour", span=S),),
                    None, ast.EscalateAction(N("lead"), span=S), span=S)),
    ('budget b for model "m" limit 1 EUR per day on exceed route to model small',
     ast.BudgetDecl(N("b"), ast.BudgetScope("model", "m", span=S), (ast.BudgetLimit(1.0, "EUR", "day", span=S),),
                    None, ast.RouteAction(N("small"), span=S), span=S)),
    ("budget b for role analyst limit 10 tokens per hour",
     ast.BudgetDecl(N("b"), ast.BudgetScope("role", "analyst", span=S), (ast.BudgetLimit(10.0, "tokens", "hour", span=S),),
                    span=S)),
    ("escalate e\n    to role lead", ast.EscalateDecl(N("e"), None, N("lead"), span=S)),
    ('escalate e when context.amount > 5 to role lead within 90 min else allow require distinct approver because "b" cite "c"',
     ast.EscalateDecl(N("e"), Cmp(P("context.amount"), ">", L(5)), N("lead"), D(5400), "allow", True, "b", ("c",), span=S)),
    ("escalate e to role lead within 2 weeks", ast.EscalateDecl(N("e"), None, N("lead"), D(14 * 86400), span=S)),
    ("route r prefer a, b", ast.RouteDecl(N("r"), None, (N("a"), N("b")), span=S)),
    ('route r when context.task == "t" prefer a',
     ast.RouteDecl(N("r"), Cmp(P("context.task"), "==", L("t")), (N("a"),), span=S)),
    ('bias b\n    for model m\n    metric disparate_impact of outcome == "ok" by subject.region\n    threshold >= 0.8\n'
     "    window 30 days\n    min samples 100\n    on breach block",
     ast.BiasDecl(N("b"), N("m"), N("disparate_impact"), Cmp(P("outcome"), "==", L("ok")), P("subject.region"),
                  ast.Threshold(">=", 0.8, span=S), D(30 * 86400), 100, ast.BlockAction(span=S), span=S)),
    ("drift d for model m metric psi of output.confidence baseline previous 7 days threshold < 0.2 on breach alert",
     ast.DriftDecl(N("d"), N("m"), N("psi"), P("output.confidence"), D(7 * 86400), ast.Threshold("<", 0.2, span=S),
                   ast.AlertAction(span=S), span=S)),
    ("drift d for model m metric ks of output.score baseline previous 4h threshold <= 1 on breach escalate to role r",
     ast.DriftDecl(N("d"), N("m"), N("ks"), P("output.score"), D(4 * 3600), ast.Threshold("<=", 1.0, span=S),
                   ast.EscalateAction(N("r"), span=S), span=S)),
    ("mask data.customer.email hash", ast.MaskDecl(P("data.customer.email"), N("hash"), span=S)),
    ("mask principal.email\n    drop", ast.MaskDecl(P("principal.email"), N("drop"), span=S)),
    ("mask email hash", ast.MaskDecl(C("email"), N("hash"), span=S)),  # the checker says what is wrong
    ("mask context.ssn hide", ast.MaskDecl(P("context.ssn"), N("hide"), span=S)),
]


@pytest.mark.parametrize(("source", "expected"), DECLARATIONS, ids=[d[0].split("\n")[0][:40] for d in DECLARATIONS])
def test_declaration(source: str, expected: ast.Decl) -> None:
    assert one(source) == expected


RULES = [
    ('rule r allow role analyst to read dataset "x"', rule()),
    # a const in the head is a name here; the checker expands it to the group's actions
    ('rule r allow role analyst to READ_ACTIONS, export dataset "x"', rule(actions=("READ_ACTIONS", "export"))),
    ('rule r deny any to invoke model "*"',
     rule("deny", ast.PrincipalMatch("any", span=S), ("invoke",), "model", "*")),
    ('rule r allow agent bot to read, write tool "t/*"',
     rule(principal=ast.PrincipalMatch("agent", N("bot"), span=S), actions=("read", "write"), kind="tool", pattern="t/*")),
    ('rule r allow role analyst to any workflow "w"', rule(actions=("*",), kind="workflow", pattern="w")),
    ("rule r allow role analyst to read dataset", rule(pattern="*")),
    ('rule r allow role analyst to read agent "a"', rule(kind="agent", pattern="a")),
    ('rule r allow role analyst to read dataset "x" unless data.secret == true because "why" cite "A", "B" cite "C"',
     rule(unless=Cmp(P("data.secret"), "==", L(True)), because="why", cites=("A", "B", "C"))),
    ('rule r allow role analyst to read dataset "x" when action == "read"',
     rule(when=Cmp(P("action"), "==", L("read")))),
]


@pytest.mark.parametrize(("source", "expected"), RULES, ids=[r[0][7:50] for r in RULES])
def test_rule(source: str, expected: ast.RuleDecl) -> None:
    assert one(source) == expected


# --- expressions ------------------------------------------------------------------------------

EXPRESSIONS = [
    ("context.tokens <= 8000", Cmp(P("context.tokens"), "<=", L(8000))),
    ("context.a != 1.5", Cmp(P("context.a"), "!=", L(1.5))),
    ("context.a >= -3", Cmp(P("context.a"), ">=", L(-3))),
    ("context.a < 1_000.250_5", Cmp(P("context.a"), "<", L(1000.2505))),
    ('data.x in ["a", "b"]', Cmp(P("data.x"), "in", Lst(L("a"), L("b")))),
    ("data.x not in RESTRICTED", Cmp(P("data.x"), "not in", C("RESTRICTED"))),
    ("data.flag == false", Cmp(P("data.flag"), "==", L(False))),
    ("context.flag", P("context.flag")),
    ("principal.attrs.level > 2", Cmp(P("principal.attrs.level"), ">", L(2))),
    ("team.size > 2", Cmp(P("team.size"), ">", L(2))),  # unknown root kept: the checker reports it
    ("LIMIT > context.a", Cmp(C("LIMIT"), ">", P("context.a"))),
    ("action", P("action")),
    ("a == 1 and b == 2 and c == 3", And(Cmp(C("a"), "==", L(1)), Cmp(C("b"), "==", L(2)), Cmp(C("c"), "==", L(3)))),
    ("a or b or c", Or(C("a"), C("b"), C("c"))),
    ("a and b or c and d", Or(And(C("a"), C("b")), And(C("c"), C("d")))),
    ("a and (b or c)", And(C("a"), Or(C("b"), C("c")))),
    ("(a or b) or c", Or(Or(C("a"), C("b")), C("c"))),
    ("((a))", C("a")),
    ("not a == 1", Not(Cmp(C("a"), "==", L(1)))),
    ("not not a", Not(Not(C("a")))),
    ("not (a or b) and c", And(Not(Or(C("a"), C("b"))), C("c"))),
    ('data.s == "quote \\" and \\\\ and \\n"', Cmp(P("data.s"), "==", L('quote " and \\ and \n'))),
    ("data.x in [[1, 2], []]", Cmp(P("data.x"), "in", Lst(Lst(L(1), L(2)), Lst()))),
    ("data.x in [1, 2,]", Cmp(P("data.x"), "in", Lst(L(1), L(2)))),
    ("context has amount", Cmp(P("context"), "has", L("amount"))),
    ("principal has attrs.level", Cmp(P("principal"), "has", L("attrs.level"))),
    ("not data has origin or data.origin in EU",
     Or(Not(Cmp(P("data"), "has", L("origin"))), Cmp(P("data.origin"), "in", C("EU")))),
    ("data has x and data.x > 1", And(Cmp(P("data"), "has", L("x")), Cmp(P("data.x"), ">", L(1)))),
    ("data.has == 1", Cmp(P("data.has"), "==", L(1))),  # `has` is a keyword only after a path
    ('data.tags contains "pii"', Cmp(P("data.tags"), "contains", L("pii"))),
    ('data.tags contains any ["a", "b"]', Cmp(P("data.tags"), "contains any", Lst(L("a"), L("b")))),
    ("data.tags contains all EU", Cmp(P("data.tags"), "contains all", C("EU"))),
    ('data.name starts with "tmp/"', Cmp(P("data.name"), "starts with", L("tmp/"))),
    ('data.name ends with ".csv"', Cmp(P("data.name"), "ends with", L(".csv"))),
    ('data.name like "*draft*"', Cmp(P("data.name"), "like", L("*draft*"))),
    ('not data.tags contains "x" and data.n like "a?"',
     And(Not(Cmp(P("data.tags"), "contains", L("x"))), Cmp(P("data.n"), "like", L("a?")))),
    ("data.like == data.starts", Cmp(P("data.like"), "==", P("data.starts"))),  # keywords only where expected
    ('context.ip in cidr "10.0.0.0/8"', Cmp(P("context.ip"), "in cidr", L("10.0.0.0/8"))),
    ("hour of context.time >= 9", Cmp(T("hour", P("context.time")), ">=", L(9))),
    ('weekday of context.time at "Europe/Paris" in ["sat", "sun"]',
     Cmp(T("weekday", P("context.time"), "Europe/Paris"), "in", Lst(L("sat"), L("sun")))),
    ("age of data.since < 90d", Cmp(T("age", P("data.since")), "<", D(90 * 86400))),
    ("age of data.since >= 2 weeks", Cmp(T("age", P("data.since")), ">=", D(14 * 86400))),
    ("data.hour == hour", Cmp(P("data.hour"), "==", C("hour"))),
    ("context.amount > LIMITS[context.region]",
     Cmp(P("context.amount"), ">", ast.Lookup(C("LIMITS"), P("context.region"), span=S))),
    ('LIMITS["eu"] == {"eu": 1, "us": [2],}',
     Cmp(ast.Lookup(C("LIMITS"), L("eu"), span=S), "==", ast.Record((("eu", L(1)), ("us", Lst(L(2)))), span=S))),
    ("{} == {}", Cmp(ast.Record((), span=S), "==", ast.Record((), span=S))),  # 'hour' is a part only before 'of'
    # keywords are plain names where no keyword can stand
    ("context.region == resource.role", Cmp(P("context.region"), "==", P("resource.role"))),
]


@pytest.mark.parametrize(("condition", "expected"), EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_expression(condition: str, expected: ast.Expr) -> None:
    assert when_of(condition) == expected


def test_a_condition_may_continue_on_the_next_lines() -> None:
    assert when_of('action == "pay" and context.amount > 10_000\n      or context.confidence < 0.85') == Or(
        And(Cmp(P("action"), "==", L("pay")), Cmp(P("context.amount"), ">", L(10_000))),
        Cmp(P("context.confidence"), "<", L(0.85)))


def test_all_clauses_on_one_line_mean_the_same_as_one_per_line() -> None:
    stacked = 'escalate e\n    when context.a > 1\n    to role r\n    within 4h else deny\n    require distinct approver\n'
    flat = "escalate e when context.a > 1 to role r within 4h else deny require distinct approver"
    assert one(stacked) == one(flat)


DURATIONS = [("30 s", 30), ("1 sec", 1), ("90 min", 5400), ("2 minutes", 120), ("4h", 14400), ("1 hour", 3600),
             ("3 hrs", 10800), ("1 day", 86400), ("30 days", 2592000), ("2d", 172800), ("1 week", 604800),
             ("2w", 1209600), ("1.5 h", 5400)]


@pytest.mark.parametrize(("text", "seconds"), DURATIONS)
def test_durations_are_kept_in_seconds(text: str, seconds: int) -> None:
    decl = one(f"escalate e to role r within {text}")
    assert isinstance(decl, ast.EscalateDecl) and decl.within == D(seconds)


# --- positions and comments ----------------------------------------------------------------------


def test_spans_point_at_the_tokens_they_came_from() -> None:
    text = 'package t\n\nrule r\n    allow role analyst to read dataset "x"\n    when context.amount > 10\n'
    decl = parse_policy(text, "f.policy").decls[0]
    assert isinstance(decl, ast.RuleDecl)
    assert decl.span == Span("f.policy", 3, 1, 5, 29)
    assert decl.name.span == Span("f.policy", 3, 6, 3, 7)
    assert decl.principal.name is not None and decl.principal.name.span == Span("f.policy", 4, 16, 4, 23)
    assert decl.when is not None and decl.when.span == Span("f.policy", 5, 10, 5, 29)
    assert isinstance(decl.when, ast.Compare) and decl.when.right.span == Span("f.policy", 5, 27, 5, 29)


def test_values_without_a_node_of_their_own_still_have_a_span() -> None:
    """``warn at 150%``, ``hosting onprem`` and a rule's pattern: the checker points at them."""
    text = ('package t\nmodel m provider "p" hosting onprem\nrule r allow any to invoke model "smal"\n'
            'budget b\n    for workflow "w" limit 5 USD per day\n    warn at 150 %\n')
    model, rule_, budget = parse_policy(text, "f.policy").decls
    assert isinstance(model, ast.ModelDecl) and model.hosting_span == Span("f.policy", 2, 30, 2, 36)
    assert isinstance(rule_, ast.RuleDecl) and rule_.pattern_span == Span("f.policy", 3, 34, 3, 40)
    assert isinstance(budget, ast.BudgetDecl) and budget.warn_at_span == Span("f.policy", 6, 13, 6, 18)
    assert budget.span.end_col == 18
    bare = parse_policy("package t\nmodel m\nrule r allow any to read dataset\n"
                        "budget b for workflow w limit 5 USD per day\n").decls
    assert [bare[0].hosting_span, bare[1].pattern_span, bare[2].warn_at_span] == [None, None, None]  # type: ignore[union-attr]
    # positions are not meaning: equality ignores them, so parse(fmt(x)) == parse(x) still holds
    assert replace(budget, warn_at_span=None) == budget and "warn_at_span" not in repr(budget)


def test_part_spans_survive_the_loaders_pickle_cache() -> None:
    import io
    import pickle

    from policyengine import loader

    tree = parse_policy('package t\nmodel m hosting x\nrule r allow any to invoke model "y"\n'
                        'budget b for workflow w limit 5 USD per day warn at 150%\n', "f.policy")
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = loader._REDUCERS  # type: ignore[assignment]
    pickler.dump(tree)
    back = pickle.loads(buffer.getvalue())
    assert back == tree
    model, rule_, budget = back.decls
    spans = [model.hosting_span, rule_.pattern_span, budget.warn_at_span]
    assert spans == [Span("f.policy", 2, 17, 2, 18), Span("f.policy", 3, 34, 3, 37), Span("f.policy", 4, 53, 4, 57)]


def test_comments_are_collected_with_their_line_and_placement() -> None:
    text = "# top\npackage t  # trailing\n\n# before the role\nrole r\n"
    file = parse_policy(text)
    assert file.comments == (
        ast.Comment(1, "# top", False),
        ast.Comment(2, "# trailing", True),
        ast.Comment(4, "# before the role", False),
    )


def test_windows_line_endings_and_tabs_mean_the_same() -> None:
    crlf = _SAMPLE.replace("\n", "\r\n").replace("    ", "\t")
    file = parse_policy(crlf)
    assert file == parse_policy(_SAMPLE)
    assert [c.text for c in file.comments] == [c.text for c in parse_policy(_SAMPLE).comments]
    assert [d.span.line for d in file.decls] == [d.span.line for d in parse_policy(_SAMPLE).decls]


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse_policy("\ufeffpackage t\n").package == N("t")


# --- numbers and string escapes: refused with a caret at the culprit, never a crash --------------


def _error(condition: str) -> tuple[str, Span]:
    """The one syntax finding for a rule whose ``when`` is ``condition`` (which starts at column 43)."""
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'package t\nrule r allow any to read dataset "x" when {condition}\n', "t.policy")
    finding = raised.value.findings[0]
    assert finding.code == "syntax" and len(raised.value.findings) == 1
    return finding.message, finding.span


LONG_NUMBERS = [
    # condition, message start; the caret covers the whole number
    ("context.a > 1" + "0" * 4400, "number too long: 4,401 digits, at most 100 are allowed"),  # int() refuses > 4,300
    ("context.a > 1" + "0" * 100, "number too long: 101 digits, at most 100 are allowed"),
    ("context.a > -1" + "0" * 400 + ".5", "number too long: 402 digits"),  # float() would give -inf
    ("context.a > 0." + "0" * 400 + "1" * 101, "number too long: 101 digits"),  # leading zeros do not count
    ("context.a > 0." + "0" * 400 + "1", "number too small: it is so close to 0 that it reads as 0"),
    ("context.a > 1_" + "000_" * 40 + "000", "number too long: 124 digits"),  # '_' does not count
    ("context.a > " + "9" * 99 + ".9", "number too long: it rounds up to 10^99"),  # fmt would write 101 digits
]


@pytest.mark.parametrize(("condition", "message"), LONG_NUMBERS, ids=lambda v: v[:40] if isinstance(v, str) else "")
def test_a_number_too_long_is_refused_at_the_number(condition: str, message: str) -> None:
    found, span = _error(condition)
    assert found.startswith(message)
    number = condition.split("> ")[1]
    assert (span.line, span.col, span.end_line, span.end_col) == (2, 55, 2, 55 + len(number))


@pytest.mark.parametrize(("text", "value"), [
    ("1" + "0" * 99, 10**99),
    ("-" + "9" * 100, -(10**100 - 1)),
    ("9" * 98 + ".5", float("9" * 98 + ".5")),
    ("0." + "0" * 98 + "1", 1e-99),
    ("0." + "0" * 300 + "5", 5e-301),  # leading zeros do not count: any float fmt writes reads back
    ("-" + "0" * 5000 + "7", -7),
    ("0.000", 0.0),
    ("-0", 0),
])
def test_a_number_of_up_to_100_digits_is_read(text: str, value: float) -> None:
    assert when_of(f"context.a > {text}") == Cmp(P("context.a"), ">", L(value))


@pytest.mark.parametrize("word", ["inf", "nan", "Infinity", "NaN"])
def test_inf_and_nan_are_names_never_numbers(word: str) -> None:
    assert when_of(f"context.a > {word}") == Cmp(P("context.a"), ">", C(word))


STRING_VALUES = [
    (r'"a\"b"', 'a"b'),
    (r'"a\\b"', "a\\b"),
    (r'"\n\t\r"', "\n\t\r"),
    (r'"\u00e9\u00E9"', "éé"),
    (r'"\U0001F600"', "\U0001F600"),
    (r'"\ud83d\ude00!"', "\U0001F600!"),  # a surrogate pair is combined into one character
    (r'"\uD83D\uDE00\uD83D\uDE00"', "\U0001F600\U0001F600"),
    (r'"\\q"', "\\q"),  # an escaped backslash, then a plain q
    (r'"\\\\"', "\\\\"),
]


@pytest.mark.parametrize(("text", "value"), STRING_VALUES)
def test_string_escapes(text: str, value: str) -> None:
    assert when_of(f"data.s == {text}") == Cmp(P("data.s"), "==", L(value))


BAD_ESCAPES = [
    # string, message, the escape the caret must cover
    (r'"x\q"', r"unknown escape '\q' in a string; write '\\q' for a backslash", r"\q"),
    (r'"a\"b\c"', r"unknown escape '\c' in a string; write '\\c' for a backslash", r"\c"),
    ('"x\\\x01"', r"unknown escape '\U+0001' in a string", "\\\x01"),
    (r'"\ud800"', r"'\ud800' is not a valid Unicode character", r"\ud800"),
    (r'"ab\ud83dx"', r"'\ud83d' is not a valid Unicode character", r"\ud83d"),
    (r'"\ud83d\u0041"', r"'\ud83d' is not a valid Unicode character", r"\ud83d"),
    (r'"\ud83d\ud83d\ude00"', r"'\ud83d' is not a valid Unicode character", r"\ud83d"),
    (r'"\ude00\ud83d"', r"'\ude00' is not a valid Unicode character", r"\ude00"),
    (r'"\U0000D800"', r"'\U0000D800' is not a valid Unicode character", r"\U0000D800"),
    (r'"\U00110000"', r"'\U00110000' is not a valid Unicode character", r"\U00110000"),
    (r'"\u12"', r"'\u' in a string needs 4 hex digits", r"\u"),
    (r'"\U1234"', r"'\U' in a string needs 8 hex digits", r"\U"),
]


@pytest.mark.parametrize(("text", "message", "escape"), BAD_ESCAPES)
def test_a_bad_escape_is_refused_with_a_caret_at_it(text: str, message: str, escape: str) -> None:
    found, span = _error(f"data.s == {text}")
    assert found.startswith(message)
    line = f"rule r allow any to read dataset \"x\" when data.s == {text}"
    assert span.line == span.end_line == 2
    assert line[span.col - 1 : span.end_col - 1] == escape


@pytest.mark.parametrize("clause", ['owner "a\\q"', 'cite "a", "b\\q"'])
def test_escapes_are_checked_in_every_string(clause: str) -> None:
    with pytest.raises(PolicyError, match="unknown escape"):
        parse_policy(f"package t\n{clause}\n")


def test_check_and_fmt_refuse_a_bad_escape_or_long_number_cleanly(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = {
        "esc.policy": ('package t\nrole a\nrule r allow role a to read dataset "x\\q"\n',
                       'esc.policy:3:39: error[syntax]: unknown escape'),
        "num.policy": ("package t\nrule r allow any to read dataset \"x\" when context.a > 1" + "0" * 4400 + "\n",
                       "num.policy:2:55: error[syntax]: number too long"),
    }
    for name, (text, _) in bad.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    for name, (text, expected) in bad.items():
        for command in (["check", name], ["fmt", name]):
            run = subprocess.run([sys.executable, "-m", "policyengine", *command], cwd=tmp_path, check=False,
                                 capture_output=True, text=True, timeout=60)
            output = run.stdout + run.stderr
            assert run.returncode == 1, output
            assert expected in output and "Traceback" not in output
            assert (tmp_path / name).read_text(encoding="utf-8") == text  # fmt left it untouched


# --- syntax errors ----------------------------------------------------------------------------------


def _render(name: str, text: str) -> str:
    try:
        parse_policy(text, f"{name}.policy")
    except PolicyError as error:
        assert len(error.findings) == 1
        finding = error.findings[0]
        assert finding.code == "syntax"
        return render_finding(finding, SourceCache({f"{name}.policy": text})) + "\n"
    raise AssertionError(f"{name}.policy parsed without an error")


GOLDEN_CASES = sorted(p.stem for p in GOLDEN.glob("*.policy"))


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_syntax_error_golden(name: str) -> None:
    text = (GOLDEN / f"{name}.policy").read_text(encoding="utf-8")
    rendered = _render(name, text)
    expected_path = GOLDEN / f"{name}.expected"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_path.write_text(rendered, encoding="utf-8")
    assert rendered == expected_path.read_text(encoding="utf-8")


def test_there_are_golden_error_cases() -> None:
    assert len(GOLDEN_CASES) >= 15


LARK_TERMS = ("LPAR", "RPAR", "LSQB", "RSQB", "CMP_OP", "STRING", "NUMBER", "COMMA", "DOT", "EQUALS", "PERCENT",
              "_AND", "_OR", "$END", "__ANON", "Token(", "Tree(", "Unexpected")


def test_error_messages_never_leak_lark_terms() -> None:
    for name in GOLDEN_CASES:
        headline = _render(name, (GOLDEN / f"{name}.policy").read_text(encoding="utf-8")).splitlines()[0]
        assert not [term for term in LARK_TERMS if term in headline], headline


def test_a_keyword_is_a_plain_name_where_no_keyword_fits() -> None:
    assert one("role rule") == ast.RoleDecl(N("rule"), span=S)


@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 10_000])
@pytest.mark.parametrize("shape", ["({})", "not {}", "[{}]", "(context.a == 1 and {})"])
def test_deep_nesting_is_refused_cleanly(shape: str, depth: int) -> None:
    inner = "context.x == 1"
    for _ in range(depth):
        inner = shape.format(inner)
    if shape == "[{}]":
        inner = f"data.x in {inner}"
    with pytest.raises(PolicyError) as raised:
        parse_policy(f'package t\nrule r allow any to read dataset "x" when {inner}\n')
    assert "nested more than" in raised.value.findings[0].message


def test_nesting_up_to_the_limit_is_fine() -> None:
    inner = "context.x == 1"
    for _ in range(MAX_NESTING - 1):
        inner = f"not ({inner})"
    parse_policy(f'package t\nrule r allow any to read dataset "x" when {inner}\n')


# --- the grammar and the transformer stay in step ---------------------------------------------------


def test_every_grammar_alias_and_rule_has_a_transformer_method() -> None:
    parser = _parser()
    missing = set()
    for rule_ in parser.rules:
        name = rule_.alias or rule_.origin.name
        if name.startswith("_"):
            continue  # Lark's own helper rules for repetitions, inlined into their parent
        if rule_.alias is None and rule_.options.expand1 and len(rule_.expansion) == 1:
            continue  # `?rule: child` passes its one child through
        method = getattr(Builder, name, None)
        if not callable(method):
            missing.add(name)
    assert not missing, f"grammar rules without a Builder method: {sorted(missing)}"


# --- fuzzing: broken input always ends in a finding, never in another exception ----------------------

_SAMPLE = (ROOT / "rules" / "design_sample.policy").read_text(encoding="utf-8")
_TOKENS = re.findall(r'"[^"\n]*"|#[^\n]*|\w+|\S|\s+', _SAMPLE)


def _parse_or_finding(text: str) -> None:
    try:
        parse_policy(text, "fuzz.policy")
    except PolicyError as error:
        assert error.findings and all(f.code == "syntax" for f in error.findings)
        finding = error.findings[0]
        assert finding.span.line >= 1 and finding.span.col >= 1
        assert "\n" not in finding.message


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_deleting_duplicating_or_swapping_tokens(data: st.DataObject) -> None:
    tokens = list(_TOKENS)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(tokens) - 1))
        edit = data.draw(st.sampled_from(["delete", "duplicate", "swap"]))
        if edit == "delete":
            del tokens[i]
        elif edit == "duplicate":
            tokens.insert(i, tokens[i])
        elif i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
    _parse_or_finding("".join(tokens))


@FUZZ
@given(st.integers(0, len(_SAMPLE)))
def test_truncated_files(cut: int) -> None:
    _parse_or_finding(_SAMPLE[:cut])


@FUZZ
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    _parse_or_finding(text)


@FUZZ
@given(st.lists(st.sampled_from([*"()[]\"#=<>!,.%_ \n\tabnot1", "and ", "or ", "not ", "in ", "context.x"]), max_size=80)
       .map("".join))
def test_random_punctuation_in_a_condition(body: str) -> None:
    _parse_or_finding(f'package t\nrule r allow any to read dataset "x" when {body}\n')


_ESCAPE_PIECES = ["\\", "\\\\", '\\"', "\\u", "\\U", "d83d", "de00", "D800", "0041", "0010FFFF", "00110000", "q", "n",
                  "é", "x", " "]


@FUZZ
@given(st.lists(st.sampled_from(_ESCAPE_PIECES), max_size=12).map("".join))
def test_random_escapes_in_a_string(body: str) -> None:
    _parse_or_finding(f'package t\nrule r allow any to read dataset "x" when data.s == "{body}"\n')


@FUZZ
@given(st.from_regex(r"-?[0-9]{1,5000}(\.[0-9]{1,500})?", fullmatch=True))
def test_numbers_of_any_length(number: str) -> None:
    _parse_or_finding(f'package t\nrule r allow any to read dataset "x" when context.a > {number}\n')
    _parse_or_finding(f"package t\nbudget b for workflow w limit {number} USD per day warn at {number}%\n")
