"""Identities have one canonical form, so one person cannot pass for two (four-eyes).

Table-driven over the spellings an attacker tries: case, surrounding space,
full-width letters, a zero-width space, a Cyrillic look-alike letter. Each either
is the same person as ``alice`` or is refused outright; never a different person.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import MappingProxyType

import pytest
from hypothesis import example, given, strategies as st
from test_orchestrator_runner import RULES, Clock, Effects, Env, pay_workflow  # the runner's real fixtures

from policyengine.engine import load_policy
from policyengine.identity import IdentityError, canonical_identity
from policyengine.orchestrator.approvals import ApprovalRefused, Directory, User
from policyengine.orchestrator.runner import RunError

SAME_AS_ALICE = ["Alice", "ALICE", "alice ", " alice", "\uff41\uff4c\uff49\uff43\uff45", "ALİCE".replace("İ", "I")]
REFUSED = {
    "al\u200bice": "invisible or control character \\(U\\+200B ZERO WIDTH SPACE\\)",
    "\u0430lice": "mixes letters of the scripts CYRILLIC, LATIN",
    "alic\u0435": "mixes letters of the scripts CYRILLIC, LATIN",
    "\u0430\u0435": "only in cyrillic letters that look like Latin",
    "\u1d00lice": "U\\+1D00 LATIN LETTER SMALL CAPITAL A, a phonetic letter that reads as 'a'",
    "\u0251lice": "U\\+0251 LATIN SMALL LETTER ALPHA, a phonetic letter that reads as 'a'",
    "ali\u202ece": "invisible or control character \\(U\\+202E",
    "ali\x00ce": "invisible or control character \\(U\\+0000",
    "   ": "is empty",
}


@pytest.mark.parametrize("spelling", SAME_AS_ALICE)
def test_spellings_of_alice_are_alice(spelling):
    assert canonical_identity(spelling) == "alice"


@pytest.mark.parametrize(("spelling", "message"), REFUSED.items())
def test_look_alike_and_invisible_spellings_are_refused(spelling, message):
    with pytest.raises(IdentityError, match=message):
        canonical_identity(spelling)


@pytest.mark.parametrize("name", ["\u043c\u0430\u0448\u0430", "\u00e9lodie", "\u674e\u96f7", "o'brien", "svc-bot.2"])
def test_ordinary_names_of_one_script_are_kept(name):
    assert canonical_identity(name) == name


USERS = Directory(MappingProxyType({
    "bob": User("bob", "Bob", ("analyst",)),
    "alice": User("alice", "Alice", ("senior_analyst",)),
    "dave": User("dave", "Dave", ("senior_analyst",)),
}), "test-directory")


@pytest.mark.parametrize("requester", ["Alice", "ALICE", "alice ", "al\u200bice", "\u0430lice",
                                       "\uff41\uff4c\uff49\uff43\uff45"])
def test_four_eyes_holds_for_every_spelling_of_the_requester(tmp_path, requester):
    """The six spellings of the issue: the run is refused, or alice cannot approve it; dave still can."""
    env = Env(tmp_path, Clock(), {"pay": pay_workflow("pay", Effects())})
    env.orch.directory = USERS
    env.orch._roles = USERS.roles()
    try:
        try:
            run = env.orch.start("pay", {"id": "INV-9", "amount": 25_000}, requested_by=requester)
        except RunError as exc:
            assert "requester" in str(exc)
            return
        assert run.status == "waiting_approval"
        for approver in ("alice", "Alice", " ALICE "):
            with pytest.raises(ApprovalRefused, match="four-eyes"):
                env.orch.approve(run.run_id, approver)
        with pytest.raises(ApprovalRefused, match="mixes letters"):
            env.orch.approve(run.run_id, "d\u0430ve")
        assert env.orch.approve(run.run_id, "DAVE").status == "completed"
        (approval,) = env.events(run.run_id, "approval")
        assert approval["approver"] == "dave" and approval["requester"] == "alice"
    finally:
        env.close()


def test_directory_ids_are_canonical_and_two_spellings_of_one_user_are_refused(tmp_path):
    good = tmp_path / "d.yaml"
    good.write_text("users:\n  Alice:\n    roles: [analyst]\n")
    assert set(Directory.load(good).users) == {"alice"}
    twice = tmp_path / "twice.yaml"
    twice.write_text("users:\n  alice:\n    roles: [analyst]\n  'ALICE ':\n    roles: [senior_analyst]\n")
    with pytest.raises(ValueError, match="same identity 'alice'"):
        Directory.load(twice)
    sneaky = tmp_path / "sneaky.yaml"
    sneaky.write_text("users:\n  \"\\u0430lice\":\n    roles: [senior_analyst]\n")
    with pytest.raises(ValueError, match="mixes letters"):
        Directory.load(sneaky)


@pytest.mark.parametrize("principal", ["Alice", "ALICE", "alice ", "\uff41lice"])
def test_an_approval_in_a_request_by_the_requester_under_another_spelling_does_not_count(tmp_path, principal):
    rules = tmp_path / "pay.policy"
    rules.write_text(RULES)
    policy = load_policy([rules])
    request = {"principal": {"id": principal, "roles": ["ap_agent"]}, "action": "approve_payment",
               "resource": {"kind": "tool", "id": "erp/pay"}, "context": {"amount": 20_000, "run_id": "r-1"},
               "approvals": [{"gate": "ops.pay.large_payment", "approver": "alice", "run_id": "r-1",
                              "ts": datetime.now(UTC).isoformat()}]}
    directory = {"alice": ("senior_analyst",)}
    assert policy.evaluate(request, directory=directory).effect == "escalate"
    other = dict(request, approvals=[dict(request["approvals"][0], approver="Dave ")])
    assert policy.evaluate(other, directory={"dave": ("senior_analyst",)}).effect != "escalate"


@given(st.text(max_size=30))
@example("pr\u043ed")  # a Cyrillic o
@example("a\u1d26")  # GREEK LETTER SMALL CAPITAL GAMMA, outside the Greek block
@example("donn\u00e9es \u043e\u0442\u0447\u0451\u0442")  # one script a word
@example("\u1d18rod")  # LATIN LETTER SMALL CAPITAL P: Latin, yet it reads as "prod"
def test_a_value_passes_as_undisguised_only_without_invisible_characters_or_mixed_script_words(text):
    """``disguise`` (schemas' normalised attributes) never passes what no normalisation folds."""
    import unicodedata

    from policyengine.identity import _PHONETIC_LOOKALIKES, _script, disguise

    hidden = [ch for ch in text if ch not in "\t\n\r" and unicodedata.category(ch)[0] == "C"
              or unicodedata.category(ch) in ("Zl", "Zp")]
    words = re.findall(r"[^\W\d_]+", text)
    mixed = [w for w in words if "LATIN" in {_script(c) for c in w} and {_script(c) for c in w} & {"CYRILLIC", "GREEK"}]
    phonetic = [ch for ch in text if unicodedata.name(ch, "").startswith("LATIN LETTER SMALL CAPITAL ")
                and ch in _PHONETIC_LOOKALIKES or ch in "\u0251\u0261"]
    assert (disguise(text) is None) == (not hidden and not mixed and not phonetic)
