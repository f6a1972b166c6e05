"""``policyengine test`` and the pytest plugin, run as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from policyengine.resources import data_path
from tests.cli_process import READER_POLICY, UNPRIVILEGED
from tests.cli_process import policyengine as run

POLICY = READER_POLICY + """\
rule drafts_hidden
    deny any to read dataset "docs/drafts/*"
"""

PASSING = """\
cases:
  - name: reader reads
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/a
    context: {hour: 9}
    expect: allow
    rules: [docs.readers_read]
  - name: drafts are hidden
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/drafts/b
    context: {hour: 9}
    expect: deny
"""

FAILING = PASSING + """\
  - name: after hours is wrongly expected to pass
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/a
    context: {hour: 20}
    expect: allow
"""


def project(tmp_path: Path, tests: str, policy: str = POLICY) -> Path:
    area = tmp_path / "rules"
    area.mkdir()
    (area / "docs.policy").write_text(policy, encoding="utf-8")
    (area / "docs_test.yaml").write_text(textwrap.dedent(tests), encoding="utf-8")
    return tmp_path


def test_all_passing_exits_0_and_ends_with_the_summary(tmp_path: Path) -> None:
    result = run("test", cwd=project(tmp_path, PASSING))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"
    assert "rules/docs_test.yaml .." in result.stdout


def test_a_failure_exits_1_with_request_expected_actual_and_explanation(tmp_path: Path) -> None:
    result = run("test", "rules", cwd=project(tmp_path, FAILING))
    assert result.returncode == 1
    out = result.stdout
    assert out.splitlines()[-1] == "2 passed, 1 failed"
    assert "rules/docs_test.yaml:15: effect: expected allow, got deny" in out
    assert 'context: {"hour": 20}' in out
    assert "expected: allow" in out and "actual:   deny" in out
    assert "when is false: context.hour < 18 (context.hour = 20)" in out
    assert "Traceback" not in out + result.stderr


@pytest.mark.parametrize(
    ("tests", "where", "message"),
    [
        (PASSING.replace("expect: deny", "expect: refuse"), "rules/docs_test.yaml:14:", "unknown expected effect 'refuse'"),
        (PASSING + "    colour: blue\n", "rules/docs_test.yaml:15:", "unknown field 'colour' in a case"),
        (PASSING.replace("dataset docs/a", "{kind: dataset, id: [docs/a]}"), "rules/docs_test.yaml:5:",
         "'id' must be a non-empty string"),
        # "must cite all of none" holds for every decision: the case checked nothing of its citations
        (PASSING + "    cites: []\n", "rules/docs_test.yaml:15:",
         "'cites' lists citations the decision must include; an empty list checks nothing (leave it out)"),
    ],
)
def test_bad_test_file_exits_1_with_file_line_message(tmp_path: Path, tests: str, where: str, message: str) -> None:
    result = run("test", cwd=project(tmp_path, tests))
    assert result.returncode == 1
    assert f"{where} " in result.stdout and message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_keyword_selects_cases(tmp_path: Path) -> None:
    result = run("test", "-k", "drafts", cwd=project(tmp_path, FAILING))
    assert result.returncode == 0
    assert "2 deselected" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"
    nothing = run("test", "-k", "no such case", cwd=tmp_path)
    assert nothing.returncode == 1 and "selected no case" in nothing.stderr


def test_junit_file_counts_match_the_summary(tmp_path: Path) -> None:
    root = project(tmp_path, FAILING)
    (root / "out").mkdir()
    result = run("test", "--junit", "out/report.xml", cwd=root)
    assert result.returncode == 1
    suites = ET.parse(root / "out" / "report.xml").getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("3", "1", "0")
    assert suites.find(".//testcase[@name='after hours is wrongly expected to pass']/failure") is not None


@pytest.mark.parametrize(
    ("broken", "summary", "counts"),
    [
        (0, "2 passed, 1 failed", ("3", "1", "0")),
        (1, "2 passed, 1 failed, 1 error", ("4", "1", "1")),
        (2, "2 passed, 1 failed, 2 errors", ("5", "1", "2")),
    ],
)
def test_summary_and_junit_count_unrunnable_files_alike(tmp_path: Path, broken: int, summary: str,
                                                         counts: tuple[str, str, str]) -> None:
    """A test file that cannot be run is an error in both the summary and the JUnit counts."""
    root = project(tmp_path, FAILING)
    for i in range(broken):
        (root / "rules" / f"broken{i}_test.yaml").write_text("cases:\n  - name: x\n    expect: maybe\n", encoding="utf-8")
    result = run("test", "--junit", "report.xml", "rules", cwd=root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == summary
    assert lines[-1].startswith("2 passed, 1 failed")  # the prefix CI parsers read
    if broken:
        assert lines[-2] == f"{broken} test file(s) could not be run"
    suites = ET.parse(root / "report.xml").getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == counts


def test_coverage_fail_under(tmp_path: Path) -> None:
    root = project(tmp_path, PASSING.split("  - name: drafts")[0])
    result = run("test", "--coverage", "--fail-under", "100", "rules", cwd=root)
    assert result.returncode == 1
    assert "declarations: 1/2 exercised (50.0%)" in result.stdout
    assert "rules/docs.policy:6: rule docs.drafts_hidden not exercised by any test" in result.stdout
    assert "FAIL: declaration coverage 50.0% is below --fail-under 100%" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"
    assert run("test", "--fail-under", "50", "rules", cwd=root).returncode == 0
    clauses = run("test", "--fail-under-clauses", "100", "--coverage-json", "cov.json", "rules", cwd=root)
    assert clauses.returncode == 0  # the one clause, context.hour < 18, held
    data = json.loads((root / "cov.json").read_text(encoding="utf-8"))
    assert data["declarations"] == {"covered": 1, "total": 2, "percent": 50.0}
    assert data["missed_declarations"] == [{"kind": "rule", "id": "docs.drafts_hidden", "file": "rules/docs.policy", "line": 6}]


def test_one_flipped_allow_in_rules_makes_policyengine_test_fail(tmp_path: Path) -> None:
    """End to end, the claim tests/test_mutations.py checks for every mutant in-process."""
    rules = tmp_path / "rules"
    shutil.copytree(data_path("rules"), rules)
    target = rules / "finance" / "invoices.policy"
    text = target.read_text(encoding="utf-8")
    flipped = text.replace("rule agent_pays_routine_invoices\n    allow ", "rule agent_pays_routine_invoices\n    deny ", 1)
    assert flipped != text
    target.write_text(flipped, encoding="utf-8")
    result = run("test", "rules", cwd=tmp_path)
    assert result.returncode == 1
    assert "effect: expected allow, got deny" in result.stdout
    assert result.stdout.splitlines()[-1].endswith(" failed") and not result.stdout.splitlines()[-1].endswith(" 0 failed")


def test_mutations_flag_names_the_changes_no_test_notices(tmp_path: Path) -> None:
    root = project(tmp_path, PASSING)
    result = run("test", "--mutations", "rules", cwd=root)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "3/5 single changes of the rule files made a test fail" in lines
    assert "rules/docs.policy:5:23: < -> <= (in rule readers_read): no test noticed this change" in lines
    assert "rules/docs.policy:5:25: 18 -> 36 (in rule readers_read): no test noticed this change" in lines
    assert lines[-1] == "2 passed, 0 failed"
    # the case that pins the boundary kills both
    (root / "rules" / "docs_test.yaml").write_text(PASSING + """\
  - name: at six the reader is turned away
    principal: {id: ann, roles: [reader]}
    action: read
    resource: dataset docs/a
    context: {hour: 18}
    expect: deny
