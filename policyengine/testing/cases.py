"""The policy test-file format and its loader.

Policy tests are YAML data, not code, so that compliance authors can write them
beside the rule files they check (``rules/finance/invoices_test.yaml``). The
loader walks PyYAML's node tree rather than plain loaded data so that every
mistake in a test file is reported as ``file:line: message``: an unknown field,
an unknown expected effect or a request of the wrong shape never becomes a
traceback or, worse, a test that silently checks nothing. See
``docs/policy-tests.md`` for the format.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml  # type: ignore[import-untyped]
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode  # type: ignore[import-untyped]

from .. import yamlfile
from ..diagnostics import Span
from .discovery import POLICY_SUFFIX, PolicySource, policy_files_of, shown_path

Effect = Literal["allow", "deny", "escalate"]
EFFECTS: tuple[str, ...] = ("allow", "deny", "escalate")
RESOURCE_KINDS: tuple[str, ...] = ("model", "dataset", "tool", "agent", "workflow")
# A fixed default clock keeps budget windows and escalation deadlines reproducible.
DEFAULT_NOW = _dt.datetime(2026, 1, 15, 12, 0, tzinfo=_dt.UTC)

# Top-level keys starting with ``x-`` are ignored: a place for YAML anchors (``x-base: &base``).
_FILE_KEYS = ("policy", "now", "fixtures", "cases", "monitors")
_FIXTURE_KEYS = ("principals", "resources")
_REQUEST_KEYS = ("principal", "action", "resource", "data", "context", "approvals")
_CASE_KEYS = ("name", "description", "request", "now", "usage", "expect", "rules", "route", "obligations", "cites")
_PRINCIPAL_KEYS = ("fixture", "id", "type", "roles", "attrs")
_RESOURCE_KEYS = ("fixture", "kind", "id", "attrs")
_APPROVAL_KEYS = ("gate", "approver", "roles", "ts", "run_id", "request_hash")
_MONITOR_KEYS = ("name", "description", "rule", "now", "rows", "data", "reference", "current", "expect")
_MONITOR_EXPECT_KEYS = ("breach", "value", "tolerance", "action", "error")
# Columns of a monitor sample row (inline or in a CSV file); which apply depends on the rule's kind.
SAMPLE_COLUMNS: tuple[str, ...] = ("group", "outcome", "label", "value", "side", "count", "at", "ago", "model")
MONITOR_ACTIONS: tuple[str, ...] = ("alert", "escalate", "block")
DEFAULT_TOLERANCE = 1e-9
MAX_COUNT = 1_000_000  # calls one sample row may stand for: samples stay small and fast
_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?|w|weeks?)\s*$")
_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Fields an expected obligation may name, per kind (mirrors policyengine.decision).
OBLIGATION_FIELDS: Mapping[str, tuple[str, ...]] = {
    "approval_required": ("gate", "role", "deadline_seconds", "on_timeout", "distinct_approver"),
    "budget_warning": ("budget", "unit", "window", "used", "limit", "percent"),
}
# The shorthand key of each kind names its main field: ``approval_required: senior_analyst``.
_OBLIGATION_MAIN = {"approval_required": "role", "budget_warning": "budget"}


class TestFileError(Exception):
    """A test file that cannot be used, with the place to fix it."""

    __test__ = False  # not a pytest test class

    def __init__(self, span: Span, message: str):
        self.span = span
        self.message = message
        super().__init__(f"{span.file}:{span.line}: {message}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Budget usage charged into the case's fresh ledger before it is decided.

    ``target`` is a ledger scope key (``workflow:invoice-exceptions``) or a budget
    id (``finance.invoices.invoice_workflow``) resolved by the runner.
    """

    target: str
    unit: str
    amount: float
    span: Span  # the target
    unit_span: Span | None = None  # the unit, where an unknown one is reported


