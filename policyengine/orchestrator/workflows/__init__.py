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
import re
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ...jsontext import (DECODER, BadNumber, bad_numbers, duplicate_key, element_spans, parse_float, parse_int,
                         skip_space)
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

    Values the audit log cannot record (integers no IEEE-754 double holds
    exactly, numbers that overflow a double, NaN and infinities) refuse the whole
    file before any run starts; so do non-numbers in the fields
    ``workflow.numbers`` reads as numbers, and an object that repeats a key
    (parsers disagree on which value counts), named by its line. A CSV header
    that names a column twice, and a row with more or fewer cells than the
    header has columns, are refused too.
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


def _problems(value: dict[str, Any], numbers: tuple[str, ...]) -> list[tuple[str, str]]:
    out = bad_numbers(value)
    for name in numbers:
        v = value.get(name)
        if v is not None and v.__class__ is not BadNumber and (isinstance(v, bool) or not isinstance(v, int | float)):
            out.append((name, f"{json.dumps(v)} is not a number (the workflow reads {name} as a number)"))
    return out


def _parse(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """The items with the line each starts on."""
    if p.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        try:
            header = reader.fieldnames or []
            repeated = next((name for n, name in enumerate(header) if name in header[:n]), None)
            if repeated is not None:  # DictReader keeps the last cell; a spreadsheet shows the first
                raise ValueError(f"{p}:1: the header names the column {json.dumps(repeated, ensure_ascii=True)} "
                                 f"twice; name each column once (readers disagree on which cell counts)")
            for row in reader:
                if None in row:
                    raise ValueError(f"{p}:{reader.line_num}: more cells than the header has columns")
                if None in row.values():  # a cut row: its missing cells would read as absent values
                    raise ValueError(f"{p}:{reader.line_num}: fewer cells than the header has columns")
                rows.append((reader.line_num, {k: _cell(v) for k, v in row.items()}))
        except csv.Error as exc:
            raise ValueError(f"{p}:{reader.line_num}: not valid CSV: {exc}") from None
        return rows
    if p.suffix.lower() == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            obj = _read_json(p, n, line)
            if not isinstance(obj, dict):
                raise ValueError(f"{p}:{n}: each line must be a JSON object")  # noqa: TRY004 - a bad file, not a bad argument
            items.append((n, obj))
        return items
    if not text.strip():
        return []
    doc = _read_json(p, 1, text)
    if isinstance(doc, dict):
        return [(_line(text, skip_space(text, 0)), doc)]
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise ValueError(f"{p}: input must be a JSON object or an array of objects")
    return [(_line(text, start), item) for (start, _), item in zip(element_spans(text), doc, strict=True)]


def _read_json(p: Path, first_line: int, text: str) -> Any:
    """One JSON document, or ``ValueError`` naming the line: not JSON, nested past the parser, a key twice
    (at the line of the array element that repeats it)."""
    try:
        doc = DECODER.decode(text)
    except RecursionError:
        raise ValueError(f"{p}:{first_line}: nested too deeply to read") from None
    except ValueError as exc:
        line = first_line + getattr(exc, "lineno", 1) - 1
        raise ValueError(f"{p}:{line}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
    problem = duplicate_key(text, doc)
    if problem is not None:
        if isinstance(doc, list):
            for (start, end), item in zip(element_spans(text), doc, strict=True):
                if duplicate_key(text[start:end], item) is not None:
                    first_line += _line(text, start) - 1
                    break
        raise ValueError(f"{p}:{first_line}: {problem}")
    return doc


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def _cell(value: str | None) -> Any:
    """A CSV cell as JSON would have it: numbers and booleans typed (so rules compare them), empty is null.

    A number with no IEEE-754 double (``1e400``, ``2**53 + 1``) is kept as
    a ``BadNumber`` so the reader can refuse it by row and column."""
    if value is None or value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    if _INT.fullmatch(value):
        return parse_int(value)
    if _FLOAT.fullmatch(value):
        return parse_float(value)
    return value  # including ids with leading zeros ("007"), "nan" and "inf"


def read_csv_table(name: str) -> list[dict[str, str]]:
    with open(data_path("data") / name, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


__all__ = ["DEFAULT_INPUT", "WORKFLOWS", "load_items", "read_csv_table", "sample_path"]
