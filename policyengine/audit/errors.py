"""The one exception type the audit trail raises for things a user can fix.

Its message is a single line naming what and where (a file, a seq, a key), so
the CLI can print it as is and exit 1 without a traceback.
"""

from __future__ import annotations


class AuditError(Exception):
    """A bad database, key, anchor, proof or argument; ``str()`` is the user-facing line."""
