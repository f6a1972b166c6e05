"""Single-point mutations of rule files, to show that the policy tests would notice.

A policy test suite is only as good as the changes it catches. Each mutant
changes one thing a reviewer could easily miss in a diff: an ``allow`` turned
into ``deny`` (or back), an escalation's ``else deny`` into ``else allow``, a
numeric threshold doubled or halved, a comparison's boundary moved (``<=``
to ``<``, ``>`` to ``>=``), or two neighbours of a route's ``prefer`` list
swapped. Running the tests against every mutant and seeing each one fail is
evidence that the tests pin down the policy's meaning.

Mutants are made on the source text with a small tokenizer (strings and
comments are skipped), so every mutant differs from the original in exactly one
token (a ``prefer`` swap: in the order of two). Thresholds are the numbers in
``when``/``unless`` conditions, ``const`` values, budget ``limit``/``warn at``,
escalation ``within``, and a bias or drift monitor's ``threshold`` (number and
boundary, except the boundary of a PSI threshold, see ``_NO_TIES``), ``window``,
``min samples`` and ``baseline``; those monitors are
caught by the monitor cases of the test files. Numbers of the model registry
are left alone.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<comment>#[^\n]*)|(?P<number>\d[\d_]*(?:\.\d+)?)'
    r"|(?P<word>[A-Za-z_][\w]*)|(?P<op><=|>=|==|!=|<|>)|(?P<newline>\n)|(?P<other>\S)"
)
# Declarations whose numbers are thresholds of per-request decisions (a schema's bounds: malformed or not).
_THRESHOLD_DECLS = frozenset({"rule", "residency", "escalate", "route", "const", "budget", "schema"})
_DECL_WORDS = frozenset({
    "role", "agent", "model", "const", "rule", "residency", "budget", "escalate", "route", "bias", "drift", "schema",
    "mask",
    "package", "owner", "cite", "import",
})
_BOUNDARY = {"<=": "<", "<": "<=", ">=": ">", ">": ">="}
_MONITOR_DECLS = frozenset({"bias", "drift"})
# Clauses of a bias/drift monitor whose numbers decide a breach (``min samples``, ``baseline previous``).
_MONITOR_CLAUSES = frozenset({"threshold", "window", "min", "baseline"})
# Metrics that never equal a decimal threshold exactly, so ``<`` and ``<=`` decide every sample
# alike and that mutant is equivalent: PSI is a sum of (cur% - ref%) * ln(cur% / ref%) terms.
# (KS and the bias metrics are ratios or differences of counts and can hit a threshold exactly.)
_NO_TIES = frozenset({"psi"})


@dataclass(frozen=True, slots=True)
class Mutant:
    """One mutated copy of a rule file's text."""

    file: str
    line: int
    col: int
    original: str
    replacement: str
    decl: str  # e.g. "rule analysts_read_invoices"
    text: str  # the whole mutated file

    @property
    def label(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.original} -> {self.replacement} (in {self.decl})"


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    start: int
    line: int
    col: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    line, line_start = 1, 0
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        if kind == "newline":
            line, line_start = line + 1, m.end()
            continue
        if kind in ("comment",):
            continue
        out.append(_Tok(kind, m.group(), m.start(), line, m.start() - line_start + 1))
    return out


def _scaled(number: str) -> list[str]:
    """The number doubled and halved, written the way the original was (int or decimal)."""
    value = float(number.replace("_", ""))
    is_int = "." not in number
    if value == 0:
        return ["1"]
    results = []
    for new in (value * 2, value / 2):
        if is_int and new == int(new):
            results.append(str(int(new)))
        else:
            results.append(repr(round(new, 6)))
    return [r for r in results if float(r) != value]


