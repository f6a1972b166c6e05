"""Syntax errors in words a compliance author understands.

Lark reports what it expected as terminal names (``NAME``, ``CMP_OP``, ``$END``);
this module turns its exceptions into one ``Finding`` that says what was
expected, after which word, and what was found instead ("expected a role name
after 'extends', found the end of the file"), with a ``help:`` line where a
common slip has an obvious fix (``=`` for ``==``, ``&&`` for ``and``).
"""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedInput, UnexpectedToken

from .diagnostics import Finding, Span

__all__ = ["describe_unexpected"]

_DECL_KEYWORDS = frozenset(
    {"ROLE", "AGENT", "MODEL", "CONST", "RULE", "RESIDENCY", "BUDGET", "ESCALATE", "ROUTE", "BIAS", "DRIFT", "SCHEMA",
     "MASK"}
)
_VALUE_START = frozenset({"NAME", "STRING", "NUMBER", "LSQB"})
_WORDS = {
    "NAME": "a name",
    "STRING": "a quoted string",
    "NUMBER": "a number",
    "CMP_OP": "a comparison (==, !=, <, <=, >, >=)",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "EQUALS": "'='",
    "PERCENT": "'%'",
    "COMMA": "','",
    "DOT": "'.'",
    "$END": "the end of the file",
    "_AND": "'and'",
    "_OR": "'or'",
}
_NAME_AFTER = {
    "extends": "a role name",
    "role": "a role name",
    "roles": "a role name",
    "agent": "an agent name",
    "model": "a model name",
    "prefer": "a model name",
    "package": "a package name such as finance.invoices",
    "import": "a package name such as common.regions",
    "metric": "a metric name such as disparate_impact or psi",
    "hosting": "'internal' or 'external'",
    "for": "what the budget is for (workflow, model, agent or role)",
}
_LEX = re.compile(
    r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|-?[0-9][0-9_]*(?:\.[0-9_]+)?|==|!=|<=|>=|\S'
)


def _word(terminal: str) -> str:
    return _WORDS.get(terminal, f"'{terminal.lower()}'")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _previous(text: str, pos: int) -> re.Match[str] | None:
    """The last token before ``pos`` (comments skipped); only used on the error path."""
    last = None
    for match in _LEX.finditer(text, 0, pos):
        if not match.group().startswith("#"):
            last = match
    return last


def _expectation(expected: set[str], prev: str, prev_is_number: bool) -> str:
    after = f" after '{prev}'" if prev else ""
    if expected == {"NAME", "STRING", "DOTTED"}:  # a name that may also be package-qualified (finance.analyst)
        expected = {"NAME", "STRING"}
    if expected == {"NAME", "STRING"} and prev in _NAME_AFTER:  # a name that may be quoted ("gpt-4o")
        return f"expected {_NAME_AFTER[prev]}{after}"
    if expected == {"NAME", "STRING"} and prev.lower() in {k.lower() for k in _DECL_KEYWORDS}:
        return f"expected a name for the {prev}{after}"
    if expected == {"NAME"} and prev in _NAME_AFTER:
        return f"expected {_NAME_AFTER[prev]}{after}"
    if expected == {"NAME"} and prev_is_number:
        return f"expected a unit after the number '{prev}' (such as h, days, USD or tokens)"
    if expected == {"NAME"} and prev.lower() in {k.lower() for k in _DECL_KEYWORDS}:
        return f"expected a name for the {prev}{after}"
    if expected == {"PACKAGE"}:
        return "expected 'package NAME' at the start of the file"
    if expected == {"TO"}:
        if prev == "escalate":
            return "expected 'to role ROLE' after 'escalate'"
        return "expected 'to' and an action after the principal"
    if expected == {"ROLE"}:
        return f"expected 'role' and a role name{after}"
    if expected == {"MODEL"}:
        return f"expected 'model' and a model name{after}"
    if expected <= {"ALLOW", "DENY"}:
        return "expected 'allow' or 'deny' after the rule name"
    if expected == {"ANY", "ROLE", "AGENT"}:
        return f"expected who the rule applies to ('any', 'role NAME' or 'agent NAME'){after}"
    if expected == {"NAME", "ANY"}:
        return f"expected an action such as read or invoke{after}"
    if expected == {"NAME", "COMMA"}:
        return f"expected a resource kind (model, dataset, tool, agent or workflow) after the action '{prev}'"
    if _VALUE_START <= expected:
        if "NOT" in expected or "LPAR" in expected:
            return f"expected a condition such as context.amount > 100{after}"
        return f"expected a value (a string, number, list, or attribute such as data.origin){after}"
    if expected == {"NUMBER"} and prev in ("within", "window", "previous"):
        return f"expected a duration such as 4h or 30 days{after}"
    if _DECL_KEYWORDS <= expected:
        words = [_word(t) for t in sorted(expected - _DECL_KEYWORDS - {"$END"}, key=_order)]
        tail = "a new declaration (rule, role, model, ...)"
        return f"expected {_join([*words, tail])}{after}"
    return f"expected {_join([_word(t) for t in sorted(expected, key=_order)])}{after}"


