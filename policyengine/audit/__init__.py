"""The signed, tamper-evident audit trail (see docs/audit.md).

Writers use ``AuditLog``; auditors use ``verify_database`` / ``verify_export`` and
the proofs in ``proofs``. Everything a user can get wrong raises ``AuditError``
with a one-line message.

The names below are imported lazily, as in the top package: `check` reads the
mask grammar from ``masking`` without loading DuckDB or cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "decision_event": "decisions",
    "record_decisions": "decisions",
    "AuditError": "errors",
    "export_jsonl": "export",
    "export_parquet": "export",
    "verify_database": "export",
    "verify_export": "export",
    "PublicKey": "keys",
    "SigningKey": "keys",
    "generate_key": "keys",
    "load_private_key": "keys",
    "load_public_key": "keys",
    "DEFAULT_DB_PATH": "log",
    "EVENTS": "log",
    "AuditLog": "log",
    "Checkpoint": "log",
    "NO_MASKING": "masking",
    "Masking": "masking",
    "load_masking": "masking",
    "RollPolicy": "segments",
    "SegmentedLog": "segments",
    "prune_segments": "segments",
    "verify_segments": "segments",
    "Failure": "verify",
    "VerifyReport": "verify",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .decisions import decision_event, record_decisions
    from .errors import AuditError
    from .export import export_jsonl, export_parquet, verify_database, verify_export
    from .keys import PublicKey, SigningKey, generate_key, load_private_key, load_public_key
    from .log import DEFAULT_DB_PATH, EVENTS, AuditLog, Checkpoint
    from .masking import NO_MASKING, Masking, load_masking
    from .segments import RollPolicy, SegmentedLog, prune_segments, verify_segments
    from .verify import Failure, VerifyReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'policyengine.audit' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
