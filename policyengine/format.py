"""One canonical layout for policy files (``policyengine fmt``).

The formatter prints the AST, not the text, so two files that mean the same
thing format the same way, and ``parse(format_policy(tree)) == tree`` always
holds. Comments are kept: an own-line comment stays before the declaration or
clause that followed it, a trailing comment stays at the end of its line.

Canonical layout: the package header (package, owner, cite), a blank line, the
imports, then declarations separated by one blank line (runs of one-line
``role`` and ``const`` declarations stay together). Each clause sits on its own
line indented by four spaces; a long ``when`` whose top level is ``or`` puts each
alternative on its own continuation line starting with ``or``, and a long
``const`` list is wrapped with its items packed onto indented lines.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from decimal import Decimal

from . import ast

__all__ = ["format_policy", "format_expr", "format_number"]

INDENT = "    "
CONTINUATION = "      or "
MAX_WIDTH = 88
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(slots=True)
class _Line:
    """One output line and the source line it came from (None when unknown)."""

    text: str
    source: int | None
    indent: str = ""
    blank: bool = False
    keyword: str = ""  # the clause's keyword, to find its line in the source when it has no span


# --- values -------------------------------------------------------------------------


def format_number(value: int | float, *, integral_as_int: bool = False) -> str:
    """Numbers as the grammar reads them: ``10_000``, ``0.85``, never ``1e-05``."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be written in a policy file")  # the parser never yields one
    if isinstance(value, float) and integral_as_int and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
        if "." not in text:
            text += ".0"
    return text


