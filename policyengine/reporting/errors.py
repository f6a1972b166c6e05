"""The one error type of the reporting area.

Reports are run by auditors and model-risk teams on data they supply, so every
failure they can cause (a missing column, a database that is not DuckDB, a
parameter of the wrong type) becomes a ``ReportError`` with one line that names
what is wrong and where; the CLI prints it and exits 1, never a traceback.
"""

from __future__ import annotations


class ReportError(Exception):
    """A problem with the input of a report, stated in one line for a person."""

    def __init__(self, message: str):
        super().__init__(message.splitlines()[0] if message else "report failed")

    @property
    def message(self) -> str:
        return str(self)
