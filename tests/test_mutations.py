"""Every single mutation of the rule files in rules/ makes the policy tests fail.

Each mutant (see ``policyengine.testing.mutations``) flips one ``allow``/``deny``,
doubles or halves one threshold (of a request rule, or of a bias/drift monitor's
threshold, window, baseline or min samples), moves one comparison boundary, or
swaps two neighbours of a route's ``prefer`` list, in a copy of ``rules/``; the policy tests of that copy are then run in-process. A mutant the
tests do not notice is a hole in the tests: strengthen the ``*_test.yaml``
files, do not add it to ``EQUIVALENT``. Only mutants that no request can tell
apart from the original belong there, each with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policyengine.resources import data_path
from policyengine.testing.mutations import mutants, run_mutations

RULES = data_path("rules")

# (file relative to rules/, declaration, original -> replacement): why no request can notice it.
# Empty: every mutant of rules/ is caught. (The DESIGN sample's approve_payment amount
# threshold was unobservable on its own; finance/invoices.policy allows approve_payment,
# and its tests, run against all of rules/, now pin it down. The `<` / `<=` of a PSI
# threshold is not generated at all: no sample makes PSI equal a decimal threshold.)
EQUIVALENT: dict[tuple[str, str, str], str] = {}


def _all_mutants() -> list:
    found = []
    for path in sorted(RULES.rglob("*.policy")):
        rel = path.relative_to(RULES).as_posix()
        found.extend(mutants(rel, path.read_text(encoding="utf-8")))
    return found


def _key(m) -> tuple[str, str, str]:
    return (Path(m.file).relative_to(RULES).as_posix() if Path(m.file).is_absolute() else m.file, m.decl,
            f"{m.original} -> {m.replacement}")


@pytest.fixture(scope="module")
def survivors(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Run the policy tests once per mutant in a temporary copy of rules/; return the mutants that passed."""
    mp = pytest.MonkeyPatch()
    # A private parse cache: unchanged files are parsed once, mutants never reach the user's cache.
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("POLICYENGINE_NO_CACHE", raising=False)
    try:
        report = run_mutations(RULES)
    finally:
        mp.undo()
    assert report.baseline_ok, "the policy tests must pass on the unmutated rules"
    assert report.total == len(_all_mutants())
    return [m for m in report.survivors]


def test_there_are_mutants_of_every_kind() -> None:
    labels = [f"{m.original} -> {m.replacement}" for m in _all_mutants()]
    assert any(label in ("allow -> deny",) for label in labels)
    assert any(label in ("deny -> allow",) for label in labels)
    assert any(label in ("<= -> <", "< -> <=", "> -> >=", ">= -> >") for label in labels)
    assert sum(1 for m in _all_mutants() if m.original[0].isdigit()) >= 10
    monitors = {m.decl.split()[0] for m in _all_mutants() if m.original[0].isdigit()}
    assert {"bias", "drift"} <= monitors  # thresholds, windows, baselines and min samples of monitors
    swaps = [m for m in _all_mutants() if m.decl == "route second_opinion"]
    assert [f"{m.original} -> {m.replacement}" for m in swaps] == ["fraud_deep, frontier_llm -> frontier_llm, fraud_deep"]


def test_every_mutant_is_caught(survivors: list) -> None:
    unexplained = [m.label for m in survivors if _key(m) not in EQUIVALENT]
    assert not unexplained, "mutants the policy tests do not catch:\n" + "\n".join(unexplained)


def test_equivalent_list_is_not_stale(survivors: list) -> None:
    """Each listed equivalent mutant exists and does survive (else it must leave the list)."""
    existing = {_key(m) for m in _all_mutants()}
    surviving = {_key(m) for m in survivors}
    assert set(EQUIVALENT) <= existing, f"listed mutants that no longer exist: {set(EQUIVALENT) - existing}"
    assert set(EQUIVALENT) <= surviving, f"listed as equivalent but caught: {set(EQUIVALENT) - surviving}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('rule r\n    allow any to read dataset "x"\n', ["allow -> deny"]),
        ('rule r\n    deny any to read dataset "x" when context.n > 3 because "4 > 3"\n',
         ["deny -> allow", "> -> >=", "3 -> 6", "3 -> 1.5"]),
        ("budget b\n    for workflow \"w\"\n    limit 100 tokens per day\n    warn at 50%\n",
         ["100 -> 200", "100 -> 50", "50 -> 100", "50 -> 25"]),
        ('model m\n    cost 2 USD per 1M tokens latency 40 ms\n', []),
        ("escalate g\n    when context.x <= 0.5 # not 7\n    to role r\n    within 4h else deny\n",
         ["<= -> <", "0.5 -> 1.0", "0.5 -> 0.25", "4 -> 8", "4 -> 2", "deny -> allow"]),
        (('bias b\n    for model m\n    metric disparate_impact of outcome == "x" by subject.g\n'
          "    threshold >= 0.8\n    window 30 days\n    min samples 100\n    on breach alert\n"),
         [">= -> >", "0.8 -> 1.6", "0.8 -> 0.4", "30 -> 60", "30 -> 15", "100 -> 200", "100 -> 50"]),
        (("drift d\n    for model m\n    metric ks of output.confidence\n    baseline previous 14 days\n"
          "    threshold < 0.15\n    on breach block\n"),
         ["14 -> 28", "14 -> 7", "< -> <=", "0.15 -> 0.3", "0.15 -> 0.075"]),
        (("drift d\n    for model m\n    metric psi of output.confidence\n    baseline previous 30 days\n"
          "    threshold < 0.2\n"),
         ["30 -> 60", "30 -> 15", "0.2 -> 0.4", "0.2 -> 0.1"]),
        ('route r\n    when context.task == "t"\n    prefer a, b, c  # 1, 2\n',
         ["a, b -> b, a", "b, c -> c, b"]),
    ],
)
def test_mutant_generation(source: str, expected: list[str]) -> None:
    """Strings, comments and registry numbers are never mutated; each mutant changes one token."""
    found = list(mutants("x.policy", source))
    assert [f"{m.original} -> {m.replacement}" for m in found] == expected
    for m in found:
        assert len(m.text) - len(source) == len(m.replacement) - len(m.original)
