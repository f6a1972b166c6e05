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
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

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
    compact = re.sub(r"\s", "", text).upper()
    if not 15 <= len(compact) <= 34 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
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


def find_pii(text: str) -> list[Finding]:
    found: list[Finding] = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(Finding("credit_card", match.start(), match.end()))
    for match in _IBAN.finditer(text):
        if iban_valid(match.group()):
            found.append(Finding("iban", match.start(), match.end()))
    for match in _EMAIL.finditer(text):
        found.append(Finding("email", match.start(), match.end()))
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
    """``text`` with every finding replaced by ``[KIND]`` (overlaps merged, longest first wins)."""
    spans = sorted(findings, key=lambda f: (f.start, -f.end))
    out: list[str] = []
    at = 0
    for f in spans:
        if f.start < at:
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


def screen(text: str, config: GuardConfig) -> Screening:
    findings: list[Finding] = []
    if config.pii:
        findings.extend(find_pii(text))
    if config.secrets:
        findings.extend(find_secrets(text))
    pii = sorted({f.kind for f in findings if f.kind in PII_TYPES})
    secrets = sorted({f.kind for f in findings if f.kind not in PII_TYPES})
    score = injection_score(text) if config.prompt_injection else 0.0
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


KEY = "\0key"  # the last step of a path that names an object key, not a value


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