@dataclass(frozen=True, slots=True)
class ExpectedObligation:
    """One obligation the decision must carry; only the named fields are compared."""

    kind: str
    fields: tuple[tuple[str, Any], ...]
    span: Span

    def describe(self) -> str:
        return self.kind + "(" + ", ".join(f"{k}={v!r}" for k, v in self.fields) + ")"


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the decision must be. ``None`` means "not checked" for the optional parts."""

    effect: Effect
    rules: tuple[str, ...] | None = None
    rules_span: Span | None = None
    check_route: bool = False
    route: str | None = None
    obligations: tuple[ExpectedObligation, ...] | None = None
    cites: tuple[str, ...] = ()  # citations the decision's reasons must include


@dataclass(frozen=True, slots=True)
class Case:
    """One named request and the decision expected for it."""

    __test__ = False

    name: str
    request_json: str  # canonical JSON of the expanded request (immutable)
    expect: Expectation
    now: _dt.datetime
    usage: tuple[Usage, ...] = ()
    description: str | None = None
    span: Span = field(default=Span("<unknown>", 1, 1, 1, 1), compare=False)

    @property
    def request(self) -> dict[str, Any]:
        """A fresh copy of the request, so a run can never alter the case."""
        return json.loads(self.request_json)


@dataclass(frozen=True, slots=True)
class SampleRow:
    """One model call of a monitor case's sample data, repeated ``count`` times.

    Bias rows give ``group``, ``outcome`` and optionally ``label``; drift rows
    give ``value`` and either a ``side`` (reference or current) or a time. The
    time is ``at``, or ``ago`` seconds before the case's ``now``; when neither is
    given the runner places the row in the middle of the rule's window.
    """

    span: Span
    count: int = 1
    group: Any = None
    outcome: Any = None
    label: Any = None
    value: Any = None
    side: str | None = None
    at: _dt.datetime | None = None
    ago: float | None = None
    model: str | None = None
    given: tuple[str, ...] = ()  # the columns the row sets, to check them against the rule's kind


@dataclass(frozen=True, slots=True)
class MonitorExpectation:
    """What a bias or drift rule must conclude on the sample; ``None`` means "not checked"."""

    breach: bool | None
    check_value: bool = False
    value: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    action: str | None = None
    error: str | None = None  # a part of the message when the rule cannot be evaluated


@dataclass(frozen=True, slots=True)
class MonitorCase:
    """One bias or drift rule run by the monitor over sample model calls."""

    __test__ = False

    name: str
    rule: str
    rows: tuple[SampleRow, ...]
    expect: MonitorExpectation
    now: _dt.datetime
    rule_span: Span
    description: str | None = None
    span: Span = field(default=Span("<unknown>", 1, 1, 1, 1), compare=False)
    data_file: str | None = None  # the CSV file ``data:`` named, as it was opened


@dataclass(frozen=True, slots=True)
class TestFile:
    """A parsed test file: the policy files it tests and its cases."""

    __test__ = False

    path: str
    policy_files: tuple[str, ...]
    cases: tuple[Case, ...]
    policy_span: Span
    monitors: tuple[MonitorCase, ...] = ()
    # where ``policy_files`` were found (``policy:`` folders and files, or the folder beside the test file)
    policy_sources: tuple[PolicySource, ...] = ()

    @property
    def data_files(self) -> tuple[str, ...]:
        """The CSV files the monitor cases read their samples from."""
        return tuple(dict.fromkeys(m.data_file for m in self.monitors if m.data_file is not None))


# --- YAML nodes with positions ------------------------------------------------------------


class _Reader:
    """Turns YAML nodes into typed values, failing with ``file:line`` on any mistake.

    Parsing (safe loader, alias and size bounds) is ``policyengine.yamlfile``'s.
    """

    def __init__(self, path: str, text: str):
        self.path = path
        self._text = text
        self._loader: Any = None

    def root(self) -> Node | None:
        try:
            self._loader, node = yamlfile.compose(self._text, self.path, "test file")
        except yamlfile.YamlFileError as exc:
            line = exc.line or 1
            message = exc.message.replace("test file is not valid YAML: ", "invalid YAML: ")
            raise TestFileError(Span(self.path, line, 1, line, 1), message) from None
        return node

    def span(self, node: Node) -> Span:
        s, e = node.start_mark, node.end_mark
        return Span(self.path, s.line + 1, s.column + 1, e.line + 1, e.column + 1)

    def fail(self, node: Node, message: str) -> TestFileError:
        return TestFileError(self.span(node), message)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        """A mapping's entries by key (key node, value node); unknown keys are errors."""
        if not isinstance(node, MappingNode):
            raise self.fail(node, f"{what} must be a mapping, got {_kind(node)}")
        own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        try:
            self._loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults) go first
        except yaml.YAMLError as exc:  # a merge key whose value is not a mapping (<<: 5)
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else self.span(node).line
            raise TestFileError(Span(self.path, line, 1, line, 1),
                                f"{what}: a merge key (<<) needs a mapping or a list of mappings") from None
        merged = len(node.value) - own
        out: dict[str, tuple[Node, Node]] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.plain(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, f"{what}: keys must be strings, got {key!r}")
            if allowed and key not in allowed and not (allowed is _FILE_KEYS and key.startswith("x-")):
                raise self.fail(key_node, f"unknown field {key!r} in {what} (expected one of: {', '.join(allowed)})")
            if key in out and index < merged:
                continue  # the first of several merged values wins
            if key in out and index >= merged and not _merged_entry(out[key], node.value[:merged]):
                raise self.fail(key_node, f"duplicate field {key!r} in {what}")
            out[key] = (key_node, value_node)
        return out

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            raise self.fail(node, f"{what} must be a list, got {_kind(node)}")
        return list(node.value)

    def plain(self, node: Node) -> Any:
        """The node as plain JSON-like data (dates become ISO strings)."""
        try:
            value = self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self.fail(node, f"invalid value: {exc}") from None
        return _jsonable(value)

    def string(self, node: Node, what: str) -> str:
        value = self.plain(node) if isinstance(node, ScalarNode) else None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{what} must be a non-empty string, got {_show(node, value)}")
        return value

    def strings(self, node: Node, what: str) -> tuple[str, ...]:
        if isinstance(node, ScalarNode):
            return (self.string(node, what),)
        return tuple(self.string(item, f"each item of {what}") for item in self.sequence(node, what))

    def number(self, node: Node, what: str) -> float:
        value = self.plain(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, str):
            try:
                value = float(value.replace("_", ""))
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(node, f"{what} must be a number, got {_show(node, value)}")
        return float(value)

    def data(self, node: Node, what: str) -> dict[str, Any]:
        self.mapping(node, what, ())
        value = self.plain(node)
        assert isinstance(value, dict)
        return value

    def instant(self, node: Node, what: str) -> _dt.datetime:
        value = self._loader.construct_object(node, deep=True) if isinstance(node, ScalarNode) else None
        if isinstance(value, str):
            try:
                value = _dt.datetime.fromisoformat(value)
            except ValueError:
                value = None
        if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
            value = _dt.datetime(value.year, value.month, value.day)
        if not isinstance(value, _dt.datetime):
            raise self.fail(node, f"{what} must be a date-time such as 2026-01-15T12:00:00Z")
        return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)


