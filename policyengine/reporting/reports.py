"""Named reports: one ``reports/<name>.sql`` file each, run with bound parameters.

A report file starts with a header comment that this module reads::

    -- title: Denials with reasons
    -- description: ... (continuation lines start with "--   ")
    -- regulation: EU AI Act Art. 13; GDPR Art. 22
    -- param: since TIMESTAMP = 1970-01-01 | first instant included (UTC)
    -- param: dataset VARCHAR | dataset id glob (no default: required)

Parameter types are TIMESTAMP (ISO 8601; ``now`` allowed as a default), VARCHAR,
INTEGER, DOUBLE, BOOLEAN and CHOICE(a,b,c). A default of ``null`` makes a
parameter optional with no value. Values are converted here and bound, never
formatted into SQL; a missing, unknown or ill-typed parameter is a ``ReportError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from ..clock import parse_time
from ..resources import data_path
from ..rule_paths import recorded
from .block_history import block_list_notes, create_signed_view
from .db import first_line, has_table, open_readonly, require_audit_log, sql
from .errors import ReportError

_HEADER = re.compile(r"^--\s?(\w+):\s*(.*)$")
_CONT = re.compile(r"^--\s{2,}(\S.*)$")
_PARAM = re.compile(r"^(\w+)\s+(TIMESTAMP|VARCHAR|INTEGER|DOUBLE|BOOLEAN|CHOICE\([\w,\s-]+\))(?:\s*=\s*(\S+))?\s*(?:\|\s*(.*))?$")
_PLACEHOLDER = re.compile(r"\$([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class ReportParam:
    name: str
    type: str  # TIMESTAMP | VARCHAR | INTEGER | DOUBLE | BOOLEAN | CHOICE
    default: str | None  # as written; None means required
    description: str
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None

    def convert(self, report: str, raw: str) -> Any:
        """The bound value for ``raw`` (a string from the command line or the default)."""
        if raw.lower() == "null" and not self.required:
            return None
        try:
            if self.type == "TIMESTAMP":
                if raw.lower() == "now":
                    return datetime.now(UTC).replace(tzinfo=None)
                try:
                    return parse_time(raw, margin=False).replace(tzinfo=None)  # one parser, no overflow
                except ValueError as exc:
                    if "outside the calendar" in str(exc):
                        raise ReportError(f"report {report!r}: parameter {self.name}={exc}") from None
                    raise
            if self.type == "INTEGER":
                return int(raw)
            if self.type == "DOUBLE":
                return float(raw)
            if self.type == "BOOLEAN":
                if raw.lower() in ("true", "yes", "1"):
                    return True
                if raw.lower() in ("false", "no", "0"):
                    return False
                raise ValueError(raw)
        except ValueError:
            kind = {"TIMESTAMP": "an ISO 8601 timestamp such as 2026-11-01 or 2026-11-01T09:30:00Z",
                    "INTEGER": "an integer", "DOUBLE": "a number", "BOOLEAN": "true or false"}[self.type]
            raise ReportError(f"report {report!r}: parameter {self.name}={raw!r} is not {kind}") from None
        if self.type == "CHOICE" and raw not in self.choices:
            raise ReportError(
                f"report {report!r}: parameter {self.name}={raw!r} must be one of {', '.join(self.choices)}"
            )
        return raw


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """A named report as its file declares it."""

    name: str
    path: str
    title: str
    description: str
    regulation: str
    params: tuple[ReportParam, ...]
    sql: str

    def bind(self, given: Mapping[str, str]) -> dict[str, Any]:
        """Check ``given`` against the declared parameters and convert every value."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            hint = ", ".join(known) or "none"
            raise ReportError(f"report {self.name!r} has no parameter {unknown[0]!r} (parameters: {hint})")
        bound: dict[str, Any] = {}
        for p in self.params:
            raw = given.get(p.name, p.default)
            if raw is None:
                raise ReportError(
                    f"report {self.name!r} needs parameter {p.name!r} ({p.description}); pass --param {p.name}=VALUE"
                )
            bound[p.name] = p.convert(self.name, raw)
        since, until = bound.get("since"), bound.get("until")
        if isinstance(since, datetime) and isinstance(until, datetime) and since >= until:
            # [since, until) holds nothing: zero rows would read as "nothing happened"
            raise ReportError(f"report {self.name!r}: the period is empty: since {since.isoformat()} is not before "
                              f"until {until.isoformat()} (UTC)")
        return bound


@dataclass(frozen=True, slots=True)
class ReportResult:
    """Rows of one report run, with the parameters it ran with."""

    spec: ReportSpec
    params: Mapping[str, Any]
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    types: tuple[str, ...] = ()  # DuckDB type names, e.g. "JSON" (parsed again in JSON output)
    notes: tuple[str, ...] = ()  # what the rows alone do not say (printed beside them; stderr for CSV and JSON)