""", encoding="utf-8")
    again = run("test", "--mutations", "rules", cwd=root)
    assert "5/5 single changes of the rule files made a test fail" in again.stdout.splitlines()
    assert again.returncode == 0


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which(UNPRIVILEGED[0]), reason="root reads any folder")
def test_a_folder_of_tests_that_cannot_be_listed_is_an_error_not_skipped(tmp_path: Path) -> None:
    """``rules/locked`` holds a failing test and cannot be listed: it was passed over and the run exited 0."""
    root = project(tmp_path, PASSING)
    locked = root / "rules" / "locked"
    locked.mkdir()
    (locked / "docs.policy").write_text(POLICY, encoding="utf-8")
    (locked / "docs_test.yaml").write_text(FAILING, encoding="utf-8")
    locked.chmod(0)
    try:
        result = run("test", "rules", cwd=root, bound_by_permissions=True)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rules/locked:1: cannot list this folder: Permission denied; its test files cannot run" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed, 1 error"


def test_a_test_decides_with_every_rule_file_eval_loads_from_its_folder(tmp_path: Path) -> None:
    """A leftover ``rules/.old/legacy.policy`` lets anyone read: ``eval --rules rules`` allows, so the case must
    fail. The test left hidden folders out of ``policy: ..`` and passed 'drafts are hidden from readers'."""
    root = project(tmp_path, PASSING, READER_POLICY)
    (root / "rules" / ".old").mkdir()
    (root / "rules" / ".old" / "legacy.policy").write_text('package old\nrule anyone_reads\n'
                                                          '    allow any to read dataset "*"\n', encoding="utf-8")
    (root / "rules" / "tests").mkdir()
    (root / "rules" / "tests" / "drafts_test.yaml").write_text(
        "policy: ..\ncases:\n  - name: drafts are hidden from readers\n    principal: {id: ann, roles: [reader]}\n"
        "    action: read\n    resource: dataset docs/drafts/b\n    expect: deny\n", encoding="utf-8")
    request = '{"principal": {"id": "ann", "roles": ["reader"]}, "action": "read", ' \
              '"resource": {"kind": "dataset", "id": "docs/drafts/b"}}'
    assert json.loads(run("eval", "--rules", "rules", cwd=root, stdin=request).stdout)["effect"] == "allow"
    result = run("test", "rules/tests", cwd=root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rules/tests/drafts_test.yaml:3: effect: expected deny, got allow" in result.stdout
    assert "old.anyone_reads" in result.stdout


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which(UNPRIVILEGED[0]), reason="root reads any folder")
def test_a_policy_folder_that_cannot_be_listed_is_an_error_not_left_out(tmp_path: Path) -> None:
    """``policy: ..`` with ``rules/locked`` unreadable: the test ran against the rules without it (eval refuses)."""
    root = project(tmp_path, PASSING)
    (root / "rules" / "locked").mkdir()
    (root / "rules" / "locked" / "more.policy").write_text("package more\nrole more\n", encoding="utf-8")
    (root / "rules" / "tests").mkdir()
    (root / "rules" / "tests" / "docs_test.yaml").write_text("policy: ..\n" + PASSING, encoding="utf-8")
    (root / "rules" / "locked").chmod(0)
    try:
        result = run("test", "rules/tests", cwd=root, bound_by_permissions=True)
    finally:
        (root / "rules" / "locked").chmod(0o755)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("rules/tests/docs_test.yaml:1: cannot list folder rules/tests/../locked: Permission denied; "
            "the policy under test would lack its rules") in result.stdout


def test_mutations_of_a_test_file_alone_are_refused_not_skipped(tmp_path: Path) -> None:
    """Mutants are made of a folder's rule files; given a test file, none was tried and the gate exited 0."""
    root = project(tmp_path, PASSING)  # two of its five mutants go unnoticed (above)
    result = run("test", "--mutations", "rules/docs_test.yaml", cwd=root)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == ("Error: --mutations: rules/docs_test.yaml is a file; name the folder "
                                              "that holds the rule files and their tests")