def mutants(file: str, text: str) -> Iterator[Mutant]:
    """Every single-token mutant of one rule file, in source order."""
    toks = _tokens(text)
    decl_kind, decl_name = "", ""
    effect_done = False
    metric = ""  # a bias/drift rule's metric (psi, ks, disparate_impact, ...)
    clause = ""  # the clause keyword the current token belongs to (when, limit, warn, within, ...)
    for i, tok in enumerate(toks):
        if tok.kind == "word" and tok.col == 1 and tok.text in _DECL_WORDS:
            decl_kind = tok.text
            decl_name = toks[i + 1].text if i + 1 < len(toks) else ""
            effect_done, clause, metric = False, "", ""
            continue
        if tok.kind == "word" and tok.text == "metric" and i + 1 < len(toks):
            metric = toks[i + 1].text
        if tok.kind == "word" and tok.text in ("when", "unless", "limit", "warn", "within", "require", "to",
                                                "for", "because", "cite", "prefer", "on", "metric", "threshold",
                                                "window", "min", "baseline"):
            clause = tok.text
        where = f"{decl_kind} {decl_name}"

        def make(replacement: str, tok: _Tok = tok, where: str = where) -> Mutant:
            new_text = text[: tok.start] + replacement + text[tok.start + len(tok.text):]
            return Mutant(file, tok.line, tok.col, tok.text, replacement, where, new_text)

        if decl_kind == "route" and tok.kind == "word" and tok.text == "prefer":
            yield from _prefer_swaps(file, text, toks, i, where)
        elif decl_kind in _MONITOR_DECLS:
            if tok.kind == "number" and clause in _MONITOR_CLAUSES:
                for replacement in _scaled(tok.text):
                    yield make(replacement)
            elif tok.kind == "op" and tok.text in _BOUNDARY and clause == "threshold" and metric not in _NO_TIES:
                yield make(_BOUNDARY[tok.text])
        elif decl_kind == "rule" and tok.kind == "word" and tok.text in ("allow", "deny") and not effect_done:
            effect_done = True
            yield make("deny" if tok.text == "allow" else "allow")
        elif decl_kind == "escalate" and tok.kind == "word" and tok.text in ("allow", "deny") and i and toks[i - 1].text == "else":
            yield make("deny" if tok.text == "allow" else "allow")
        elif tok.kind == "number" and decl_kind in _THRESHOLD_DECLS:
            if decl_kind == "budget" and clause not in ("limit", "warn"):
                continue
            if decl_kind in ("rule", "residency", "escalate", "route") and clause not in ("when", "unless", "within"):
                continue
            for replacement in _scaled(tok.text):
                yield make(replacement)
        elif tok.kind == "op" and tok.text in _BOUNDARY and decl_kind in ("rule", "residency", "escalate", "route"):
            yield make(_BOUNDARY[tok.text])


def _prefer_swaps(file: str, text: str, toks: list[_Tok], i: int, where: str) -> Iterator[Mutant]:
    """Each pair of neighbours of the ``prefer`` list at ``toks[i]`` swapped (the list is an order)."""
    names: list[_Tok] = []
    j = i + 1
    while j < len(toks) and toks[j].kind == "word" and toks[j].line == toks[i].line:
        names.append(toks[j])
        if j + 1 < len(toks) and toks[j + 1].text == "," and toks[j + 1].line == toks[i].line:
            j += 2
        else:
            break
    for a, b in itertools.pairwise(names):
        end = b.start + len(b.text)
        original = text[a.start:end]
        replacement = b.text + text[a.start + len(a.text):b.start] + a.text
        new_text = text[: a.start] + replacement + text[end:]
        yield Mutant(file, a.line, a.col, original, replacement, where, new_text)


@dataclass(frozen=True)
class MutationReport:
    """Which mutants the policy tests caught; a survivor is a change no test notices."""

    total: int
    survivors: tuple[Mutant, ...]
    baseline_ok: bool

    @property
    def caught(self) -> int:
        return self.total - len(self.survivors)


def run_mutations(folder: str | Path, *, only: Callable[[Mutant], bool] | None = None) -> MutationReport:
    """Run the policy tests of ``folder`` once per mutant of its rule files, in a temporary copy.

    The folder must hold both the rule files and their tests (as ``rules/`` does).
    The tests must pass on the unmutated copy first (else ``baseline_ok`` is False
    and no mutant is tried). Each mutant's own ``<name>_test.yaml`` runs first and
    the run stops at the first failure, so a caught mutant costs little.
    """
    from ..loader import no_disk_cache, resolve_imports_as_at

    source = Path(folder)
    # the copies live in a random temp folder: their parse-cache entries would never be read again,
    # and their imports resolve as the originals' do, never from whatever else lies in $TMPDIR
    with no_disk_cache(), tempfile.TemporaryDirectory(prefix="policyengine-mutants-") as tmp:
        root = Path(tmp) / source.resolve().name
        shutil.copytree(source, root, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        with resolve_imports_as_at(root, source):
            return _mutate_copy(source, root, only)


def _mutate_copy(source: Path, root: Path, only: Callable[[Mutant], bool] | None) -> MutationReport:
    """Run the tests of the copy ``root`` of ``source`` unmutated, then once per mutant."""
    from .runner import run_paths

    if not run_paths([root], explain=False, fail_fast=True).ok:
        return MutationReport(0, (), baseline_ok=False)
    total, survivors = 0, []
    for target in sorted(root.rglob("*.policy")):
        original = target.read_text(encoding="utf-8")
        rel = target.relative_to(root).as_posix()
        own_tests = sorted(target.parent.glob(target.stem + "_test.y*ml"))
        for m in mutants(str(source / rel), original):
            if only is not None and not only(m):
                continue
            total += 1
            target.write_text(m.text, encoding="utf-8")
            try:
                if run_paths([*own_tests, root], explain=False, fail_fast=True).ok:
                    survivors.append(m)
            finally:
                target.write_text(original, encoding="utf-8")
    return MutationReport(total, tuple(survivors), baseline_ok=True)
