"""Loading at scale: the checked-set disk cache, shared conditions and fast reasons change no decision.

``load_policy`` keeps each checked policy set on disk (``loader.read_checked``),
keyed by the files' names and bytes and by the engine's code; the compiler gives
conditions written alike one closure; reasons are built without the validator.
Each is compared here with the path it replaces, on many requests, and a
corrupt, foreign or malformed cache entry is shown to be ignored, never trusted.
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import pytest

from policyengine import compile as compile_module
from policyengine import engine, loader
from policyengine.compile import UNBUILT, CachedRules
from policyengine.decision import Reason, make_reason
from policyengine.diagnostics import PolicyError

RULES = '''package t.scale

role staff
role lead extends staff

const LEVELS = [1, 2]

rule read_dept
    allow role staff to read dataset "p*/docs/*"
    when principal.dept == "d1"

rule read_dept_again
    allow role lead to read dataset "p1/**"
    when principal.dept == "d1"

rule write_level_int
    allow role staff to write dataset "p2/*"
    when principal.level == 1

rule write_level_float
    allow role lead to write dataset "p3/*"
    when principal.level == 1.0

rule write_level_bool
    allow any to write dataset "p4/*"
    when principal.level == true

rule read_levels
    allow any to read dataset "p5/*"
    when principal.level in LEVELS
    unless principal.dept == "d1"

rule no_secrets
    deny any to read dataset "*/secret-*"
    because "secrets stay closed"

rule no_tmp
    deny role staff to write dataset "p1/tmp/**"
    when principal.dept == "d2"
'''

ROLES = [[], ["staff"], ["lead"]]
DEPTS = ["d1", "d2", None]
LEVELS = [1, 1.0, True, 2, "1", None]
IDS = ["p1/docs/a", "p1/secret-x", "p1/tmp/q", "p2/a", "p3/a", "p4/a", "p5/a", "p5/secret-1", "q/a"]
ACTIONS = ["read", "write"]


def requests() -> list[dict]:
    out = []
    for roles, dept, level, rid, action in itertools.product(ROLES, DEPTS, LEVELS, IDS, ACTIONS):
        attrs = {k: v for k, v in (("dept", dept), ("level", level)) if v is not None}
        out.append({"principal": {"id": "u", "type": "user", "roles": roles, "attrs": attrs},
                    "action": action, "resource": {"kind": "dataset", "id": rid}})
    return out


def decisions(policy: engine.Policy) -> list[dict]:
    return [policy.evaluate(q).model_dump(mode="json") for q in requests()]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    monkeypatch.delenv("POLICYENGINE_NO_CACHE", raising=False)
    forget()
    return folder


def forget() -> None:
    """A new process: nothing in memory, only the disk cache left."""
    engine._CACHE.clear()
    loader._MEMORY.clear()


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "scale.policy").write_text(RULES, encoding="utf-8")
    return folder


def no_build(*args: object, **kwargs: object) -> object:
    raise AssertionError("built again: the disk cache was not used")


def entries() -> list[Path]:
    return sorted(loader.checked_cache_dir().glob("*.pickle"))


def test_a_warm_load_comes_from_disk_and_decides_alike(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cold = engine.load_policy(rules)
    assert len(entries()) == 1
    forget()
    with monkeypatch.context() as m:
        m.setattr(engine, "_build", no_build)
        warm = engine.load_policy(rules)
    assert warm.policy_hash == cold.policy_hash and warm.warnings == cold.warnings
    assert decisions(warm) == decisions(cold)


def test_a_warm_load_makes_each_rule_when_first_read_and_the_same_rules_as_cold(rules: Path) -> None:
    cold = engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    made = warm.compiled.rules
    assert type(made) is CachedRules and len(made) == len(cold.compiled.rules)
    assert made._made.count(None) >= len(made) - 2  # the index read its fields from the columns (and checked the ends)
    assert decisions(warm) == decisions(cold)
    assert made[3] is made[3] and made[-1] is made[len(made) - 1] and made[1:3] == (made[1], made[2])
    with pytest.raises(IndexError):
        made[len(made)]
    fields = ("key", "id", "effect", "principal_kind", "principal_name", "actions", "kind", "pattern", "when_ix",
              "unless_ix", "bounds", "package", "because", "cites", "file", "line")
    assert [tuple(getattr(r, f) for f in fields) for r in made] == \
        [tuple(getattr(r, f) for f in fields) for r in cold.compiled.rules]
    assert list(made.fields_of(("key", "pattern"))) == [(r.key, r.pattern) for r in cold.compiled.rules]
    copied = pickle.loads(pickle.dumps(made))
    assert type(copied) is tuple and [r.id for r in copied] == [r.id for r in cold.compiled.rules]


def test_decisions_agree_with_the_cache_off(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    forget()
    monkeypatch.setenv("POLICYENGINE_NO_CACHE", "1")
    uncached = engine.load_policy(rules)
    assert decisions(warm) == decisions(uncached)


def test_shared_conditions_decide_as_conditions_compiled_one_by_one(rules: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    shared = engine.load_policy(rules)
    assert shared.compiled.rules[0].when is shared.compiled.rules[1].when  # the same condition, one closure
    whens = {r.id: r.when for r in shared.compiled.rules}
    # 1, 1.0 and true are equal in Python but not in policies: never one closure
    assert len({id(whens[f"t.scale.write_level_{k}"]) for k in ("int", "float", "bool")}) == 3
    forget()
    monkeypatch.setattr(compile_module, "condition_key", lambda package, expr: object())  # no two alike
    monkeypatch.setenv("POLICYENGINE_NO_CACHE", "1")
    one_by_one = engine.load_policy(rules)
    assert one_by_one.compiled.rules[0].when is not one_by_one.compiled.rules[1].when
    assert decisions(shared) == decisions(one_by_one)


@pytest.mark.parametrize("damage", [
    pytest.param(lambda entry: entry.write_bytes(b"not a pickle"), id="garbage"),
    pytest.param(lambda entry: entry.write_bytes(entry.read_bytes()[:100]), id="truncated"),
    pytest.param(lambda entry: entry.write_bytes(b""), id="empty"),
    pytest.param(lambda entry: entry.write_bytes(pickle.dumps((entry.stem, ("not", "a", "policy", ())))),
                 id="wrong shape"),
    pytest.param(lambda entry: entry.write_bytes(pickle.dumps(("another key", pickle.loads(entry.read_bytes())[1]))),
                 id="another key's entry"),
])
def test_a_damaged_or_foreign_entry_is_ignored_and_rebuilt(rules: Path, monkeypatch: pytest.MonkeyPatch,
                                                            damage) -> None:
    cold = engine.load_policy(rules)
    [entry] = entries()
    damage(entry)
    forget()
    built: list[object] = []
    real = engine._build

    def counting(*args: object) -> object:
        built.append(args)
        return real(*args)

    monkeypatch.setattr(engine, "_build", counting)
    again = engine.load_policy(rules)
    assert built, "a damaged entry was trusted"
    assert again.policy_hash == cold.policy_hash and decisions(again) == decisions(cold)


@pytest.mark.parametrize("opened", ["entry", "folder"])
def test_an_entry_others_could_write_is_not_unpickled(rules: Path, monkeypatch: pytest.MonkeyPatch,
                                                      opened: str) -> None:
    """Unpickling a file another user could have written would run their code: such entries are rebuilt."""
    cold = engine.load_policy(rules)
    (entry,) = entries()
    (entry if opened == "entry" else entry.parent).chmod(0o666 if opened == "entry" else 0o777)
    forget()
    built = []
    real_build = engine._build
    monkeypatch.setattr(engine, "_build", lambda *a, **k: built.append(1) or real_build(*a, **k))
    again = engine.load_policy(rules)
    assert built == [1] and decisions(again) == decisions(cold)


def test_an_entry_moved_under_another_files_key_is_not_used(tmp_path: Path, rules: Path) -> None:
    engine.load_policy(rules)
    [entry] = entries()
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.policy").write_text('package o\n\nrule r\n    deny any to read dataset "*"\n', encoding="utf-8")
    engine.load_policy(other)
    [mine, theirs] = sorted(entries(), key=lambda p: p != entry)
    theirs.write_bytes(mine.read_bytes())  # the rules' checked set stored under the other files' name
    forget()
    policy = engine.load_policy(other)
    assert [r.id for r in policy.compiled.rules] == ["o.r"]


def test_files_given_in_another_order_keep_their_order(rules: Path) -> None:
    (rules / "zz.policy").write_text('package t.zz\n\nrule first\n    deny any to read dataset "p1/**"\n',
                                     encoding="utf-8")
    files = [rules / "scale.policy", rules / "zz.policy"]
    forward = engine.load_policy(files)
    forget()
    backward = engine.load_policy(files[::-1])  # a new process: the disk holds the forward order's set
    assert [r.id for r in backward.compiled.rules][0] == "t.zz.first"
    assert [r.id for r in forward.compiled.rules][0] == "t.scale.read_dept"
    assert len(entries()) == 2
    again = engine.load_policy(files)  # the same process, the in-memory cache holding the backward order's
    assert [r.id for r in again.compiled.rules][0] == "t.scale.read_dept"


def test_an_edited_file_is_checked_again(rules: Path) -> None:
    engine.load_policy(rules)
    (rules / "scale.policy").write_text(RULES.replace('"secrets stay closed"', '"closed"'), encoding="utf-8")
    forget()
    policy = engine.load_policy(rules)
    assert policy.evaluate(requests()[2]).model_dump() is not None
    assert any(r.reason.message == "closed" for r in policy.compiled.rules)
    assert len(entries()) == 2


def test_sets_with_errors_or_outside_imports_are_not_cached(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.policy").write_text('package b\n\nrule r\n    allow role nobody to read dataset "*"\n')
    with pytest.raises(PolicyError):
        engine.load_policy(broken)
    importing = tmp_path / "importing"
    importing.mkdir()
    (importing / "i.policy").write_text(
        'package i\n\nimport common.regions\n\nrule r\n    deny any to read dataset "*"\n', encoding="utf-8")
    engine.load_policy(importing)  # common.regions is found among the shipped rules: not keyed by these files
    assert entries() == []


def test_a_stored_set_is_not_also_written_tree_by_tree(tmp_path: Path, rules: Path) -> None:
    engine.load_policy(rules)  # its trees are inside the checked set's entry
    assert len(entries()) == 1 and not list(loader.cache_dir().glob("*.pickle"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.policy").write_text('package b\n\nrule r\n    allow role nobody to read dataset "*"\n')
    with pytest.raises(PolicyError):
        engine.load_policy(broken)
    assert len(list(loader.cache_dir().glob("*.pickle"))) == 1  # no set stored: the tree is, for ``check``


def test_no_disk_cache_keeps_checked_sets_out_too(rules: Path) -> None:
    with loader.no_disk_cache():
        engine.load_policy(rules)
    assert entries() == []


@pytest.mark.parametrize("fields", [
    dict(rule="p.r", file="a/b.policy", line=3, message="m", cites=()),
    dict(rule="p.r", file=None, line=None, message="", cites=("GDPR Art. 5", "SOC2")),
])
def test_make_reason_is_reason(fields: dict) -> None:
    fast, slow = make_reason(**fields), Reason(**fields)
    assert fast == slow and type(fast) is Reason
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump() == slow.model_dump() and fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    copied = fast.model_copy(update={"candidate": "m"})
    assert copied == slow.model_copy(update={"candidate": "m"})
    assert "candidate" not in make_reason(**fields).model_fields_set  # copying did not touch the shared set


def test_reasons_are_built_on_first_use_and_kept(rules: Path) -> None:
    policy = engine.load_policy(rules)
    by_id = {r.id: r for r in policy.compiled.rules}
    secret = by_id["t.scale.no_secrets"]
    assert secret._reason is UNBUILT  # not built while no request needed it
    reason = secret.reason
    assert reason is secret.reason  # built once, then read from its slot
    assert reason == Reason(rule="t.scale.no_secrets", file="scale.policy", line=reason.line,
                            message="secrets stay closed", cites=())
    assert by_id["t.scale.read_dept"].reason.message == "allow rule t.scale.read_dept matched"
    decided = policy.evaluate({"principal": {"id": "u", "type": "user", "roles": []}, "action": "read",
                               "resource": {"kind": "dataset", "id": "p1/secret-x"}})
    assert decided.reasons == (reason,)
    assert decided.reasons[0] is reason