SHOP = """\
package shop
import common.lists
role clerk
rule clerks_pay
    allow role clerk to approve_payment dataset "invoices/*"
    when context.amount < BIG
"""
SHOP_TEST = """\
cases:
  - name: a clerk pays 400
    principal: {id: kim, roles: [clerk]}
    action: approve_payment
    resource: dataset invoices/1
    context: {amount: 400}
    expect: allow
  - name: a clerk does not pay 500
    principal: {id: kim, roles: [clerk]}
    action: approve_payment
    resource: dataset invoices/2
    context: {amount: 500}
    expect: deny
"""


def shop(root: Path, strays: dict[str, int]) -> Path:
    """rules/shop imports common.lists (BIG = 500) from rules/common; stray copies of that package lie about."""
    for rel, big in {"rules/common/lists.policy": 500, **strays}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"package common.lists\nconst BIG = {big}\n", encoding="utf-8")
    (root / "rules" / "shop").mkdir(exist_ok=True)
    (root / "rules" / "shop" / "shop.policy").write_text(SHOP, encoding="utf-8")
    (root / "rules" / "shop" / "shop_test.yaml").write_text(SHOP_TEST, encoding="utf-8")
    return root


@pytest.mark.parametrize("strays", [
    {},
    {"rules/shop/backup/lists.policy": 100},  # an edited copy nearer the test: eval never reads it
    {"rules/old/a/lists.policy": 500, "rules/old/b/lists.policy": 500},  # two stray copies: "declared twice"
], ids=["no stray", "one edited stray copy", "two stray copies"])
def test_test_resolves_imports_as_check_and_eval_do(tmp_path: Path, strays: dict[str, int]) -> None:
    root = shop(tmp_path, strays)
    tested = run("test", "rules/shop", cwd=root)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.splitlines()[-1] == "2 passed, 0 failed"
    assert run("check", "rules/shop/shop.policy", cwd=root).returncode == 0
    request = {"principal": {"id": "kim", "roles": ["clerk"]}, "action": "approve_payment",
               "resource": {"kind": "dataset", "id": "invoices/1"}, "context": {"amount": 400}}
    evaluated = run("eval", "--rules", "rules/shop/shop.policy", cwd=root, stdin=json.dumps(request))
    assert json.loads(evaluated.stdout)["effect"] == "allow"


