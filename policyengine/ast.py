"""The typed, immutable syntax tree of policy files.

Nodes hold no logic. Every node carries the ``Span`` it was parsed from; spans are
ignored by equality so that two trees compare on meaning, which is what makes
``parse(fmt(tree)) == tree`` a one-line property.

Units are normalised by the parser: durations are whole seconds, percentages are
the number written (``80%`` -> ``80.0``), money is an amount plus an upper-case
currency code.
"""

from __future__ import annotations

import dataclasses
import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal as TLiteral, Union

from .diagnostics import Span

# How an action is spelled (the grammar's NAME): rule heads, schemas, scopes and requests alike.
ACTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _span():
    return field(compare=False, repr=False, kw_only=True)


def _part_span():
    """The span of one part of a node that has no node of its own (a value written as a bare token)."""
    return field(default=None, compare=False, repr=False, kw_only=True)


# --- values -------------------------------------------------------------------

ATTRIBUTE_ROOTS = frozenset(
    {"principal", "action", "resource", "data", "context", "subject", "outcome", "output"}
)


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time as written (``4h``, ``30 days``), kept in seconds."""

    seconds: int
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Money:
    amount: float
    currency: str
    span: Span = _span()


# --- expressions ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Literal:
    """A string, number or boolean constant (``"pii"``, ``10_000``, ``0.85``, ``true``)."""

    value: str | int | float | bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Path:
    """An attribute of the request: ``context.tokens``, ``action``, ``data.origin``.

    ``root`` is one of ``ATTRIBUTE_ROOTS`` for a valid path; the parser keeps an
    unknown root so the checker can point at it.
    """

    root: str
    parts: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join((self.root, *self.parts))


@dataclass(frozen=True, slots=True)
class ConstRef:
    """A reference to a ``const`` of this package or of an imported one (``EU``)."""

    name: str
    span: Span = _span()


CompareOp = TLiteral["==", "!=", "<", "<=", ">", ">=", "in", "not in", "has", "contains", "contains any",
                     "contains all", "starts with", "ends with", "like", "in cidr"]
SET_OPS = ("contains", "contains any", "contains all")
STRING_OPS = ("starts with", "ends with", "like")
IP_OPS = ("in cidr",)


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    span: Span = _span()


TIME_FIELDS = ("hour", "weekday", "age")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class TimeOf:
    """``hour of context.time [at "Europe/Paris"]``, ``weekday of ...``, ``age of ...``.

    A part of an RFC 3339 timestamp (in UTC, or in ``zone``), or its age: the
    time from it to the decision's clock, compared with durations.
    """

    part: str  # one of TIME_FIELDS
    operand: Expr
    zone: str | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Record:
    """``{"eu": 10_000, "us": 20_000}``: a const value looked up by key (``LIMITS[data.region]``)."""

    entries: tuple[tuple[str, Expr], ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Lookup:
    """``LIMITS[data.region]``: the entry of a record const; a key it does not hold is a condition error."""

    table: ConstRef
    key: Expr
    span: Span = _span()


Expr = Union[Literal, ListExpr, Path, ConstRef, Compare, And, Or, Not, Duration, TimeOf, Record, Lookup]


# --- declarations -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier as written, with its own span so errors can point at it."""

    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Import:
    """``import common.regions``: the consts of that package become visible."""

    package: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RoleDecl:
    name: Name
    extends: tuple[Name, ...] = ()
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class AgentDecl:
    """An agent identity; its roles are its whole scope of authority."""

    name: Name
    owner: str | None
    roles: tuple[Name, ...]
    span: Span = _span()
    versions: tuple[str, ...] = ()  # released versions (``version "1.0", "1.1"``); aliases live in the audit log


@dataclass(frozen=True, slots=True)
class ModelDecl:
    """A model registry entry; its attributes are merged into ``resource.*``."""

    name: Name
    provider: str | None = None
    region: str | None = None
    hosting: str | None = None  # "internal" | "external"
    cost_per_1m_tokens: Money | None = None
    latency_ms: float | None = None
    span: Span = _span()
    hosting_span: Span | None = _part_span()  # the hosting word, for the checker's caret
    versions: tuple[str, ...] = ()  # released versions (``version "2.3.1", "2.4.0"``); see models_registry


