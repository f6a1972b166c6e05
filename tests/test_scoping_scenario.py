"""Issue 18, item 2, as a user met it: a new package dropped into a copy of rules/.

Unscoped, the growth package's deny, residency and gate apply to every request of
every package, and other teams' policy tests fail; its global roles collide with
rules/marketing's. Scoped (as shipped in rules/growth/) it changes none of their
decisions. ``check`` says which declaration changed whose tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.check import check_policy
from policyengine.loader import load_files
from policyengine.testing.cross_package import run_policy_tests
from policyengine.testing.runner import run_paths

RULES = Path(__file__).resolve().parent.parent / "rules"
SHIPPED = (RULES / "growth" / "experiments.policy").read_text(encoding="utf-8")

# The growth package as its authors first wrote it: no scope, roles in the global namespace.
UNSCOPED = '''package growth.experiments
owner "growth-governance@example.com"
cite "GDPR Art. 6", "GDPR Art. 44"

import common.regions

role marketer
role growth_lead extends marketer

rule marketers_read_events
    allow role marketer to read dataset "events/**"

rule marketers_send_variants
    allow role marketer to send tool "messaging/*"
    when data.consent == true

rule no_personal_data_in_experiments
    deny any to read dataset "**"
    when data.classification in ["pii", "phi", "special_category"]

residency experiments_in_the_eu
    require region in EU_REGIONS

escalate large_experiments
    when context.audience_size > 50_000
    to role growth_lead
    within 24h else deny
    require distinct approver
'''

# The same declarations with package-qualified roles, still without any scope.
QUALIFIED_UNSCOPED = re.sub(r"\bmarketer\b", "growth.marketer", UNSCOPED).replace("growth_lead", "growth.lead")


def _copy(tmp_path: Path, growth: str | None) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    shutil.rmtree(rules / "growth")
    if growth is not None:
        (rules / "growth").mkdir()
        (rules / "growth" / "experiments.policy").write_text(growth, encoding="utf-8")
    return rules


def _other_teams_tests(rules: Path) -> list[Path]:
    return sorted(p for p in rules.rglob("*_test.yaml") if "growth" not in p.parts)


def _broken(rules: Path) -> tuple[int, int]:
    """(failing cases, all cases) of the other packages' policy tests."""
    report = run_paths(_other_teams_tests(rules), explain=False)
    assert not report.errors, [str(e) for e in report.errors]
    return report.failed, len(report.results)


def _check(rules: Path):
    loaded = load_files([rules])
    assert loaded.ok, [f.headline() for f in loaded.findings]
    return check_policy(loaded.files)


def test_the_other_teams_tests_pass_without_the_new_package(tmp_path: Path) -> None:
    failed, total = _broken(_copy(tmp_path, None))
    assert total > 200 and failed == 0


def test_global_roles_of_the_new_package_collide_with_marketing(tmp_path: Path) -> None:
    result = _check(_copy(tmp_path, UNSCOPED))
    collisions = [f for f in result.findings if f.code == "role-collision"]
    assert [f.message for f in collisions] == [
        "role 'marketer' is declared by packages growth.experiments and marketing.campaigns"]
    # at the second declaration in file order (growth/ sorts first); the help names the first
    assert (collisions[0].span.file.endswith("marketing/campaigns.policy"), collisions[0].span.line,
            collisions[0].span.col) == (True, 11, 6)
    assert "growth/experiments.policy:7:6" in collisions[0].help
    assert result.policy is None  # an error: the set is not used


def test_unscoped_the_new_package_breaks_other_teams_cases(tmp_path: Path) -> None:
    rules = _copy(tmp_path, QUALIFIED_UNSCOPED)
    failed, total = _broken(rules)
    assert failed > 0, "an unscoped deny, residency and gate must change other packages' decisions"
    # check names the declarations responsible, at their file:line:col, as warnings
    result = _check(rules)
    assert result.policy is not None
    run = run_policy_tests([rules])
    cross = [f for f in run.findings if f.code == "cross-package"]
    culprits = {f.message.split(" changes ")[0] for f in cross}
    assert culprits == {"deny rule growth.experiments.no_personal_data_in_experiments",
                        "residency growth.experiments.experiments_in_the_eu",
                        "escalation gate growth.experiments.large_experiments"}
    assert all(f.span.file.endswith("growth/experiments.policy") for f in cross)
    assert all(f.severity.value == "warning" and "scope" in f.help for f in cross)


def test_scoped_as_shipped_the_new_package_breaks_none(tmp_path: Path) -> None:
    rules = _copy(tmp_path, SHIPPED)
    shutil.copy(RULES / "growth" / "experiments_test.yaml", rules / "growth")  # shipped with its own tests
    failed, total = _broken(rules)
    assert (failed, total) == (0, _broken(_copy(tmp_path / "without", None))[1])
    result = _check(rules)
    assert result.policy is not None and result.findings == []
    run = run_policy_tests([rules])
    assert run.findings == () and run.failed == 0 and run.passed > total  # growth's own cases too


def test_the_shipped_package_is_the_unscoped_one_plus_its_scopes() -> None:
    """The scenario tests the shipped file's declarations, not a different policy."""
    from policyengine.syntax import parse_policy

    shipped = parse_policy(SHIPPED)
    unscoped = parse_policy(QUALIFIED_UNSCOPED)
    assert shipped.scope is not None and unscoped.scope is None
    strip = {"applies": None, "because": None, "cites": ()}
    from dataclasses import fields, replace

    def bare(decl):
        return replace(decl, **{k: v for k, v in strip.items() if k in {f.name for f in fields(decl)}})

    assert [bare(d) for d in shipped.decls] == [bare(d) for d in unscoped.decls]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("policyengine")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "policyengine"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("growth, strict_exit, expect_cross", [(QUALIFIED_UNSCOPED, 1, True), (SHIPPED, 0, False)])
def test_check_command_reports_cross_package_changes(tmp_path: Path, growth: str, strict_exit: int,
                                                     expect_cross: bool) -> None:
    _copy(tmp_path, growth)
    plain = _cli("check", "rules", cwd=tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr  # warnings only
    assert ("warning[cross-package]" in plain.stdout) is expect_cross
    if expect_cross:
        assert "rules/growth/experiments.policy:17:6: warning[cross-package]: deny rule " \
               "growth.experiments.no_personal_data_in_experiments changes" in plain.stdout
    assert plain.stdout.splitlines()[-2].startswith("policy tests: ")
    assert _cli("check", "--strict", "rules", cwd=tmp_path).returncode == strict_exit
    skipped = _cli("check", "--no-tests", "--strict", "--error-format", "json", "rules", cwd=tmp_path)
    assert skipped.returncode == 0 and json.loads(skipped.stdout) == []
    assert "policy tests" not in skipped.stderr
