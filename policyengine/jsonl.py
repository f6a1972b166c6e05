"""JSON Lines in batches: what ``policyengine eval`` runs unless it explains or stamps model versions.

The input is read as bytes, as much as has arrived (up to 64 KiB a read, never
waiting for more once a whole line is there, so ``eval`` still answers line by
line in a pipe), checked to be UTF-8 and cut into lines as bytes. Each read's
lines are decoded with orjson, decided with ``Policy.evaluate_many`` and their
decisions written at once.

A line is decoded with orjson unless it may hold what only the careful reader
of ``engine.iter_requests`` catches and orjson accepts (an integer beyond
2**53, nesting deeper than ``MAX_DEPTH``); those lines, and lines orjson
refuses (a lone surrogate, ``NaN``, ``1e400``, bad JSON), go through that
reader, so every request, every error and every message is the one the
line-by-line path gives. So do lines whose objects may repeat a key
(``jsontext.surely_unique_keys``): the careful reader names the key and the
line is malformed. Input that is not UTF-8 stops the run with the byte and
line of the first bad byte, after the lines before it are decided.

A line seen before is answered with the text it got then (``_Repeats``), but
only while that text cannot change: never for a line whose decision read the
clock, the budget ledger, a live block list or the request's approvals, and
never when decisions are audited (each request is recorded: ``record``).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from . import ast
from .engine import InputItem, Policy, _batch, _line, _read_document
from .jsontext import MAX_DEPTH, Unreadable, decode
from .jsontext import surely_unique_keys

BATCH = 512
CHUNK = 1 << 16
_BOM = b"\xef\xbb\xbf"
# What only the careful reader handles and orjson accepts: a run of 16 digits (an integer beyond 2**53 that
# may have no double). orjson refuses the rest (NaN, Infinity, 1e400, lone surrogates, integers beyond 64
# bits), and those lines go to the careful reader too. A read is searched at once: digits -> "0", else " ".
_DIGIT_MAP = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_RUN = b"0" * 16
# Bytes a line may start with (after ASCII whitespace) that str.strip() may still take for whitespace:
# \x1c-\x1f and the lead bytes of non-ASCII characters (U+0085, U+00A0, U+3000, ...).
_MAYBE_SPACE = frozenset((0x1C, 0x1D, 0x1E, 0x1F, *range(0x80, 0x100)))


class NotUtf8(ValueError):
    """The input has a byte sequence that is not UTF-8: where (byte offset from 0, and line)."""

    def __init__(self, reason: str, byte: int, line: int) -> None:
        super().__init__(f"{reason} at byte {byte}, line {line}")
        self.reason, self.byte, self.line = reason, byte, line


def _blank(line: bytes) -> bool:
    """Whether the line is whitespace only, as ``str.strip`` judges (the line-by-line reader's test)."""
    kept = line.strip()
    if not kept:
        return True
    return kept[0] in _MAYBE_SPACE and not line.decode("utf-8").strip()


_CAREFUL = object()


def quick_value(line: bytes, digits: bool = True) -> Any:
    """The JSON value of one line (bytes, UTF-8, no line break) by orjson, or ``_CAREFUL``.

    ``_CAREFUL``: only ``engine``'s careful reader may read the line (see the
    module docstring). ``digits=False`` says the line holds no run of 16 digits
    (its read was searched at once).
    """
    if line.count(b"[") + line.count(b"{") <= MAX_DEPTH and (not digits or _RUN not in line.translate(_DIGIT_MAP)):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            pass  # the careful reader names the problem in its own words
        else:
            if surely_unique_keys(line, value):
                return value
    return _CAREFUL


def _read(binary: BinaryIO) -> Callable[[], bytes]:
    read1 = getattr(binary, "read1", None)
    if read1 is not None:
        return lambda: read1(CHUNK)
    return lambda: binary.read(CHUNK)


def numbered_lines(binary: BinaryIO) -> Iterator[tuple[int, list[bytes], bool]]:
    """The input's lines as bytes (no line break kept), in lists of what each read brought.

    Each list comes with the number of its first line (from 1) and whether it
    may hold a run of 16 digits. A leading byte order mark is dropped;
    ``\\r\\n``, ``\\r`` and ``\\n`` end lines. Raises ``NotUtf8`` after yielding
    the lines before a bad byte.
    """
    read = _read(binary)
    decoder = codecs.getincrementaldecoder("utf-8")()  # checks the bytes; lines are cut from the bytes
    pending = b""  # bytes after the last line break (an incomplete character's bytes too)
    number = 1  # of the next line
    offset = 0  # bytes read before this read
    start = True
    while True:
        data = read()
        final = not data
        held = decoder.getstate()[0]
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError as error:
            good = (pending + data)[:len(pending) - len(held) + error.start]
            if start:
                good = good.removeprefix(_BOM)
            before = good.splitlines()
            if before and not good.endswith((b"\n", b"\r")):
                before.pop()  # the start of the bad byte's line
            if before:
                yield number, before, True
            raise NotUtf8(error.reason, offset - len(held) + error.start, number + len(before)) from None
        offset += len(data)
        buf = pending + data
        if start:
            if len(buf) < len(_BOM) and _BOM.startswith(buf) and not final:
                pending = buf  # a byte order mark may be arriving
                continue
            buf = buf.removeprefix(_BOM)
            start = False
        if final:
            lines = buf.splitlines()
            pending = b""
        else:
            carry = b"\r" if buf.endswith(b"\r") else b""  # a "\n" may follow in the next read
            body = buf[:-1] if carry else buf
            cut = max(body.rfind(b"\n"), body.rfind(b"\r")) + 1
            lines = body[:cut].splitlines()
            pending = body[cut:] + carry
        if lines:
            yield number, lines, _RUN in buf.translate(_DIGIT_MAP)
            number += len(lines)
        if final:
            return


def _sized(items: list[InputItem], size: int) -> Iterator[list[InputItem]]:
    for at in range(0, len(items), size):
        yield items[at:at + size]


# --- answering a line seen before --------------------------------------------------------

_MEMO_LIMIT = 1 << 16  # lines remembered; the memory starts afresh when full
_MEMO_LINE = 4096  # longer lines are not remembered (bytes)
_fields: dict[type, tuple[str, ...]] = {}


def reads_clock(policy: Policy) -> bool:
    """Whether a decision may depend on when it is made: budgets, gate deadlines, an ``age of`` condition."""
    compiled = policy.compiled
    if compiled.budgets or any(gate.within_seconds is not None for gate in compiled.gates):
        return True
    return reads_age(policy)


def reads_age(policy: Policy) -> bool:
    """Whether a condition of ``policy`` reads the decision's clock (``age of``): then the effect of one request
    depends on when it is decided, not only on the request and the ledger."""
    stack: list[Any] = list(policy.policy_set.expression_roots())  # a set read from the disk: no tree read
    while stack:
        node = stack.pop()
        kind = node.__class__
        if kind is ast.TimeOf and node.part == "age":
            return True
        if kind is tuple or kind is list:
            stack.extend(node)
        elif isinstance(node, Mapping):
            stack.extend(node.values())
        elif dataclasses.is_dataclass(node):
            names = _fields.get(kind)
            if names is None:
                names = _fields[kind] = tuple(f.name for f in dataclasses.fields(node) if f.name != "span")
            stack.extend(getattr(node, name) for name in names)
    return False


class _Repeats:
    """The output text of lines already decided, while it cannot change (see the module docstring).

    A line is remembered only when every request on it was decided without an
    error and carries no approvals. Whether repeats may be answered from memory
    is judged at the first repeat, so a run without repeats never pays for it.
    """

    def __init__(self, policy: Policy, now: datetime | None, fixed_state: bool) -> None:
        self.policy, self.now, self.fixed_state = policy, now, fixed_state
        self.known: dict[bytes, tuple[int, str]] | None = {}
        self.judged = False

    def safe(self) -> bool:
        """Whether the same line must get the same answer for the rest of the run."""
        policy = self.policy
        if not isinstance(policy.blocked, frozenset):
            return False  # a live block list may change between two decisions
        if policy.compiled.budgets and not self.fixed_state:
            return False  # the ledger may be charged meanwhile (another worker, another thread)
        return self.now is not None or not reads_clock(policy)

    def judge(self) -> dict[bytes, tuple[int, str]] | None:
        self.judged = True
        if not self.safe():
            self.known = None
        return self.known


class _Run:
    """One ``decide_json_lines`` run: counts, the once-only approvals warning, and the texts of decisions."""

    def __init__(self, policy: Policy, now: datetime | None, directory: Mapping[str, Sequence[str]] | None,
                 out: Callable[[str], object], err: Callable[[str], object],
                 claimed: Callable[[str], object] | None, fixed_state: bool,
                 record: Callable[[Any, Any], object] | None) -> None:
        self.policy, self.now, self.directory, self.out, self.err = policy, now, directory, out, err
        self.claimed, self.record = claimed, record
        self.decided = self.malformed = 0
        self.repeats = _Repeats(policy, now, fixed_state)
        if record is not None:
            self.repeats.known = None  # every request is decided and recorded, repeated or not
        self.texts: dict[int, tuple[Any, str]] = {}  # id(decision) -> (decision, its JSON): cached decisions recur

    def lines(self, number: int, lines: list[bytes], digits: bool) -> None:
        """Decide one read's lines (numbered from ``number``) and write their decisions."""
        entries: list[Any] = []  # per line: (count, text) from memory, or [line, number, request, items]
        todo: list[Any] = []
        repeats = self.repeats
        known = repeats.known
        for at, line in enumerate(lines, number):
            if known is not None:
                hit = known.get(line)
                if hit is not None and (repeats.judged or repeats.judge() is not None):
                    entries.append(hit)
                    continue
                known = repeats.known
            if _blank(line):
                continue
            value = quick_value(line, digits)
            if value is not _CAREFUL and value.__class__ is not list:  # one request: no ``InputItem`` yet
                entries.append([line, at, value, None])
                todo.append(value)
                continue
            items = list(_line(at, line.decode("utf-8"))) if value is _CAREFUL else [
                InputItem(at, request, item=position) for position, request in enumerate(value, 1)]
            entries.append([line, at, None, items])
            todo.extend([item.request for item in items if item.error is None])
        self._write(entries, todo)

    def items(self, items: list[InputItem]) -> None:
        """Decide items read some other way (the first line, a whole document); never remembered."""
        self._write([[None, 0, None, items]], [item.request for item in items if item.error is None])

    def _write(self, entries: list[Any], todo: list[Any]) -> None:
        policy = self.policy
        decisions = iter(policy.evaluate_many(todo, now=self.now, directory=self.directory))
        known = self.repeats.known
        record = self.record
        out: list[str] = []
        for entry in entries:
            if entry.__class__ is tuple:
                self.decided += entry[0]
                out.append(entry[1])
                continue
            line, number, request, items = entry
            if items is None:  # one request, read by orjson
                decision = next(decisions)
                self.decided += 1
                if record is not None:
                    record(request, decision)
                remember = known is not None and len(line) <= _MEMO_LINE
                if request.__class__ is dict and request.get("approvals"):
                    remember = False  # approvals are judged against the clock
                    self._claimed(f"line {number}")
                if decision.errors:
                    self._error(decision, InputItem(number, request))
                    out.append(self._text(decision))
                    continue
                text = self._text(decision)
                out.append(text)
                if remember:
                    self._remember(known, line, 1, text)
                continue
            first = len(out)
            clean = line is not None and len(line) <= _MEMO_LINE
            for item in items:
                request = item.request
                if isinstance(request, dict) and request.get("approvals"):
                    clean = False  # approvals are judged against the clock
                    self._claimed(item.where)
                if item.error is not None:
                    decision = policy.malformed([f"{item.where}: {item.error}"])
                else:
                    decision = next(decisions)
                if record is not None:
                    record(request, decision)
                if decision.errors:
                    clean = False
                    self._error(decision, item)
                out.append(self._text(decision))
            self.decided += len(items)
            if clean and known is not None and items:
                self._remember(known, line, len(items), "\n".join(out[first:]))
        if out:
            self.out("\n".join(out))

    def _text(self, decision: Any) -> str:
        """The JSON of ``decision``, made once per decision object (cached decisions recur)."""
        found = self.texts.get(id(decision))
        if found is not None and found[0] is decision:
            return found[1]
        text = decision.to_json()
        if not decision.errors and len(self.texts) < 4096:
            self.texts[id(decision)] = (decision, text)
        return text

    @staticmethod
    def _remember(known: dict[bytes, tuple[int, str]], line: bytes, count: int, text: str) -> None:
        """Keep ``line``'s ``count`` decisions' ``text`` for its repeats (the memory starts afresh when full)."""
        if len(known) >= _MEMO_LIMIT:
            known.clear()
        known[line] = (count, text)

    def _error(self, decision: Any, item: InputItem) -> None:
        self.malformed += 1
        where = "input " if item.error is not None else f"input {item.where}: "
        self.err(where + "; ".join(decision.errors))

    def _claimed(self, where: str) -> None:
        if self.claimed is not None:
            self.claimed(where)
            self.claimed = None  # once per run


def decide_json_lines(policy: Policy, binary: BinaryIO, *, now: datetime | None = None,
                      directory: Mapping[str, Sequence[str]] | None = None,
                      out: Callable[[str], object], err: Callable[[str], object],
                      claimed: Callable[[str], object] | None = None, fixed_state: bool = False,
                      record: Callable[[Any, Any], object] | None = None) -> tuple[int, int]:
    """Decide every request of ``binary``; ``out`` gets each read's JSON decisions (one per line).

    ``err`` gets one line per request that could not be decided as sent (the
    line-by-line path's words); ``claimed`` gets where the first request with
    approvals is (once). ``fixed_state``: nothing charges the policy's budget
    ledger during the run (then a repeated line may be answered from memory even
    under budgets). The first non-blank line decides, as in
    ``engine.iter_requests``: JSON by itself means JSON Lines; otherwise the
    whole input is one document (an object or an array). ``record`` (the audit
    hook of ``eval --audit``) is called with (request as read, decision) for
    every request, in input order, before ``out`` gets the text of its decision.
    Returns (requests, malformed ones). Raises ``NotUtf8`` (after deciding the
    lines before the bad byte).
    """
    run = _Run(policy, now, directory, out, err, claimed, fixed_state, record)
    reads = numbered_lines(binary)
    for number, lines, digits in reads:
        at = next((i for i, line in enumerate(lines) if not _blank(line)), None)
        if at is None:
            continue
        if _first_line(run, reads, number + at, lines[at:]):
            return run.decided, run.malformed
        run.lines(number + at + 1, lines[at + 1:], digits)
        break
    for number, lines, digits in reads:
        run.lines(number, lines, digits)
    return run.decided, run.malformed


def _first_line(run: _Run, reads: Iterator[tuple[int, list[bytes], bool]], number: int, lines: list[bytes]) -> bool:
    """Decide the first non-blank line, ``lines[0]`` (numbered ``number``); True when the input was one document.

    JSON by itself on that line means JSON Lines; otherwise the rest of the input,
    from that line on (``lines`` and every read left), is one document.
    """
    raw = lines[0].decode("utf-8")
    try:
        first = decode(raw)
    except Unreadable as error:
        run.items([InputItem(number, error=str(error))])
    except json.JSONDecodeError:
        rest = [text.decode("utf-8") for text in lines]
        rest += [text.decode("utf-8") for _, more, _ in reads for text in more]
        document = "\n" * (number - 1) + "\n".join(rest)
        for items in _sized(list(_read_document(document)), BATCH):
            run.items(items)
        return True
    else:
        run.items(list(_batch(number, first, text=raw)))
    return False