def parse_spec(path: Path) -> ReportSpec:
    """Read a report file's header; a malformed header is a ``ReportError`` naming the line."""
    text = path.read_text(encoding="utf-8")
    fields: dict[str, str] = {}
    params: list[ReportParam] = []
    last: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("--"):
            break
        cont = _CONT.match(line)
        if cont and last is not None and last != "param":
            fields[last] += " " + cont.group(1).strip()
            continue
        m = _HEADER.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        last = key
        if key == "param":
            pm = _PARAM.match(value)
            if not pm:
                raise ReportError(f"{path}:{lineno}: malformed parameter declaration: {value!r}")
            name, typ, default, desc = pm.groups()
            choices: tuple[str, ...] = ()
            if typ.startswith("CHOICE"):
                choices = tuple(c.strip() for c in typ[7:-1].split(","))
                typ = "CHOICE"
            params.append(ReportParam(name, typ, default, (desc or "").strip(), choices))
        else:
            fields[key] = value
    for required in ("title", "description", "regulation"):
        if required not in fields:
            raise ReportError(f"{path}: report header has no '-- {required}:' line")
    return ReportSpec(path.stem, str(path), fields["title"], fields["description"], fields["regulation"],
                      tuple(params), text)


def report_dir() -> Path:
    return data_path("reports")


def list_reports(directory: Path | None = None) -> tuple[ReportSpec, ...]:
    """Every named report, sorted by name."""
    folder = directory or report_dir()
    return tuple(parse_spec(p) for p in sorted(folder.glob("*.sql")))


def get_report(name: str, directory: Path | None = None) -> ReportSpec:
    folder = directory or report_dir()
    path = folder / f"{name}.sql"
    if not re.fullmatch(r"[A-Za-z0-9_]+", name) or not path.is_file():
        names = ", ".join(s.name for s in list_reports(folder))
        raise ReportError(f"unknown report {name!r} (known: {names}, bias, drift)")
    return parse_spec(path)


def placeholders(spec: ReportSpec) -> frozenset[str]:
    """The ``$name`` parameters the report's SQL uses (comments excluded)."""
    body = "\n".join(line.split("--", 1)[0] for line in spec.sql.splitlines())
    return frozenset(_PLACEHOLDER.findall(body))


def prepare_context(con: duckdb.DuckDBPyConnection, policy_set: Any | None = None) -> None:
    """Create the policy context tables, filled from ``policy_set`` when one is given."""
    con.execute(sql("context_create"))
    if not has_table(con, "model_blocks"):  # no monitor has blocked anything yet: an empty history
        con.execute(sql("model_blocks_empty"))
    create_signed_view(con)
    if policy_set is None:
        return
    for scoped in policy_set.budgets:
        b = scoped.decl
        for limit in b.limits:
            con.execute(sql("context_budget_limit"), {
                "budget": scoped.id, "scope_kind": b.scope.kind, "scope": b.scope.value,
                "unit": limit.unit, "window": limit.window, "amount": float(limit.amount),
            })
    kinds = (("rule", policy_set.rules), ("residency", policy_set.residencies), ("budget", policy_set.budgets),
             ("escalate", policy_set.escalations), ("route", policy_set.routes),
             ("bias", policy_set.biases), ("drift", policy_set.drifts))
    for kind, decls in kinds:
        for scoped in decls:
            con.execute(sql("context_rule"), {"rule_id": scoped.id, "kind": kind,
                                              "file": recorded(policy_set.file_names, scoped.file),
                                              "line": scoped.line})
    for name, scoped in policy_set.agents.items():
        con.execute(sql("context_agent"), {"agent": name, "owner": scoped.decl.owner})


def run_report(
    con: duckdb.DuckDBPyConnection, spec: ReportSpec, params: Mapping[str, str] | None = None
) -> ReportResult:
    """Run ``spec`` on ``con`` (which must hold ``audit_log`` and the context tables)."""
    bound = spec.bind(params or {})
    try:
        cur = con.execute(spec.sql, bound)
        columns = tuple(d[0] for d in cur.description)
        types = tuple(str(d[1]) for d in cur.description)
        rows = tuple(cur.fetchall())
    except duckdb.Error as e:
        raise ReportError(f"report {spec.name!r} failed: {first_line(e)}") from None
    return ReportResult(spec, bound, columns, rows, types)


def run_named_report(
    db: str | Path, name: str, params: Mapping[str, str] | None = None,
    *, policy_set: Any | None = None, directory: Path | None = None,
) -> ReportResult:
    """Open ``db`` read-only and run the named report on it."""
    spec = get_report(name, directory)
    spec.bind(params or {})  # parameter errors before touching the database
    con = open_readonly(db)
    try:
        require_audit_log(con, db)
        listed = has_table(con, "model_blocks")  # before prepare_context stands in an empty one
        prepare_context(con, policy_set)
        result = run_report(con, spec, params)
        if spec.name == "model_blocks":  # signed rows; the unsigned block list only where it disagrees
            result = replace(result, notes=block_list_notes(con, listed=listed))
        return result
    finally:
        con.close()


def parse_param_args(pairs: Sequence[str]) -> dict[str, str]:
    """``["since=2026-01-01", ...]`` -> dict; a pair without ``=`` is a ``ReportError``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ReportError(f"--param {pair!r}: expected NAME=VALUE")
        out[key.strip()] = value
    return out