def _merged_entry(entry: tuple[Node, Node], merged: list[tuple[Node, Node]]) -> bool:
    """Whether a mapping entry came in through a merge key (an explicit key may override it)."""
    return any(entry[0] is k for k, _ in merged)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return repr(node.value) if node.value != "" else "nothing"


def _show(node: Node, value: Any) -> str:
    return _kind(node) if not isinstance(node, ScalarNode) else repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, _dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=_dt.UTC)).isoformat().replace("+00:00", "Z")
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


# --- the format ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fixtures:
    principals: Mapping[str, dict[str, Any]]
    resources: Mapping[str, dict[str, Any]]


def load_test_file(path: str | Path) -> TestFile:
    """Parse one test file; raises ``TestFileError`` naming ``file:line`` on any mistake."""
    path = Path(path)
    shown = shown_path(str(path))
    if path.is_dir():  # one discovery could not list: its test files would not run
        why = "listing it failed"
        try:
            os.listdir(path)
        except OSError as exc:
            why = exc.strerror or str(exc)
        raise TestFileError(Span(shown, 1, 1, 1, 1), f"cannot list this folder: {why}; its test files cannot run")
    try:
        text = yamlfile.read_text(path, "test file")
    except yamlfile.YamlFileError as exc:
        line = exc.line or 1
        raise TestFileError(Span(shown, line, 1, line, 1), exc.message) from None
    return parse_test_file(text, shown, base=path.parent)


def parse_test_file(text: str, path: str, *, base: Path) -> TestFile:
    """Parse the text of a test file; ``base`` is the folder its paths are relative to."""
    r = _Reader(path, text)
    root = r.root()
    if root is None:
        raise TestFileError(Span(path, 1, 1, 1, 1), "empty test file: expected a mapping with 'cases'")
    top = r.mapping(root, "the test file", _FILE_KEYS)
    if "cases" not in top and "monitors" not in top:
        raise r.fail(root, "missing field 'cases' (the list of test cases) or 'monitors' (bias and drift cases)")
    now = r.instant(top["now"][1], "'now'") if "now" in top else DEFAULT_NOW
    fixtures = _fixtures(r, top["fixtures"][1]) if "fixtures" in top else _Fixtures({}, {})
    policy_files, policy_span, policy_sources = _policy(r, top.get("policy"), base, root)
    names: dict[str, Span] = {}

    def unique(name: str, span: Span) -> None:
        if name in names:
            raise TestFileError(span, f"duplicate case name {name!r} (first at line {names[name].line})")
        names[name] = span

    cases: list[Case] = []
    if "cases" in top:
        case_nodes = r.sequence(top["cases"][1], "'cases'")
        if not case_nodes:
            raise r.fail(top["cases"][1], "'cases' is empty: a test file needs at least one case")
        for node in case_nodes:
            case = _case(r, node, fixtures, now)
            unique(case.name, case.span)
            cases.append(case)
    monitors: list[MonitorCase] = []
    if "monitors" in top:
        monitor_nodes = r.sequence(top["monitors"][1], "'monitors'")
        if not monitor_nodes:
            raise r.fail(top["monitors"][1], "'monitors' is empty: leave it out or give at least one case")
        for node in monitor_nodes:
            monitor = _monitor_case(r, node, now, base)
            unique(monitor.name, monitor.span)
            monitors.append(monitor)
    return TestFile(path=path, policy_files=policy_files, cases=tuple(cases), policy_span=policy_span,
                    monitors=tuple(monitors), policy_sources=policy_sources)


