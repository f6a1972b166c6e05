"""Policy source text -> typed AST (``ast.PolicyFile``), or a ``syntax`` finding.

The grammar lives in ``grammar/policy.lark``. Lark's LALR parser runs with an
inline transformer: each grammar rule is turned into an AST node the moment it is
reduced, so no parse tree is ever built, and spans come straight from tokens.
With the lexer below that parses 10,000 rules (1.8 MB) in about 1.2 s on a
2-core machine (``benchmarks/README.md``).

Syntax errors never escape as Lark exceptions: they become one ``Finding`` with
code ``syntax``, a ``file:line:col`` position and words a compliance author
understands ("expected a role name after 'extends'").
"""

from __future__ import annotations

import re
import threading
from typing import Any

from lark import Lark, Token, v_args
from lark.lexer import Lexer
from lark.exceptions import UnexpectedCharacters, UnexpectedInput

from . import ast
from .ast import fast_constructor, paused_gc
from .diagnostics import PolicyError, Span
from .resources import cache_root, caching_enabled, grammar_text
from .syntax_errors import describe_unexpected
from .syntax_tokens import number_value as _number
from .syntax_tokens import syntax_error as _syntax
from .syntax_routing import RoutingSyntax
from .syntax_schema import SchemaSyntax
from .syntax_scope import ScopeBuilder, join_scopes

__all__ = ["parse_policy", "MAX_NESTING", "Builder"]

MAX_NESTING = 64  # compound expressions nested deeper than this are refused

