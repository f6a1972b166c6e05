"""A warm load reads no syntax tree: rules come from the disk as plain data, the trees only when asked.

``load_policy`` stores a checked set in two parts (``engine._write_warm``): the
policy set without its trees plus the compiled rules, and a ``.trees`` part
read when something asks for ``policy_set.files`` or ``.rules`` (explanations,
reports, policy tests). These tests show deciding never reads the trees, that
what is read later is what a cold load built (same trees, same explanations,
gates' scopes included), and that a missing, damaged or foreign ``.trees`` part
is never trusted: the set is built again, or refused when the files changed.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from policyengine import engine, loader
from policyengine.compile import UNBUILT, CompiledRule
from policyengine.diagnostics import PolicyError
from policyengine.format import format_policy
from policyengine.scoping import file_scopes
from tests.test_engine_load_cache import forget, private_cache  # noqa: F401 - the fixture, used by every test

SCOPED = '''package t.flow
scope workflow "invoices"

role clerk
role boss extends clerk

rule clerks_read
    allow role clerk to read dataset "inv/*"
    when principal.dept == "d1"

rule no_drafts
    deny any to read dataset "inv/drafts/**"
    because "drafts stay closed"

escalate big
    when context has amount and context.amount > 1000
    to role boss

residency eu
    when data has origin and data.origin == "DE"
    require region in ["eu-west-1"]
'''

PLAIN = '''package t.plain

rule everyone_reads_docs
    allow any to read dataset "docs/**"
    unless principal.dept == "d2"
    cite "POL-1"

rule bosses_write
    allow role boss to write dataset "inv/*"
    applies to action write
'''


def requests() -> list[dict]:
    out = []
    for workflow in ("invoices", "other", None):
        for roles in ([], ["clerk"], ["boss"]):
            for rid in ("inv/a", "inv/drafts/x", "docs/a/b", "zzz"):
                for action in ("read", "write"):
                    for dept in ("d1", "d2"):
                        context = {"amount": 5000} if dept == "d2" else {}
                        if workflow:
                            context["workflow"] = workflow
                        out.append({"principal": {"id": "u", "type": "user", "roles": roles, "attrs": {"dept": dept}},
                                    "action": action, "resource": {"kind": "dataset", "id": rid},
                                    "context": context, "data": {"origin": "DE"}})
    return out


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "flow.policy").write_text(SCOPED, encoding="utf-8")
    (folder / "plain.policy").write_text(PLAIN, encoding="utf-8")
    return folder


def trees_part() -> Path:
    [part] = loader.checked_cache_dir().glob("*.trees")
    return part


def trees_read(policy: engine.Policy) -> bool:
    return "files" in vars(policy.policy_set)


def decisions(policy: engine.Policy) -> list[dict]:
    return [policy.evaluate(q).model_dump(mode="json") for q in requests()]


def explanations(policy: engine.Policy) -> list[str]:
    return [policy.explain(q).text() for q in requests()]


def counting_builds(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    built: list[object] = []
    real = engine._build
    monkeypatch.setattr(engine, "_build", lambda *a: built.append(a) or real(*a))
    return built


def test_deciding_reads_no_tree_and_explaining_reads_the_cold_ones(rules: Path) -> None:
    cold = engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    assert not trees_read(warm)
    assert decisions(warm) == decisions(cold)
    assert warm.files == cold.files and warm.recorded_files == cold.recorded_files
    assert not trees_read(warm), "a decision read the syntax trees"
    assert explanations(warm) == explanations(cold)  # gates' and residencies' scopes found
    assert trees_read(warm)
    assert warm.policy_set.files == cold.policy_set.files and warm.policy_set.rules == cold.policy_set.rules
    assert engine.policy_hash(warm.policy_set.files) == warm.policy_hash == cold.policy_hash
    scopes = file_scopes(warm.policy_set.files)
    assert all(g.scoped.decl.span in scopes for g in warm.compiled.gates)  # scopes by where a declaration is
    assert all(r.scoped.decl.span in scopes for r in warm.compiled.residencies)
    in_trees = {id(d) for f in warm.policy_set.files for d in f.decls}
    assert all(id(d.scoped.decl) in in_trees for d in (*warm.compiled.gates, *warm.compiled.residencies))  # same objects
    assert [format_policy(f) for f in warm.policy_set.files] == [format_policy(f) for f in cold.policy_set.files]


def test_rule_closures_and_reasons_are_built_on_first_use(rules: Path) -> None:
    engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    rule = warm.compiled.rules[0]
    assert rule._test is UNBUILT and rule._reason is UNBUILT  # the only parts kept once built
    assert not trees_read(warm)
    assert rule.scoped.decl.name.value == "clerks_read" and rule.scoped.id == rule.id == "t.flow.clerks_read"
    decided = warm.evaluate({"principal": {"id": "u", "type": "user", "roles": ["clerk"], "attrs": {"dept": "d1"}},
                             "action": "read",
                             "resource": {"kind": "dataset", "id": "inv/a"}, "context": {"workflow": "invoices"}})
    assert decided.reasons == (rule.reason,) and rule._test is not UNBUILT and decided.reasons[0] is rule._reason
    again = pickle.loads(pickle.dumps(rule))  # built closures are not pickled: the plain fields are
    assert type(again) is CompiledRule and again.id == rule.id and again.when_ix == rule.when_ix
    assert again._test is UNBUILT and again._reason is UNBUILT


def test_a_missing_trees_part_builds_the_set_again(rules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cold = engine.load_policy(rules)
    trees_part().unlink()
    forget()
    built = counting_builds(monkeypatch)
    again = engine.load_policy(rules)
    assert built and decisions(again) == decisions(cold)
    assert trees_part().is_file()  # stored again


@pytest.mark.parametrize("damage", [
    pytest.param(lambda part, other: part.write_bytes(b"garbage"), id="garbage"),
    pytest.param(lambda part, other: part.write_bytes(part.read_bytes()[:200]), id="truncated"),
    pytest.param(lambda part, other: part.unlink(), id="removed"),
    pytest.param(lambda part, other: part.write_bytes(other.read_bytes()), id="another set's trees"),
])
def test_trees_lost_after_a_warm_load_are_parsed_again(rules: Path, tmp_path: Path, damage,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cold = engine.load_policy(rules)
    mine = trees_part()
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.policy").write_text('package o\n\nrule r\n    deny any to read dataset "*"\n', encoding="utf-8")
    engine.load_policy(other)
    [theirs] = [p for p in loader.checked_cache_dir().glob("*.trees") if p != mine]
    forget()
    warm = engine.load_policy(rules)
    damage(mine, theirs)
    built = counting_builds(monkeypatch)
    assert warm.policy_set.files == cold.policy_set.files and warm.policy_set.rules == cold.policy_set.rules
    assert built, "a damaged or foreign trees part was trusted"
    assert [r.scoped.id for r in warm.compiled.rules] == [r.id for r in cold.compiled.rules]
    assert decisions(warm) == decisions(cold)


def test_trees_lost_after_the_files_changed_are_refused(rules: Path) -> None:
    engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    trees_part().unlink()
    (rules / "plain.policy").write_text(PLAIN.replace("POL-1", "POL-2"), encoding="utf-8")
    with pytest.raises(PolicyError, match="changed since this policy was loaded"):
        _ = warm.policy_set.files
    assert decisions(warm)  # deciding still needs no tree


def test_a_lazy_set_pickles_as_the_whole_set(rules: Path) -> None:
    cold = engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)
    copied = pickle.loads(pickle.dumps(warm.policy_set))
    assert type(copied).__name__ == "PolicySet" and copied.files == cold.policy_set.files
    assert copied.rules == cold.policy_set.rules and copied.file_names == cold.policy_set.file_names


def test_a_replaced_lazy_set_compiles_like_the_cold_one(rules: Path) -> None:
    """``dataclasses.replace`` on a warm set (policy tests drop a package's rules) gives a set that compiles alike."""
    cold = engine.load_policy(rules)
    forget()
    warm = engine.load_policy(rules)

    def without_plain(ps):  # type: ignore[no-untyped-def]
        return replace(ps, rules=tuple(s for s in ps.rules if s.package != "t.plain"))

    alone = [engine.Policy(without_plain(p.policy_set), policy_hash="h") for p in (cold, warm)]
    assert alone[1].files == cold.files and [r.id for r in alone[1].compiled.rules] == ["t.flow.clerks_read",
                                                                                        "t.flow.no_drafts"]
    assert decisions(alone[1]) == decisions(alone[0]) and explanations(alone[1]) == explanations(alone[0])


AGED = '''package t.aged

role boss

rule fresh_reads
    allow any to read dataset "a/*"
    when age of context.issued <= 1h

escalate old_writes
    when action == "write" and age of context.issued > 2h
    to role boss

rule plain
    allow any to read dataset "b/*"
'''
NO_RULE_AGE = AGED.replace("age of context.issued <= 1h", "context.fresh == true")


@pytest.mark.parametrize("text, reads", [
    (AGED, True),
    (NO_RULE_AGE, True),  # the gate still reads it
    (AGED.replace("age of context.issued > 2h", "context.old == true"), True),  # only a rule's condition
    (NO_RULE_AGE.replace("age of context.issued > 2h", "context.old == true"), False),
])
def test_whether_decisions_read_the_clock_is_told_without_the_trees(tmp_path: Path, text: str, reads: bool) -> None:
    from policyengine.jsonl import reads_clock

    folder = tmp_path / "aged"
    folder.mkdir()
    (folder / "a.policy").write_text(text, encoding="utf-8")
    cold = engine.load_policy(folder)
    forget()
    warm = engine.load_policy(folder)
    assert reads_clock(warm) is reads_clock(cold) is reads
    assert not trees_read(warm)


def _columns(change):  # type: ignore[no-untyped-def]
    """A damage to the stored rule columns: ``change(columns) -> columns``."""
    def damage(entry: Path) -> None:
        key, value = pickle.loads(entry.read_bytes())
        value[6]["rules"]["columns"] = change(value[6]["rules"]["columns"])
        entry.write_bytes(pickle.dumps((key, value)))
    return damage


@pytest.mark.parametrize("damage", [
    pytest.param(_columns(lambda cols: tuple(c[:-1] for c in cols[:3]) + cols[3:]), id="ragged columns"),
    pytest.param(_columns(lambda cols: (tuple(reversed(cols[0])), *cols[1:])), id="keys out of order"),
    pytest.param(_columns(lambda cols: cols[:-1]), id="a field missing"),
    pytest.param(_columns(lambda cols: [list(c) for c in cols]), id="not tuples"),
])
def test_malformed_stored_rules_are_built_again(rules: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    cold = engine.load_policy(rules)
    [entry] = loader.checked_cache_dir().glob("*.pickle")
    damage(entry)
    forget()
    built = counting_builds(monkeypatch)
    again = engine.load_policy(rules)
    assert built, "malformed rules were used"
    assert decisions(again) == decisions(cold)


@pytest.mark.parametrize("condition, volatile", [
    ('context.other == "x"', True),
    ('context.run_id == "none"', True),  # step is still per run
    ('context.run_id == "none" and context.step == "none"', False),
])
def test_the_fields_replay_groups_by_are_found_without_the_trees(tmp_path: Path, condition: str,
                                                                 volatile: bool) -> None:
    from policyengine.replay import _volatile

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "r.policy").write_text(f'package t.runs\n\nrule r\n    allow any to read dataset "*"\n'
                                     f'    when {condition}\n', encoding="utf-8")
    cold = engine.load_policy(folder)
    forget()
    warm = engine.load_policy(folder)
    assert _volatile(warm) == _volatile(cold) and (_volatile(warm) is not None) is volatile
    assert not trees_read(warm)
