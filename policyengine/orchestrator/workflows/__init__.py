"""The five mission workflows and the sample data they run on by default.

Each module defines one ``Workflow``; the names of agents, models' tasks, tools
and datasets it asks about are module constants, matched by the rule files in
``rules/``. ``WORKFLOWS`` maps the CLI name to the workflow; ``DEFAULT_INPUT``
names its shipped sample file in ``data/``.

Other workflows are registered by entry point, group ``policyengine.workflows``
(``name = "module:attribute"``, the attribute a ``Workflow``); ``registered()``
maps every name to its workflow, importing a plugin's code only when its
workflow is asked for, so a broken or missing plugin never stops commands on
runs of other workflows.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ...audit.canonical import MAX_SAFE_INTEGER
from ...resources import data_path
from ..workflow import Workflow
from .fraud import FRAUD
from .invoices import INVOICES
from .marketing import MARKETING
from .supply_chain import SUPPLY_CHAIN
from .tickets import TICKETS

WORKFLOWS: Mapping[str, Workflow] = MappingProxyType({w.name: w for w in (INVOICES, TICKETS, SUPPLY_CHAIN, FRAUD, MARKETING)})
DEFAULT_INPUT: Mapping[str, str] = MappingProxyType({
    INVOICES.name: "invoices.json", TICKETS.name: "tickets.json",
    SUPPLY_CHAIN.name: "supply_signals.json", FRAUD.name: "transactions.json",
    MARKETING.name: "marketing_deliveries.json",
})


ENTRY_POINT_GROUP = "policyengine.workflows"


class WorkflowRegistry(Mapping[str, Workflow]):
    """The shipped workflows plus those registered by entry point, each loaded on first use.

    A name whose entry point cannot be imported, or does not name a ``Workflow``
    of that name, is absent: ``get`` gives None and ``problem(name)`` says why.
    """

    def __init__(self, builtin: Mapping[str, Workflow], group: str = ENTRY_POINT_GROUP) -> None:
        self._loaded: dict[str, Workflow] = dict(builtin)
        self._points = {ep.name: ep for ep in metadata.entry_points(group=group) if ep.name not in builtin}
        self._problems: dict[str, str] = {}

    def _load(self, name: str) -> Workflow | None:
        if name in self._loaded:
            return self._loaded[name]
        point = self._points.get(name)
        if point is None or name in self._problems:
            return None
        try:
            value = point.load()
        except Exception as exc:  # noqa: BLE001 - a plugin's import error is reported, not raised
            self._problems[name] = f"entry point {point.value!r} does not load: {type(exc).__name__}: {exc}"
            return None
        if not isinstance(value, Workflow) or value.name != name:
            self._problems[name] = f"entry point {point.value!r} is not a Workflow named {name!r}"
            return None
        self._loaded[name] = value
        return value

    def problem(self, name: str) -> str:
        """Why ``name`` has no workflow here, in words for an error message."""
        self._load(name)
        if name in self._problems:
            return f"workflow {name!r}: {self._problems[name]}"
        return (f"workflow {name!r} is not installed here (register it by entry point, group "
                f"{ENTRY_POINT_GROUP!r}; known: {', '.join(sorted(self))})")

    def __getitem__(self, name: str) -> Workflow:
        found = self._load(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._load(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([*self._loaded, *(n for n in self._points if n not in self._loaded)])

    def __len__(self) -> int:
        return len(set(self._loaded) | set(self._points))


def registered() -> WorkflowRegistry:
    """Every workflow this installation knows: shipped, then by entry point (read now, loaded on use)."""
    return WorkflowRegistry(WORKFLOWS)


def sample_path(workflow: str) -> Path:
    """The shipped sample input of ``workflow``."""
    return data_path("data") / DEFAULT_INPUT[workflow]


def load_items(path: str | Path, workflow: Workflow | None = None) -> list[dict[str, Any]]:
    """Read input items: a JSON array (or one object), JSON Lines (``.jsonl``), or CSV with a header
    (numbers and ``true``/``false`` typed, empty cells null, so rules compare them as JSON values).

    A UTF-8 byte order mark (as Excel writes) is ignored. Raises ``ValueError``
    naming the file and line of the first bad record, or ``FILE: no items in the
    input`` when the file holds none (empty, whitespace, ``[]`` or a CSV header only).

    Values the audit log cannot record (integers beyond 2^53, numbers that
    overflow a double, NaN and infinities) refuse the whole file before any run
    starts; so do non-numbers in the fields ``workflow.numbers`` reads as numbers.
    The ``ValueError`` then lists every such value as ``FILE:LINE: FIELD: why``
    (LINE is where the item starts; for CSV, the line of the row).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{p}: cannot read input: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: input is not UTF-8 text") from None
    located = _parse(p, text)
    if not located:
        raise ValueError(f"{p}: no items in the input")
    numbers = workflow.numbers if workflow is not None else ()
    problems = [f"{p}:{line}: {field}: {why}" for line, item in located for field, why in _problems(item, numbers)]
    if problems:
        more = len(problems) - _SHOWN
        raise ValueError("\n".join(problems[:_SHOWN] + ([f"... and {more} more"] if more > 0 else []))
                         + f"\n{p}: refused; no run was started")
    return [item for _, item in located]


