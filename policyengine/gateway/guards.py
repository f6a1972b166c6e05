"""Guards: detectors that screen prompts and responses and fill ``context.guard.*`` for the policy.

The detectors find; the rules decide (``deny ... when "credit_card" in
context.guard.pii``). Recognizers are patterns confirmed by checksums where the
format has one (Luhn for card numbers, ISO 7064 mod 97 for IBANs), so a run of
digits is not a card. A detector that raises or runs past its time budget makes
the guard result ``failed``: the gateway then refuses the call (fail closed).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..identity import AS_LATIN

PII_TYPES = ("credit_card", "iban", "email", "phone")
SECRET_TYPES = ("openai_key", "aws_access_key", "github_token", "private_key", "bearer_token")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # entity type, e.g. "credit_card"
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of payment card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        n = int(char)  # any Unicode decimal digit, as the pattern's \d matches them (fullwidth, Arabic-Indic)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616 IBAN check digits (ISO 7064 mod 97-10)."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


_DIGIT_RUN = re.compile(r"(?<![\d-])\d(?:[ -]?\d)*(?![\d-])")  # digits, single spaces or dashes between
_DIGIT_GROUP = re.compile(r"\d+")
_CARD_SHAPES = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)})
# country code and check digits, then groups of 4 (a shorter last one), a single space or dash between; either case
_IBAN = re.compile(r"\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}(?:[ -]?[A-Za-z0-9]{1,4})?\b")
_SEPARATED = re.compile(r"(?=[ -])")  # where a group ends before a separator
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")  # _EMAIL past its '@'
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")  # before its '@'
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
                    r"|\(\d{2,4}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){1,3}"
                    r"|\d{2,4}(?:[ .-]\d{2,4}){2,4})(?![\w])")

_SECRETS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("openai_key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b")),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("github_token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    ("bearer_token", re.compile(r"\b[Bb]earer [A-Za-z0-9._~+/-]{24,}=*")),
)

# Phrases of instruction-override attacks; the score is 1 - prod(1 - weight) over the phrases found.
_INJECTION: tuple[tuple[re.Pattern[str], float], ...] = tuple((re.compile(p, re.I), w) for p, w in (
    (r"\bignore (?:all |any )?(?:the )?(?:previous|prior|above|earlier) (?:instructions|prompts?|rules)", 0.9),
    (r"\bdisregard (?:all |any )?(?:the )?(?:previous|prior|above|system) (?:instructions|prompts?|rules)", 0.9),
    (r"\bforget (?:all |everything )?(?:you were told|your instructions|previous instructions)", 0.8),
    (r"\b(?:reveal|print|show|repeat) (?:me )?(?:your|the) (?:system prompt|hidden instructions|initial prompt)", 0.8),
    (r"\byou are now (?:in )?(?:developer mode|DAN|jailbroken|unrestricted)", 0.8),
    (r"\bdo anything now\b", 0.6),
    (r"\bpretend (?:that )?you (?:have no|are not bound by) (?:rules|restrictions|guidelines)", 0.7),
    (r"\bnew instructions\s*:", 0.5),
    (r"</?(?:system|instructions?)>", 0.4),
))


def find_cards(text: str) -> list[Finding]:
    """Payment card numbers: 13-19 digits passing Luhn, written whole or in groups.

    A run of digits is tried from its start as one number, in any grouping
    (``41 11 11 ...``: its longest span of whole groups up to 19 digits).
    A card can also sit further inside a run of digit groups (``Ref 99 60 26
    ... 5555 5555 5555 4444``), where a regex's leftmost match would skip it:
    there, spans of whole groups are tried in the shapes cards are printed in
    (4-4-4-4, 4-4-4-4-3, 4-6-5, 4-6-4, or ungrouped), which keeps a table of
    small numbers from reading as a card at every offset. Overlapping valid
    spans are merged, so masking covers each of them.
    """
    spans: list[tuple[int, int]] = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(text, run.start(), run.end())]
        for first in range(len(groups)):
            digits = ""
            shape: tuple[int, ...] = ()
            longest: tuple[str, int] | None = None  # from the run's start: its longest span, as one number
            for start, end in groups[first:first + 20]:  # past 20 groups, past 19 digits (was the whole rest)
                digits += text[start:end]
                shape += (end - start,)
                if len(digits) > 19:
                    break
                if len(digits) >= 13:
                    if first == 0:
                        longest = (digits, end)
                    if (shape in _CARD_SHAPES or len(shape) == 1) and luhn_valid(digits):
                        spans.append((groups[first][0], end))
            if longest is not None and luhn_valid(longest[0]):
                spans.append((groups[0][0], longest[1]))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [Finding("credit_card", start, end) for start, end in merged]


def find_ibans(text: str) -> list[Finding]:
    """IBANs (mod-97 check digits), printed (groups of 4) or not, in either case, spaces or dashes between.

    A pattern's match may run on into a word of four letters after the IBAN (``... 3201 from``): its
    shorter spans ending before a separator are tried too, longest first (an unseparated run is read whole).
    """
    found = []
    for match in _IBAN.finditer(text):
        candidate = match.group()
        ends = [len(candidate), *reversed([m.start() for m in _SEPARATED.finditer(candidate)])]
        for end in ends:
            if iban_valid(candidate[:end]):
                found.append(Finding("iban", match.start(), match.start() + end))
                break
    return found


def find_emails(text: str) -> list[Finding]:
    """The spans ``_EMAIL.finditer(text)`` finds, in time linear in the text.

    Tried at every word boundary, the pattern rescans a run of local-part
    characters to its end each time no '@' follows (40 KB of ``a.`` held the
    event loop 4.5 s, every caller waiting). Every match holds one '@' whose
    domain matches: only those are tried, from the start of the run of
    local-part characters before each, where finditer's leftmost match starts.
    """
    found: list[Finding] = []
    floor = 0  # where the last match ended: finditer looks on from there
    at = text.find("@")
    while at >= 0:
        if at > floor and _EMAIL_DOMAIN.match(text, at + 1):
            start = at
            while start > floor and text[start - 1] in _EMAIL_LOCAL:
                start -= 1
            for begin in range(start, at):  # the first word boundary matches: the local part runs to the '@'
                match = _EMAIL.match(text, begin)
                if match is not None:
                    found.append(Finding("email", match.start(), match.end()))
                    floor = match.end()
                    break
        at = text.find("@", at + 1)
    return found


def find_pii(text: str) -> list[Finding]:
    found = find_cards(text)
    found.extend(find_ibans(text))
    found.extend(find_emails(text))
    taken = [(f.start, f.end) for f in found]
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        overlaps = any(s < match.end() and match.start() < e for s, e in taken)
        if 8 <= len(digits) <= 15 and not overlaps:
            found.append(Finding("phone", match.start(), match.end()))
    return found


def find_secrets(text: str) -> list[Finding]:
    return [Finding(kind, m.start(), m.end()) for kind, pattern in _SECRETS for m in pattern.finditer(text)]


def injection_score(text: str) -> float:
    """A score in [0, 1]: how much ``text`` reads like an attempt to override the model's instructions."""
    miss = 1.0
    for pattern, weight in _INJECTION:
        if pattern.search(text):
            miss *= 1 - weight
    return round(1 - miss, 4)


