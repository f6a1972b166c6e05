"""``check`` records the policy test files that passed and does not run them again while nothing they read changed.

Real ``policyengine check`` processes in a temporary folder, with their own
``XDG_CACHE_HOME``. Whether a run used a record is made visible by editing the
record's count of passed cases: a check that reads the record reports that
count, one that runs the tests reports the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_process import READER_POLICY, policyengine

TESTS = """\
policy: ..
cases:
  - name: reader reads
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/a
    context: {hour: 9}
    expect: allow
  - name: not after hours
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/a
    context: {hour: 20}
    expect: deny
"""

REAL = "policy tests: 2 passed, 0 failed in 1 test file"
FROM_RECORD = "policy tests: 7 passed, 0 failed in 1 test file"  # the count planted in the record


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "rules" / "docs").mkdir(parents=True)
    (root / "rules" / "docs" / "docs.policy").write_text(READER_POLICY, encoding="utf-8")
    (root / "rules" / "docs" / "docs_test.yaml").write_text(TESTS, encoding="utf-8")
    return root


def records(project: Path) -> list[Path]:
    return sorted((project.parent / "cache" / "policyengine" / "policy-tests").glob("*.json"))


def check(project: Path, *args: str, no_cache: bool = False) -> subprocess.CompletedProcess[str]:
    return policyengine("check", *args, "rules", cwd=project, cache=project.parent / "cache",
                        env={"POLICYENGINE_NO_CACHE": "1"} if no_cache else None)


def plant_count(project: Path) -> None:
    """Make the one record say 7 cases passed: a check that reads it says so."""
    [record] = records(project)
    data = json.loads(record.read_text(encoding="utf-8"))
    data["passed"] = 7
    record.write_text(json.dumps(data), encoding="utf-8")


def test_a_second_check_reports_what_the_first_ran(project: Path) -> None:
    first = check(project)
    assert first.returncode == 0 and REAL in first.stdout, first.stdout + first.stderr
    assert len(records(project)) == 1
    second = check(project)
    assert (second.returncode, second.stdout, second.stderr) == (first.returncode, first.stdout, first.stderr)
    plant_count(project)
    assert FROM_RECORD in check(project).stdout  # the record, not a run, answered


@pytest.mark.parametrize("change", ["edit the rule", "edit the test file", "add a policy file", "touch nothing"])
def test_a_change_to_any_input_runs_the_tests_again(project: Path, change: str) -> None:
    assert REAL in check(project).stdout
    plant_count(project)
    folder = project / "rules" / "docs"
    if change == "edit the rule":  # now the after-hours case is allowed: the test fails
        (folder / "docs.policy").write_text(READER_POLICY.replace("< 18", "< 24"), encoding="utf-8")
    elif change == "edit the test file":
        (folder / "docs_test.yaml").write_text(TESTS.replace("name: reader reads", "name: a reader reads"),
                                               encoding="utf-8")
    elif change == "add a policy file":  # loaded by `policy: ..`: denies what the first case expects allowed
        (project / "rules" / "locks.policy").write_text(
            'package locks\nrule no_docs\n    deny any to read dataset "docs/a"\n', encoding="utf-8")
    done = check(project, "--strict")
    if change == "touch nothing":
        assert done.returncode == 0 and FROM_RECORD in done.stdout
    elif change == "edit the test file":
        assert done.returncode == 0 and REAL in done.stdout, done.stdout
    else:
        assert done.returncode == 1, done.stdout
        assert "policy tests: 1 passed, 1 failed in 1 test file" in done.stdout, done.stdout
        assert "policy-test" in done.stdout or "cross-package" in done.stdout


def test_a_failing_test_file_is_never_recorded(project: Path) -> None:
    (project / "rules" / "docs" / "docs.policy").write_text(READER_POLICY.replace("< 18", "< 24"), encoding="utf-8")
    for _ in range(2):
        done = check(project, "--strict")
        assert done.returncode == 1 and "1 passed, 1 failed" in done.stdout, done.stdout
    assert records(project) == []


def test_policyengine_no_cache_runs_every_test_and_records_nothing(project: Path) -> None:
    check(project)
    plant_count(project)
    done = check(project, no_cache=True)
    assert done.returncode == 0 and REAL in done.stdout, done.stdout
    [record] = records(project)
    assert json.loads(record.read_text(encoding="utf-8"))["passed"] == 7  # neither read nor rewritten


@pytest.mark.parametrize("damage", ["", "{not json", "[]", '{"format": 1, "passed": "7", "inputs": {}}',
                                    '{"format": 1, "passed": 7}', "\x00\xff"])
def test_an_unreadable_or_malformed_record_is_ignored(project: Path, damage: str) -> None:
    check(project)
    [record] = records(project)
    record.write_bytes(damage.encode("latin-1"))
    done = check(project)
    assert done.returncode == 0 and REAL in done.stdout and not done.stderr, done.stdout + done.stderr
    assert json.loads(record.read_text(encoding="utf-8"))["passed"] == 2  # the run wrote a good record again


DRIFT = """\
package m
model classifier_small
    provider "local" region "eu-west-1" hosting internal
