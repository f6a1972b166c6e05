"""Source positions and the findings that point at them.

Every error a user sees, from a syntax error to a failed request, is a
``Finding`` rendered as ``file:line:col: severity[code]: message`` followed by the
source line and a caret under the offending token, so that people and editors can
jump straight to it.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Span:
    """A region of one source file; lines and columns count from 1."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


UNKNOWN_SPAN = Span("<unknown>", 1, 1, 1, 1)


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a policy source, with where it is and how to fix it."""

    code: str
    message: str
    span: Span
    severity: Severity = Severity.ERROR
    help: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def headline(self) -> str:
        return f"{self.span}: {self.severity.value}[{self.code}]: {self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "col": self.span.col,
            "end_line": self.span.end_line,
            "end_col": self.span.end_col,
            "severity": self.severity.value,
            "code": self.code,
            "message": self.message,
            "help": self.help,
        }


class PolicyError(Exception):
    """Raised when policy sources cannot be turned into a usable policy set."""

    def __init__(self, findings: list[Finding] | Finding):
        self.findings: list[Finding] = [findings] if isinstance(findings, Finding) else list(findings)
        super().__init__("\n".join(f.headline() for f in self.findings))


@dataclass(slots=True)
class SourceCache:
    """Reads each source file once so rendering many findings stays cheap."""

    texts: dict[str, str] = field(default_factory=dict)

    def line(self, file: str, line: int) -> str | None:
        if file not in self.texts:
            try:
                self.texts[file] = Path(file).read_text(encoding="utf-8", errors="replace")
            except OSError:
                self.texts[file] = ""
        lines = self.texts[file].splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None


def sort_findings(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.span.file, f.span.line, f.span.col, f.code))


def render_finding(finding: Finding, sources: SourceCache | None = None) -> str:
    """Render like a compiler: headline, source line, caret, optional help."""
    sources = sources or SourceCache()
    out = [finding.headline()]
    text = sources.line(finding.span.file, finding.span.line)
    if text is not None:
        gutter = f"{finding.span.line:>4} | "
        width = 1
        if finding.span.end_line == finding.span.line and finding.span.end_col > finding.span.col:
            width = finding.span.end_col - finding.span.col
        prefix = "".join(ch if ch == "\t" else " " for ch in text[: finding.span.col - 1])
        out.append(gutter + text)
        out.append(" " * len(gutter) + prefix + "^" * width)
    if finding.help:
        out.append(f"  help: {finding.help}")
    return "\n".join(out)


def render_findings(findings: list[Finding], fmt: str = "human") -> str:
    findings = sort_findings(findings)
    if fmt == "json":
        return json.dumps([f.to_json() for f in findings], indent=2)
    sources = SourceCache()
    return "\n".join(render_finding(f, sources) for f in findings)


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """A ``did you mean`` hint for a misspelt name, or None."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