_DURATION_UNITS: dict[str, int] = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
_WINDOWS = {"hour": "hour", "hourly": "hour", "day": "day", "daily": "day", "month": "month", "monthly": "month"}
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_ESCAPE = re.compile(r"\\(u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class _Clause(tuple):
    """``(key, value, keyword_token, end_span)`` handed from a clause to its declaration."""

    __slots__ = ()


class _Strings(tuple):
    """A comma-separated list of strings, remembering where it ends."""

    __slots__ = ()


def _unquote(tok: Token, path: str) -> str:
    """A STRING token's text with its escapes decoded; an unknown or invalid escape is refused.

    A finding points at the escape itself (a string is always on one line). A UTF-16 surrogate pair written as two escapes
    (``\\uD83D\\uDE00``) is combined into one character, as JSON does; a lone
    surrogate is not a character and is refused.
    """
    body = tok.value[1:-1]
    if "\\" not in body:
        return body

    def error(message: str, start: int, end: int, help: str | None = None) -> PolicyError:
        col = tok.column + 1 + start  # type: ignore[operator]  # +1 for the opening quote
        return _syntax(message, Span(path, tok.line, col, tok.line, col + end - start), help=help)  # type: ignore[arg-type]

    out: list[str] = []
    pos = 0
    high: re.Match[str] | None = None  # a \uD800-\uDBFF escape waiting for its second half
    for m in _ESCAPE.finditer(body):
        code = m.group(1)
        if high is not None:
            low = int(code[1:], 16) if len(code) == 5 and code[0] == "u" else -1
            if m.start() != pos or not 0xDC00 <= low <= 0xDFFF:
                raise error(_lone_surrogate(high), high.start(), high.end(), help=_SURROGATE_HELP)
            out.append(chr(0x10000 + ((int(high.group(1)[1:], 16) - 0xD800) << 10) + (low - 0xDC00)))
            high, pos = None, m.end()
            continue
        out.append(body[pos : m.start()])
        pos = m.end()
        simple = _ESCAPES.get(code)
        if simple is not None:
            out.append(simple)
        elif code in ("u", "U"):
            size = 4 if code == "u" else 8
            example = "\\u00e9" if code == "u" else "\\U0001F600"
            raise error(
                f"'\\{code}' in a string needs {size} hex digits, as in {example}",
                m.start(),
                m.end(),
                help="write '\\\\' for a backslash",
            )
        elif len(code) == 1:
            shown = code if code.isprintable() else f"U+{ord(code):04X}"
            raise error(
                f"unknown escape '\\{shown}' in a string; write '\\\\{shown}' for a backslash",
                m.start(),
                m.end(),
                help=_ESCAPE_HELP,
            )
        else:
            point = int(code[1:], 16)
            if code[0] == "u" and 0xD800 <= point <= 0xDBFF:
                high = m
            elif point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise error(
                    f"'\\{code}' is not a valid Unicode character",
                    m.start(),
                    m.end(),
                    help=_SURROGATE_HELP if point <= 0xFFFF else "Unicode ends at \\U0010FFFF",
                )
            else:
                out.append(chr(point))
    if high is not None:
        raise error(_lone_surrogate(high), high.start(), high.end(), help=_SURROGATE_HELP)
    out.append(body[pos:])
    return "".join(out)


def _lone_surrogate(m: re.Match[str]) -> str:
    return f"'\\{m.group(1)}' is not a valid Unicode character: half of a surrogate pair without its other half"


_ESCAPE_HELP = "a string may use the escapes \\\" \\\\ \\n \\t \\r \\uXXXX and \\UXXXXXXXX"
_SURROGATE_HELP = "write the character itself, or \\UXXXXXXXX; \\uD800-\\uDFFF are only valid as a pair such as \\uD83D\\uDE00"


_new_span = fast_constructor(Span)
_new_name = fast_constructor(ast.Name)
_new_literal = fast_constructor(ast.Literal)


@v_args(inline=True)
class Builder(RoutingSyntax, SchemaSyntax, ScopeBuilder):  # a Transformer; routes/limits, schemas, scopes: syntax_*.py
    """The inline transformer: one method per grammar rule or alias.

    Methods receive the children of the reduced rule (tokens for named
    terminals, already-built values for sub-rules) and return AST nodes or
    small private carriers (``_Clause``) that the enclosing declaration unpacks.
    """

    def __init__(self) -> None:
        self._path = "<string>"
        self._text = ""
        self._comments: list[ast.Comment] = []
        self._depth: dict[int, int] = {}

    # --- per-parse state ------------------------------------------------------------

    def _begin(self, path: str, text: str) -> None:
        self._path, self._text, self._comments, self._depth = path, text, [], {}

    def _end(self) -> None:
        self._text, self._comments, self._depth = "", [], {}

    def _on_comment(self, tok: Token) -> Token:
        start = self._text.rfind("\n", 0, tok.start_pos) + 1
        trailing = bool(self._text[start : tok.start_pos].strip())
        self._comments.append(ast.Comment(tok.line, tok.value.rstrip(), trailing))  # type: ignore[arg-type]
        return tok

    # --- span helpers -------------------------------------------------------------------

    def _span(self, tok: Token) -> Span:
        # the lexer below always sets positions; Lark types them Optional
        return _new_span(self._path, tok.line, tok.column, tok.end_line, tok.end_column)  # type: ignore[no-any-return]

    def _cover(self, first: Span, last: Span) -> Span:
        return _new_span(self._path, first.line, first.col, last.end_line, last.end_col)  # type: ignore[no-any-return]

    def _nest(self, node: Any, children: tuple[Any, ...] | list[Any]) -> Any:
        """Record ``node``'s nesting depth; refuse absurd depth before it can recurse."""
        depth = 1 + max((self._depth.get(id(c), 0) for c in children), default=0)
        if depth > MAX_NESTING:
            raise _syntax(
                f"this expression is nested more than {MAX_NESTING} levels deep",
                node.span,
                help="split it into simpler conditions or named consts",
            )
        self._depth[id(node)] = depth
        return node

    # --- file ------------------------------------------------------------------------

    def start(self, package: ast.Name, *items: Any) -> ast.PolicyFile:
        owner: str | None = None
        cites: list[str] = []
        imports: list[ast.Import] = []
        decls: list[Any] = []
        scope: ast.Scope | None = None
        for item in items:
            if isinstance(item, ast.Import):
                imports.append(item)
            elif isinstance(item, tuple):  # a header clause
                key, value, kw, _ = item
                if key == "scope":
                    scope = join_scopes(scope, value)
                elif key == "owner":
                    if owner is not None:
                        raise _syntax("the package owner is given twice", self._span(kw))
                    owner = value
                else:
                    cites.extend(value)
            else:
                decls.append(item)
        last = decls[-1].span if decls else (imports[-1].span if imports else package.span)
        return ast.PolicyFile(
            package=package,
            owner=owner,
            cites=tuple(cites),
            imports=tuple(imports),
            decls=tuple(decls),
            scope=scope,
            comments=tuple(self._comments),
            path=self._path,
            span=self._cover(package.span, last),
        )

    def package_clause(self, kw: Token, name: ast.Name) -> ast.Name:
        return name

    def file_owner(self, kw: Token, value: Token) -> _Clause:
        return _Clause(("owner", _unquote(value, self._path), kw, self._span(value)))

    def file_cite(self, kw: Token, values: _Strings) -> _Clause:
        return _Clause(("cite", tuple(values[0]), kw, values[1]))

    def import_(self, kw: Token, name: ast.Name) -> ast.Import:
        return ast.Import(name, span=self._cover(self._span(kw), name.span))

    def dotted_name(self, tok: Token) -> ast.Name:
        return ast.Name(tok.value, span=self._span(tok))

    def string_list(self, *values: Token) -> _Strings:
        return _Strings((tuple(_unquote(v, self._path) for v in values), self._span(values[-1])))

    def name_list(self, *names: Token) -> tuple[ast.Name, ...]:
        return tuple(self._name(tok) for tok in names)

    def _name(self, tok: Token) -> ast.Name:
        """Names are built by the rule that holds them: one reduction fewer per name.

        A quoted name (``model "gpt-4o"``) is the same name as its bare spelling
        when it has one; it must be non-empty and carry no whitespace or control characters.
        """
        if tok.type == "STRING":
            text = _unquote(tok, self._path)
            if not text or text != text.strip() or any(ch.isspace() or ord(ch) < 32 or 127 <= ord(ch) < 160
                                                       for ch in text):
                raise _syntax(f"{tok.value} is not a usable name", self._span(tok),
                              help="a quoted name is non-empty, without spaces or control characters")
            return _new_name(text, self._span(tok))  # type: ignore[no-any-return]
        return _new_name(tok.value, self._span(tok))  # type: ignore[no-any-return]

    # --- clause plumbing ---------------------------------------------------------------

    def _clauses(self, what: str, name: ast.Name, clauses: tuple[_Clause, ...]) -> dict[str, Any]:
        """Collect clauses by key; ``cite`` and ``limit`` repeat, the others may not."""
        found: dict[str, Any] = {"cite": [], "limit": [], "attribute": []}
        for key, value, kw, _ in clauses:
            if key in ("cite", "limit", "attribute"):
                found[key].extend(value if key == "cite" else (value,))
            elif key in found:
                raise _syntax(
                    f"{what} '{name.value}' has more than one '{kw.value}' clause",
                    self._span(kw),
                    help="keep one and remove the others",
                )
            else:
                found[key] = value
        return found

    def _decl_span(self, kw: Token, name: ast.Name, clauses: tuple[_Clause, ...]) -> Span:
        return self._cover(self._span(kw), clauses[-1][3] if clauses else name.span)

    def _require(self, found: dict[str, Any], key: str, what: str, name: ast.Name, clause: str) -> Any:
        if key not in found:
            raise _syntax(f"{what} '{name.value}' needs a '{clause}' clause", name.span)
        return found[key]

    def _clause(self, key: str, value: Any, kw: Token, end: Span | Token) -> _Clause:
        return _Clause((key, value, kw, end if isinstance(end, Span) else self._span(end)))

    # --- identities and registry ---------------------------------------------------------

    def role_decl(self, kw: Token, name_tok: Token, *rest: Any) -> ast.RoleDecl:
        name = self._name(name_tok)
        extends: tuple[ast.Name, ...] = rest[1] if rest else ()
        end = extends[-1].span if extends else name.span
        return ast.RoleDecl(name, extends, span=self._cover(self._span(kw), end))

    def agent_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.AgentDecl:
        name = self._name(name_tok)
        found = self._clauses("agent", name, clauses)
        roles = self._require(found, "roles", "agent", name, "roles ROLE, ...")
        return ast.AgentDecl(name, found.get("owner"), roles, span=self._decl_span(kw, name, clauses),
                             versions=found.get("version", ()))

    def c_owner(self, kw: Token, value: Token) -> _Clause:
        return self._clause("owner", _unquote(value, self._path), kw, value)

    def c_roles(self, kw: Token, names: tuple[ast.Name, ...]) -> _Clause:
        return self._clause("roles", names, kw, names[-1].span)

    def model_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.ModelDecl:
        name = self._name(name_tok)
        found = self._clauses("model", name, clauses)
        hosting, hosting_span = found.get("hosting", (None, None))
        return ast.ModelDecl(
            name,
            provider=found.get("provider"),
            region=found.get("region"),
            hosting=hosting,
            cost_per_1m_tokens=found.get("cost"),
            latency_ms=found.get("latency"),
            span=self._decl_span(kw, name, clauses),
            hosting_span=hosting_span,
            versions=found.get("version", ()),
        )

    def c_version(self, kw: Token, values: _Strings) -> _Clause:
        """``version "2.3.1", "2.4.0"``: the released versions of a model or agent (distinct, non-empty)."""
        versions, end = values
        if any(not v.strip() or v != v.strip() for v in versions) or len(set(versions)) != len(versions):
            raise _syntax("versions are distinct, non-empty strings without surrounding spaces", self._span(kw),
                          help='for example: version "2.3.1", "2.4.0"')
        return self._clause("version", versions, kw, end)

    def c_provider(self, kw: Token, value: Token) -> _Clause:
        return self._clause("provider", _unquote(value, self._path), kw, value)

    def c_region(self, kw: Token, value: Token) -> _Clause:
        return self._clause("region", _unquote(value, self._path), kw, value)

    def c_hosting(self, kw: Token, value: Token) -> _Clause:
        # any word parses; the checker reports one that is not internal/external, with a suggestion
        span = self._span(value)
        return self._clause("hosting", (value.value, span), kw, span)

    def c_cost(self, kw: Token, money: ast.Money, per: Token, count: Token, scale: Token, unit: Token | None) -> _Clause:
        """``per 1M tokens`` as the registry keeps it; ``per 1K tokens`` and ``per 1000 tokens`` are converted."""
        multiplier = {"M": 1_000_000, "K": 1000, "k": 1000}.get(scale.value) if unit is not None else 1
        last = unit if unit is not None else scale
        number = _number(count, self._path)
        if multiplier is None or last.value != "tokens" or number <= 0:
            raise _syntax(
                "a model's cost is given per 1M tokens, per 1K tokens or per N tokens",
                self._cover(self._span(count), self._span(last)),
                help="for example: cost 0.20 USD per 1M tokens (or per 1K tokens)",
            )
        tokens = number * multiplier
        if tokens != 1_000_000:  # converted; 15 digits drop float noise such as 2.0000000000000004
            money = ast.Money(float(f"{money.amount * 1_000_000 / tokens:.15g}"), money.currency, span=money.span)
        return self._clause("cost", money, kw, last)

    def c_latency(self, kw: Token, value: Token, unit: Token) -> _Clause:
        scale = {"ms": 1, "s": 1000}.get(unit.value)
        if scale is None:
            raise _syntax(f"latency is in 'ms' or 's', not '{unit}'", self._span(unit))
        return self._clause("latency", float(_number(value, self._path)) * scale, kw, unit)

    def const_decl(self, kw: Token, name_tok: Token, eq: Token, value: ast.Expr) -> ast.ConstDecl:
        name = self._name(name_tok)
        return ast.ConstDecl(name, value, span=self._cover(self._span(kw), value.span))

    # --- masks ----------------------------------------------------------------------------

    def mask_decl(self, kw: Token, path: ast.Path | ast.ConstRef, action_tok: Token) -> ast.MaskDecl:
        action = ast.Name(action_tok.value, span=self._span(action_tok))
        return ast.MaskDecl(path, action, span=self._cover(self._span(kw), action.span))

    # --- access rules --------------------------------------------------------------------

    def rule_decl(
        self,
        kw: Token,
        name_tok: Token,
        effect: Token,
        principal: ast.PrincipalMatch,
        to: Token,
        actions: tuple[ast.Name, ...],
        kind: Token,
        pattern: Token | None,
        *clauses: _Clause,
    ) -> ast.RuleDecl:
        name = self._name(name_tok)
        found = self._clauses("rule", name, clauses)
        head_end = self._span(pattern if pattern is not None else kind)
        return ast.RuleDecl(
            name,
            effect.value,  # type: ignore[arg-type]
            principal,
            actions,
            ast.Name(kind.value, span=self._span(kind)),
            _unquote(pattern, self._path) if pattern is not None else "*",
            when=found.get("when"),
            unless=found.get("unless"),
            because=found.get("because"),
            cites=tuple(found["cite"]),
            applies=found.get("applies"),
            span=self._cover(self._span(kw), clauses[-1][3] if clauses else head_end),
            pattern_span=head_end if pattern is not None else None,
            limits=tuple(found["limit"]),
        )

    def p_any(self, kw: Token) -> ast.PrincipalMatch:
        return ast.PrincipalMatch("any", span=self._span(kw))

    def p_role(self, kw: Token, name_tok: Token) -> ast.PrincipalMatch:
        name = self._name(name_tok)
        return ast.PrincipalMatch("role", name, span=self._cover(self._span(kw), name.span))

    def p_agent(self, kw: Token, name_tok: Token) -> ast.PrincipalMatch:
        name = self._name(name_tok)
        return ast.PrincipalMatch("agent", name, span=self._cover(self._span(kw), name.span))

    def action_list(self, *actions: ast.Name) -> tuple[ast.Name, ...]:
        return actions

    def action(self, tok: Token) -> ast.Name:
        return _new_name("*" if tok.type == "ANY" else tok.value, self._span(tok))  # type: ignore[no-any-return]

    def c_when(self, kw: Token, expr: ast.Expr) -> _Clause:
        return self._clause("when", expr, kw, expr.span)

    def c_unless(self, kw: Token, expr: ast.Expr) -> _Clause:
        return self._clause("unless", expr, kw, expr.span)

    def c_because(self, kw: Token, value: Token) -> _Clause:
        return self._clause("because", _unquote(value, self._path), kw, value)

    def c_cite(self, kw: Token, values: _Strings) -> _Clause:
        return self._clause("cite", values[0], kw, values[1])

    def residency_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.ResidencyDecl:
        name = self._name(name_tok)
        found = self._clauses("residency", name, clauses)
        regions = self._require(found, "regions", "residency", name, "require region in [...]")
        return ast.ResidencyDecl(
            name,
            found.get("when"),
            regions,
            because=found.get("because"),
            cites=tuple(found["cite"]),
            applies=found.get("applies"),
            span=self._decl_span(kw, name, clauses),
        )

    def c_regions(self, kw: Token, region: Token, in_: Token, value: ast.Expr) -> _Clause:
        if not isinstance(value, (ast.ListExpr, ast.ConstRef)):
            raise _syntax(
                "'require region in' needs a list of regions or the name of a const",
                value.span,
                help='for example: require region in ["eu-west-1", "eu-central-1"]',
            )
        return self._clause("regions", value, kw, value.span)

    # --- budgets, gates, routing -------------------------------------------------------------

    def budget_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.BudgetDecl:
        name = self._name(name_tok)
        found = self._clauses("budget", name, clauses)
        scope = self._require(found, "scope", "budget", name, "for workflow|model|agent|role ...")
        if not found["limit"]:
            raise _syntax(f"budget '{name.value}' needs at least one 'limit' clause", name.span)
        warn_at, warn_at_span = found.get("warn", (None, None))
        return ast.BudgetDecl(
            name,
            scope,
            tuple(found["limit"]),
            warn_at=warn_at,
            on_exceed=found.get("exceed"),
            span=self._decl_span(kw, name, clauses),
            warn_at_span=warn_at_span,
        )

    def c_scope(self, kw: Token, kind: Token, value: Token) -> _Clause:
        if kind.value not in ("workflow", "model", "agent", "role"):
            raise _syntax(
                f"a budget is for a workflow, model, agent or role, not '{kind}'",
                self._span(kind),
                help='for example: for workflow "invoice-exceptions"',
            )
        text = _unquote(value, self._path) if value.type == "STRING" else value.value
        scope = ast.BudgetScope(kind.value, text, span=self._cover(self._span(kind), self._span(value)))  # type: ignore[arg-type]
        return self._clause("scope", scope, kw, value)

    def c_limit(self, kw: Token, amount: Token, unit: Token, per: Token, window: Token) -> _Clause:
        if unit.value != "tokens" and not _CURRENCY.fullmatch(unit.value):
            raise _syntax(
                f"a limit counts 'tokens' or a currency such as USD, not '{unit}'",
                self._span(unit),
            )
        if window.value not in _WINDOWS:
            raise _syntax(
                f"a limit is per hour, day or month, not '{window}'", self._span(window)
            )
        limit = ast.BudgetLimit(
            float(_number(amount, self._path)),
            "tokens" if unit.value == "tokens" else unit.value.upper(),
            _WINDOWS[window.value],  # type: ignore[arg-type]
            span=self._cover(self._span(kw), self._span(window)),
        )
        return self._clause("limit", limit, kw, window)

    def c_warn(self, kw: Token, at: Token, value: Token, percent: Token) -> _Clause:
        span = self._cover(self._span(value), self._span(percent))
        return self._clause("warn", (float(_number(value, self._path)), span), kw, span)

    def c_exceed(self, on: Token, exceed: Token, action: Any) -> _Clause:
        return self._clause("exceed", action, on, action.span)

    def a_deny(self, kw: Token) -> ast.DenyAction:
        return ast.DenyAction(span=self._span(kw))

    def a_escalate(self, kw: Token, to: Token, role: Token, name_tok: Token) -> ast.EscalateAction:
        name = self._name(name_tok)
        return ast.EscalateAction(name, span=self._cover(self._span(kw), name.span))

    def a_route(self, kw: Token, to: Token, model: Token, name_tok: Token) -> ast.RouteAction:
        name = self._name(name_tok)
        return ast.RouteAction(name, span=self._cover(self._span(kw), name.span))

    def a_alert(self, kw: Token) -> ast.AlertAction:
        return ast.AlertAction(span=self._span(kw))

    def a_block(self, kw: Token) -> ast.BlockAction:
        return ast.BlockAction(span=self._span(kw))

    def escalate_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.EscalateDecl:
        name = self._name(name_tok)
        found = self._clauses("escalate", name, clauses)
        role = self._require(found, "role", "escalate", name, "to role ROLE")
        within, on_timeout = found.get("within", (None, "deny"))
        return ast.EscalateDecl(
            name,
            found.get("when"),
            role,
            within=within,
            on_timeout=on_timeout,
            distinct_approver=found.get("distinct", False),
            because=found.get("because"),
            cites=tuple(found["cite"]),
            applies=found.get("applies"),
            span=self._decl_span(kw, name, clauses),
        )

    def c_to_role(self, to: Token, role: Token, name_tok: Token) -> _Clause:
        name = self._name(name_tok)
        return self._clause("role", name, to, name.span)

    def c_within(self, kw: Token, duration: ast.Duration, *otherwise: Token) -> _Clause:
        effect = otherwise[1].value if otherwise else "deny"
        end = self._span(otherwise[1]) if otherwise else duration.span
        return self._clause("within", (duration, effect), kw, end)

    def c_distinct(self, kw: Token, distinct: Token, approver: Token) -> _Clause:
        return self._clause("distinct", True, kw, approver)

    # --- monitoring -------------------------------------------------------------------------

    def bias_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.BiasDecl:
        name = self._name(name_tok)
        found = self._clauses("bias", name, clauses)
        model = self._require(found, "model", "bias", name, "for model MODEL")
        metric, positive, group_by = self._require(found, "bias_metric", "bias", name, "metric M of CONDITION by PATH")
        return ast.BiasDecl(
            name,
            model,
            metric,
            positive,
            group_by,
            self._require(found, "threshold", "bias", name, "threshold >= N"),
            window=found.get("window"),
            min_samples=found.get("min_samples"),
            on_breach=found.get("breach"),
            span=self._decl_span(kw, name, clauses),
        )

    def drift_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.DriftDecl:
        name = self._name(name_tok)
        found = self._clauses("drift", name, clauses)
        metric, of = self._require(found, "drift_metric", "drift", name, "metric M of PATH")
        return ast.DriftDecl(
            name,
            self._require(found, "model", "drift", name, "for model MODEL"),
            metric,
            of,
            baseline=self._require(found, "baseline", "drift", name, "baseline previous DURATION"),
            threshold=self._require(found, "threshold", "drift", name, "threshold < N"),
            on_breach=found.get("breach"),
            span=self._decl_span(kw, name, clauses),
        )

    def c_for_model(self, kw: Token, model: Token, name_tok: Token) -> _Clause:
        name = self._name(name_tok)
        return self._clause("model", name, kw, name.span)

    def _attribute(self, value: ast.Expr, what: str) -> ast.Path:
        if not isinstance(value, ast.Path):
            raise _syntax(
                f"{what} needs an attribute path such as subject.region, not '{getattr(value, 'name', '?')}'",
                value.span,
            )
        return value

    def c_bias_metric(self, kw: Token, metric: Token, of: Token, positive: ast.Expr, by: Token, group: ast.Expr) -> _Clause:
        value = (ast.Name(metric.value, span=self._span(metric)), positive, self._attribute(group, "'by'"))
        return self._clause("bias_metric", value, kw, group.span)

    def c_drift_metric(self, kw: Token, metric: Token, of: Token, path: ast.Expr) -> _Clause:
        value = (ast.Name(metric.value, span=self._span(metric)), self._attribute(path, "'of'"))
        return self._clause("drift_metric", value, kw, path.span)

    def c_threshold(self, kw: Token, op: Token, value: Token) -> _Clause:
        if op.value not in ("<", "<=", ">", ">="):
            raise _syntax(f"a threshold uses <, <=, > or >=, not '{op}'", self._span(op))
        threshold = ast.Threshold(op.value, float(_number(value, self._path)), span=self._cover(self._span(op), self._span(value)))  # type: ignore[arg-type]
        return self._clause("threshold", threshold, kw, value)

    def c_window(self, kw: Token, duration: ast.Duration) -> _Clause:
        return self._clause("window", duration, kw, duration.span)

    def c_min_samples(self, kw: Token, samples: Token, value: Token) -> _Clause:
        number = _number(value, self._path)
        if not isinstance(number, int) or number < 0:
            raise _syntax("'min samples' needs a whole number", self._span(value))
        return self._clause("min_samples", number, kw, value)

    def c_baseline(self, kw: Token, previous: Token, duration: ast.Duration) -> _Clause:
        return self._clause("baseline", duration, kw, duration.span)

    def c_breach(self, on: Token, breach: Token, action: Any) -> _Clause:
        return self._clause("breach", action, on, action.span)

    # --- values --------------------------------------------------------------------------------

    def duration(self, value: Token, unit: Token) -> ast.Duration:
        span = self._cover(self._span(value), self._span(unit))
        scale = _DURATION_UNITS.get(unit.value)
        if scale is None:
            raise _syntax(
                f"'{unit}' is not a unit of time",
                self._span(unit),
                help="use s, min, h, days or weeks, as in '4h' or '30 days'",
            )
        seconds = _number(value, self._path) * scale
        if seconds != int(seconds) or seconds < 0:
            raise _syntax("a duration must be a whole, non-negative number of seconds", span)
        return ast.Duration(int(seconds), span=span)

    def money(self, value: Token, currency: Token) -> ast.Money:
        if not _CURRENCY.fullmatch(currency.value):
            raise _syntax(
                f"'{currency}' is not a currency code", self._span(currency), help="use a code such as USD or EUR"
            )
        return ast.Money(float(_number(value, self._path)), currency.value.upper(), span=self._cover(self._span(value), self._span(currency)))

    # --- expressions -------------------------------------------------------------------------------

    def or_expr(self, *items: ast.Expr) -> ast.Or:
        return self._nest(ast.Or(items, span=self._cover(items[0].span, items[-1].span)), items)

    def and_expr(self, *items: ast.Expr) -> ast.And:
        return self._nest(ast.And(items, span=self._cover(items[0].span, items[-1].span)), items)

    def not_expr(self, kw: Token, operand: ast.Expr) -> ast.Not:
        return self._nest(ast.Not(operand, span=self._cover(self._span(kw), operand.span)), (operand,))

    def paren(self, left: Token, expr: ast.Expr, right: Token) -> ast.Expr:
        return expr

    def compare(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Compare:
        node = ast.Compare(op.value, left, right, span=self._cover(left.span, right.span))  # type: ignore[arg-type]
        return self._nest(node, (left, right))

    def compare_in(self, left: ast.Expr, op: Token, right: ast.Expr) -> ast.Compare:
        return self._nest(ast.Compare("in", left, right, span=self._cover(left.span, right.span)), (left, right))

    def compare_not_in(self, left: ast.Expr, not_: Token, in_: Token, right: ast.Expr) -> ast.Compare:
        return self._nest(ast.Compare("not in", left, right, span=self._cover(left.span, right.span)), (left, right))

    def _op(self, op: str, left: ast.Expr, right: ast.Expr) -> ast.Compare:
        return self._nest(ast.Compare(op, left, right, span=self._cover(left.span, right.span)),  # type: ignore[arg-type]
                          (left, right))

    def compare_contains(self, left: ast.Expr, kw: Token, right: ast.Expr) -> ast.Compare:
        return self._op("contains", left, right)

    def compare_contains_any(self, left: ast.Expr, kw: Token, any_: Token, right: ast.Expr) -> ast.Compare:
        return self._op("contains any", left, right)

    def compare_contains_all(self, left: ast.Expr, kw: Token, all_: Token, right: ast.Expr) -> ast.Compare:
        return self._op("contains all", left, right)

    def compare_starts_with(self, left: ast.Expr, kw: Token, with_: Token, right: ast.Expr) -> ast.Compare:
        return self._op("starts with", left, right)

    def compare_ends_with(self, left: ast.Expr, kw: Token, with_: Token, right: ast.Expr) -> ast.Compare:
        return self._op("ends with", left, right)

    def compare_like(self, left: ast.Expr, kw: Token, right: ast.Expr) -> ast.Compare:
        return self._op("like", left, right)

    def compare_in_cidr(self, left: ast.Expr, in_: Token, cidr: Token, right: ast.Expr) -> ast.Compare:
        return self._op("in cidr", left, right)

    def has_attr(self, left: ast.Expr, has: Token, name: Token) -> ast.Compare:
        """``context has amount``: a presence test, kept as a ``has`` comparison with the name as a string."""
        if not isinstance(left, ast.Path):
            raise _syntax(f"'has' tests an attribute path such as context, not '{left.name}'",  # type: ignore[union-attr]
                          left.span, help="write 'context has amount' or 'data has classification'")
        right = ast.Literal(name.value, span=self._span(name))
        return self._nest(ast.Compare("has", left, right, span=self._cover(left.span, right.span)), (left,))

    def record_entry(self, key: Token, colon: Token, value: ast.Expr) -> tuple[str, ast.Expr, Span]:
        return _unquote(key, self._path), value, self._span(key)

    def record(self, left: Token, *rest: Any) -> ast.Record:
        """``{"eu": 10_000, "us": 20_000}``; a key written twice is an error, not a silent overwrite."""
        entries: dict[str, ast.Expr] = {}
        for entry in rest[:-1]:
            if entry is None:
                continue
            key, value, span = entry
            if key in entries:
                raise _syntax(f"the key {key!r} appears twice in the record", span)
            entries[key] = value
        node = ast.Record(tuple(entries.items()), span=self._cover(self._span(left), self._span(rest[-1])))
        return self._nest(node, tuple(entries.values()))

    def lookup(self, table: Token, left: Token, key: ast.Expr, right: Token) -> ast.Lookup:
        """``LIMITS[data.region]``: the entry of a record const."""
        ref = ast.ConstRef(table.value, span=self._span(table))
        return self._nest(ast.Lookup(ref, key, span=self._cover(ref.span, self._span(right))), (key,))

    def duration_value(self, value: Token, unit: Token) -> ast.Duration:
        """``90d`` in a condition: a duration literal (compared with ``age of ...``)."""
        if unit.value not in _DURATION_UNITS:  # most often a misspelt clause after a number, not a unit
            raise _syntax(
                f"expected 'and', 'or', a unit of time or a new clause after '{value}', found '{unit}'",
                self._span(unit),
                help="a condition continues with 'and' or 'or'; a duration is written as '4h' or '30 days'",
            )
        return self.duration(value, unit)

    def time_of(self, part: Token, of: Token, path: ast.Expr, *zone: Token) -> ast.TimeOf:
        """``hour of context.time [at "Europe/Paris"]``, ``weekday of ...``, ``age of ...``."""
        if part.value not in ast.TIME_FIELDS:
            raise _syntax(f"'{part}' is not a part of a timestamp", self._span(part),
                          help="write 'hour of', 'weekday of' or 'age of' before the timestamp")
        end = path.span
        name = None
        if zone:
            name = _unquote(zone[1], self._path)
            end = self._span(zone[1])
            if part.value == "age":
                raise _syntax("'age of' takes no zone: an age is the same in every zone", self._span(zone[0]))
        return ast.TimeOf(part.value, path, name, span=self._cover(self._span(part), end))

    def string(self, tok: Token) -> ast.Literal:
        return _new_literal(_unquote(tok, self._path), self._span(tok))  # type: ignore[no-any-return]

    def number(self, tok: Token) -> ast.Literal:
        return _new_literal(_number(tok, self._path), self._span(tok))  # type: ignore[no-any-return]

    def true(self, tok: Token) -> ast.Literal:
        return ast.Literal(True, span=self._span(tok))

    def false(self, tok: Token) -> ast.Literal:
        return ast.Literal(False, span=self._span(tok))

    def list(self, left: Token, *rest: Any) -> ast.ListExpr:
        items = tuple(item for item in rest[:-1] if item is not None)
        return self._nest(ast.ListExpr(items, span=self._cover(self._span(left), self._span(rest[-1]))), items)

    def path(self, tok: Token) -> ast.Path | ast.ConstRef:
        if tok.type == "NAME" and tok.value not in ast.ATTRIBUTE_ROOTS:
            return ast.ConstRef(tok.value, span=self._span(tok))
        root, *parts = tok.value.split(".")
        return ast.Path(root, tuple(parts), span=self._span(tok))


# --- lexer ---------------------------------------------------------------------------

_TOKEN = re.compile(  # leading whitespace is skipped in the same match as the token after it
    r"[ \t\f\r\n]*(?:"
    r"(?P<NAME>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r'|(?P<STRING>"(?:[^"\\\n]|\\[^\n])*")'
    r"|(?P<NUMBER>-?[0-9]+(?:_[0-9]+)*(?:\.[0-9]+(?:_[0-9]+)*)?)"
    r"|(?P<CMP_OP>==|!=|<=|>=|<|>)"
    r"|(?P<PUNCT>[=%()\[\],.{}:])"
    r"|(?P<COMMENT>#[^\n]*)"
    r"|(?P<END>\Z))"
)
_PUNCT = {"=": "EQUALS", "%": "PERCENT", "(": "LPAR", ")": "RPAR", "[": "LSQB", "]": "RSQB", ",": "COMMA", ".": "DOT",
          "{": "LBRACE", "}": "RBRACE", ":": "COLON"}


class _Lexer(Lexer):
    """A contextual lexer tuned for this grammar: one regex, tokens built directly.

    Like Lark's contextual lexer, a word is a keyword only where the parser can
    take that keyword; elsewhere (``context.region``, an action called ``read``)
    it is a NAME. A dotted path (``context.amount``) is one DOTTED token. Parsing
    10,000 rules with it takes ~20% less time than with Lark's generic lexer.
    """

    __future_interface__ = 2  # lex(lexer_state, parser_state), whole text in lexer_state.text

    def __init__(self, conf: Any) -> None:
        self.keywords = {
            t.pattern.value: t.name
            for t in conf.terminals
            if t.pattern.type == "str" and t.pattern.value.isalpha()
        }
        self.on_comment = conf.callbacks.get("COMMENT")
        self.path = "<string>"  # set by parse_policy for the file being read

    def lex(self, lexer_state: Any, parser_state: Any) -> Any:
        text: str = lexer_state.text.text
        match_at = _TOKEN.match
        keywords = self.keywords
        states = parser_state.parse_conf.parse_table.states
        new = str.__new__
        pos, line, line_start, depth = 0, 1, 0, 0
        while True:
            m = match_at(text, pos)
            if m is None:  # not a token after the whitespace: point at the first bad character
                bad = len(text) - len(text[pos:].lstrip(" \t\f\r\n"))
                if text.count("\n", pos, bad):
                    line += text.count("\n", pos, bad)
                    line_start = text.rindex("\n", pos, bad) + 1
                raise UnexpectedCharacters(text, bad, line, bad - line_start + 1, state=parser_state)
            kind: str = m.lastgroup  # type: ignore[assignment]  # one named group always matches
            if kind == "END":
                return
            value = m.group(kind)
            start = m.end() - len(value)
            if text.count("\n", pos, start):
                line += text.count("\n", pos, start)
                line_start = text.rindex("\n", pos, start) + 1
            pos = start
            if kind == "NAME" and "." in value:
                kind = "DOTTED"  # a whole attribute path or package name is one token
            elif kind == "NAME":
                keyword = keywords.get(value)
                if keyword is not None:
                    accepted = states[parser_state.position]
                    if keyword in accepted or "NAME" not in accepted:
                        kind = keyword
            elif kind == "PUNCT":
                kind = _PUNCT[value]
                if kind in ("LPAR", "LSQB", "LBRACE"):
                    depth += 1
                    if depth > MAX_NESTING:
                        col = pos - line_start + 1
                        raise _syntax(
                            f"brackets are nested more than {MAX_NESTING} levels deep",
                            Span(self.path, line, col, line, col + 1),
                            help="split the condition into simpler ones or named consts",
                        )
                elif kind in ("RPAR", "RSQB", "RBRACE"):
                    depth -= 1
            col = pos - line_start + 1
            tok = new(Token, value)
            tok.type, tok.value, tok.start_pos, tok.end_pos = kind, value, pos, pos + len(value)
            tok.line, tok.end_line, tok.column, tok.end_column = line, line, col, col + len(value)
            pos = tok.end_pos
            if kind == "COMMENT":
                if self.on_comment is not None:
                    self.on_comment(tok)
                continue
            lexer_state.last_token = tok
            yield tok


_LOCK = threading.Lock()
_BUILDER = Builder()
_PARSER: Lark | None = None


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        _PARSER = Lark(
            grammar_text(),
            parser="lalr",
            lexer=_Lexer,
            transformer=_BUILDER,  # type: ignore[arg-type]
            lexer_callbacks={"COMMENT": _BUILDER._on_comment},
            maybe_placeholders=True,
            cache=_grammar_cache(),
        )
    return _PARSER


def _grammar_cache() -> str | bool:
    """Where Lark keeps the analysed grammar (50 ms -> 5 ms at start-up), or False.

    A file in the user's own cache folder rather than Lark's default in the shared
    temp folder; Lark checks the grammar's hash on load and rebuilds a stale or
    corrupt file.
    """
    if not caching_enabled():
        return False
    base = cache_root()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return str(base / "grammar.lark-cache")


def _lexer(parser: Lark) -> _Lexer:
    return parser.parser.lexer  # type: ignore[attr-defined, no-any-return]


def parse_policy(text: str, path: str = "<string>") -> ast.PolicyFile:
    """Parse one policy file's text; raise ``PolicyError`` (code ``syntax``) if it is malformed."""
    if text.startswith("\ufeff"):
        text = text[1:]
    with _LOCK, paused_gc():
        parser = _parser()
        _BUILDER._begin(path, text)
        _lexer(parser).path = path
        try:
            return parser.parse(text)  # type: ignore[return-value]
        except UnexpectedInput as error:
            raise PolicyError(describe_unexpected(error, text, path)) from None
        except RecursionError:
            raise _syntax("this file is nested too deeply to read", Span(path, 1, 1, 1, 2)) from None
        finally:
            _BUILDER._end()