def test_mutations_resolve_imports_as_the_original_folder_not_from_tmpdir(tmp_path: Path) -> None:
    root = shop(tmp_path / "project", {})
    leftovers = tmp_path / "tmpdir"  # $TMPDIR with what an earlier run left behind
    (leftovers / "old-run" / "common").mkdir(parents=True)
    (leftovers / "old-run" / "common" / "lists.policy").write_text("package common.lists\nconst BIG = 1\n")
    (leftovers / "common").mkdir()
    (leftovers / "common" / "lists.policy").write_text("package common.lists\nconst BIG = 1\n")
    result = run("test", "--mutations", "rules/shop", cwd=root, env={"TMPDIR": str(leftovers)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 single changes of the rule files made a test fail" in result.stdout.splitlines()
    assert sorted(p.name for p in leftovers.iterdir()) == ["common", "old-run"]  # its own copy is gone


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("test", "no/such/folder", cwd=tmp_path).returncode == 2
    assert run("test", "--fail-under", "150", cwd=tmp_path).returncode == 2


def test_no_test_files_is_an_error(tmp_path: Path) -> None:
    result = run("test", cwd=tmp_path)
    assert result.returncode == 1
    assert "no policy test files" in result.stderr


_NOTHING_HERE = "moved/:1:1: error[load]: no .policy files found here"


@pytest.mark.parametrize("args, line", [
    (("check", "rules/", "moved/"), _NOTHING_HERE),
    (("check", "moved/", "rules/"), _NOTHING_HERE),
    (("check", "--error-format", "json", "rules/", "moved/"), "checked 1 file: 1 error, 0 warnings"),
    (("fmt", "--check", "rules/", "moved/"), _NOTHING_HERE),
    (("eval", "--rules", "rules/", "--rules", "moved/", "--input", "request.json"), _NOTHING_HERE),
    (("test", "rules/", "moved/"), "error: moved: no policy test files (*_test.yaml) found here; nothing in it "
                                   "was tested"),
])
def test_a_named_folder_that_holds_nothing_fails_ci_beside_folders_that_pass(tmp_path: Path, args: tuple[str, ...],
                                                                             line: str) -> None:
    # rules/ passes on its own; moved/ is where a team's rules and tests were before they moved away
    project(tmp_path, PASSING)
    assert run("fmt", "rules/", cwd=tmp_path).returncode == 0  # in the canonical layout, so fmt --check passes
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "README.md").write_text("the rules moved\n", encoding="utf-8")
    (tmp_path / "request.json").write_text(json.dumps({
        "principal": {"id": "ann", "roles": ["reader"]}, "action": "read",
        "resource": {"kind": "dataset", "id": "docs/a"}, "context": {"hour": 9}}), encoding="utf-8")
    for alone in (("check", "rules/"), ("fmt", "--check", "rules/"), ("test", "rules/")):
        assert run(*alone, cwd=tmp_path).returncode == 0, alone
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert line in (result.stdout + result.stderr).splitlines()
    assert '"allow"' not in result.stdout  # eval decides nothing with a policy that is not all there


def test_the_shipped_rules_pass_with_full_coverage(tmp_path: Path) -> None:
    rules = data_path("rules")
    result = run("test", "--coverage", "--fail-under", "100", "--junit", str(tmp_path / "r.xml"), str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "declarations:" in result.stdout and "(100.0%)" in result.stdout
    assert result.stdout.splitlines()[-1].endswith(" passed, 0 failed")


# --- the pytest plugin ------------------------------------------------------------------------------


def pytest_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "POLICYENGINE_NO_CACHE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_pytest_collects_one_item_per_case(tmp_path: Path) -> None:
    root = project(tmp_path, FAILING)
    result = pytest_run("rules", "-v", cwd=root)
    assert result.returncode == 1
    out = result.stdout
    assert "rules/docs_test.yaml::reader reads PASSED" in out
    assert "rules/docs_test.yaml::after hours is wrongly expected to pass FAILED" in out
    assert "effect: expected allow, got deny" in out and "explanation:" in out
    assert "1 failed, 2 passed" in out


def test_pytest_reports_a_bad_test_file_without_a_traceback(tmp_path: Path) -> None:
    root = project(tmp_path, PASSING + "    colour: blue\n")
    result = pytest_run("rules", cwd=root)
    assert result.returncode != 0
    assert "rules/docs_test.yaml:15: unknown field 'colour' in a case" in result.stdout
    assert "Traceback" not in result.stdout


def test_pytest_leaves_unrelated_yaml_and_can_be_switched_off(tmp_path: Path) -> None:
    root = project(tmp_path, PASSING)
    (root / "other").mkdir()
    (root / "other" / "config_test.yaml").write_text("key: value\n", encoding="utf-8")  # no .policy beside it
    result = pytest_run("other", "rules", "--collect-only", "-q", cwd=root)
    assert "rules/docs_test.yaml::reader reads" in result.stdout
    assert "config_test.yaml" not in result.stdout
    off = pytest_run("rules", "--no-policy-tests", cwd=root)
    assert off.returncode == 5  # pytest: no tests collected


PAYMENTS = """\
package pay
role clerk
rule clerks_pay
    allow role clerk to pay tool "erp"
rule no_big_payments
    deny any to pay tool "erp"
    when context.amount > 10_000
"""


@pytest.mark.parametrize("amount", [".nan", ".inf", "-.inf", "9007199254740993"])
def test_a_number_eval_cannot_read_is_decided_as_eval_decides_it(tmp_path: Path, amount: str) -> None:
    """``amount: .nan`` is no JSON number: eval denies such a request unread (``<request>``). The test decided it by
    the rules (``nan > 10_000`` is false: allowed), so 'a payment of NaN is allowed' passed."""
    case = "    principal: {id: cy, roles: [clerk]}\n    action: pay\n    resource: tool erp\n" \
           f"    context: {{amount: {amount}}}\n"
    tests = (f"cases:\n  - name: wrongly allowed\n{case}    expect: allow\n"
             f"  - name: denied unread\n{case}    expect: deny\n    rules: [\"<request>\"]\n")
    result = run("test", cwd=project(tmp_path, tests, PAYMENTS))
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "1 passed, 1 failed"
    assert "rules/docs_test.yaml:2: effect: expected allow, got deny" in result.stdout
