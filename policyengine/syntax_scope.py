"""Parsing scopes: the ``scope ...`` file header and the ``applies to ...`` clause.

``ScopeBuilder`` holds the transformer methods of the grammar's ``scope_target``,
``file_scope`` and ``c_applies``; ``syntax.Builder`` inherits them, so every
alias still has exactly one method. A scope names workflows (``context.workflow``
of a request) and actions; several targets of one kind add up:

    scope workflow "invoice-exceptions"
    rule r allow any to read dataset "x" applies to workflow "a", "b" action read
"""

from __future__ import annotations

from typing import Any

from lark import Token, Transformer, v_args

from . import ast
from .diagnostics import Span
from .syntax_tokens import syntax_error

SCOPE_KINDS = ("workflow", "action")


def merge_scopes(targets: tuple[tuple[str, tuple[ast.Name, ...], Span], ...], span: Span) -> ast.Scope:
    """One ``Scope`` from ``(kind, names, span)`` targets; a name given twice is refused."""
    found: dict[str, list[ast.Name]] = {kind: [] for kind in SCOPE_KINDS}
    for kind, names, _ in targets:
        for name in names:
            if any(seen.value == name.value for seen in found[kind]):
                raise syntax_error(f"{kind} {name.value!r} is named twice in this scope", name.span,
                              help="name each workflow and action once")
            found[kind].append(name)
    return ast.Scope(tuple(found["workflow"]), tuple(found["action"]), span=span)


@v_args(inline=True)
class ScopeBuilder(Transformer):
    """Transformer methods for scopes (mixed into ``syntax.Builder``, which supplies the helpers)."""

    _path: str

    def _span(self, tok: Token) -> Span:  # pragma: no cover - provided by Builder
        raise NotImplementedError

    def _cover(self, first: Span, last: Span) -> Span:  # pragma: no cover - provided by Builder
        raise NotImplementedError

    def _name(self, tok: Token) -> ast.Name:  # pragma: no cover - provided by Builder
        raise NotImplementedError

    def scope_target(self, kind: Token, *names: Token) -> tuple[str, tuple[ast.Name, ...], Span]:
        if kind.value not in SCOPE_KINDS:
            raise syntax_error(f"expected 'workflow' or 'action' in a scope, found {kind.value!r}", self._span(kind),
                          help='for example: applies to workflow "invoice-exceptions" action approve_payment')
        built = tuple(self._name(tok) for tok in names)
        if kind.value == "action":
            for name in built:
                if not ast.ACTION_NAME.fullmatch(name.value):
                    raise syntax_error(f"{name.value!r} is not an action name", name.span,
                                  help="actions are letters, digits and '_' (read, approve_payment)")
        return kind.value, built, self._cover(self._span(kind), built[-1].span)

    def _scope(self, kw: Token, targets: tuple[Any, ...]) -> ast.Scope:
        return merge_scopes(targets, self._cover(self._span(kw), targets[-1][2]))

    def file_scope(self, kw: Token, *targets: Any) -> tuple[str, ast.Scope, Token, Span]:
        scope = self._scope(kw, targets)
        return ("scope", scope, kw, scope.span)

    def c_applies(self, kw: Token, to: Token, *targets: Any) -> tuple[str, ast.Scope, Token, Span]:
        scope = self._scope(kw, targets)
        return ("applies", scope, kw, scope.span)


def join_scopes(first: ast.Scope | None, second: ast.Scope) -> ast.Scope:
    """Two ``scope`` header lines of one file are one scope (``scope workflow "a"`` then ``scope action x``)."""
    if first is None:
        return second
    targets = (("workflow", first.workflows, first.span), ("action", first.actions, first.span),
               ("workflow", second.workflows, second.span), ("action", second.actions, second.span))
    span = Span(first.span.file, first.span.line, first.span.col, second.span.end_line, second.span.end_col)
    return merge_scopes(targets, span)
