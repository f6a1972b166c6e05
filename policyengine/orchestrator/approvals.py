"""Who may approve what: the user directory and the four-eyes checks.

Users and their roles come from a small YAML directory file (``data/directory.yaml``
ships one). Role names are those declared in the rules; a user holds a role
through ``extends`` too (the policy's role closure decides). The checks here run
before an approval is recorded, so a refused approval leaves no trace but an
error message; the engine checks the recorded approval again when the run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..identity import IdentityError, canonical_identity
from ..store.directory import FileDirectory as Directory  # the directory's storage lives in the store
from ..store.directory import User
from .state import ApprovalRecord, RunRecord


class ApprovalRefused(Exception):
    """An approve/reject that the rules or four-eyes do not allow (a user error, exit 1)."""


def check_decider(run: RunRecord, gate: ApprovalRecord, user: str, directory: Directory,
                  closure: Callable[[Iterable[str]], frozenset[str]]) -> User:
    """Refuse a decision by the requester (four-eyes) or by a user who lacks the gate's role.

    ``closure(roles)`` returns every role held through ``roles`` (the policy's role closure).
    Identities are compared in canonical form (``policyengine.identity``): ``ALICE``
    and ``alice `` are ``alice``; a requester whose recorded id cannot be put in
    canonical form cannot be told apart from anyone, so nobody may decide the run.
    """
    try:
        user = canonical_identity(user, "approver")
    except IdentityError as exc:
        raise ApprovalRefused(str(exc)) from None
    for requester in {run.requested_by, gate.requester}:
        try:
            same = canonical_identity(requester, "requester") == user
        except IdentityError as exc:
            raise ApprovalRefused(f"run {run.run_id} was requested by an identity that is not canonical ({exc}); "
                                  f"nobody can be shown to be a different person, so it cannot be decided") from None
        if same:
            raise ApprovalRefused(
                f"{user} requested run {run.run_id} and cannot decide its approval (four-eyes: "
                f"gate {gate.gate} needs a different person holding role {gate.role})")
    who = directory.users.get(user)
    if who is None:
        raise ApprovalRefused(f"unknown user {user!r}: not in the user directory {directory.source}")
    held = closure(who.roles)
    if gate.role not in held:
        have = ", ".join(who.roles) or "no roles"
        raise ApprovalRefused(
            f"{user} ({have}) does not hold role {gate.role}, which gate {gate.gate} of run {run.run_id} requires")
    return who


def check_migrator(run: RunRecord, user: User, current_hash: str, directory: Directory,
                   closure: Callable[[Iterable[str]], frozenset[str]]) -> None:
    """Refuse ``--migrate-policy`` by a user holding none of the directory's ``migrate_policy_roles``."""
    held = closure(user.roles)
    if not any(role in held for role in directory.migrate_policy_roles):
        allowed = ", ".join(directory.migrate_policy_roles) or "none (the directory lists no migrate_policy_roles)"
        raise ApprovalRefused(
            f"{user.id} may not move run {run.run_id} from policy {_short(run.policy_hash)} to "
            f"{_short(current_hash)}: roles allowed to migrate a run's policy: {allowed}")


def _short(policy_hash: str | None) -> str:
    return (policy_hash or "<none>")[:12]


def check_policy(run: RunRecord, current_hash: str, migrate: bool, verb: str = "decide") -> bool:
    """Whether deciding (resuming, expiring) ``run`` under ``current_hash`` migrates it; refused unless ``migrate``."""
    if run.policy_hash is None or run.policy_hash == current_hash:
        return False
    if not migrate:
        raise ApprovalRefused(
            f"run {run.run_id} was started under policy {_short(run.policy_hash)} but the rules loaded now are "
            f"{_short(current_hash)}; {verb} it with the rules it was started with, or move it to these rules "
            f"with --migrate-policy (recorded, and only for roles listed in migrate_policy_roles)")
    return True


def deciders(gate: ApprovalRecord, directory: Directory,
             closure: Callable[[Iterable[str]], frozenset[str]]) -> list[str]:
    """Users of the directory who may decide ``gate`` (they hold its role and did not request the run)."""
    try:
        requester = canonical_identity(gate.requester)
    except IdentityError:
        return []
    return sorted(u.id for u in directory.users.values() if u.id != requester and gate.role in closure(u.roles))