drift classifier_confidence
    for model classifier_small
    metric psi of output.confidence
    baseline previous 30 days
    threshold < 0.2
    on breach alert
"""

# the same values in the last 30 days and the 30 before: no drift
SAMPLES = "value,count,ago\n0.8,5,1 hour\n0.9,5,1 hour\n0.3,5,719 hours\n0.4,5,719 hours\n" \
          "0.8,5,721 hours\n0.9,5,721 hours\n0.3,5,1439 hours\n0.4,5,1439 hours\n"

MONITOR_TESTS = """\
now: 2026-03-10T09:00:00Z
monitors:
  - name: no drift between the periods
    rule: m.classifier_confidence
    data: samples.csv
    expect: {breach: false}
"""


def test_an_edited_csv_sample_runs_the_monitor_cases_again(tmp_path: Path) -> None:
    project = tmp_path / "project"
    folder = project / "rules" / "m"
    folder.mkdir(parents=True)
    (folder / "m.policy").write_text(DRIFT, encoding="utf-8")
    (folder / "samples.csv").write_text(SAMPLES, encoding="utf-8")
    (folder / "m_test.yaml").write_text(MONITOR_TESTS, encoding="utf-8")
    first = check(project, "--strict")
    assert first.returncode == 0 and "1 passed, 0 failed" in first.stdout, first.stdout + first.stderr
    assert len(records(project)) == 1
    # the current period's confidence drops: the drift is a breach and the case fails
    (folder / "samples.csv").write_text(SAMPLES.replace("0.8,5,1 hour", "0.1,5,1 hour")
                                        .replace("0.9,5,1 hour", "0.1,5,1 hour"), encoding="utf-8")
    done = check(project, "--strict")
    assert done.returncode == 1 and "0 passed, 1 failed" in done.stdout, done.stdout


HEAVY = ("pydantic", "yaml", "lark", "duckdb", "policyengine.compile", "policyengine.engine",
         "policyengine.testing.cases", "policyengine.testing.runner")


@pytest.mark.parametrize("args", [[], ["--no-tests"]])
def test_a_check_served_by_the_caches_imports_no_parser_engine_or_yaml(project: Path, args: list[str]) -> None:
    assert check(project).returncode == 0  # fills the parse cache and records the tests
    code = ("import sys; from click.testing import CliRunner; from policyengine.cli import main; "
            f"r = CliRunner().invoke(main, ['check', *{args!r}, 'rules']); "
            f"print(r.exit_code, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "XDG_CACHE_HOME": str(project.parent / "cache")}
    env.pop("POLICYENGINE_NO_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert out.strip() == "0 []", out