def mask(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with every finding replaced by ``[KIND]`` (overlaps merged: the first, longest, names them)."""
    spans = sorted(findings, key=lambda f: (f.start, -f.end))
    out: list[str] = []
    at = 0
    for f in spans:
        if f.start < at:
            at = max(at, f.end)  # what reaches past the finding it overlaps is redacted with it
            continue
        out.append(text[at:f.start])
        out.append(f"[{f.kind.upper()}]")
        at = f.end
    out.append(text[at:])
    return "".join(out)


@dataclass(frozen=True)
class GuardConfig:
    """What the gateway screens and which findings it redacts before the upstream sees them.

    ``mask``: entity types (PII or secret kinds) replaced by ``[TYPE]`` in
    prompts before the call, and in responses before release.
    """

    pii: bool = True
    secrets: bool = True
    prompt_injection: bool = True
    mask: frozenset[str] = field(default_factory=frozenset)
    timeout_s: float = 0.5
    toxicity: bool = False  # the optional model (gateway/toxicity.py); off: context.guard.toxicity is absent


@dataclass
class Screening:
    """What the detectors found in one text, as the policy sees it (``context.guard``)."""

    pii: list[str]
    secrets: list[str]
    prompt_injection: float
    masked: list[str]
    findings: list[Finding]
    toxicity: float | None = None  # None: the toxicity guard is off

    def context(self) -> dict[str, object]:
        out: dict[str, object] = {"pii": self.pii, "secrets": self.secrets, "prompt_injection": self.prompt_injection,
                                  "masked": self.masked, "failed": False}
        if self.toxicity is not None:
            out["toxicity"] = self.toxicity
        return out


_SPACES = re.compile("[\t\n\r\v\f]")  # written as a space; re.sub is C speed, str.translate per character


def shadow(text: str) -> tuple[str, list[int] | None]:
    """The text the detectors read, and where each of its characters came from in ``text`` (None: the same).

    What would hide an entity or a phrase from a pattern is undone: NFKC
    (full-width digits and letters), invisible characters removed (zero-width
    spaces and joiners, soft hyphens, bidi controls), every white space a
    single space (NBSP, tabs, newlines, doubled spaces), dashes as ``-`` and
    Latin look-alike letters as Latin. Findings are mapped back through the
    positions, so masking redacts the original characters.
    """
    spaced = _SPACES.sub(" ", text)
    if "  " not in spaced and (text.isascii() or _unchanged_beyond_ascii(spaced)):
        return spaced, None  # one-to-one: positions are unchanged
    return _shadow_by_character(text)


def _shadow_by_character(text: str) -> tuple[str, list[int]]:
    """``shadow``, one character at a time (what its fast path must agree with)."""
    out: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category == "Cf":
            continue
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            out.append(" ")
            origin.append(index)
            continue
        if category == "Pd":
            ch = "-"
        for piece in unicodedata.normalize("NFKC", ch).translate(AS_LATIN) if not ch.isascii() else ch:
            out.append(piece)
            origin.append(index)
    return "".join(out), origin


def _unchanged_beyond_ascii(spaced: str) -> bool:
    """Whether ``shadow``'s character loop would leave the non-ASCII ``spaced`` as it is, decided at C speed
    (the loop costs ~2.6 ms for 10 KB of German): printable (no invisible character, no space but ' '), in
    NFKC form (so each character is), no dash but '-' and no look-alike letter."""
    return (spaced.isprintable() and unicodedata.is_normalized("NFKC", spaced)
            and _rewritten_letter().search(spaced) is None)


@lru_cache(maxsize=1)
def _rewritten_letter() -> re.Pattern[str]:
    """A dash ``shadow`` writes as '-' (Unicode Pd but '-', found once: ~50 ms) or a look-alike letter."""
    dashes = "".join(ch for ch in map(chr, range(0x20000)) if ch != "-" and unicodedata.category(ch) == "Pd")
    return re.compile(f"[{re.escape(dashes + ''.join(map(chr, AS_LATIN)))}]")


def _located(findings: list[Finding], origin: list[int] | None) -> list[Finding]:
    if origin is None:
        return findings
    return [Finding(f.kind, origin[f.start], origin[f.end - 1] + 1) for f in findings if f.end > f.start]


# Lower-case words joined by '_' or '.' ("role", "assistant", "chat.completion", "tool_calls"): no detector can
# match one (each needs a digit, '@', a capital, '-', a space or a secret's prefix), and a body is mostly these.
_INERT = re.compile(r"[a-z_.]{0,30}")  # shorter than any secret (ghp_ + 36)
_NOTHING = Screening([], [], 0.0, [], [])


def screen(text: str, config: GuardConfig) -> Screening:
    if not config.toxicity and _INERT.fullmatch(text):
        return _NOTHING
    read, origin = shadow(text)
    findings: list[Finding] = []
    if config.pii:
        findings.extend(_located(find_pii(read), origin))
    if config.secrets:
        findings.extend(_located(find_secrets(read), origin))
    pii = sorted({f.kind for f in findings if f.kind in PII_TYPES})
    secrets = sorted({f.kind for f in findings if f.kind not in PII_TYPES})
    score = injection_score(read) if config.prompt_injection else 0.0
    masked = sorted({f.kind for f in findings if f.kind in config.mask})
    toxicity = None
    if config.toxicity:
        from .toxicity import scorer

        toxicity = scorer()([text])[0]
    return Screening(pii, secrets, score, masked, findings, toxicity)


def masker(config: GuardConfig) -> Callable[[str, Screening], str]:
    def apply(text: str, found: Screening) -> str:
        return mask(text, [f for f in found.findings if f.kind in config.mask])
    return apply


def merge(screenings: Iterable[Screening]) -> dict[str, object]:
    """One ``context.guard`` over several texts (the messages of one request)."""
    pii: set[str] = set()
    secrets: set[str] = set()
    masked: set[str] = set()
    score = 0.0
    toxicity: float | None = None
    for s in screenings:
        pii.update(s.pii)
        secrets.update(s.secrets)
        masked.update(s.masked)
        score = max(score, s.prompt_injection)
        if s.toxicity is not None:
            toxicity = s.toxicity if toxicity is None else max(toxicity, s.toxicity)
    if math.isnan(score):
        score = 1.0
    out: dict[str, object] = {"pii": sorted(pii), "secrets": sorted(secrets), "prompt_injection": score,
                              "masked": sorted(masked), "failed": False}
    if toxicity is not None:
        out["toxicity"] = toxicity
    return out


Path = tuple[str | int, ...]
KEY = "\0key"  # the last step of a path that names an object key, not a value


def texts_of(body: dict[str, Any], skip: Collection[str] = ("model",)) -> list[tuple[Path, str]]:
    """Every string in a JSON body, with where it is (document order), but the top-level fields in ``skip``.

    All of it goes upstream (or back to the caller), so all of it is screened:
    not only message contents but content parts, names, tool-call arguments,
    ``stop``, ``user``, and object keys (a key's path ends in ``KEY``, so it can
    be refused, not masked). Walked without recursion, as bodies nest freely.
    """
    found: list[tuple[Path, str]] = []
    stack: list[tuple[Path, Any]] = [((), body)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            found.append((path, node))
        elif isinstance(node, dict):
            for key, child in reversed(node.items()):
                if path or key not in skip:
                    stack.append(((*path, key), child))
                    stack.append(((*path, key, KEY), key))
        elif isinstance(node, list):
            stack.extend(((*path, i), child) for i, child in reversed(list(enumerate(node))))
    return found


def replace_texts(body: dict[str, Any], new: dict[Path, str]) -> dict[str, Any]:
    """A copy of ``body`` with the strings at the paths of ``new`` (values, never keys) replaced; only the
    containers on those paths are copied."""
    root = dict(body)
    copied: dict[Path, Any] = {(): root}
    for path, text in new.items():
        node = root
        for depth in range(1, len(path)):
            step = path[:depth]
            if step not in copied:
                child = node[path[depth - 1]]
                copied[step] = node[path[depth - 1]] = dict(child) if isinstance(child, dict) else list(child)
            node = copied[step]
        node[path[-1]] = text
    return root
