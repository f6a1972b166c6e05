"""Every YAML file the engine reads goes through one loader: bounded, safe, and clear when wrong.

Table-driven over hostile and broken files, for each of the four readers
(policy tests, user directory, provider configuration, masking config): each
gives one error naming the file and line within a second, never a traceback.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from policyengine.audit import AuditError, load_masking
from policyengine.orchestrator.approvals import Directory
from policyengine.orchestrator.session import SessionError, load_providers
from policyengine.testing.cases import TestFileError, load_test_file
from policyengine.yamlfile import YamlFileError, load
from tests.cli_process import policyengine

NO_MODELS = SimpleNamespace(policy_set=SimpleNamespace(models={}))  # what load_providers reads of a policy
LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                 for i in range(9))
HOSTILE = {
    # case: (file bytes, message fragment)
    "billion laughs": (LAUGHS.encode(), "through aliases; refused"),
    "many aliases": (("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n").encode(), "more than 100 aliases"),
    "alias inside itself": (b"a: &a [1, *a]\n", "alias that contains itself"),
    "merge key with a plain value": (b"cases:\n  - <<: 5\n    name: x\n", None),
    "not UTF-8": (b"users:\n  al\xe9: {}\n", "not UTF-8 text (byte 11)"),
    "unclosed bracket": (b"a: [1,\n", "valid YAML"),
    "a key given twice": (b"users:\n  al: {roles: [analyst]}\n  al: {roles: [admin]}\n",
                          "gives the key 'al' twice in one mapping; refused"),
    # plain values YAML 1.1 (PyYAML) reads otherwise than a person: the user 0100 was the user 64
    "a leading zero": (b"users:\n  0100: {roles: [manager]}\n", "0100 is an octal number in YAML 1.1"),
    "no as a boolean": (b"users:\n  al: {name: NO}\n", "NO is the boolean false in YAML 1.1"),
    "a base 60 number": (b"users:\n  al: {name: 1:30}\n", "1:30 is a number in base 60"),
    # tags whose values no JSON holds: a test request with one was a traceback
    "a set": (b"users:\n  al: {roles: !!set {cfo}}\n", "!!set is no JSON value"),
    "bytes": (b"users:\n  al: {name: !!binary aGVsbG8=}\n", "!!binary is no JSON value"),
}


@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("reader", ["yamlfile", "policy test", "directory", "providers", "masking"])
def test_hostile_yaml_is_one_clear_error_naming_the_file(tmp_path, case, reader):
    data, fragment = HOSTILE[case]
    path = tmp_path / "f.yaml"
    path.write_bytes(data)
    (tmp_path / "t.policy").write_text("package t\nrole r\n")
    errors = {"yamlfile": (YamlFileError, lambda: load(path)),
              "policy test": (TestFileError, lambda: load_test_file(path)),
              "directory": (ValueError, lambda: Directory.load(path)),
              "providers": (SessionError, lambda: load_providers(path, NO_MODELS)),
              "masking": (AuditError, lambda: load_masking(path))}
    error, read = errors[reader]
    with pytest.raises(error) as caught:
        read()
    text = str(caught.value)
    assert "f.yaml" in text and "Traceback" not in text
    if fragment is not None and not (reader == "policy test" and case == "not UTF-8"):
        assert fragment in text
    if case == "merge key with a plain value" and reader in ("yamlfile", "policy test"):
        assert ":3" in text or ":2" in text, text  # the line of the merge key


def test_merge_keys_and_a_few_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &base {roles: [analyst]}\nusers:\n  alice:\n    <<: *base\n    name: Alice\n")
    assert load(path)["users"]["alice"] == {"roles": ["analyst"], "name": "Alice"}
    assert load(tmp_path / "ok.yaml") == load(path)
    (tmp_path / "empty.yaml").write_text("")
    assert load(tmp_path / "empty.yaml") is None


def test_a_plain_value_yaml_1_1_misreads_is_refused_and_quoted_it_is_text(tmp_path):
    """``eval --directory``: the user ``0100`` (read as the user ``64``) gave user 64 the manager role."""
    (tmp_path / "pay.policy").write_text('package pay\nrole clerk\nrole manager\nrule clerks_pay\n'
                                         '    allow role clerk to pay tool "erp"\nescalate big_payments\n'
                                         '    when context.amount > 1000\n    to role manager\n')
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = {"principal": {"id": "bob", "roles": ["clerk"]}, "action": "pay", "resource": {"kind": "tool", "id": "erp"},
               "context": {"amount": 5000, "run_id": "r-1"},
               "approvals": [{"gate": "pay.big_payments", "approver": "64", "run_id": "r-1", "ts": now}]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    for written, code, effect in (("0100", 1, None), ('"0100"', 0, "escalate")):
        (tmp_path / "directory.yaml").write_text(f"users:\n  {written}:\n    roles: [manager]\n")
        proc = policyengine("eval", "--rules", "pay.policy", "--input", "request.json", "--directory",
                            "directory.yaml", cwd=tmp_path)
        assert proc.returncode == code, proc.stdout + proc.stderr
        if effect is None:
            assert proc.stderr.strip() == ("error: directory.yaml:2: user directory: 0100 is an octal number in "
                                           "YAML 1.1; quote it, or write it without the leading 0")
        else:
            assert json.loads(proc.stdout)["effect"] == effect
