"""Errors of the service layer, in domain terms (no gRPC, no protobuf).

The data plane raises the core's errors (:mod:`twin.errors`) and the errors defined here; the
server maps both to status codes in one place (:mod:`server.status`). Each error carries what a
client needs to fix its request (the bad fields, the unknown subject, ...), nothing about the
wire.

Hierarchy (every class derives from :class:`ServiceError`):

* :class:`InvalidArgumentError` (bad request fields, as :class:`FieldViolation`\\ s), with
  :class:`InvalidTrialsError` for trials the core's validation rejected;
* :class:`SubjectNotFoundError`, :class:`OperationNotFoundError` (no such resource);
* :class:`NoTwinError`, :class:`FeatureUnavailableError` (a precondition does not hold);
* :class:`UnavailableError` (draining), :class:`DeadlineExceededError`,
  :class:`OperationCancelledError`;
* :class:`InternalError` (anything unexpected: logged with an incident id, message hidden).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from twin.errors import ModelFileError, TrialDataError, TwinError

log = logging.getLogger("service.errors")


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request.

    Attributes:
        field: path of the field in the request (``trials[12].contrast_left``).
        description: what is wrong with it.
    """

    field: str
    description: str


class ServiceError(Exception):
    """An error the service reports to the client as is (its message is safe to show)."""


class InvalidArgumentError(ServiceError):
    """A request with bad fields.

    Args:
        violations: the bad fields (at least one).
    """

    def __init__(self, *violations: FieldViolation) -> None:
        if not violations:
            raise ValueError("InvalidArgumentError needs at least one field violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in violations))

    @classmethod
    def field(cls, field: str, description: str) -> "InvalidArgumentError":
        """A single bad field."""
        return cls(FieldViolation(field, description))


class InvalidTrialsError(InvalidArgumentError):
    """Bad trials in a request, located by the core's validation.

    Args:
        trials_field: path of the repeated trials field in the request (``trials``,
            ``supplied.trials``).
        error: the core's error (1-based row within the sent trials, canonical column name).
    """

    def __init__(self, trials_field: str, error: TrialDataError) -> None:
        self.error = error
        super().__init__(FieldViolation(trial_field_path(trials_field, error), error.reason))


def trial_field_path(trials_field: str, error: TrialDataError) -> str:
    """The request field a located :class:`TrialDataError` points at.

    Rows are 1-based rows of the sent trials; the path indexes the repeated field from 0, and
    the canonical column names are the ``Trial`` field names.
    """
    path = trials_field
    if error.row is not None:
        path += f"[{error.row - 1}]"
    if error.column is not None:
        path += f".{error.column}"
    return path


class SubjectNotFoundError(ServiceError):
    """A subject the server knows nothing about (no sessions, no twin)."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"unknown subject {subject!r}: no stored sessions and no twin")


class NoTwinError(ServiceError):
    """A known subject that has no twin yet."""

    def __init__(self, subject: str, what: str = "no twin has been fitted for it yet") -> None:
        self.subject = subject
        super().__init__(f"subject {subject!r}: {what}")


class FeatureUnavailableError(ServiceError):
    """A feature this server build or configuration does not provide."""

    def __init__(self, feature: str, message: str) -> None:
        self.feature = feature
        super().__init__(message)


class OperationNotFoundError(ServiceError):
    """No operation with that id (never existed, or expired)."""

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        super().__init__(f"no operation {op_id!r}")


class UnavailableError(ServiceError):
    """The server is draining (shutting down) or overloaded; retry elsewhere or later."""


class DeadlineExceededError(ServiceError):
    """The client's deadline passed before the work could be done."""


class OperationCancelledError(ServiceError):
    """A long-running operation was cancelled at one of its checkpoints."""


class InternalError(ServiceError):
    """An unexpected failure; what happened is in the server log under :attr:`incident`."""

    def __init__(self, incident: str) -> None:
        self.incident = incident
        super().__init__(f"internal error (incident {incident}); see the server log")


#: An error a client is told about as is: the service's own, or one the core raised on purpose.
DomainError = ServiceError | TwinError


def as_domain_error(exc: BaseException) -> DomainError:
    """``exc`` itself when it is a domain error; otherwise an :class:`InternalError` whose
    incident id is logged here with the traceback (the client never sees the internals)."""
    if isinstance(exc, (ServiceError, TwinError)):
        return exc
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc, extra={"incident": incident})
    return InternalError(incident)


def public_message(error: DomainError) -> str:
    """The message a client gets for ``error``."""
    if isinstance(error, ModelFileError):
        return f"stored twin unreadable: {error}"
    return str(error)


__all__ = [
    "DeadlineExceededError",
    "DomainError",
    "FeatureUnavailableError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "InvalidTrialsError",
    "NoTwinError",
    "OperationCancelledError",
    "OperationNotFoundError",
    "ServiceError",
    "SubjectNotFoundError",
    "UnavailableError",
    "as_domain_error",
    "public_message",
    "trial_field_path",
]
