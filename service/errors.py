"""Errors of the gRPC layer and the one mapping from exceptions to ``google.rpc.Status``.

The data plane raises the core's errors (:mod:`twin.errors`) and the request errors defined
here; :func:`to_rpc_status` turns any of them into a status code with details (an
``ErrorInfo`` naming the reason, plus ``BadRequest`` field violations, ``ResourceInfo`` or
``PreconditionFailure`` where they apply). The error interceptor and failed long-running
operations both use it, so a client sees the same status either way.

Mapping:

=========================================  ====================  ===============================
exception                                  code                  details
=========================================  ====================  ===============================
:class:`InvalidArgumentError` (and          INVALID_ARGUMENT      BadRequest field violations
:class:`~twin.errors.TrialDataError`)
:class:`SubjectNotFoundError`,              NOT_FOUND             ResourceInfo
:class:`~twin.persist.store.TwinNotFoundError`,
:class:`OperationNotFoundError`
:class:`NoTwinError`,                       FAILED_PRECONDITION   PreconditionFailure
:class:`FeatureUnavailableError`,
other :class:`~twin.errors.TwinError`
:class:`UnavailableError` (draining)        UNAVAILABLE
:class:`DeadlineExceededError`              DEADLINE_EXCEEDED
:class:`OperationCancelledError`            CANCELLED
:class:`~twin.errors.ModelFileError`        DATA_LOSS
:class:`~twin.errors.UnknownRuleError`      INVALID_ARGUMENT      BadRequest on ``rule``
anything else                               INTERNAL              (message hidden, logged)
=========================================  ====================  ===============================
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from twin.errors import ModelFileError, TrialDataError, TwinError, UnknownRuleError
from twin.persist.store import TwinNotFoundError

#: ``ErrorInfo.domain`` of every error this server reports.
ERROR_DOMAIN = "twin.v1"

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


class ApiError(Exception):
    """An error the server reports to the client as is (code, message, details).

    Subclasses set :attr:`code` and :attr:`reason` and may add details.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def details(self) -> tuple[Message, ...]:
        """Extra ``google.rpc`` detail messages (besides ErrorInfo)."""
        return ()


class InvalidArgumentError(ApiError):
    """A request with bad fields.

    Args:
        violations: the bad fields (at least one).
    """

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, *violations: FieldViolation) -> None:
        if not violations:
            raise ValueError("InvalidArgumentError needs at least one field violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" if v.field else v.description for v in violations))

    @classmethod
    def field(cls, field: str, description: str) -> "InvalidArgumentError":
        """A single bad field."""
        return cls(FieldViolation(field, description))

    def details(self) -> tuple[Message, ...]:
        return (
            error_details_pb2.BadRequest(
                field_violations=[error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description) for v in self.violations]
            ),
        )


class InvalidTrialsError(InvalidArgumentError):
    """Bad trials in a request, located by the core's validation.

    Args:
        trials_field: path of the repeated trials field in the request (``trials``,
            ``supplied.trials``).
        error: the core's error (1-based row within the sent trials, canonical column name).
    """

    reason = "INVALID_TRIALS"

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


class SubjectNotFoundError(ApiError):
    """A subject the server knows nothing about (no sessions, no twin)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "SUBJECT_NOT_FOUND"

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"unknown subject {subject!r}: no stored sessions and no twin")

    def details(self) -> tuple[Message, ...]:
        return (error_details_pb2.ResourceInfo(resource_type="twin.v1.Subject", resource_name=self.subject, description=str(self)),)


class NoTwinError(ApiError):
    """A known subject that has no twin yet."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NO_TWIN"

    def __init__(self, subject: str, what: str = "no twin has been fitted for it yet") -> None:
        self.subject = subject
        super().__init__(f"subject {subject!r}: {what}")

    def details(self) -> tuple[Message, ...]:
        v = error_details_pb2.PreconditionFailure.Violation(type="TWIN", subject=f"subjects/{self.subject}", description=str(self))
        return (error_details_pb2.PreconditionFailure(violations=[v]),)


class FeatureUnavailableError(ApiError):
    """A feature this server build or configuration does not provide."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FEATURE_UNAVAILABLE"

    def __init__(self, feature: str, message: str) -> None:
        self.feature = feature
        super().__init__(message)

    def details(self) -> tuple[Message, ...]:
        v = error_details_pb2.PreconditionFailure.Violation(type="FEATURE", subject=self.feature, description=str(self))
        return (error_details_pb2.PreconditionFailure(violations=[v]),)


class OperationNotFoundError(ApiError):
    """No operation with that id (never existed, or expired)."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "OPERATION_NOT_FOUND"

    def __init__(self, op_id: str) -> None:
        self.op_id = op_id
        super().__init__(f"no operation {op_id!r}")

    def details(self) -> tuple[Message, ...]:
        return (error_details_pb2.ResourceInfo(resource_type="twin.v1.Operation", resource_name=self.op_id, description=str(self)),)


class UnavailableError(ApiError):
    """The server is draining (shutting down) or overloaded; retry elsewhere or later."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DeadlineExceededError(ApiError):
    """The client's deadline passed before the work could be done."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class OperationCancelledError(ApiError):
    """A long-running operation was cancelled at one of its checkpoints."""

    code = grpc.StatusCode.CANCELLED
    reason = "CANCELLED"


def _pack(message: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def _status(code: grpc.StatusCode, message: str, reason: str, *details: Message) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    return status_pb2.Status(code=code.value[0], message=message, details=[_pack(info), *(_pack(d) for d in details)])


def to_rpc_status(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` a client gets for ``exc`` (see the module's table)."""
    if isinstance(exc, ApiError):
        return _status(exc.code, str(exc), exc.reason, *exc.details())
    if isinstance(exc, TrialDataError):
        field = exc.column or ""
        bad = error_details_pb2.BadRequest(field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=exc.reason)])
        return _status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_TRIALS", bad)
    if isinstance(exc, TwinNotFoundError):
        info = error_details_pb2.ResourceInfo(resource_type="twin.v1.TwinVersion", description=str(exc))
        return _status(grpc.StatusCode.NOT_FOUND, str(exc), "TWIN_NOT_FOUND", info)
    if isinstance(exc, UnknownRuleError):
        bad = error_details_pb2.BadRequest(field_violations=[error_details_pb2.BadRequest.FieldViolation(field="rule", description=str(exc))])
        return _status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), "UNKNOWN_RULE", bad)
    if isinstance(exc, ModelFileError):
        return _status(grpc.StatusCode.DATA_LOSS, f"stored twin unreadable: {exc}", "MODEL_FILE")
    if isinstance(exc, TwinError):
        return _status(grpc.StatusCode.FAILED_PRECONDITION, str(exc), "TWIN_ERROR")
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc, extra={"incident": incident})
    return _status(grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log", "INTERNAL")


def status_code(status: status_pb2.Status) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a ``google.rpc.Status``."""
    for c in grpc.StatusCode:
        if c.value[0] == status.code:
            return c
    return grpc.StatusCode.UNKNOWN


__all__ = [
    "ApiError",
    "DeadlineExceededError",
    "ERROR_DOMAIN",
    "FeatureUnavailableError",
    "FieldViolation",
    "InvalidArgumentError",
    "InvalidTrialsError",
    "NoTwinError",
    "OperationCancelledError",
    "OperationNotFoundError",
    "SubjectNotFoundError",
    "UnavailableError",
    "status_code",
    "to_rpc_status",
    "trial_field_path",
]