def _policy(r: _Reader, entry: tuple[Node, Node] | None, base: Path, root: Node,
            ) -> tuple[tuple[str, ...], Span, tuple[PolicySource, ...]]:
    """(the policy files, the span of ``policy:``, the folders and files they were found in)."""
    sources: list[PolicySource] = []
    files: list[Path] = []
    if entry is None:
        source: PolicySource = (str(base), "beside")
        span = r.span(root)
        files = _listed(source, Span(span.file, 1, 1, 1, 1)) or []
        if not files:
            raise TestFileError(Span(span.file, 1, 1, 1, 1), f"no {POLICY_SUFFIX} files beside this test file; name them with 'policy:'")
        sources.append(source)
    else:
        span = r.span(entry[1])
        for item_node, item in zip(_items(r, entry[1]), r.strings(entry[1], "'policy'")):
            target = base / item
            if target.is_dir():
                source = (str(target), "folder")
                found = _listed(source, r.span(item_node))
                if not found:
                    raise r.fail(item_node, f"no {POLICY_SUFFIX} files in folder {item!r}")
            elif target.is_file():
                source = (str(target), "file")
                found = [target]
            else:
                raise r.fail(item_node, f"policy path {item!r} does not exist (relative to {base})")
            sources.append(source)
            files.extend(found)
    # Imported packages are found by the loader, as for check, eval and run (policyengine.loader).
    return tuple(shown_path(str(p)) for p in files), span, tuple(sources)


def _listed(source: PolicySource, span: Span) -> list[Path] | None:
    """``policy_files_of(source)``; a folder in it that cannot be listed is an error (its rules would be left out)."""
    try:
        return policy_files_of(source)
    except OSError as exc:
        raise TestFileError(span, f"cannot list folder {exc.filename or source[0]}: {exc.strerror or exc}; "
                                  "the policy under test would lack its rules") from None


def _items(r: _Reader, node: Node) -> list[Node]:
    return [node] if isinstance(node, ScalarNode) else r.sequence(node, "'policy'")


def _fixtures(r: _Reader, node: Node) -> _Fixtures:
    m = r.mapping(node, "'fixtures'", _FIXTURE_KEYS)
    principals: dict[str, dict[str, Any]] = {}
    resources: dict[str, dict[str, Any]] = {}
    if "principals" in m:
        for name, (_, value) in r.mapping(m["principals"][1], "'fixtures.principals'", ()).items():
            principals[name] = _principal_mapping(r, value, f"principal fixture {name!r}", principals, default_id=name)
    if "resources" in m:
        for name, (_, value) in r.mapping(m["resources"][1], "'fixtures.resources'", ()).items():
            resources[name] = _resource(r, value, resources)
    return _Fixtures(principals, resources)


def _case(r: _Reader, node: Node, fx: _Fixtures, file_now: _dt.datetime) -> Case:
    m = r.mapping(node, "a case", _CASE_KEYS + _REQUEST_KEYS)
    if "name" not in m:
        raise r.fail(node, "a case needs a 'name'")
    name = r.string(m["name"][1], "'name'")
    if "expect" not in m:
        raise r.fail(node, f"case {name!r} needs 'expect: allow|deny|escalate'")
    inline = [k for k in _REQUEST_KEYS if k in m]
    if "request" in m and inline:
        raise r.fail(m[inline[0]][0], f"case {name!r}: give the request either under 'request' or inline, not both")
    if "request" in m:
        parts = r.mapping(m["request"][1], "'request'", _REQUEST_KEYS)
        where = m["request"][1]
    else:
        parts = {k: m[k] for k in inline}
        where = node
    request = _request(r, parts, where, fx)
    expect = _expectation(r, m)
    now = r.instant(m["now"][1], "'now'") if "now" in m else file_now
    _bind_approvals(request, now)
    return Case(
        name=name,
        request_json=json.dumps(request, sort_keys=True),
        expect=expect,
        now=now,
        usage=_usage(r, m["usage"][1]) if "usage" in m else (),
        description=r.string(m["description"][1], "'description'") if "description" in m else None,
        span=r.span(node),
    )


