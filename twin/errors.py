"""Errors raised by the core. Adapters (CLI, gRPC) map these to messages and status codes."""

from __future__ import annotations


class TwinError(Exception):
    """Base class of every error the core raises on purpose."""


class TrialDataError(TwinError, ValueError):
    """Trial data that cannot be used, located as precisely as possible.

    Attributes:
        source: file or table name the data came from.
        row: 1-based data row (header not counted) in the source, when one row is at fault.
        column: the offending column, when one is.
        field: alias of ``column`` for API clients.
        reason: what is wrong, without the location.
    """

    def __init__(self, reason: str, *, source: str = "<table>", row: int | None = None, column: str | None = None):
        self.source, self.row, self.column, self.reason = source, row, column, reason
        where = source
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column '{column}'"
        super().__init__(f"{where}: {reason}")

    @property
    def field(self) -> str | None:
        return self.column


class OptionalDependencyError(TwinError, ImportError):
    """An optional package that a feature needs is not installed."""


class UnknownRuleError(TwinError, KeyError):
    """A learning rule name that is not in the registry."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class ModelFileError(TwinError, ValueError):
    """A stored model that cannot be read (missing file, bad metadata, shape mismatch)."""


class StoredDataError(TwinError):
    """Stored data that cannot be read back as it was written: a session file that is missing,
    unreadable or no longer matches the checksum recorded when it was stored."""
