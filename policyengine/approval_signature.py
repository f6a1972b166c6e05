"""An approval sent over the network counts only when its approver signed it.

A request's ``approvals`` entry names an approver; the user directory can say
that person holds the gate's role, but not that they approved. Anyone who can
send a request could write ``"approver": "alice"``. So ``policyengine serve``
counts an entry only when it carries ``signature``: Ed25519 by the key the
directory gives the approver (``public_key``), over the statement

    b"policyengine approval v1\\n" + RFC 8785 canonical JSON of the entry without "signature"

The prefix keeps the signature from meaning anything else the same key signs;
everything else in the entry (gate, approver, ts and the binding ``run_id`` or
``request_hash``, see ``approval_binding``) is signed, so none of it can be
changed or moved to another request. ``policyengine keys sign-approval`` makes
such an entry.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from .audit.canonical import CanonicalJSONError, canonical_bytes
from .identity import IdentityError, canonical_identity

STATEMENT_PREFIX = b"policyengine approval v1\n"
SIGNATURE = "signature"


def statement(entry: Mapping[str, Any]) -> bytes:
    """The bytes an approver signs for ``entry`` (``CanonicalJSONError`` when it has no canonical JSON)."""
    return STATEMENT_PREFIX + canonical_bytes({k: v for k, v in entry.items() if k != SIGNATURE})


def signed(entry: Mapping[str, Any], key: Any) -> dict[str, Any]:
    """``entry`` with the ``signature`` of ``key`` (an ``audit.keys.SigningKey``) over its statement."""
    body = {k: v for k, v in entry.items() if k != SIGNATURE}
    return {**body, SIGNATURE: base64.b64encode(key.sign(statement(body))).decode("ascii")}


def signature_errors(approvals: Any, members: Mapping[str, Any], keys: Mapping[str, Any]) -> list[str]:
    """Why entries of ``approvals`` are not shown to come from their approver (empty: every one is).

    ``members`` holds every user id of the directory, ``keys`` the public key
    (``audit.keys.PublicKey``) of those who have one. Entries of the wrong
    shape are left to the engine, which refuses the request for them.
    """
    if approvals.__class__ is not list and approvals.__class__ is not tuple:
        return []
    errors: list[str] = []
    for i, entry in enumerate(approvals):
        if not isinstance(entry, Mapping):
            continue
        where = f"approvals[{i}]"
        try:
            approver = canonical_identity(entry.get("approver"), f"{where}.approver")
        except IdentityError as exc:
            errors.append(str(exc))
            continue
        given = entry.get(SIGNATURE)
        shown = approver[:80]
        if given is None:
            errors.append(f"{where}: not signed; an approval sent to the server counts only when signed by its "
                          f"approver (`policyengine keys sign-approval`)")
            continue
        if approver not in members:
            errors.append(f"{where}: {shown} is not in the user directory")
            continue
        key = keys.get(approver)
        if key is None:
            errors.append(f"{where}: {shown} has no public key in the directory, so no approval of theirs can "
                          f"be checked")
            continue
        try:
            raw = base64.b64decode(given, validate=True) if given.__class__ is str else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 64:
            errors.append(f"{where}.signature: not the base64 of an Ed25519 signature (64 bytes)")
            continue
        try:
            message = statement(entry)
        except CanonicalJSONError as exc:
            errors.append(f"{where}: has no canonical JSON form to check the signature over ({exc})")
            continue
        if not key.verify(raw, message):
            errors.append(f"{where}: signature does not verify with {shown}'s key in the directory")
    return errors