def _order(terminal: str) -> tuple[int, str]:
    return (0 if terminal in ("_AND", "_OR") else 1 if terminal.isupper() else 2, terminal)


def _found(tok: Token) -> str:
    if tok.type == "$END":
        return "the end of the file"
    value = tok.value if len(tok.value) <= 30 else tok.value[:27] + "..."
    if tok.type == "STRING":
        return f"the string {value}"
    if tok.type == "NUMBER":
        return f"the number {value}"
    return f"'{value}'"


def _position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


_CHAR_HELP = {
    "&": "write 'and' to combine conditions",
    "|": "write 'or' for alternatives",
    "!": "write 'not' to negate a condition, or '!=' for 'not equal'",
    "'": 'strings are written in double quotes: "like this"',
    "{": "lists are written in square brackets: [\"a\", \"b\"]",
}


def _accepted(error: UnexpectedToken) -> set[str]:
    """The terminals that could really come next.

    Lark's ``expected`` is the LALR lookahead of the failing state, which merges
    lookaheads from unrelated places; the interactive parser tries each one.
    """
    expected = set(error.expected)
    interactive = getattr(error, "interactive_parser", None)
    if interactive is not None:
        try:
            expected = set(interactive.accepts()) or expected
        except Exception:  # noqa: BLE001 - fall back to Lark's coarser set
            pass
    return {t for t in expected if not t.startswith("__")}


def describe_unexpected(error: UnexpectedInput, text: str, path: str) -> Finding:
    """Turn any Lark ``UnexpectedInput`` into one ``syntax`` finding in plain words."""
    if isinstance(error, UnexpectedToken):
        tok = error.token
        at_end = tok.type == "$END"
        pos = len(text) if at_end else tok.start_pos
        prev = _previous(text, pos)
        prev_text = prev.group() if prev else ""
        prev_is_number = bool(prev and prev_text[-1:].isdigit())
        expected = _accepted(error)
        message = f"{_expectation(expected, prev_text, prev_is_number)}, found {_found(tok)}"
        help = None
        if tok.type == "EQUALS" and "CMP_OP" in expected:
            message, help = "'=' is not a comparison", "write '==' to compare two values"
        elif tok.type == "DOT":
            message = "a '.' must join two names"
            help = "write paths and package names without spaces or a dot at the end, as in context.amount"
        if at_end:
            line, col = _position(text, prev.end()) if prev else (1, 1)
            span = Span(path, line, col, line, col + 1)
        else:
            span = Span(path, tok.line, tok.column, tok.end_line, tok.end_column)
        return Finding("syntax", message, span, help=help)
    pos = getattr(error, "pos_in_stream", 0) or 0
    line, col = _position(text, pos)
    char = text[pos] if pos < len(text) else ""
    span = Span(path, line, col, line, col + 1)
    if char == '"':
        return Finding("syntax", "this string is not closed", span, help='a string ends with " on the same line')
    shown = repr(char)[1:-1] if char.isprintable() else f"U+{ord(char):04X}" if char else "end of file"
    quoted = f'"{shown}"' if shown == "'" else f"'{shown}'"
    return Finding("syntax", f"unexpected character {quoted}", span, help=_CHAR_HELP.get(char))
