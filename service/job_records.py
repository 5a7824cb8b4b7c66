"""A long-running operation's error as JSON, for the operation log, and back.

A failed operation's error is stored as its type name, its message and (for bad requests) its
field violations; read back after a restart it is an error of the same status code (the
server maps it as it would have mapped the original). An internal error keeps its incident id.
"""

from __future__ import annotations

from collections.abc import Mapping

from twin.errors import ModelFileError, TrialDataError, TwinError, UnknownRuleError
from twin.persist.store import TwinNotFoundError

from service.errors import DeadlineExceededError, DomainError, FeatureUnavailableError, FieldViolation, InternalError, InvalidArgumentError
from service.errors import NoTwinError, OperationCancelledError, ServiceError, UnavailableError

#: Errors rebuilt from their message alone (each maps to its own status code).
_BY_MESSAGE: dict[str, type[ServiceError] | type[TwinError]] = {
    cls.__name__: cls
    for cls in (UnavailableError, DeadlineExceededError, OperationCancelledError, ModelFileError, TwinNotFoundError, TwinError)
}


class _RecordedError(TwinError):
    """A stored error of a type without a simpler rebuild: FAILED_PRECONDITION, its message."""


def encode_error(error: DomainError) -> dict[str, object]:
    """The JSON form of ``error`` (type name, message, field violations)."""
    out: dict[str, object] = {"type": type(error).__name__, "message": str(error)[:2000]}
    if isinstance(error, InvalidArgumentError):
        out["fields"] = [[v.field, v.description] for v in error.violations]
    elif isinstance(error, InternalError):
        out["incident"] = error.incident
    elif isinstance(error, (TrialDataError, UnknownRuleError)):
        out["type"] = "InvalidArgumentError"
        out["fields"] = [["rule" if isinstance(error, UnknownRuleError) else (error.column or ""), str(error)]]
    elif isinstance(error, (NoTwinError, FeatureUnavailableError)):
        out["type"] = "TwinError"
    return out


def decode_error(d: Mapping[str, object]) -> DomainError:
    """The error a stored JSON form stands for (see :func:`encode_error`)."""
    kind, message = str(d.get("type", "")), str(d.get("message", ""))
    if kind in ("InvalidArgumentError", "InvalidTrialsError"):
        fields = d.get("fields") or [["", message]]
        return InvalidArgumentError(*(FieldViolation(str(f), str(why)) for f, why in fields))  # type: ignore[union-attr]
    if kind == "InternalError":
        return InternalError(str(d.get("incident", "")))
    cls = _BY_MESSAGE.get(kind, _RecordedError)
    return cls(message)


__all__ = ["decode_error", "encode_error"]
