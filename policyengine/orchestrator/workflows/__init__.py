"""The four mission workflows and the sample data they run on by default.

Each module defines one ``Workflow``; the names of agents, models' tasks, tools
and datasets it asks about are module constants, matched by the rule files in
``rules/``. ``WORKFLOWS`` maps the CLI name to the workflow; ``DEFAULT_INPUT``
names its shipped sample file in ``data/``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ...resources import data_path
from ..workflow import Workflow
from .fraud import FRAUD
from .invoices import INVOICES
from .supply_chain import SUPPLY_CHAIN
from .tickets import TICKETS

WORKFLOWS: Mapping[str, Workflow] = MappingProxyType({w.name: w for w in (INVOICES, TICKETS, SUPPLY_CHAIN, FRAUD)})
DEFAULT_INPUT: Mapping[str, str] = MappingProxyType({
    INVOICES.name: "invoices.json", TICKETS.name: "tickets.json",
    SUPPLY_CHAIN.name: "supply_signals.json", FRAUD.name: "transactions.json",
})


def sample_path(workflow: str) -> Path:
    """The shipped sample input of ``workflow``."""
    return data_path("data") / DEFAULT_INPUT[workflow]


def load_items(path: str | Path) -> list[dict[str, Any]]:
    """Read input items: a JSON array (or one object), JSON Lines (``.jsonl``), or CSV with a header
    (numbers and ``true``/``false`` typed, empty cells null, so rules compare them as JSON values).

    A UTF-8 byte order mark (as Excel writes) is ignored. Raises ``ValueError``
    naming the file and line of the first bad record, or ``FILE: no items in the
    input`` when the file holds none (empty, whitespace, ``[]`` or a CSV header only).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ValueError(f"{p}: cannot read input: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{p}: input is not UTF-8 text") from None
    items = _parse(p, text)
    if not items:
        raise ValueError(f"{p}: no items in the input")
    return items


def _parse(p: Path, text: str) -> list[dict[str, Any]]:
    if p.suffix.lower() == ".csv":
        return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text, newline=""))]
    if p.suffix.lower() == ".jsonl":
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_no_constant)
            except ValueError as exc:
                raise ValueError(f"{p}:{n}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{p}:{n}: each line must be a JSON object")  # noqa: TRY004 - a bad file, not a bad argument
            items.append(obj)
        return items
    if not text.strip():
        return []
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"{p}:{getattr(exc, 'lineno', 1)}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
    items = [doc] if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError(f"{p}: input must be a JSON object or an array of objects")
    return items


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+([eE][-+]?[0-9]+)?")


def _cell(value: str | None) -> Any:
    """A CSV cell as JSON would have it: numbers and booleans typed (so rules compare them), empty is null."""
    if value is None or value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    return value  # including ids with leading zeros ("007"), "nan" and "inf"


def read_csv_table(name: str) -> list[dict[str, str]]:
    with open(data_path("data") / name, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


__all__ = ["DEFAULT_INPUT", "WORKFLOWS", "load_items", "read_csv_table", "sample_path"]
