"""The formatter: one canonical layout, same meaning, comments kept, a fixed point.

Golden files: ``tests/golden/format/x.policy`` formats to ``x.policy.formatted``
(``UPDATE_GOLDEN=1`` rewrites them). Properties over generated trees:
``parse(fmt(tree)) == tree`` and ``fmt(parse(fmt(tree))) == fmt(tree)``, also
with comments sprinkled through the text.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policyengine import ast
from policyengine.diagnostics import Span
from policyengine.format import format_expr, format_number, format_policy
from policyengine.syntax import _parser, parse_policy

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "format"
S = Span("<gen>", 1, 1, 1, 1)


def roundtrip(text: str, path: str = "<string>") -> str:
    """Format ``text``; assert meaning is kept and a second pass changes nothing."""
    tree = parse_policy(text, path)
    formatted = format_policy(tree, text)
    again = parse_policy(formatted, path)
    assert again == tree, "formatting changed the meaning"
    assert format_policy(again, formatted) == formatted, "formatting is not idempotent"
    assert sorted(c.text for c in again.comments) == sorted(c.text for c in tree.comments), "a comment was lost"
    return formatted


# --- golden files ------------------------------------------------------------------------

GOLDEN_CASES = sorted(p.name for p in GOLDEN.glob("*.policy"))


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_format_golden(name: str) -> None:
    formatted = roundtrip((GOLDEN / name).read_text(encoding="utf-8"), name)
    expected = GOLDEN / f"{name}.formatted"
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(formatted, encoding="utf-8")
    assert formatted == expected.read_text(encoding="utf-8")


def test_golden_outputs_are_already_canonical() -> None:
    assert len(GOLDEN_CASES) >= 4
    for name in GOLDEN_CASES:
        text = (GOLDEN / f"{name}.formatted").read_text(encoding="utf-8")
        assert roundtrip(text) == text


# --- the example rules --------------------------------------------------------------------

EXAMPLES = sorted((ROOT / "rules").rglob("*.policy"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_example_rules_keep_meaning_and_comments(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    formatted = roundtrip(text, str(path))
    if path.name != "design_sample.policy":  # the sample stays verbatim as the README shows it
        assert formatted == text, f"{path} is not formatted; run policyengine fmt rules/"


# --- units and numbers --------------------------------------------------------------------

NUMBERS = [(0, "0"), (9999, "9999"), (10_000, "10_000"), (-2_500_000, "-2_500_000"), (0.85, "0.85"),
           (1e-05, "0.00001"), (2.0, "2.0"), (1e16, "10000000000000000.0")]


@pytest.mark.parametrize(("value", "text"), NUMBERS)
def test_numbers_are_written_as_the_grammar_reads_them(value: float, text: str) -> None:
    assert format_number(value) == text


def test_integral_amounts_drop_the_decimal_point() -> None:
    assert format_number(500.0, integral_as_int=True) == "500"
    assert format_number(2e6, integral_as_int=True) == "2_000_000"


def test_parentheses_appear_exactly_where_the_tree_needs_them() -> None:
    a, b, c = (ast.ConstRef(n, span=S) for n in "abc")
    assert format_expr(ast.And((ast.Or((a, b), span=S), c), span=S)) == "(a or b) and c"
    assert format_expr(ast.Or((ast.And((a, b), span=S), c), span=S)) == "a and b or c"
    assert format_expr(ast.Or((ast.Or((a, b), span=S), c), span=S)) == "(a or b) or c"
    assert format_expr(ast.Not(ast.And((a, b), span=S), span=S)) == "not (a and b)"


# --- generated trees ------------------------------------------------------------------------

KEYWORDS = frozenset(_parser().parser.lexer.keywords)  # type: ignore[attr-defined]
names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(
    lambda n: n not in KEYWORDS and n not in ast.ATTRIBUTE_ROOTS)
name_nodes = names.map(lambda n: ast.Name(n, span=S))
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
amounts = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e12)
currencies = st.from_regex(r"[A-Z]{3}", fullmatch=True)


def literal() -> st.SearchStrategy[ast.Expr]:
    values = st.one_of(texts, st.integers(-10**15, 10**15), floats, st.booleans())
    return values.map(lambda v: ast.Literal(v, span=S))


paths = st.builds(lambda root, parts: ast.Path(root, tuple(parts), span=S),
                  st.sampled_from(sorted(ast.ATTRIBUTE_ROOTS)), st.lists(names, max_size=2))
const_refs = names.map(lambda n: ast.ConstRef(n.upper(), span=S))
operands = st.recursive(
    st.one_of(literal(), paths, const_refs),
    lambda inner: st.lists(inner, max_size=3).map(lambda items: ast.ListExpr(tuple(items), span=S)),
    max_leaves=5,
)
compares = st.builds(lambda op, left, right: ast.Compare(op, left, right, span=S),
                     st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"]), operands, operands)
exprs = st.recursive(
    st.one_of(compares, operands),
    lambda inner: st.one_of(
        inner.map(lambda e: ast.Not(e, span=S)),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: ast.And(tuple(xs), span=S)),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: ast.Or(tuple(xs), span=S)),
    ),
    max_leaves=8,
)
optional_exprs = st.none() | exprs
durations = st.integers(0, 10**8).map(lambda s: ast.Duration(s, span=S))
name_tuples = st.lists(name_nodes, min_size=1, max_size=3).map(tuple)
cites = st.lists(texts, max_size=2).map(tuple)
escalate_to = name_nodes.map(lambda n: ast.EscalateAction(n, span=S))
breaches = st.none() | st.sampled_from([ast.AlertAction(span=S), ast.BlockAction(span=S)]) | escalate_to
exceeds = st.none() | st.just(ast.DenyAction(span=S)) | escalate_to | name_nodes.map(lambda n: ast.RouteAction(n, span=S))
thresholds = st.builds(lambda op, v: ast.Threshold(op, v, span=S), st.sampled_from(["<", "<=", ">", ">="]), floats)


def _principal(kind: str, name: ast.Name) -> ast.PrincipalMatch:
    return ast.PrincipalMatch(kind, None if kind == "any" else name, span=S)  # type: ignore[arg-type]


def _escalate(name, when, role, within, allow, distinct, because, cite):  # type: ignore[no-untyped-def]
    timeout = "allow" if (allow and within is not None) else "deny"
    return ast.EscalateDecl(name, when, role, within, timeout, distinct, because, cite, span=S)


decls = st.one_of(
    st.builds(lambda n, ext: ast.RoleDecl(n, tuple(ext), span=S), name_nodes, st.lists(name_nodes, max_size=2)),
    st.builds(lambda root, parts, action: ast.MaskDecl(ast.Path(root, tuple(parts), span=S), ast.Name(action, span=S),
                                                       span=S),
              st.sampled_from(["data", "context", "principal", "resource"]), st.lists(names, min_size=1, max_size=3),
              st.sampled_from(["hash", "drop"])),
    st.builds(lambda n, owner, roles: ast.AgentDecl(n, owner, roles, span=S), name_nodes, st.none() | texts, name_tuples),
    st.builds(lambda n, p, r, h, cost, lat: ast.ModelDecl(n, p, r, h, cost, lat, span=S), name_nodes,
              st.none() | texts, st.none() | texts, st.none() | st.sampled_from(["internal", "external"]),
              st.none() | st.builds(lambda a, c: ast.Money(a, c, span=S), amounts, currencies), st.none() | amounts),
    st.builds(lambda n, v: ast.ConstDecl(n, v, span=S), name_nodes, operands),
    st.builds(lambda n, eff, kind, who, acts, res, pat, when, unless, because, cite: ast.RuleDecl(
        n, eff, _principal(kind, who), acts, res, pat, when, unless, because, cite, span=S),
        name_nodes, st.sampled_from(["allow", "deny"]), st.sampled_from(["any", "role", "agent"]), name_nodes,
        st.lists(name_nodes | st.just(ast.Name("*", span=S)), min_size=1, max_size=3).map(tuple), name_nodes, texts,
        optional_exprs, optional_exprs, st.none() | texts, cites),
    st.builds(lambda n, when, regions, because, cite: ast.ResidencyDecl(n, when, regions, because, cite, span=S),
              name_nodes, optional_exprs,
              const_refs | st.lists(texts.map(lambda t: ast.Literal(t, span=S)), max_size=3).map(
                  lambda xs: ast.ListExpr(tuple(xs), span=S)),
              st.none() | texts, cites),
    st.builds(lambda n, scope, limits, warn, exceed: ast.BudgetDecl(n, scope, limits, warn, exceed, span=S), name_nodes,
              st.builds(lambda k, v: ast.BudgetScope(k, v, span=S), st.sampled_from(["workflow", "model", "agent", "role"]),
                        texts | names),
              st.lists(st.builds(lambda a, u, w: ast.BudgetLimit(a, u, w, span=S), amounts,
                                 st.just("tokens") | currencies, st.sampled_from(["hour", "day", "month"])),
                       min_size=1, max_size=3).map(tuple),
              st.none() | amounts, exceeds),
    st.builds(_escalate, name_nodes, optional_exprs, name_nodes, st.none() | durations, st.booleans(), st.booleans(),
              st.none() | texts, cites),
    st.builds(lambda n, when, prefer: ast.RouteDecl(n, when, prefer, span=S), name_nodes, optional_exprs, name_tuples),
    st.builds(lambda n, m, metric, pos, by, th, win, mins, br: ast.BiasDecl(n, m, metric, pos, by, th, win, mins, br, span=S),
              name_nodes, name_nodes, name_nodes, exprs, paths, thresholds, st.none() | durations,
              st.none() | st.integers(0, 10**9), breaches),
    st.builds(lambda n, m, metric, of, base, th, br: ast.DriftDecl(n, m, metric, of, base, th, br, span=S),
              name_nodes, name_nodes, name_nodes, paths, durations, thresholds, breaches),
)
packages = st.lists(names, min_size=1, max_size=3).map(lambda xs: ast.Name(".".join(xs), span=S))
files = st.builds(
    lambda pkg, owner, cite, imports, body: ast.PolicyFile(
        pkg, owner, cite, tuple(ast.Import(i, span=S) for i in imports), tuple(body), span=S),
    packages, st.none() | texts, cites, st.lists(packages, max_size=2), st.lists(decls, max_size=5),
)

GENERATED = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GENERATED
@given(files)
def test_formatting_a_tree_gives_text_that_parses_back_to_it(tree: ast.PolicyFile) -> None:
    text = format_policy(tree)
    assert parse_policy(text) == tree
    assert format_policy(parse_policy(text)) == text


@GENERATED
@given(files, st.data())
def test_comments_survive_and_formatting_stays_a_fixed_point(tree: ast.PolicyFile, data: st.DataObject) -> None:
    lines = format_policy(tree).split("\n")[:-1]
    out = []
    for i, line in enumerate(lines):
        where = data.draw(st.sampled_from(["none", "none", "before", "after", "both"]))
        if where in ("before", "both"):
            out.append(f"    # own {i}")
        out.append(line + (f"  # end {i}" if where in ("after", "both") and line.strip() else ""))
    text = "\n".join(out) + "\n"
    formatted = roundtrip(text)
    assert Counter(c.text for c in parse_policy(formatted).comments) == Counter(c.text for c in parse_policy(text).comments)
