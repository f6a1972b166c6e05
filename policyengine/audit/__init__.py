"""The signed, tamper-evident audit trail (see docs/audit.md).

Writers use ``AuditLog``; auditors use ``verify_database`` / ``verify_export`` and
the proofs in ``proofs``. Everything a user can get wrong raises ``AuditError``
with a one-line message.
"""

from .errors import AuditError
from .keys import PublicKey, SigningKey, generate_key, load_private_key, load_public_key
from .log import DEFAULT_DB_PATH, EVENTS, AuditLog, Checkpoint
from .masking import NO_MASKING, Masking, load_masking

__all__ = [
    "DEFAULT_DB_PATH",
    "EVENTS",
    "NO_MASKING",
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "Masking",
    "PublicKey",
    "SigningKey",
    "generate_key",
    "load_masking",
    "load_private_key",
    "load_public_key",
]
