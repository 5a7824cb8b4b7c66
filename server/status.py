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
:class:`LimitExceededError`                 RESOURCE_EXHAUSTED    BadRequest + QuotaFailure (field,
                                                                  limit and its value; also in
                                                                  ErrorInfo.metadata)
:class:`UnavailableError` (draining)        UNAVAILABLE
:class:`DeadlineExceededError`              DEADLINE_EXCEEDED
:class:`OperationCancelledError`            CANCELLED
:class:`UnauthenticatedError`               UNAUTHENTICATED
:class:`PermissionDeniedError`              PERMISSION_DENIED
:class:`~twin.errors.ModelFileError`,       DATA_LOSS
:class:`~twin.errors.StoredDataError`
:class:`~twin.errors.UnknownRuleError`      INVALID_ARGUMENT      BadRequest on ``rule``
anything else                               INTERNAL              (message hidden, logged)
=========================================  ====================  ===============================

What a client reads is bounded and free of server paths: messages are cut to
:data:`MAX_MESSAGE_CHARS`, each detail string to :data:`MAX_DETAIL_CHARS`, the details as a whole
to :data:`MAX_STATUS_BYTES` (they travel in a response trailer, which clients refuse past 8 KiB),
and file paths are cut to their file name (:func:`scrub_paths`).
"""

from __future__ import annotations

import functools
import re

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
from service.limits import LimitExceededError
from twin.errors import ModelFileError, StoredDataError, TrialDataError, TwinError, UnknownRuleError
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
    StoredDataError: (grpc.StatusCode.DATA_LOSS, "STORED_DATA"),
    LimitExceededError: (grpc.StatusCode.RESOURCE_EXHAUSTED, "LIMIT_EXCEEDED"),
}

#: Longest message a client gets (longer ones are cut, saying how much was left out).
MAX_MESSAGE_CHARS = 1000
#: Longest string inside the details (a field path, a description, a resource name).
MAX_DETAIL_CHARS = 300
#: Largest serialised status: violations beyond it are left out (the message counts them).
MAX_STATUS_BYTES = 4096

#: A file path: absolute (``/srv/twins/x.safetensors``, ``C:\\x``), or relative with a folder and
#: the extension of a file the server keeps (``twins/sim-000/v1.safetensors``). Group 1 is the
#: file name.
_PATH = re.compile(
    r"(?:(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\:]+[/\\])+"
    r"|(?<![\w./\\])(?:[\w.-]+[/\\])+(?=[\w.-]+\.(?:safetensors|parquet|pqt|db|sqlite|json|ya?ml|npy|npz|csv|gz|pt|tmp)\b))"
    r"([^\s'\"/\\:,;)]*)"
)


def scrub_paths(text: str) -> str:
    """``text`` with every file path cut to its file name (server paths are not for clients)."""
    return _PATH.sub(lambda m: m.group(1), text)


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` without paths, cut to ``limit`` characters (saying how many were left out)."""
    text = scrub_paths(text)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}... ({len(text) - limit + 40} more characters)"


def _short(text: str) -> str:
    return bounded(text, MAX_DETAIL_CHARS)


def code_and_reason(error: DomainError) -> tuple[grpc.StatusCode, str]:
    """The status code and ``ErrorInfo.reason`` of a domain error (see :data:`CODES`)."""
    return next(CODES[kind] for kind in type(error).__mro__ if kind in CODES)


def _bad_request(*violations: FieldViolation) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=_short(v.field), description=_short(v.description)) for v in violations]
    )


def _precondition(kind: str, subject: str, description: str) -> error_details_pb2.PreconditionFailure:
    v = error_details_pb2.PreconditionFailure.Violation(type=kind, subject=_short(subject), description=_short(description))
    return error_details_pb2.PreconditionFailure(violations=[v])


def _resource(kind: str, name: str, description: str) -> error_details_pb2.ResourceInfo:
    return error_details_pb2.ResourceInfo(resource_type=kind, resource_name=_short(name), description=_short(description))


@functools.singledispatch
def details(error: DomainError) -> tuple[Message, ...]:
    """The ``google.rpc`` detail messages of a domain error, besides its ErrorInfo."""
    return ()


@details.register
def _(error: InvalidArgumentError) -> tuple[Message, ...]:
    return (_bad_request(*error.violations),)


@details.register
def _(error: SubjectNotFoundError) -> tuple[Message, ...]:
    return (_resource("twin.v1.Subject", error.subject, str(error)),)


@details.register
def _(error: OperationNotFoundError) -> tuple[Message, ...]:
    return (_resource("twin.v1.Operation", error.op_id, str(error)),)


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
    return (_resource("twin.v1.TwinVersion", "", str(error)),)


@details.register
def _(error: UnknownRuleError) -> tuple[Message, ...]:
    return (_bad_request(FieldViolation("rule", str(error))),)


@details.register
def _(error: LimitExceededError) -> tuple[Message, ...]:
    quota = error_details_pb2.QuotaFailure(
        violations=[error_details_pb2.QuotaFailure.Violation(subject=v.limit, description=_short(v.description)) for v in error.violations]
    )
    return (_bad_request(*(FieldViolation(v.field, v.description) for v in error.violations)), quota)


def _metadata(error: DomainError) -> dict[str, str]:
    """``ErrorInfo.metadata``: for a limit, the (first) field, the limit's name and value."""
    if isinstance(error, LimitExceededError):
        v = error.violations[0]
        return {"field": _short(v.field), "limit": v.limit, "maximum": str(v.maximum), "requested": str(v.value)}
    return {}


def _cut(message: Message) -> bool:
    """Drop the second half of the longest repeated field of ``message``; False when none has
    more than one entry."""
    for name in ("field_violations", "violations"):
        items = getattr(message, name, None)
        if items is not None and len(items) > 1:
            del items[max(1, len(items) // 2) :]
            return True
    return False


def _pack(message: Message) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(message)
    return a


def to_rpc_status(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` a client gets for ``exc`` (see the module's table); an
    unexpected exception is logged with an incident id and reported as INTERNAL."""
    error = as_domain_error(exc)
    code, reason = code_and_reason(error)
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=_metadata(error))
    extra = list(details(error))
    message = bounded(public_message(error))

    def build() -> status_pb2.Status:
        return status_pb2.Status(code=code.value[0], message=message, details=[_pack(info), *(_pack(d) for d in extra)])

    status = build()
    while status.ByteSize() > MAX_STATUS_BYTES and any(_cut(d) for d in extra):
        status = build()
    return status


def status_code(status: status_pb2.Status) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` of a ``google.rpc.Status``."""
    for c in grpc.StatusCode:
        if c.value[0] == status.code:
            return c
    return grpc.StatusCode.UNKNOWN


__all__ = [
    "CODES",
    "ERROR_DOMAIN",
    "MAX_DETAIL_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_STATUS_BYTES",
    "bounded",
    "code_and_reason",
    "details",
    "scrub_paths",
    "status_code",
    "to_rpc_status",
]