def _money(money: ast.Money) -> str:
    amount = money.amount
    if not amount.is_integer() and round(amount, 2) == amount:
        text = f"{amount:.2f}"
    else:
        text = format_number(amount, integral_as_int=True)
    return f"{text} {money.currency}"


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def _string(value: str) -> str:
    """A double-quoted string; control and other unprintable characters are escaped."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return '"' + "".join(_escape(ch) for ch in value) + '"'


def _strings(values: tuple[str, ...]) -> str:
    return ", ".join(_string(v) for v in values)


def _names(names: tuple[ast.Name, ...]) -> str:
    return ", ".join(format_name(n) for n in names)


def _duration(duration: ast.Duration) -> str:
    seconds = duration.seconds
    if seconds % 86400 == 0 and seconds != 86400:
        return f"{seconds // 86400} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")  # dotted: a package-qualified role


def format_name(name: ast.Name) -> str:
    """A role, agent or model name: bare when it can be, else quoted (``"gpt-4o"``)."""
    return name.value if _BARE_NAME.fullmatch(name.value) else _string(name.value)


def format_scope(scope: ast.Scope) -> str:
    """``workflow "a", "b" action read``: what follows ``scope`` or ``applies to``."""
    parts = []
    if scope.workflows:
        parts.append("workflow " + ", ".join(_string(w.value) for w in scope.workflows))
    if scope.actions:
        parts.append("action " + ", ".join(format_name(a) for a in scope.actions))
    return " ".join(parts)


def _applies(decl: ast.RuleDecl | ast.ResidencyDecl | ast.EscalateDecl) -> list[_Line]:
    if decl.applies is None:
        return []
    return [_clause(f"applies to {format_scope(decl.applies)}", decl.applies.span.line)]


# --- expressions ------------------------------------------------------------------------


def format_expr(expr: ast.Expr) -> str:
    """An expression on one line, with parentheses exactly where the tree needs them."""
    if isinstance(expr, ast.Or):
        return " or ".join(_wrap(item, (ast.Or,)) for item in expr.items)
    if isinstance(expr, ast.And):
        return " and ".join(_wrap(item, (ast.Or, ast.And)) for item in expr.items)
    if isinstance(expr, ast.Not):
        return "not " + _wrap(expr.operand, (ast.Or, ast.And))
    if isinstance(expr, ast.Compare):
        if expr.op == "has":  # the attribute name is written bare: context has amount
            return f"{format_expr(expr.left)} has {expr.right.value}"  # type: ignore[union-attr]
        return f"{format_expr(expr.left)} {expr.op} {format_expr(expr.right)}"
    if isinstance(expr, ast.Literal):
        value = expr.value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return _string(value)
        return format_number(value)
    if isinstance(expr, ast.ListExpr):
        return "[" + ", ".join(format_expr(item) for item in expr.items) + "]"
    if isinstance(expr, ast.Path):
        return expr.dotted
    if isinstance(expr, ast.ConstRef):
        return expr.name
    if isinstance(expr, ast.Duration):
        return _duration(expr)
    if isinstance(expr, ast.Record):
        return "{" + ", ".join(f"{_string(k)}: {format_expr(v)}" for k, v in expr.entries) + "}"
    if isinstance(expr, ast.Lookup):
        return f"{expr.table.name}[{format_expr(expr.key)}]"
    if isinstance(expr, ast.TimeOf):
        zone = f" at {_string(expr.zone)}" if expr.zone is not None else ""
        return f"{expr.part} of {format_expr(expr.operand)}{zone}"
    raise TypeError(f"not an expression: {expr!r}")


def _wrap(expr: ast.Expr, needs_parens: tuple[type, ...]) -> str:
    text = format_expr(expr)
    return f"({text})" if isinstance(expr, needs_parens) else text


# --- declarations --------------------------------------------------------------------------


def _condition(keyword: str, expr: ast.Expr) -> list[_Line]:
    """``when``/``unless``: one line, or one ``or`` alternative per line when long."""
    text = f"{INDENT}{keyword} {format_expr(expr)}"
    if not isinstance(expr, ast.Or) or len(text) <= MAX_WIDTH:
        return [_Line(text, expr.span.line, INDENT)]
    first, *rest = expr.items
    lines = [_Line(f"{INDENT}{keyword} {_wrap(first, (ast.Or,))}", first.span.line, INDENT)]
    lines += [_Line(CONTINUATION + _wrap(item, (ast.Or,)), item.span.line, INDENT) for item in rest]
    return lines


def _clause(text: str, source: int | None) -> _Line:
    words = text.split(" ", 2)
    keyword = words[1] if words[0] == "min" else words[0]  # "min" is also a unit of time; "samples" is not
    return _Line(INDENT + text, source, INDENT, keyword=keyword)


def _notes(because: str | None, cites: tuple[str, ...]) -> list[_Line]:
    lines = []
    if because is not None:
        lines.append(_clause(f"because {_string(because)}", None))
    if cites:
        lines.append(_clause(f"cite {_strings(cites)}", None))
    return lines


def _breach(action: ast.BreachAction) -> str:
    if isinstance(action, ast.EscalateAction):
        return f"escalate to role {format_name(action.role)}"
    return "block" if isinstance(action, ast.BlockAction) else "alert"


def _exceed(action: ast.ExceedAction) -> str:
    if isinstance(action, ast.EscalateAction):
        return f"escalate to role {format_name(action.role)}"
    if isinstance(action, ast.RouteAction):
        return f"route to model {format_name(action.model)}"
    return "deny"


def _route_clauses(decl: ast.RouteDecl) -> list[_Line]:
    """``prefer`` (models in order, or a strategy ``among`` models), then the bounds."""
    if decl.strategy is None:
        first, *rest = decl.prefer
        # a model called like a strategy is quoted where the strategy word would be read
        head = _string(first.value) if first.value in ("cheapest", "fastest") else format_name(first)
        lines = [_clause(f"prefer {', '.join([head, *(format_name(n) for n in rest)])}", first.span.line)]
    else:
        among = f" among {_names(decl.prefer)}" if decl.prefer else ""
        lines = [_clause(f"prefer {decl.strategy.value}{among}", decl.strategy.span.line)]
    if decl.max_latency_ms is not None:
        line = decl.latency_span.line if decl.latency_span else None
        lines.append(_clause(f"within latency {format_number(decl.max_latency_ms, integral_as_int=True)} ms", line))
    if decl.max_cost is not None:
        lines.append(_clause(f"under cost {_money(decl.max_cost)} per 1M tokens", decl.max_cost.span.line))
    return lines


def _rate_limit(limit: ast.RateLimit) -> str:
    scope = "" if limit.scope == "key" else f" for {limit.scope}"
    return f"limit {format_number(limit.amount, integral_as_int=True)} {limit.unit} per {limit.window}{scope}"


def _threshold(threshold: ast.Threshold) -> _Line:
    return _clause(f"threshold {threshold.op} {format_number(threshold.value, integral_as_int=True)}", threshold.span.line)


def _const(decl: ast.ConstDecl) -> list[_Line]:
    """One line, or a long list wrapped: items packed onto indented lines, ``]`` alone."""
    text = f"const {decl.name.value} = {format_expr(decl.value)}"
    if len(text) <= MAX_WIDTH or not isinstance(decl.value, ast.ListExpr) or not decl.value.items:
        return [_Line(text, decl.span.line)]
    lines = [_Line(f"const {decl.name.value} = [", decl.span.line)]
    row, first = "", decl.value.items[0]
    for item in decl.value.items:
        piece = format_expr(item) + ","
        if row and len(INDENT) + len(row) + 1 + len(piece) > MAX_WIDTH:
            lines.append(_Line(INDENT + row, first.span.line, INDENT))  # a row's line: its first item's
            row, first = piece, item
        else:
            row = f"{row} {piece}" if row else piece
    lines.append(_Line(INDENT + row, first.span.line, INDENT))
    lines.append(_Line("]", decl.value.span.end_line))
    return lines


def _decl_lines(decl: ast.Decl) -> list[_Line]:
    head = _Line
    if isinstance(decl, ast.RoleDecl):
        extends = f" extends {_names(decl.extends)}" if decl.extends else ""
        return [head(f"role {format_name(decl.name)}{extends}", decl.span.line)]
    if isinstance(decl, ast.ConstDecl):
        return _const(decl)
    if isinstance(decl, ast.MaskDecl):
        path = decl.path.dotted if isinstance(decl.path, ast.Path) else decl.path.name
        return [head(f"mask {path} {decl.action.value}", decl.span.line)]
    lines = [head(f"{_keyword(decl)} {format_name(decl.name)}", decl.span.line)]
    if isinstance(decl, ast.AgentDecl):
        if decl.owner is not None:
            lines.append(_clause(f"owner {_string(decl.owner)}", None))
        lines.append(_clause(f"roles {_names(decl.roles)}", decl.roles[0].span.line))
        if decl.versions:
            lines.append(_clause(f"version {', '.join(_string(v) for v in decl.versions)}", None))
    elif isinstance(decl, ast.ModelDecl):
        where = [
            f"provider {_string(decl.provider)}" if decl.provider is not None else "",
            f"region {_string(decl.region)}" if decl.region is not None else "",
            f"hosting {decl.hosting}" if decl.hosting is not None else "",
        ]
        if any(where):
            lines.append(_clause(" ".join(w for w in where if w), None))
        price = [
            f"cost {_money(decl.cost_per_1m_tokens)} per 1M tokens" if decl.cost_per_1m_tokens else "",
            f"latency {format_number(decl.latency_ms, integral_as_int=True)} ms" if decl.latency_ms is not None else "",
        ]
        if any(price):
            source = decl.cost_per_1m_tokens.span.line if decl.cost_per_1m_tokens else None
            lines.append(_clause(" ".join(p for p in price if p), source))
        if decl.versions:
            lines.append(_clause(f"version {', '.join(_string(v) for v in decl.versions)}", None))
    elif isinstance(decl, ast.RuleDecl):
        principal = decl.principal
        who = "any" if principal.kind == "any" else f"{principal.kind} {format_name(principal.name)}"  # type: ignore[union-attr]
        actions = ", ".join("any" if a.value == "*" else a.value for a in decl.actions)
        target = f"{decl.resource_kind.value} {_string(decl.resource_pattern)}"
        lines.append(_clause(f"{decl.effect} {who} to {actions} {target}", principal.span.line))
        lines += _applies(decl)
        if decl.when is not None:
            lines += _condition("when", decl.when)
        if decl.unless is not None:
            lines += _condition("unless", decl.unless)
        lines += [_clause(_rate_limit(limit), limit.span.line) for limit in decl.limits]
        lines += _notes(decl.because, decl.cites)
    elif isinstance(decl, ast.ResidencyDecl):
        lines += _applies(decl)
        if decl.when is not None:
            lines += _condition("when", decl.when)
        lines.append(_clause(f"require region in {format_expr(decl.regions)}", decl.regions.span.line))
        lines += _notes(decl.because, decl.cites)
    elif isinstance(decl, ast.BudgetDecl):
        scope = decl.scope
        bare = scope.kind != "workflow" and _IDENTIFIER.fullmatch(scope.value)
        value = scope.value if bare else _string(scope.value)
        lines.append(_clause(f"for {scope.kind} {value}", scope.span.line))
        for limit in decl.limits:
            amount = format_number(limit.amount, integral_as_int=True)
            lines.append(_clause(f"limit {amount} {limit.unit} per {limit.window}", limit.span.line))
        if decl.warn_at is not None:
            lines.append(_clause(f"warn at {format_number(decl.warn_at, integral_as_int=True)}%", None))
        if decl.on_exceed is not None:
            lines.append(_clause(f"on exceed {_exceed(decl.on_exceed)}", decl.on_exceed.span.line))
    elif isinstance(decl, ast.EscalateDecl):
        lines += _applies(decl)
        if decl.when is not None:
            lines += _condition("when", decl.when)
        lines.append(_clause(f"to role {format_name(decl.role)}", decl.role.span.line))
        if decl.within is not None:
            lines.append(_clause(f"within {_duration(decl.within)} else {decl.on_timeout}", decl.within.span.line))
        if decl.distinct_approver:
            lines.append(_clause("require distinct approver", None))
        lines += _notes(decl.because, decl.cites)
    elif isinstance(decl, ast.RouteDecl):
        if decl.when is not None:
            lines += _condition("when", decl.when)
        lines += _route_clauses(decl)
    elif isinstance(decl, ast.BiasDecl):
        lines.append(_clause(f"for model {format_name(decl.model)}", decl.model.span.line))
        metric = f"metric {decl.metric.value} of {format_expr(decl.positive)} by {decl.group_by.dotted}"
        lines.append(_clause(metric, decl.metric.span.line))
        lines.append(_threshold(decl.threshold))
        if decl.window is not None:
            lines.append(_clause(f"window {_duration(decl.window)}", decl.window.span.line))
        if decl.min_samples is not None:
            lines.append(_clause(f"min samples {format_number(decl.min_samples)}", None))
        if decl.on_breach is not None:
            lines.append(_clause(f"on breach {_breach(decl.on_breach)}", decl.on_breach.span.line))
    elif isinstance(decl, ast.DriftDecl):
        lines.append(_clause(f"for model {format_name(decl.model)}", decl.model.span.line))
        lines.append(_clause(f"metric {decl.metric.value} of {decl.of.dotted}", decl.metric.span.line))
        lines.append(_clause(f"baseline previous {_duration(decl.baseline)}", decl.baseline.span.line))
        lines.append(_threshold(decl.threshold))
        if decl.on_breach is not None:
            lines.append(_clause(f"on breach {_breach(decl.on_breach)}", decl.on_breach.span.line))
    elif isinstance(decl, ast.SchemaDecl):
        if decl.actions:
            lines.append(_clause(f"for action {_names(decl.actions)}", decl.actions[0].span.line))
        for attr in decl.attributes:
            lines.append(_clause(format_attribute(attr), attr.span.line))
    else:
        raise TypeError(f"not a declaration: {decl!r}")
    return lines


def format_attribute(attr: ast.SchemaAttribute) -> str:
    """One schema attribute line, without its indent."""
    kind = {"set": "set of string"}.get(attr.type, attr.type)
    if attr.type == "enum" and attr.values is not None:
        kind = f"enum {format_expr(attr.values)}"
    text = f"attribute {attr.path.dotted} {kind}"
    if attr.minimum is not None:
        text += f" min {format_number(attr.minimum)}"
    if attr.maximum is not None:
        text += f" max {format_number(attr.maximum)}"
    if attr.required:
        text += " required"
    if attr.normalise:
        text += f" normalise {_names(attr.normalise)}"
    return text


_KEYWORDS = {
    ast.AgentDecl: "agent",
    ast.ModelDecl: "model",
    ast.RuleDecl: "rule",
    ast.ResidencyDecl: "residency",
    ast.BudgetDecl: "budget",
    ast.EscalateDecl: "escalate",
    ast.RouteDecl: "route",
    ast.BiasDecl: "bias",
    ast.DriftDecl: "drift",
    ast.SchemaDecl: "schema",
}


def _keyword(decl: ast.Decl) -> str:
    return _KEYWORDS[type(decl)]


_WORD = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\.?[A-Za-z_][A-Za-z0-9_]*|\n')


def keyword_lines(source: str) -> dict[str, list[int]]:
    """Where each bare word occurs in ``source`` (strings, comments and ``.x`` parts skipped)."""
    found: dict[str, list[int]] = {}
    line = 1
    for match in _WORD.finditer(source):
        word = match.group()
        if word == "\n":
            line += 1
        elif word[0] not in '"#.':
            found.setdefault(word, []).append(line)
    return found


def _resolve(lines: list[_Line], last_line: int | None, words: dict[str, list[int]]) -> None:
    """Give clauses without a span (``because``, ``warn at``, ...) their source line.

    With the source text, the line is where the clause's keyword next occurs;
    without it, the line after the previous clause, and the declaration's last
    line for its last clause. Comments are placed by these lines.
    """
    previous = lines[0].source or 1
    for index, line in enumerate(lines):
        if line.source is None:
            candidates = words.get(line.keyword, ())
            at = bisect_left(candidates, previous)
            if at < len(candidates) and (last_line is None or candidates[at] <= last_line):
                line.source = candidates[at]
            elif index == len(lines) - 1 and last_line is not None:
                line.source = last_line
            else:
                line.source = previous + 1
        previous = line.source  # type: ignore[assignment]


def _one_liner(decl: ast.Decl) -> type | None:
    if isinstance(decl, ast.ConstDecl) and len(_const(decl)) > 1:
        return None  # a wrapped list stands apart
    return type(decl) if isinstance(decl, (ast.RoleDecl, ast.ConstDecl, ast.MaskDecl)) else None


def _layout(file: ast.PolicyFile, words: dict[str, list[int]]) -> list[_Line]:
    lines = [_Line(f"package {file.package.value}", file.package.span.line)]
    if file.owner is not None:
        lines.append(_Line(f"owner {_string(file.owner)}", None, keyword="owner"))
    if file.cites:
        lines.append(_Line(f"cite {_strings(file.cites)}", None, keyword="cite"))
    if file.scope is not None:
        lines.append(_Line(f"scope {format_scope(file.scope)}", file.scope.span.line))
    first_body = [n.span.line for n in (*file.imports, *file.decls)]
    _resolve(lines, min(first_body) - 1 if first_body else None, words)
    if file.imports:
        lines.append(_Line("", None, blank=True))
        lines += [_Line(f"import {imp.package.value}", imp.span.line) for imp in file.imports]
    previous: ast.Decl | None = None
    for decl in file.decls:
        together = previous is not None and _one_liner(decl) is not None and _one_liner(decl) is _one_liner(previous)
        if not together:
            lines.append(_Line("", None, blank=True))
        decl_lines = _decl_lines(decl)
        _resolve(decl_lines, decl.span.end_line, words)
        lines += decl_lines
        previous = decl
    return lines


# --- comments ------------------------------------------------------------------------------


def _place_comments(lines: list[_Line], comments: tuple[ast.Comment, ...], blanks: frozenset[int] | None) -> list[str]:
    """Interleave comments with the output lines by source line.

    ``blanks`` are the blank lines of the source, when it is known: a blank line
    after a comment block (or before a closing comment) is kept exactly when the
    source had one; without the source, a gap in line numbers stands for one.
    """
    own = sorted((c for c in comments if not c.trailing), key=lambda c: c.line)
    trailing: dict[int, list[str]] = {}
    code = [line for line in lines if not line.blank]
    for comment in sorted((c for c in comments if c.trailing), key=lambda c: c.line):
        # the last output line whose source line is at or before the comment's line
        target = 0
        for index, line in enumerate(code):
            if (line.source or 0) <= comment.line:
                target = index
        trailing.setdefault(id(code[target]) if code else 0, []).append(comment.text)

    out: list[str] = []
    next_own = 0
    for line in lines:
        if line.blank:
            out.append("")
            continue
        while next_own < len(own) and own[next_own].line < (line.source or 0):
            comment = own[next_own]
            out.append(line.indent + comment.text)
            next_own += 1
            follows = line.source or 0
            if next_own < len(own) and own[next_own].line < follows:
                follows = own[next_own].line
            if (comment.line + 1 in blanks) if blanks is not None else (follows > comment.line + 1):
                out.append("")
        text = line.text
        if id(line) in trailing:
            # source lines joined into one keep one trailing comment; the others go on their own lines
            # above it, where a second run keeps them (never merged into one "# a # b" comment)
            first, *more = trailing[id(line)]
            out.extend(line.indent + extra for extra in more)
            text += "  " + first
        out.append(text)
    previous_line = max((line.source or 0 for line in code), default=0)
    for comment in own[next_own:]:
        if (comment.line - 1 in blanks) if blanks is not None else (comment.line > previous_line + 1):
            out.append("")
        out.append(comment.text)
        previous_line = comment.line
    # a comment flushed right after a blank line belongs to what follows it; collapse blank runs
    result: list[str] = []
    for text in out:
        if text == "" and (not result or result[-1] == ""):
            continue
        result.append(text)
    while result and result[-1] == "":
        result.pop()
    return result


def format_policy(file: ast.PolicyFile, source: str | None = None) -> str:
    """The canonical text of ``file``, ending with one newline.

    Pass the ``source`` text ``file`` was parsed from when it has comments: clauses
    such as ``because`` carry no span, and the source tells which line each was
    on, so every comment stays beside the clause it was written next to.
    """
    words = keyword_lines(source) if source is not None and file.comments else {}
    blanks = None
    if source is not None and file.comments:
        blanks = frozenset(n for n, text in enumerate(source.split("\n"), 1) if not text.strip())
    return "\n".join(_place_comments(_layout(file, words), file.comments, blanks)) + "\n"
