"""What README.md and docs/*.md point at exists: linked files and headings, named docs, repository paths, metrics.

A new user found docs pointing to a ``DESIGN.md`` that is not in the repository,
to ``/work/shared/oracles`` outside it, and to monitor metrics ``check`` rejects
(issue 18, item 8). The shell examples are run by tests/test_docs_examples.py;
this checks the references around them, without running anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from policyengine.check_values import BIAS_METRICS, DRIFT_METRICS

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
_DOC_NAME = re.compile(r"(?<![\w/.-])([A-Z][A-Z_-]*\.md)\b")  # DESIGN.md, README.md: a doc named in prose
_OUTSIDE = re.compile(r"(?<![\w.])(/(?:work|home|Users)/[\w./-]+)")  # a path on the writer's machine
_REPO_PATH = re.compile(r"`((?:benchmarks|data|docs|examples|grammar|policyengine|reports|rules|schemas|tests)"
                        r"/[^`\s]*)`")
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z_]{2,}\b")  # reports/NAME.sql: a synopsis, not a file
_METRIC = re.compile(r"^\s*metric ([a-z_]+) (?:of|by)\b", re.M)  # a bias or drift rule's clause in an example
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in _HEADING.findall(text)}


def problems(doc: Path, text: str) -> list[str]:
    """Each reference of ``text`` (the content of ``doc``) that points at nothing, as ``what: why``."""
    out = []
    prose = _FENCE.sub("", text)
    for target in _LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            out.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            out.append(f"{target}: no heading #{anchor} in {path.name}")
    for name in sorted(set(_DOC_NAME.findall(prose))):
        if not any((base / name).exists() for base in (doc.parent, ROOT, ROOT / "docs")):
            out.append(f"{name}: not in the repository")
    for path in sorted(set(_OUTSIDE.findall(text))):
        out.append(f"{path}: outside the repository")
    for path in sorted(set(_REPO_PATH.findall(text))):
        if not _PLACEHOLDER.search(path) and not any(ROOT.glob(path.rstrip("/"))):
            out.append(f"{path}: no such file in the repository")
    examples = "\n".join(_FENCE.findall(text))  # checks.md names `metric parity of ...` in prose as an error
    for name in sorted(set(_METRIC.findall(examples))):
        if name not in BIAS_METRICS + DRIFT_METRICS:
            out.append(f"metric {name}: `check` rejects it (bias: {', '.join(BIAS_METRICS)}; "
                       f"drift: {', '.join(DRIFT_METRICS)})")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_every_reference_of_the_docs_points_at_something(doc: Path) -> None:
    assert problems(doc, doc.read_text(encoding="utf-8")) == []


# (what the docs once said, the problem found): issue 18's findings, and the other kinds of dead reference
STALE = [
    ('Checked in this order (DESIGN.md "Meaning"):', "DESIGN.md: not in the repository"),
    ("`/work/shared/oracles/fairness` (fairlearn 0.15)", "/work/shared/oracles/fairness: outside the repository"),
    ("```policy\nbias fair\n    metric demographic_parity_ratio of outcome\n```",
     "metric demographic_parity_ratio: `check` rejects it"),
    ("a bias metric other than `disparate_impact`: `metric parity of ...`", None),  # named as an error in prose
    ("see [the design](DESIGN.md)", "DESIGN.md: no such file"),
    ("the [request shape](engine.md#the-request-shape)", "engine.md#the-request-shape: no heading"),
    ("oracles in `tests/oracles/fairlearn`", "tests/oracles/fairlearn: no such file in the repository"),
    ("the [request shape](engine.md#requests), `reports/NAME.sql`, [c2sp](https://c2sp.org/x)", None),
]


@pytest.mark.parametrize(("text", "problem"), STALE, ids=[s[0][:40] for s in STALE])
def test_a_dead_reference_is_named(text: str, problem: str | None) -> None:
    found = problems(ROOT / "docs" / "example.md", text)
    if problem is None:
        assert found == []
    else:
        assert any(p.startswith(problem) for p in found), found
