"""JSON Lines in batches: what ``policyengine eval`` runs when it neither audits nor explains.

The input is read as bytes, as much as has arrived (up to 64 KiB a read, never
waiting for more once a whole line is there, so ``eval`` still answers line by
line in a pipe). The complete lines are decoded, decided with
``Policy.evaluate_many`` in batches of up to ``BATCH``, and each batch's
decisions are written at once.

A line is decoded with orjson unless it may hold what only the careful reader
of ``engine.iter_requests`` catches and orjson accepts (an integer beyond
2**53, nesting deeper than ``MAX_DEPTH``); those lines, and lines orjson
refuses (a lone surrogate, ``NaN``, ``1e400``, bad JSON), go through that
reader, so every request, every error and every message is the one the
line-by-line path gives. Input that is not UTF-8 stops the run with the byte
and line of the first bad byte, after the lines before it are decided.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from .engine import MAX_DEPTH, InputItem, Policy, _batch, _decode, _line, _read_document, _Unreadable

BATCH = 512
CHUNK = 1 << 16
# What only the careful reader handles and orjson accepts: a run of 16 digits (an integer beyond 2**53 that
# may have no double). orjson refuses the rest (NaN, Infinity, 1e400, lone surrogates, integers beyond 64
# bits), and those lines go to the careful reader too.
_LONG_DIGITS = re.compile(r"[0-9]{16}")
_BREAK = re.compile(r"\r\n|\r|\n")  # what Python's universal newlines split on, and nothing else


class NotUtf8(ValueError):
    """The input has a byte sequence that is not UTF-8: where (byte offset from 0, and line)."""

    def __init__(self, reason: str, byte: int, line: int) -> None:
        super().__init__(f"{reason} at byte {byte}, line {line}")
        self.reason, self.byte, self.line = reason, byte, line


def decode_line(number: int, raw: str) -> list[InputItem]:
    """The request(s) of one line (``raw`` without its line break), as ``engine`` reads them."""
    if raw.count("[") + raw.count("{") <= MAX_DEPTH and _LONG_DIGITS.search(raw) is None:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the careful reader names the problem in its own words
        else:
            if value.__class__ is list:
                return [InputItem(number, request, item=position) for position, request in enumerate(value, 1)]
            return [InputItem(number, value)]
    return list(_line(number, raw))


def _read(binary: BinaryIO) -> Callable[[], bytes]:
    read1 = getattr(binary, "read1", None)
    if read1 is not None:
        return lambda: read1(CHUNK)
    return lambda: binary.read(CHUNK)


def numbered_lines(binary: BinaryIO) -> Iterator[list[tuple[int, str]]]:
    """The input's lines, numbered from 1, in lists of what each read brought (no line break kept).

    A leading byte order mark is dropped; ``\\r\\n``, ``\\r`` and ``\\n`` end lines.
    Raises ``NotUtf8`` after yielding the lines before a bad byte.
    """
    read = _read(binary)
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    number = 0
    offset = 0  # bytes read before this read
    start = True
    while True:
        data = read()
        final = not data
        held = decoder.getstate()[0]
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError as error:
            good = (held + data)[:error.start].decode("utf-8", "replace")
            before = [(number + i + 1, line) for i, line in enumerate(_BREAK.split(pending + good)[:-1])]
            if before:
                yield before
            line = number + len(before) + 1
            raise NotUtf8(error.reason, offset - len(held) + error.start, line) from None
        offset += len(data)
        if start and text:
            text = text.removeprefix("\ufeff")
            start = False
        carry = ""
        if not final and text.endswith("\r"):
            text, carry = text[:-1], "\r"  # a "\n" may follow in the next read
        parts = _BREAK.split(pending + text)
        pending = parts.pop() + carry
        if final and pending:
            parts.append(pending)
        if parts:
            yield [(number + i + 1, line) for i, line in enumerate(parts)]
            number += len(parts)
        if final:
            return


def request_batches(binary: BinaryIO, size: int = BATCH) -> Iterator[list[InputItem]]:
    """``engine.iter_requests`` over bytes, in lists of at most ``size`` items.

    The first non-blank line decides, as there: JSON by itself means JSON Lines;
    otherwise the whole input is one document (an object or an array).
    """
    chunks = numbered_lines(binary)
    started = False
    for lines in chunks:
        items: list[InputItem] = []
        for i, (number, raw) in enumerate(lines):
            if not raw.strip():
                continue
            if started:
                items.extend(decode_line(number, raw))
            else:
                started = True
                try:
                    first = _decode(raw)
                except _Unreadable as error:
                    items.append(InputItem(number, error=str(error)))
                except json.JSONDecodeError:
                    rest = [text for _, text in lines[i:]] + [text for more in chunks for _, text in more]
                    document = "\n" * (number - 1) + "\n".join(rest)
                    yield from _sized(list(_read_document(document)), size)
                    return
                else:
                    items.extend(_batch(number, first, text=raw))
            if len(items) >= size:
                yield items
                items = []
        if items:
            yield items


def _sized(items: list[InputItem], size: int) -> Iterator[list[InputItem]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]


def decide_json_lines(policy: Policy, binary: BinaryIO, *, now: datetime | None = None,
                      directory: Mapping[str, Sequence[str]] | None = None,
                      out: Callable[[str], object], err: Callable[[str], object],
                      on_request: Callable[[InputItem], object] = lambda item: None) -> tuple[int, int]:
    """Decide every request of ``binary``; ``out`` gets each batch's JSON decisions (one per line).

    ``err`` gets one line per request that could not be decided as sent (the
    line-by-line path's words); ``on_request`` sees each item first. Returns
    (requests, malformed ones). Raises ``NotUtf8`` (after deciding the lines
    before the bad byte).
    """
    decided = malformed = 0
    texts: dict[int, tuple[Any, str]] = {}  # id(decision) -> (decision, its JSON): cached decisions recur
    for items in request_batches(binary):
        good = [item.request for item in items if item.error is None]
        decisions = iter(policy.evaluate_many(good, now=now, directory=directory))
        lines: list[str] = []
        for item in items:
            on_request(item)
            if item.error is not None:
                decision = policy.malformed([f"{item.where}: {item.error}"])
            else:
                decision = next(decisions)
            if decision.errors:
                malformed += 1
                where = "input " if item.error is not None else f"input {item.where}: "
                err(where + "; ".join(decision.errors))
            known = texts.get(id(decision))
            if known is not None and known[0] is decision:
                lines.append(known[1])
                continue
            text = decision.to_json()
            if not decision.errors and len(texts) < 4096:
                texts[id(decision)] = (decision, text)
            lines.append(text)
        decided += len(items)
        out("\n".join(lines))
    return decided, malformed