def _request(r: _Reader, parts: dict[str, tuple[Node, Node]], where: Node, fx: _Fixtures) -> dict[str, Any]:
    for required in ("principal", "action", "resource"):
        if required not in parts:
            raise r.fail(where, f"the request needs a '{required}'")
    request: dict[str, Any] = {
        "principal": _principal(r, parts["principal"][1], fx),
        "action": r.string(parts["action"][1], "'action'"),
        "resource": _resource(r, parts["resource"][1], fx.resources),
        "data": r.data(parts["data"][1], "'data'") if "data" in parts else {},
        "context": r.data(parts["context"][1], "'context'") if "context" in parts else {},
        "approvals": [_approval(r, n, fx) for n in r.sequence(parts["approvals"][1], "'approvals'")] if "approvals" in parts else [],
    }
    return request


def _principal(r: _Reader, node: Node, fx: _Fixtures) -> dict[str, Any]:
    if isinstance(node, ScalarNode):
        text = r.string(node, "'principal'")
        if text in fx.principals:
            return dict(fx.principals[text])
        words = text.split()
        if len(words) == 2 and words[0] in ("user", "agent"):
            return {"id": words[1], "type": words[0], "roles": [], "attrs": {}}
        known = ", ".join(sorted(fx.principals)) or "none defined"
        raise r.fail(node, f"unknown principal {text!r}: not a fixture (fixtures: {known}) nor 'user ID' / 'agent ID'")
    return _principal_mapping(r, node, "'principal'", fx.principals, default_id=None)


def _principal_mapping(
    r: _Reader, node: Node, what: str, known: Mapping[str, dict[str, Any]], default_id: str | None
) -> dict[str, Any]:
    if isinstance(node, ScalarNode) and node.value == "" and default_id:
        return {"id": default_id, "type": "user", "roles": [], "attrs": {}}
    m = r.mapping(node, what, _PRINCIPAL_KEYS)
    out: dict[str, Any] = {"id": default_id, "type": "user", "roles": [], "attrs": {}}
    if "fixture" in m:
        base = r.string(m["fixture"][1], "'fixture'")
        if base not in known:
            raise r.fail(m["fixture"][1], f"unknown principal fixture {base!r}")
        out = {**known[base], "attrs": dict(known[base]["attrs"])}
    if "id" in m:
        out["id"] = r.string(m["id"][1], "'id'")
    if "type" in m:
        kind = r.string(m["type"][1], "'type'")
        if kind not in ("user", "agent"):
            raise r.fail(m["type"][1], f"principal type must be 'user' or 'agent', got {kind!r}")
        out["type"] = kind
    if "roles" in m:
        out["roles"] = list(r.strings(m["roles"][1], "'roles'"))
    if "attrs" in m:
        out["attrs"] = {**out["attrs"], **r.data(m["attrs"][1], "'attrs'")}
    if not out["id"]:
        raise r.fail(node, f"{what} needs an 'id'")
    return out