@dataclass(frozen=True, slots=True)
class ConstDecl:
    name: Name
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a declaration applies: ``applies to workflow "invoices" action approve_payment``.

    A request is in scope when its ``context.workflow`` is one of ``workflows``
    (if any are named) and its action one of ``actions`` (if any are named). As a
    file header (``scope workflow "invoices"``) it bounds every rule, residency
    and escalation of the file (see ``policyengine/scoping.py``).
    """

    workflows: tuple[Name, ...] = ()
    actions: tuple[Name, ...] = ()
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class PrincipalMatch:
    """Who a rule is about: ``any``, ``role X`` or ``agent X``."""

    kind: TLiteral["any", "role", "agent"]
    name: Name | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit 60 requests per minute for team``: at most ``amount`` per window, counted per ``scope``."""

    amount: float
    unit: TLiteral["requests", "tokens"]
    window: TLiteral["second", "minute", "hour", "day"]
    scope: TLiteral["key", "team", "model", "principal"] = "key"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RuleDecl:
    """``allow``/``deny`` PRINCIPAL ``to`` ACTIONS KIND "PATTERN" [when] [unless] [because] [cite]."""

    name: Name
    effect: TLiteral["allow", "deny"]
    principal: PrincipalMatch
    actions: tuple[Name, ...]  # one or more action names; ``any`` is Name("*")
    resource_kind: Name
    resource_pattern: str  # glob on the resource id; "*" matches every id
    when: Expr | None = None
    unless: Expr | None = None
    because: str | None = None
    cites: tuple[str, ...] = ()
    applies: Scope | None = None  # ``applies to ...``; None: wherever the file's scope reaches
    span: Span = _span()
    pattern_span: Span | None = _part_span()  # the quoted pattern; None when it is left out ("*")
    limits: tuple[RateLimit, ...] = ()  # ``limit N requests per minute [for key]`` (allow rules; the gateway counts)


@dataclass(frozen=True, slots=True)
class ResidencyDecl:
    """When ``when`` holds, the compute region must be in ``regions``."""

    name: Name
    when: Expr | None
    regions: Expr  # ListExpr or ConstRef
    because: str | None = None
    cites: tuple[str, ...] = ()
    applies: Scope | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BudgetScope:
    kind: TLiteral["workflow", "model", "agent", "role"]
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """``limit 2_000_000 tokens per month`` or ``limit 500 USD per day``."""

    amount: float
    unit: str  # "tokens" or a currency code such as "USD"
    window: TLiteral["hour", "day", "month"]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DenyAction:
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class EscalateAction:
    role: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RouteAction:
    model: Name
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class AlertAction:
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BlockAction:
    """Suspend the model: the engine denies it until it is unblocked."""

    span: Span = _span()


ExceedAction = Union[DenyAction, EscalateAction, RouteAction]
BreachAction = Union[AlertAction, BlockAction, EscalateAction]


@dataclass(frozen=True, slots=True)
class BudgetDecl:
    name: Name
    scope: BudgetScope
    limits: tuple[BudgetLimit, ...]
    warn_at: float | None = None  # percent, 0..100
    on_exceed: ExceedAction | None = None  # None means deny
    span: Span = _span()
    warn_at_span: Span | None = _part_span()  # the percentage, such as 80%


@dataclass(frozen=True, slots=True)
class EscalateDecl:
    """A human approval gate: matching requests need an approval from ``role``."""

    name: Name
    when: Expr | None
    role: Name
    within: Duration | None = None
    on_timeout: TLiteral["deny", "allow"] = "deny"
    distinct_approver: bool = False
    because: str | None = None
    cites: tuple[str, ...] = ()
    applies: Scope | None = None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RouteDecl:
    """``prefer a, b`` (in order) or ``prefer cheapest|fastest [among a, b]`` (every declared model
    when ``among`` is left out: ``prefer`` is then empty), optionally bounded by the models'
    declared latency and cost."""

    name: Name
    when: Expr | None
    prefer: tuple[Name, ...]
    span: Span = _span()
    strategy: Name | None = None  # "cheapest" | "fastest"
    max_latency_ms: float | None = None  # ``within latency N ms``
    max_cost: Money | None = None  # ``under cost M USD per 1M tokens`` (kept per 1M)
    latency_span: Span | None = _part_span()


@dataclass(frozen=True, slots=True)
class Threshold:
    op: TLiteral["<", "<=", ">", ">="]
    value: float
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BiasDecl:
    """``metric disparate_impact of outcome == "x" by subject.group``."""

    name: Name
    model: Name
    metric: Name  # disparate_impact | demographic_parity | equalized_odds
    positive: Expr  # the condition that counts as a positive outcome
    group_by: Path
    threshold: Threshold
    window: Duration | None = None
    min_samples: int | None = None
    on_breach: BreachAction | None = None  # None means alert
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DriftDecl:
    name: Name
    model: Name
    metric: Name  # psi | ks | chi2
    of: Path
    baseline: Duration  # ``baseline previous 30 days``
    threshold: Threshold
    on_breach: BreachAction | None = None
    span: Span = _span()


