"""The server interceptor: draining, authentication, error mapping and access logs.

Every twin.v1 call goes through :class:`ApiInterceptor`, which wraps the method's behaviour:

1. while the server drains, new calls fail with UNAVAILABLE (in-flight ones finish);
2. the bearer token is checked against the method's role (UNAUTHENTICATED without a valid
   token, PERMISSION_DENIED for a role that is too low), unless auth is off (local demo);
3. a request over ``max_request_bytes`` is RESOURCE_EXHAUSTED before it is parsed (gRPC's own
   receive limit sits above it, see :func:`server.app.receive_ceiling`: gRPC's refusal takes
   100-1000 ms to reach the client, the service's a few ms); a request that is not a valid
   message is INVALID_ARGUMENT (gRPC itself would say INTERNAL);
   any exception the servicer raises becomes a ``google.rpc.Status`` through
   :func:`server.status.to_rpc_status`: this is the one place exceptions meet status codes;
4. costly calls and Watch streams count against their role's quota (:mod:`server.quotas`):
   over it, RESOURCE_EXHAUSTED at once;
5. one JSON access-log line per call (method, code, duration, principal; never tokens).

Health and reflection are passed through untouched (public, and answered while draining).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc
from grpc_status import rpc_status

from server.auth import AuthConfig, PermissionDeniedError, Principal, UnauthenticatedError, bearer_token, is_public, required_role
from server.quotas import CallQuotas
from server.status import code_and_reason, to_rpc_status
from service.errors import FieldViolation, InvalidArgumentError, ServiceError, UnavailableError
from service.limits import LimitExceededError, LimitViolation

access_log = logging.getLogger("server.access")


class ServerState:
    """Shared state of a running server: draining flag and in-flight call count."""

    def __init__(self) -> None:
        self._draining = threading.Event()
        self._cond = threading.Condition()
        self._inflight = 0

    @property
    def draining(self) -> bool:
        """True once shutdown started."""
        return self._draining.is_set()

    def start_draining(self) -> None:
        """Refuse new calls from now on."""
        self._draining.set()

    @property
    def inflight(self) -> int:
        """Calls currently running."""
        with self._cond:
            return self._inflight

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count a call as in flight for the duration of the block."""
        with self._cond:
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is in flight; False if ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._inflight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=left)
        return True


class ApiInterceptor(grpc.ServerInterceptor):
    """See the module docstring.

    Args:
        auth: accepted tokens; None turns authentication off (local demo mode only: the server
            refuses to start that way unless told so explicitly).
        state: the server's draining flag and in-flight counter.
        quotas: concurrent calls per role (None: no quotas).
        max_request_bytes: largest request the service parses (None: any gRPC lets through).
    """

    def __init__(self, auth: AuthConfig | None, state: ServerState, quotas: CallQuotas | None = None, max_request_bytes: int | None = None) -> None:
        self.auth = auth
        self.state = state
        self.quotas = quotas
        self.max_request_bytes = max_request_bytes

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None], details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        method = details.method
        if handler is None or is_public(method):
            return handler
        metadata = tuple(details.invocation_metadata or ())
        quotas = self.quotas

        def hold(principal: Principal | None) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext() if quotas is None else quotas.hold(method, principal)

        return _wrap(handler, lambda: self._admit(method, metadata), self.state.track, method, hold, self.max_request_bytes)

    def _admit(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]) -> Principal | None:
        """Checks run at the start of every call; returns the caller (None with auth off)."""
        if self.state.draining:
            raise UnavailableError("the server is shutting down; retry on another instance")
        if self.auth is None:
            return None
        token = bearer_token(metadata)
        if token is None:
            raise UnauthenticatedError("missing 'authorization: Bearer <token>' metadata")
        principal = self.auth.authenticate(token)
        if principal is None:
            raise UnauthenticatedError("the bearer token is not valid")
        need = required_role(method)
        if not principal.role.allows(need):
            raise PermissionDeniedError(f"role '{principal.role.value}' may not call {method} (needs '{need.value}')")
        return principal


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    """End the call with the status mapped from ``exc`` (raises, as ``abort`` does)."""
    context.abort_with_status(rpc_status.to_status(to_rpc_status(exc)))


