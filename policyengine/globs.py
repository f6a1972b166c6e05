"""Resource-id globs: how a rule's ``dataset "erp/invoices/*"`` pattern matches ids.

``**`` is any text, ``*`` any text within one ``/`` segment, ``?`` one character
but ``/``, ``[abc]``/``[!abc]`` one listed character (never ``/``). A pattern is
classified once (``pattern_shape``) so the common shapes match by equality or a
prefix test instead of a regex. A module of its own, without the compiler's
imports, because ``check`` asks the same question and must start fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["has_glob", "glob_regex", "glob_match", "pattern_shape", "compile_pattern", "pattern_segment",
           "pattern_problem"]


def has_glob(text: str) -> bool:
    return "*" in text or "?" in text or "[" in text


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """``pattern`` as (kind, text) tokens: ``**``, ``*``, ``?``, ``[`` (a set: its body) or ``text`` (one character)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i):
                out.append(("**", "**"))
                i += 2
                continue
            out.append(("*", ch))
        elif ch == "?":
            out.append(("?", ch))
        elif ch == "[":
            end = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1)
            if end >= 0:
                out.append(("[", pattern[i + 1:end]))
                i = end + 1
                continue
            out.append(("text", ch))
        else:
            out.append(("text", ch))
        i += 1
    return out


def _set_regex(body: str) -> str:
    negate = body.startswith("!")
    body = body[1:] if negate else body
    chars = re.escape(body).replace("\\-", "-")
    return f"[^/{chars}]" if negate else f"(?!/)[{chars}]"


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A resource-id glob as a regex: ``**`` any text, ``*`` any text within one ``/`` segment,
    ``?`` one character but ``/``, ``[abc]``/``[!abc]`` one listed character (never ``/``)."""
    parts = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    out = [parts[kind] if kind in parts else _set_regex(text) if kind == "[" else re.escape(text)
           for kind, text in _tokens(pattern)]
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def pattern_problem(pattern: str) -> str | None:
    """Why a rule's id pattern can match no id a request may send, in words; None when it can.

    A set that is empty or not a set (``[]``, ``[z-a]``) is no glob. Otherwise
    each glob part is read as one ordinary character and the result must pass as
    a canonical id (``identity.id_problem``): what fails then is in the pattern's
    own text (an empty segment, ``.``/``..``, surrounding spaces, a backslash...),
    and every id the pattern could match is malformed, so the rule never applies.
    """
    if pattern in ("*", "**"):
        return None
    tokens = _tokens(pattern)
    for kind, text in tokens:
        if kind == "[":
            body = text[1:] if text.startswith("!") else text
            try:
                re.compile(_set_regex(text))
            except re.error:
                body = ""
            if not body:
                return f"'[{text}]' is not a set of characters; write [abc], [a-z] or [!abc]"
    from .identity import id_fault

    # '0' for each glob part: no letter (of no script), no separator, no dot, no space
    return id_fault("".join(text if kind == "text" else "0" for kind, text in tokens) or "0")


def glob_match(pattern: str, rid: str) -> bool:
    """Whether ``rid`` matches the resource-id glob ``pattern`` (``*`` or ``**`` alone: every id)."""
    kind, arg = pattern_shape(pattern)
    if kind == "any":
        return True
    if kind == "exact":
        return rid == arg
    if kind == "deep":
        return rid.startswith(arg)
    if kind == "segment":
        return rid.startswith(arg) and rid.find("/", len(arg)) < 0
    return arg(rid) is not None


def pattern_shape(pattern: str) -> tuple[str, Any]:
    """Classify a resource-id glob once.

    ("any", None) for ``*`` or ``**`` alone (every id); ("exact", id); ("deep", p)
    for ``p**`` (ids starting with p); ("segment", p) for ``p*`` (p, then no ``/``);
    ("glob", match) otherwise.
    """
    if pattern == "*" or pattern == "**":
        return "any", None
    if not has_glob(pattern):
        return "exact", pattern
    if pattern.endswith("**") and not has_glob(pattern[:-2]):
        return "deep", pattern[:-2]
    if pattern.endswith("*") and not has_glob(pattern[:-1]):
        return "segment", pattern[:-1]
    return "glob", glob_regex(pattern).match


def compile_pattern(pattern: str) -> Callable[[str | None], bool] | None:
    """``None`` for ``*`` (matches every id); equality or a prefix test when that is all it takes."""
    kind, arg = pattern_shape(pattern)
    if kind == "any":
        return None
    if kind == "exact":
        return lambda rid: rid == arg
    if kind == "deep":
        return lambda rid: rid is not None and rid.startswith(arg)
    if kind == "segment":
        size = len(arg)
        return lambda rid: rid is not None and rid.startswith(arg) and rid.find("/", size) < 0
    return lambda rid: rid is not None and arg(rid) is not None


def pattern_segment(pattern: str) -> str | None:
    """The literal first path segment of every id ``pattern`` matches, or None if it varies.

    ``"erp/invoices/*"`` -> ``"erp"``; ``"calc"`` -> ``"calc"``; ``"*"`` or ``"e*/x"`` -> None.
    Rules are pre-filtered by the segment of the request's resource id.
    """
    head = pattern.partition("/")[0]
    return None if has_glob(head) else head
