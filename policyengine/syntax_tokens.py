"""What every part of the syntax builder shares: syntax errors at a span, and NUMBER tokens read exactly.

``syntax.py`` and its mixins (``syntax_routing``, ``syntax_schema``, ``syntax_scope``)
raise ``syntax_error`` for what the grammar accepts but the language does not,
and read numbers with ``number_value`` so that every number reads back as written.
"""

from __future__ import annotations

from lark import Token

from .diagnostics import Finding, PolicyError, Span

MAX_DIGITS = 100  # a longer number is refused: no policy means it, and Python refuses > 4,300


def syntax_error(message: str, span: Span, help: str | None = None) -> PolicyError:
    return PolicyError(Finding("syntax", message, span, help=help))


def token_span(tok: Token, path: str) -> Span:
    return Span(path, tok.line, tok.column, tok.end_line, tok.end_column)  # type: ignore[arg-type]


def number_value(tok: Token, path: str) -> int | float:
    """A NUMBER token's value; refuses one too long to be meant, or that would not read back as written.

    Leading zeros do not count towards ``MAX_DIGITS`` (``0.000001`` has one digit),
    so every finite float the formatter writes reads back.
    """
    text = tok.value.replace("_", "")
    negative = text.startswith("-")
    whole, point, fraction = text[negative:].partition(".")
    significant = (whole + fraction).lstrip("0")
    if len(significant) > MAX_DIGITS:
        message = f"number too long: {len(significant):,} digits, at most {MAX_DIGITS} are allowed"
    elif not point:
        value = int(whole.lstrip("0") or "0")  # int() refuses more than 4,300 digits, leading zeros included
        return -value if negative else value
    else:
        decimal = float(text)
        if abs(decimal) < 1e99 and (decimal != 0 or not significant):
            return decimal
        if decimal == 0:
            message = "number too small: it is so close to 0 that it reads as 0"
        else:  # it rounds up to 1e99, which fmt would write back with 101 digits
            message = f"number too long: it rounds up to 10^99, which needs more than {MAX_DIGITS} digits"
    raise syntax_error(
        message,
        token_span(tok, path),
        help="no policy needs a number like this; check for a pasted or repeated value",
    )