def _log(method: str, context: grpc.ServicerContext, principal: Principal | None, t0: float, exc: BaseException | None) -> None:
    if exc is None:
        code = context.code() or grpc.StatusCode.OK
    elif isinstance(exc, ServiceError):
        code = code_and_reason(exc)[0]
    else:
        code = context.code() or grpc.StatusCode.INTERNAL
    access_log.info(
        "rpc",
        extra={
            "method": method,
            "code": code.name if isinstance(code, grpc.StatusCode) else str(code),
            "ms": round((time.perf_counter() - t0) * 1000.0, 2),
            "principal": principal.name if principal else None,
            "peer": context.peer(),
        },
    )


def _aborted(context: grpc.ServicerContext) -> bool:
    """True when the servicer already ended the call with ``context.abort``."""
    return bool(getattr(getattr(context, "_state", None), "aborted", False))


class _Undecodable:
    """What a request that is not a valid message deserialises to: the call then fails with
    INVALID_ARGUMENT (after authentication), not with gRPC's own INTERNAL."""

    def __init__(self, error: str) -> None:
        self.error = error


class _Oversized:
    """What a request over ``max_request_bytes`` deserialises to (unparsed): the call then fails
    with RESOURCE_EXHAUSTED (after authentication).

    Attributes:
        n_bytes: the request's size.
        limit: ``max_request_bytes``.
    """

    def __init__(self, n_bytes: int, limit: int) -> None:
        self.n_bytes, self.limit = n_bytes, limit


def _tolerant(deserialize: Callable[[bytes], object] | None, max_bytes: int | None = None) -> Callable[[bytes], object] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> object:
        if max_bytes is not None and len(data) > max_bytes:
            return _Oversized(len(data), max_bytes)
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's bad bytes
            return _Undecodable(type(exc).__name__)

    return parse


def _check_decoded(request: object, method: str) -> None:
    if isinstance(request, _Oversized):
        raise LimitExceededError(LimitViolation("", "max_request_bytes", request.limit, request.n_bytes, "bytes"))
    if isinstance(request, _Undecodable):
        raise InvalidArgumentError(FieldViolation("", f"the request is not a valid message of {method.rsplit('/', 1)[-1]} ({request.error})"))


def _wrap(
    handler: grpc.RpcMethodHandler,
    admit: Callable[[], Principal | None],
    track: Callable[[], contextlib.AbstractContextManager[None]],
    method: str,
    hold: Callable[[Principal | None], contextlib.AbstractContextManager[None]] = lambda _: contextlib.nullcontext(),
    max_bytes: int | None = None,
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour wrapped in admission, error mapping and logging."""

    def unary(behavior: Callable) -> Callable:  # type: ignore[type-arg]
        def run(request: object, context: grpc.ServicerContext) -> object:
            t0, principal, failed = time.perf_counter(), None, None
            try:
                principal = admit()
                _check_decoded(request, method)
                with track(), hold(principal):
                    return behavior(request, context)
            except Exception as exc:  # noqa: BLE001 - mapped to a status here, the one place
                if _aborted(context):
                    raise  # the servicer already aborted with its own status
                failed = exc
                _abort(context, exc)
            finally:
                _log(method, context, principal, t0, failed)

        return run

    def streaming(behavior: Callable) -> Callable:  # type: ignore[type-arg]
        def run(request: object, context: grpc.ServicerContext) -> Iterator[object]:
            t0, principal, failed = time.perf_counter(), None, None
            try:
                principal = admit()
                _check_decoded(request, method)
                with track(), hold(principal):
                    yield from behavior(request, context)
            except Exception as exc:  # noqa: BLE001
                if _aborted(context):
                    raise
                failed = exc
                _abort(context, exc)
            finally:
                _log(method, context, principal, t0, failed)

        return run

    parse = _tolerant(handler.request_deserializer, max_bytes)
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), parse, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming(handler.unary_stream), parse, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), handler.request_deserializer, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(streaming(handler.stream_stream), handler.request_deserializer, handler.response_serializer)


__all__ = ["ApiInterceptor", "ServerState"]
