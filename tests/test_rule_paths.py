"""Decisions, traces and report tables name rule files relative to the rules root, so they travel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from policyengine import load_policy
from policyengine.rule_paths import SHIPPED_PREFIX, recorded_name, rules_root

RULES = Path(__file__).resolve().parent.parent / "rules"

ANALYST_READS = {"principal": {"id": "u1", "roles": ["analyst"]}, "action": "read",
                 "resource": {"kind": "dataset", "id": "erp/invoices/1"}}


@pytest.mark.parametrize("given, file, expected", [
    ("rules", "rules/finance/invoices.policy", "finance/invoices.policy"),
    ("rules/finance", "rules/finance/invoices.policy", "invoices.policy"),
    ("rules/finance/invoices.policy", "rules/finance/invoices.policy", "invoices.policy"),
    ("rules/finance", "rules/common/regions.policy", "../common/regions.policy"),
    ("rules", "<string>", "<string>"),
])
def test_recorded_names(tmp_path: Path, given: str, file: str, expected: str) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    root = rules_root([tmp_path / given])
    assert recorded_name(str(tmp_path / file) if not file.startswith("<") else file, root) == expected


def test_shipped_rules_are_named_by_package_not_by_site_packages(tmp_path: Path) -> None:
    from policyengine.resources import data_path

    shipped = data_path("rules") / "common" / "regions.policy"
    assert recorded_name(str(shipped), str(tmp_path)) == SHIPPED_PREFIX + "common/regions.policy"


def test_the_same_rules_in_two_folders_decide_with_the_same_record(tmp_path: Path) -> None:
    """Two checkouts on two machines: the decision (file, line, hash) is byte-for-byte the same."""
    one, two = tmp_path / "alice" / "rules", tmp_path / "bob" / "checkout" / "rules"
    shutil.copytree(RULES, one)
    shutil.copytree(RULES, two)
    first = load_policy(one).evaluate(ANALYST_READS)
    second = load_policy(two).evaluate(ANALYST_READS)
    assert first.effect == "allow"
    assert first.model_dump_json() == second.model_dump_json()
    assert first.reasons[0].file == "design_sample.policy"
    assert str(tmp_path) not in first.model_dump_json()


def test_explanations_name_files_relative_to_the_root(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    text = load_policy(tmp_path / "rules").explain(ANALYST_READS).text()
    assert "design_sample.policy:26: MATCHED" in text
    assert str(tmp_path) not in text


def test_the_policy_loaded_record_lists_relative_files(tmp_path: Path) -> None:
    shutil.copytree(RULES, tmp_path / "rules")
    policy = load_policy(tmp_path / "rules")
    assert "finance/invoices.policy" in policy.recorded_files
    assert all(not f.startswith("/") for f in policy.recorded_files)
    assert all(f.startswith(str(tmp_path)) for f in policy.files)  # the loader's own paths stay as given