def _resource(r: _Reader, node: Node, known: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    if isinstance(node, ScalarNode):
        text = r.string(node, "'resource'")
        if text in known:
            return {**known[text], "attrs": dict(known[text]["attrs"])}
        kind, _, rid = text.partition(" ")
        if kind not in RESOURCE_KINDS:
            names = ", ".join(sorted(known)) or "none defined"
            raise r.fail(
                node,
                f"unknown resource {text!r}: write 'KIND ID' with KIND one of {', '.join(RESOURCE_KINDS)}, or a fixture (fixtures: {names})",
            )
        return {"kind": kind, "id": rid.strip() or None, "attrs": {}}
    m = r.mapping(node, "'resource'", _RESOURCE_KEYS)
    out: dict[str, Any] = {"kind": None, "id": None, "attrs": {}}
    if "fixture" in m:
        base = r.string(m["fixture"][1], "'fixture'")
        if base not in known:
            raise r.fail(m["fixture"][1], f"unknown resource fixture {base!r}")
        out = {**known[base], "attrs": dict(known[base]["attrs"])}
    if "kind" in m:
        kind = r.string(m["kind"][1], "'kind'")
        if kind not in RESOURCE_KINDS:
            raise r.fail(m["kind"][1], f"resource kind must be one of {', '.join(RESOURCE_KINDS)}, got {kind!r}")
        out["kind"] = kind
    if "id" in m:
        out["id"] = r.string(m["id"][1], "'id'")
    if "attrs" in m:
        out["attrs"] = {**out["attrs"], **r.data(m["attrs"][1], "'attrs'")}
    if out["kind"] is None:
        raise r.fail(node, "a resource needs a 'kind'")
    return out


def _bind_approvals(request: dict[str, Any], now: _dt.datetime) -> None:
    """Bind the case's approvals to its own request, given at its ``now``, unless the case says otherwise.

    The engine counts an approval only for the request it names and for a while
    (``policyengine.approval_binding``); a case that writes ``approvals`` means
    "this gate was approved for this request", so that is what it gets. A case
    testing replay or foreign approvals writes ``ts``, ``run_id`` or ``request_hash``.
    """
    if not request["approvals"]:
        return
    from ..approval_binding import request_hash

    own = request_hash(request)
    for approval in request["approvals"]:
        approval.setdefault("ts", _jsonable(now))
        if "run_id" not in approval and "request_hash" not in approval:
            approval["request_hash"] = own


def _approval(r: _Reader, node: Node, fx: _Fixtures) -> dict[str, Any]:
    m = r.mapping(node, "an approval", _APPROVAL_KEYS)
    for required in ("gate", "approver"):
        if required not in m:
            raise r.fail(node, f"an approval needs a '{required}'")
    approver = r.string(m["approver"][1], "'approver'")
    out: dict[str, Any] = {"gate": r.string(m["gate"][1], "'gate'"), "approver": approver}
    if approver in fx.principals:  # a fixture name: its id and roles
        out["approver"] = fx.principals[approver]["id"]
        out["roles"] = list(fx.principals[approver]["roles"])
    if "roles" in m:
        out["roles"] = list(r.strings(m["roles"][1], "'roles'"))
    if "ts" in m:
        out["ts"] = _jsonable(r.instant(m["ts"][1], "'ts'"))
    for binding in ("run_id", "request_hash"):
        if binding in m:
            out[binding] = r.string(m[binding][1], f"'{binding}'")
    return out


def _usage(r: _Reader, node: Node) -> tuple[Usage, ...]:
    """``{target: {unit: amount}}``; each amount must be a finite number >= 0.

    Units are checked against the policy's budgets by the runner, which knows them.
    """
    out: list[Usage] = []
    for target, (key_node, value) in r.mapping(node, "'usage'", ()).items():
        for unit, (unit_node, amount_node) in r.mapping(value, f"usage of {target!r}", ()).items():
            what = f"usage of {target!r} in {unit}"
            try:
                amount = r.number(amount_node, what)
            except TestFileError:
                amount = math.nan
            if not (math.isfinite(amount) and amount >= 0):
                shown = _show(amount_node, r.plain(amount_node) if isinstance(amount_node, ScalarNode) else None)
                raise r.fail(amount_node, f"{what} must be a non-negative number, got {shown}")
            out.append(Usage(target, unit, amount, r.span(key_node), r.span(unit_node)))
    return tuple(out)


def _expectation(r: _Reader, m: dict[str, tuple[Node, Node]]) -> Expectation:
    effect_node = m["expect"][1]
    effect = r.plain(effect_node) if isinstance(effect_node, ScalarNode) else None
    if effect not in EFFECTS:
        raise r.fail(effect_node, f"unknown expected effect {_show(effect_node, effect)}: expected allow, deny or escalate")
    rules = rules_span = None
    if "rules" in m:
        rules = tuple(r.strings(m["rules"][1], "'rules'")) if not _is_empty_list(m["rules"][1]) else ()
        rules_span = r.span(m["rules"][1])
    check_route, route = False, None
    if "route" in m:
        check_route = True
        node = m["route"][1]
        route = None if isinstance(node, ScalarNode) and r.plain(node) is None else r.string(node, "'route'")
    obligations = None
    if "obligations" in m:
        obligations = tuple(_obligation(r, n) for n in r.sequence(m["obligations"][1], "'obligations'"))
    cites = r.strings(m["cites"][1], "'cites'") if "cites" in m else ()
    if "cites" in m and not cites:  # "must include none of these" holds for every decision
        raise r.fail(m["cites"][1], "'cites' lists citations the decision must include; an empty list checks "
                                    "nothing (leave it out)")
    return Expectation(effect, rules, rules_span, check_route, route, obligations, cites)  # type: ignore[arg-type]


def _is_empty_list(node: Node) -> bool:
    return isinstance(node, SequenceNode) and not node.value


def _obligation(r: _Reader, node: Node) -> ExpectedObligation:
    m = r.mapping(node, "an obligation", ("kind", *OBLIGATION_FIELDS, *{f for fs in OBLIGATION_FIELDS.values() for f in fs}))
    kinds = [k for k in OBLIGATION_FIELDS if k in m]
    if "kind" in m:
        kinds.append(r.string(m["kind"][1], "'kind'"))
    if len(kinds) != 1 or kinds[0] not in OBLIGATION_FIELDS:
        raise r.fail(node, f"an obligation names exactly one kind: {' or '.join(OBLIGATION_FIELDS)}")
    kind = kinds[0]
    fields: dict[str, Any] = {}
    if kind in m:
        fields[_OBLIGATION_MAIN[kind]] = r.string(m[kind][1], f"'{kind}'")
    for key, (key_node, value) in m.items():
        if key in ("kind", kind):
            continue
        if key not in OBLIGATION_FIELDS[kind]:
            raise r.fail(key_node, f"unknown field {key!r} for {kind} (expected one of: {', '.join(OBLIGATION_FIELDS[kind])})")
        fields[key] = r.plain(value)
    return ExpectedObligation(kind, tuple(sorted(fields.items())), r.span(node))


# --- monitor cases (bias and drift rules) ---------------------------------------------------------


def _monitor_case(r: _Reader, node: Node, file_now: _dt.datetime, base: Path) -> MonitorCase:
    m = r.mapping(node, "a monitor case", _MONITOR_KEYS)
    if "name" not in m:
        raise r.fail(node, "a monitor case needs a 'name'")
    name = r.string(m["name"][1], "'name'")
    if "rule" not in m:
        raise r.fail(node, f"monitor case {name!r} needs a 'rule' (the id of a bias or drift rule)")
    if "expect" not in m:
        raise r.fail(node, f"monitor case {name!r} needs 'expect' (for example 'expect: {{breach: true}}')")
    rows: list[SampleRow] = []
    if "rows" in m:
        rows.extend(_sample_row(r, n) for n in r.sequence(m["rows"][1], "'rows'"))
    for side in ("reference", "current"):
        if side in m:
            for item in r.sequence(m[side][1], f"'{side}'"):
                value = _sample_scalar(r, item, f"each value of '{side}'")
                rows.append(SampleRow(r.span(item), value=value, side=side, given=("value", "side")))
    data_file = None
    if "data" in m:
        data_file, sampled = _sample_csv(r, m["data"][1], base)
        rows.extend(sampled)
    if not rows:
        raise r.fail(node, f"monitor case {name!r} has no sample data: give 'rows', 'data: FILE.csv', "
                           "or 'reference' and 'current' values")
    return MonitorCase(
        name=name,
        rule=r.string(m["rule"][1], "'rule'"),
        rows=tuple(rows),
        expect=_monitor_expectation(r, m["expect"][1], name),
        now=r.instant(m["now"][1], "'now'") if "now" in m else file_now,
        rule_span=r.span(m["rule"][1]),
        description=r.string(m["description"][1], "'description'") if "description" in m else None,
        span=r.span(node),
        data_file=data_file,
    )


def _sample_scalar(r: _Reader, node: Node, what: str) -> Any:
    value = r.plain(node) if isinstance(node, ScalarNode) else None
    if value is None or isinstance(value, (dict, list)) or value == "" or _not_finite(value):
        raise r.fail(node, f"{what} must be a number or a word, got {_show(node, value)}")
    return value


def _not_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _sample_row(r: _Reader, node: Node) -> SampleRow:
    m = r.mapping(node, "a sample row", SAMPLE_COLUMNS)
    fields: dict[str, Any] = {}
    for key, (_, value_node) in m.items():
        if key == "count":
            fields[key] = _count(r.plain(value_node), lambda msg, n=value_node: r.fail(n, msg))
        elif key == "at":
            fields[key] = r.instant(value_node, "'at'")
        elif key == "ago":
            fields[key] = _ago(r.plain(value_node), lambda msg, n=value_node: r.fail(n, msg))
        elif key == "side":
            fields[key] = _side(r.plain(value_node), lambda msg, n=value_node: r.fail(n, msg))
        elif key == "model":
            fields[key] = r.string(value_node, "'model'")
        else:
            fields[key] = _sample_scalar(r, value_node, f"'{key}'")
    return _checked_row(SampleRow(r.span(node), given=tuple(m), **fields), lambda msg: r.fail(node, msg))


def _checked_row(row: SampleRow, fail: Any) -> SampleRow:
    if row.at is not None and row.ago is not None:
        raise fail("give a row's time as 'at' or as 'ago', not both")
    return row


def _count(value: Any, fail: Any) -> int:
    if isinstance(value, str) and value.strip().replace("_", "").isdigit():
        value = int(value.strip().replace("_", ""))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise fail(f"'count' must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}")
    return value


def _ago(value: Any, fail: Any) -> float:
    match = _AGO.match(str(value)) if isinstance(value, str) else None
    if match is None:
        raise fail(f"'ago' must be a length of time such as '29 days' or '36h', got {value!r}")
    return float(match.group(1)) * _AGO_UNITS[match.group(2)[0]]


def _side(value: Any, fail: Any) -> str:
    if value not in ("reference", "current"):
        raise fail(f"'side' must be 'reference' or 'current', got {value!r}")
    return str(value)


def _sample_csv(r: _Reader, node: Node, base: Path) -> tuple[str, list[SampleRow]]:
    """(the file, its rows): a CSV file beside the test file; a mistake is reported at the CSV's ``file:line``."""
    import csv

    name = r.string(node, "'data'")
    target = base / name
    shown = shown_path(str(target))
    try:
        with target.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise TestFileError(Span(shown, 1, 1, 1, 1), "empty CSV file: expected a header line and rows")
            columns = [h.strip() for h in header]
            for col in columns:
                if col not in SAMPLE_COLUMNS:
                    raise TestFileError(Span(shown, 1, 1, 1, 1),
                                        f"unknown column {col!r} (expected some of: {', '.join(SAMPLE_COLUMNS)})")
            rows: list[SampleRow] = []
            for cells in reader:
                line = reader.line_num
                span = Span(shown, line, 1, line, 1)
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(columns):
                    raise TestFileError(span, f"expected {len(columns)} fields ({', '.join(columns)}), got {len(cells)}")
                rows.append(_csv_row(dict(zip(columns, (c.strip() for c in cells))), span))
    except FileNotFoundError:
        raise r.fail(node, f"sample data file {name!r} does not exist (relative to {base})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise r.fail(node, f"cannot read sample data file {name!r}: {exc}") from None
    if not rows:
        raise TestFileError(Span(shown, 1, 1, 1, 1), "the CSV file has a header but no rows")
    return str(target), rows


def _csv_row(cells: dict[str, str], span: Span) -> SampleRow:
    def fail(message: str) -> TestFileError:
        return TestFileError(span, message)

    fields: dict[str, Any] = {}
    for key, text in cells.items():
        if text == "":
            continue
        if key == "count":
            fields[key] = _count(text, fail)
        elif key == "at":
            try:
                when = _dt.datetime.fromisoformat(text)
            except ValueError:
                raise fail(f"'at' must be a date-time such as 2026-01-15T12:00:00Z, got {text!r}") from None
            fields[key] = when if when.tzinfo else when.replace(tzinfo=_dt.UTC)
        elif key == "ago":
            fields[key] = _ago(text, fail)
        elif key == "side":
            fields[key] = _side(text, fail)
        elif key == "value":
            try:
                fields[key] = float(text)
            except ValueError:
                fields[key] = text
            if _not_finite(fields[key]):
                raise fail(f"'value' must be a finite number or a word, got {text!r}")
        else:
            fields[key] = text
    return _checked_row(SampleRow(span, given=tuple(fields), **fields), fail)


def _monitor_expectation(r: _Reader, node: Node, name: str) -> MonitorExpectation:
    m = r.mapping(node, f"'expect' of monitor case {name!r}", _MONITOR_EXPECT_KEYS)
    breach = None
    if "breach" in m:
        breach = r.plain(m["breach"][1])
        if not isinstance(breach, bool):
            raise r.fail(m["breach"][1], f"'breach' must be true or false, got {_show(m['breach'][1], breach)}")
    error = r.string(m["error"][1], "'error'") if "error" in m else None
    if breach is None and error is None:
        raise r.fail(node, f"monitor case {name!r}: 'expect' needs 'breach: true|false' (or 'error')")
    if breach is not None and error is not None:
        raise r.fail(m["error"][0], f"monitor case {name!r}: expect a 'breach' or an 'error', not both")
    check_value, value = "value" in m, None
    if check_value:
        node_v = m["value"][1]
        if not (isinstance(node_v, ScalarNode) and r.plain(node_v) is None):
            value = r.number(node_v, "'value'")
            if not math.isfinite(value):
                raise r.fail(node_v, f"'value' must be a finite number or null, got {value!r}")
    tolerance = DEFAULT_TOLERANCE
    if "tolerance" in m:
        tolerance = r.number(m["tolerance"][1], "'tolerance'")
        if not 0 <= tolerance < math.inf:  # also NaN; an infinite one accepts every value
            raise r.fail(m["tolerance"][1], "'tolerance' must be a finite number, 0 or more")
        if not check_value:
            raise r.fail(m["tolerance"][0], "'tolerance' applies to an expected 'value'; give one")
    action = None
    if "action" in m:
        action = r.string(m["action"][1], "'action'")
        if action not in MONITOR_ACTIONS:
            raise r.fail(m["action"][1], f"unknown action {action!r}: expected {', '.join(MONITOR_ACTIONS)}")
    return MonitorExpectation(breach, check_value, value, tolerance, action, error)
