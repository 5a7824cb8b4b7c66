"""The one mapping from exceptions to ``google.rpc.Status``: status code, message and details.

The data plane raises domain errors (:mod:`service.errors`) and the core's errors
(:mod:`twin.errors`); :func:`to_rpc_status` turns any of them into a status code with details
(an ``ErrorInfo`` naming the reason, plus ``BadRequest`` field violations, ``ResourceInfo`` or
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
:class:`UnauthenticatedError`               UNAUTHENTICATED
:class:`PermissionDeniedError`              PERMISSION_DENIED
:class:`~twin.errors.ModelFileError`        DATA_LOSS
:class:`~twin.errors.UnknownRuleError`      INVALID_ARGUMENT      BadRequest on ``rule``
anything else                               INTERNAL              (message hidden, logged)
=========================================  ====================  ===============================
"""

from __future__ import annotations

import functools

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from server.auth import PermissionDeniedError, UnauthenticatedError
from service.errors import (
    DeadlineExceededError,
    DomainError,
    FeatureUnavailableError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    InvalidTrialsError,
    NoTwinError,
    OperationCancelledError,
    OperationNotFoundError,
    ServiceError,
    SubjectNotFoundError,
    UnavailableError,
    as_domain_error,
    public_message,
)
from twin.errors import ModelFileError, TrialDataError, TwinError, UnknownRuleError
from twin.persist.store import TwinNotFoundError

#: ``ErrorInfo.domain`` of every error this server reports.
ERROR_DOMAIN = "twin.v1"

#: Error type → (status code, ``ErrorInfo.reason``); an error takes the entry of the nearest
#: class in its MRO.
CODES: dict[type[BaseException], tuple[grpc.StatusCode, str]] = {
    ServiceError: (grpc.StatusCode.UNKNOWN, "UNKNOWN"),
    InvalidArgumentError: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    InvalidTrialsError: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRIALS"),
    SubjectNotFoundError: (grpc.StatusCode.NOT_FOUND, "SUBJECT_NOT_FOUND"),
    OperationNotFoundError: (grpc.StatusCode.NOT_FOUND, "OPERATION_NOT_FOUND"),
    NoTwinError: (grpc.StatusCode.FAILED_PRECONDITION, "NO_TWIN"),
    FeatureUnavailableError: (grpc.StatusCode.FAILED_PRECONDITION, "FEATURE_UNAVAILABLE"),
    UnavailableError: (grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
    DeadlineExceededError: (grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    OperationCancelledError: (grpc.StatusCode.CANCELLED, "CANCELLED"),
    UnauthenticatedError: (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
    PermissionDeniedError: (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    InternalError: (grpc.StatusCode.INTERNAL, "INTERNAL"),
    TwinError: (grpc.StatusCode.FAILED_PRECONDITION, "TWIN_ERROR"),
    TrialDataError: (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TRIALS"),
    TwinNotFoundError: (grpc.StatusCode.NOT_FOUND, "TWIN_NOT_FOUND"),
    UnknownRuleError: (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_RULE"),
    ModelFileError: (grpc.StatusCode.DATA_LOSS, "MODEL_FILE"),
}


def code_and_reason(error: DomainError) -> tuple[grpc.StatusCode, str]:
    """The status code and ``ErrorInfo.reason`` of a domain error (see :data:`CODES`)."""
    return next(CODES[kind] for kind in type(error).__mro__ if kind in CODES)


def _bad_request(*violations: FieldViolation) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description) for v in violations]
    )


def _precondition(kind: str, subject: str, description: str) -> error_details_pb2.PreconditionFailure:
    v = error_details_pb2.PreconditionFailure.Violation(type=kind, subject=subject, description=description)
    return error_details_pb2.PreconditionFailure(violations=[v])


@functools.singledispatch
def details(error: DomainError) -> tuple[Message, ...]:
    """The ``google.rpc`` detail messages of a domain error, besides its ErrorInfo."""
    return ()


@details.register
def _(error: InvalidArgumentError) -> tuple[Message, ...]:
    return (_bad_request(*error.violations),)


@details.register
def _(error: SubjectNotFoundError) -> tuple[Message, ...]:
    return (error_details_pb2.ResourceInfo(resource_type="twin.v1.Subject", resource_name=error.subject, description=str(error)),)


@details.register
def _(error: OperationNotFoundError) -> tuple[Message, ...]:
    return (error_details_pb2.ResourceInfo(resource_type="twin.v1.Operation", resource_name=error.op_id, description=str(error)),)


@details.register
def _(error: NoTwinError) -> tuple[Message, ...]:
    return (_precondition("TWIN", f"subjects/{error.subject}", str(error)),)


@details.register
def _(error: FeatureUnavailableError) -> tuple[Message, ...]:
    return (_precondition("FEATURE", error.feature, str(error)),)


@details.register
def _(error: TrialDataError) -> tuple[Message, ...]:
    return (_bad_request(FieldViolation(error.column or "", error.reason)),)


@details.register
def _(error: TwinNotFoundError) -> tuple[Message, ...]:
    return (error_details_pb2.ResourceInfo(resource_type="twin.v1.TwinVersion", description=str(error)),)


@details.register
def _(error: UnknownRuleError) -> tuple[Message, ...]:
    return (_bad_request(FieldViolation("rule", str(error))),)


def _pack(message: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def to_rpc_status(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` a client gets for ``exc`` (see the module's table); an
    unexpected exception is logged with an incident id and reported as INTERNAL."""
    error = as_domain_error(exc)
    code, reason = code_and_reason(error)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
    return status_pb2.Status(code=code.value[0], message=public_message(error), details=[_pack(info), *(_pack(d) for d in details(error))])


def status_code(status: status_pb2.Status) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a ``google.rpc.Status``."""
    for c in grpc.StatusCode:
        if c.value[0] == status.code:
            return c
    return grpc.StatusCode.UNKNOWN


__all__ = ["CODES", "ERROR_DOMAIN", "code_and_reason", "details", "status_code", "to_rpc_status"]
