"""Who may approve what: the user directory and the four-eyes checks.

Users and their roles come from a small YAML directory file (``data/directory.yaml``
ships one). Role names are those declared in the rules; a user holds a role
through ``extends`` too (the policy's role closure decides). The checks here run
before an approval is recorded, so a refused approval leaves no trace but an
error message; the engine checks the recorded approval again when the run resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..store.directory import FileDirectory as Directory  # the directory's storage lives in the store
from ..store.directory import User
from .state import ApprovalRecord, RunRecord


class ApprovalRefused(Exception):
    """An approve/reject that the rules or four-eyes do not allow (a user error, exit 1)."""


def check_decider(run: RunRecord, gate: ApprovalRecord, user: str, directory: Directory,
                  closure: Callable[[Iterable[str]], frozenset[str]]) -> User:
    """Refuse a decision by the requester (four-eyes) or by a user who lacks the gate's role.

    ``closure(roles)`` returns every role held through ``roles`` (the policy's role closure).
    """
    if user == run.requested_by:
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


def deciders(gate: ApprovalRecord, directory: Directory,
             closure: Callable[[Iterable[str]], frozenset[str]]) -> list[str]:
    """Users of the directory who may decide ``gate`` (they hold its role and did not request the run)."""
    return sorted(u.id for u in directory.users.values() if u.id != gate.requester and gate.role in closure(u.roles))
