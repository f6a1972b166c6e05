"""The signed, tamper-evident audit trail (see docs/audit.md).

Writers use ``AuditLog``; auditors use ``verify_database`` / ``verify_export`` and
the proofs in ``proofs``. Everything a user can get wrong raises ``AuditError``
with a one-line message.
"""

from .decisions import decision_event, record_decisions
from .errors import AuditError
from .export import export_jsonl, export_parquet, verify_database, verify_export
from .keys import PublicKey, SigningKey, generate_key, load_private_key, load_public_key
from .log import DEFAULT_DB_PATH, EVENTS, AuditLog, Checkpoint
from .masking import NO_MASKING, Masking, load_masking
from .verify import Failure, VerifyReport

__all__ = [
    "DEFAULT_DB_PATH",
    "EVENTS",
    "NO_MASKING",
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "Failure",
    "Masking",
    "PublicKey",
    "SigningKey",
    "VerifyReport",
    "decision_event",
    "export_jsonl",
    "export_parquet",
    "generate_key",
    "load_masking",
    "load_private_key",
    "load_public_key",
    "record_decisions",
    "verify_database",
    "verify_export",
]