ATTRIBUTE_TYPES = ("string", "number", "bool", "timestamp", "set", "enum")
NORMALISATIONS = ("casefold", "trim", "nfkc")


@dataclass(frozen=True, slots=True)
class SchemaAttribute:
    """``attribute data.vendor_status enum ["active", "sanctioned"] required normalise casefold, trim``.

    ``type`` is one of ``ATTRIBUTE_TYPES`` (``set`` means a list of strings);
    ``values`` is the enum's list (or const); ``normalise`` names steps of
    ``NORMALISATIONS`` applied, in order, to the string (or each set member) before
    any rule reads it; ``minimum`` and ``maximum`` (``min 0 max 1``) bound a number,
    both inclusive.
    """

    path: Path
    type: str
    values: Expr | None = None
    required: bool = False
    normalise: tuple[Name, ...] = ()
    minimum: int | float | None = None
    maximum: int | float | None = None
    span: Span = _span()
    type_span: Span | None = _part_span()
    bounds_span: Span | None = _part_span()  # the first of ``min``/``max``, for the checker's messages


@dataclass(frozen=True, slots=True)
class SchemaDecl:
    """The request attributes the policy reads, typed; requests are validated before any rule runs."""

    name: Name
    actions: tuple[Name, ...]  # the actions it applies to; () = every request
    attributes: tuple[SchemaAttribute, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class MaskDecl:
    """``mask data.customer.email hash``: a request field the audit log drops or hashes.

    ``path`` is what the parser read (a ``ConstRef`` for a bare word, so the
    checker can say the path is malformed); ``action`` is checked to be
    ``hash`` or ``drop``.
    """

    path: Path | ConstRef
    action: Name
    span: Span = _span()


Decl = Union[
    RoleDecl,
    AgentDecl,
    ModelDecl,
    ConstDecl,
    RuleDecl,
    ResidencyDecl,
    BudgetDecl,
    EscalateDecl,
    RouteDecl,
    BiasDecl,
    DriftDecl,
    SchemaDecl,
    MaskDecl,
]


@dataclass(frozen=True, slots=True)
class Comment:
    """A ``#`` comment, kept so the formatter can write it back."""

    line: int
    text: str  # including the leading '#'
    trailing: bool  # True when code precedes it on the same line


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """One parsed ``.policy`` file."""

    package: Name
    owner: str | None = None
    cites: tuple[str, ...] = ()
    imports: tuple[Import, ...] = ()
    decls: tuple[Decl, ...] = ()
    scope: Scope | None = None  # the ``scope ...`` header lines: where the package's declarations apply
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
    path: str = field(default="<string>", compare=False)
    span: Span = _span()


# --- building trees in bulk (the parser and the loader's cache) --------------------------------


def fast_constructor(cls: type, names: "tuple[str, ...] | None" = None) -> Any:
    """A positional constructor for a frozen, slotted dataclass that sets the slots directly.

    ``cls(...)`` goes through the generated ``__init__`` and ``object.__setattr__``
    per field; this skips the name lookups and is about twice as fast, which
    counts for the ~250,000 spans and names of 10,000 rules. Fields are given in
    declaration order, keyword-only ones (``span``) last, as ``dataclasses.fields``
    lists them. The loader uses the same constructors to unpickle cached trees.
    ``names`` sets only those fields, in that order (the others are left unset).
    """
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
    params = ", ".join(f"v{i}" for i in range(len(names)))
    body = "".join(f"    set{i}(node, v{i})\n" for i in range(len(names)))
    name = f"make_{cls.__name__}"
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    scope.update({f"set{i}": cls.__dict__[field].__set__ for i, field in enumerate(names)})
    exec(f"def {name}({params}):\n    node = new(cls)\n{body}    return node\n", scope)  # noqa: S102
    return scope[name]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a big acyclic tree.

    The AST has no reference cycles, but allocating hundreds of thousands of
    nodes triggers full collections over and over; pausing them makes a large
    parse (or unpickling a cached tree) 25-65% faster.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def attribute_paths(node: Any) -> list[Path]:
    """Every attribute path in the syntax trees under ``node`` (declarations, conditions, values); a presence test
    (``context has review``) counts as the path it tests (``context.review``), which it reads as much."""
    found: list[Path] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Path):
            found.append(n)
        elif isinstance(n, Compare) and n.op == "has" and isinstance(n.left, Path) and isinstance(n.right, Literal):
            found.append(Path(n.left.root, (*n.left.parts, str(n.right.value)), span=n.span))
        elif isinstance(n, (tuple, list)):
            stack.extend(n)
        elif dataclasses.is_dataclass(n) and not isinstance(n, type):
            stack.extend(getattr(n, f.name) for f in dataclasses.fields(n))
    return found