_SHOWN = 20


class _Unrecordable:
    """A number read from the input that has no exact JSON (IEEE-754 double) form, or a ``NaN``/``Infinity``
    literal; keeps why, so the reader can name it."""

    __slots__ = ("why",)

    def __init__(self, text: str) -> None:
        shown = text if len(text) <= 40 else f"{text[:20]}… ({len(text)} characters)"
        if text in ("NaN", "Infinity", "-Infinity"):
            self.why = f"{shown} is not a JSON number"
        elif re.fullmatch(r"-?[0-9]+", text):
            self.why = f"{shown} is beyond 2^53 and has no exact JSON number"
        else:
            self.why = f"{shown} overflows a double and has no JSON number"


def _int(text: str) -> Any:
    if len(text) > 20:  # far beyond 2^53 (16 digits), and int() refuses more than 4300 digits
        return _Unrecordable(text)
    value = int(text)
    return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else _Unrecordable(text)


def _float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _Unrecordable(text)


_DECODER = json.JSONDecoder(parse_constant=lambda name: _Unrecordable(name), parse_int=_int, parse_float=_float)


def _skip(text: str, pos: int) -> int:
    """``pos`` moved past JSON whitespace."""
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def _loads(text: str) -> Any:
    doc, end = _DECODER.raw_decode(text, _skip(text, 0))
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, end))
    return doc


def _problems(value: Any, numbers: tuple[str, ...]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(v: Any, where: str) -> None:
        if isinstance(v, _Unrecordable):
            out.append((where, v.why))
        elif isinstance(v, float) and not math.isfinite(v):
            out.append((where, f"{v} has no JSON number"))
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_SAFE_INTEGER:
            out.append((where, f"{v} is beyond 2^53 and has no exact JSON number"))
        elif isinstance(v, dict):
            for k, sub in v.items():
                walk(sub, f"{where}.{k}" if where else str(k))
        elif isinstance(v, list):
            for n, sub in enumerate(v):
                walk(sub, f"{where}[{n}]")

    walk(value, "")
    for name in numbers:
        v = value.get(name)
        if v is not None and not isinstance(v, _Unrecordable) and (isinstance(v, bool) or not isinstance(v, int | float)):
            out.append((name, f"{json.dumps(v)} is not a number (the workflow reads {name} as a number)"))
    return out


def _parse(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """The items with the line each starts on."""
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        try:
            for row in reader:
                if None in row:
                    raise ValueError(f"{p}:{reader.line_num}: more cells than the header has columns")
                rows.append((reader.line_num, {k: _cell(v) for k, v in row.items()}))
        except csv.Error as exc:
            raise ValueError(f"{p}:{reader.line_num}: not valid CSV: {exc}") from None
        return rows
    if p.suffix.lower() == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = _loads(line)
            except ValueError as exc:
                raise ValueError(f"{p}:{n}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{p}:{n}: each line must be a JSON object")  # noqa: TRY004 - a bad file, not a bad argument
            items.append((n, obj))
        return items
    if not text.strip():
        return []
    try:
        doc = _loads(text)
    except ValueError as exc:
        raise ValueError(f"{p}:{getattr(exc, 'lineno', 1)}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
    if isinstance(doc, dict):
        return [(_line(text, _skip(text, 0)), doc)]
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise ValueError(f"{p}: input must be a JSON object or an array of objects")
    return list(zip(_element_lines(text), doc, strict=True))


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _element_lines(text: str) -> list[int]:
    """The line each element of a (valid) top-level JSON array starts on."""
    lines: list[int] = []
    pos = _skip(text, 0) + 1  # past "["
    while True:
        pos = _skip(text, pos)
        if text[pos] == "]":
            return lines
        lines.append(_line(text, pos))
        _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos += 1


_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def _cell(value: str | None) -> Any:
    """A CSV cell as JSON would have it: numbers and booleans typed (so rules compare them), empty is null.

    A number with no exact JSON form (beyond 2^53, overflowing a double) is kept as
    ``_Unrecordable`` so the reader can refuse it by row and column."""
    if value is None or value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    if _INT.fullmatch(value):
        return _int(value)
    if _FLOAT.fullmatch(value):
        return _float(value)
    return value  # including ids with leading zeros ("007"), "nan" and "inf"


def read_csv_table(name: str) -> list[dict[str, str]]:
    with open(data_path("data") / name, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


__all__ = ["DEFAULT_INPUT", "WORKFLOWS", "load_items", "read_csv_table", "sample_path"]
