"""Parse request schemas: ``schema NAME [for action A, ...]`` and its ``attribute PATH TYPE ...`` lines.

The methods are mixed into ``syntax.Builder`` (one method per grammar alias, as
everywhere in the builder); what they build is checked by ``check`` (types,
normalisations, bounds) and compiled into validators by ``schema``.
"""

from __future__ import annotations

from typing import Any

from lark import Token, Transformer, v_args

from . import ast
from .diagnostics import Span
from .syntax_tokens import number_value, syntax_error

_Clause = Any  # syntax._Clause: (kind, value, span)


@v_args(inline=True)
class SchemaSyntax(Transformer):
    """Builder methods for request schemas (they use the builder's span, path and clause helpers)."""

    def schema_decl(self, kw: Token, name_tok: Token, *clauses: _Clause) -> ast.SchemaDecl:
        name = self._name(name_tok)
        found = self._clauses("schema", name, clauses)
        if not found["attribute"]:
            raise syntax_error(f"schema '{name.value}' declares no attribute", name.span,
                          help='add a line such as: attribute context.amount number required')
        return ast.SchemaDecl(name, found.get("for", ()), tuple(found["attribute"]),
                              span=self._decl_span(kw, name, clauses))

    def c_schema_for(self, kw: Token, what: Token, names: tuple[ast.Name, ...]) -> _Clause:
        if what.value not in ("action", "actions"):
            raise syntax_error(f"a schema is for actions, not '{what}'", self._span(what),
                          help="for example: for action approve_payment, block_invoice")
        return self._clause("for", names, kw, names[-1].span)

    def c_attribute(self, kw: Token, path_tok: Token, kind: tuple[str, Any, Span], *options: tuple) -> _Clause:
        path = self.path(path_tok)
        found: dict[str, Any] = {}
        bounds_span: Span | None = None
        end = kind[2]
        for option, value, span in options:
            if option in found:
                raise syntax_error(f"'{option}' is written twice in one attribute", span,
                              help=f"keep one '{option}'")
            found[option] = value
            if option in ("min", "max") and bounds_span is None:
                bounds_span = span
            end = span
        type_name, values, type_span = kind
        attr = ast.SchemaAttribute(path, type_name, values, found.get("required", False),  # type: ignore[arg-type]
                                   found.get("normalise", ()), found.get("min"), found.get("max"),
                                   span=self._cover(self._span(kw), end), type_span=type_span,
                                   bounds_span=bounds_span)
        return self._clause("attribute", attr, kw, end)

    def t_plain(self, tok: Token) -> tuple[str, None, Span]:
        if tok.value not in ("string", "number", "bool", "timestamp"):
            raise syntax_error(f"'{tok}' is not an attribute type", self._span(tok),
                          help="types are string, number, bool, timestamp, set of string, enum [...]")
        return tok.value, None, self._span(tok)

    def t_set(self, tok: Token, of: Token, item: Token) -> tuple[str, None, Span]:
        if tok.value != "set" or item.value != "string":
            raise syntax_error(f"'{tok} of {item}' is not an attribute type", self._span(tok),
                          help="the collection type is 'set of string'")
        return "set", None, self._cover(self._span(tok), self._span(item))

    def t_enum(self, kw: Token, values: ast.Expr) -> tuple[str, ast.Expr, Span]:
        return "enum", values, self._cover(self._span(kw), values.span)

    def o_required(self, kw: Token) -> tuple[str, bool, Span]:
        return "required", True, self._span(kw)

    def o_normalise(self, kw: Token, names: tuple[ast.Name, ...]) -> tuple[str, tuple[ast.Name, ...], Span]:
        return "normalise", names, names[-1].span

    def o_min(self, kw: Token, value: Token) -> tuple[str, int | float, Span]:
        return "min", number_value(value, self._path), self._cover(self._span(kw), self._span(value))

    def o_max(self, kw: Token, value: Token) -> tuple[str, int | float, Span]:
        return "max", number_value(value, self._path), self._cover(self._span(kw), self._span(value))
