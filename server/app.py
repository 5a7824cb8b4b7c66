"""Assembling and running the gRPC server: servicers, health, reflection, auth, TLS, limits,
graceful shutdown.

:func:`build_plane` wires the data plane over a store folder; :func:`start_server` starts a
server for it (tests use port 0 on 127.0.0.1); :func:`serve` runs one until SIGTERM/SIGINT,
then shuts it down gracefully: health turns NOT_SERVING, new calls get UNAVAILABLE, in-flight
calls and running operations get ``grace_s`` seconds to finish, then the server stops.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from twin.data import screen as trial_screen
from twin.models import batch1
from twin.persist.oplog import OperationLog
from twin.persist.sessions import SessionStore
from twin.persist.store import TwinStore
from twin.sim.training import warm_up as sim_warm_up

from optimizer.planning import CurriculumSearchFn, LabDefault, ProposeFn
from server import wire
from server.auth import AuthConfig
from server.interceptors import ApiInterceptor, ServerState
from server.quotas import CallQuotas
from server.reflection import enable_reflection
from server.servicers import CurriculumServicer, OperationsServicer, TeachingServicer, TwinServicer
from service.admission import Admission
from service.cache import TwinCache
from service.config import DataPlaneConfig
from service.dataplane import TwinDataPlane
from service.jobs import JobManager
from service.updates import CohortFitFn, local_cohort_fit
from twin_proto.pb import (
    SERVICE_NAMES,
    curriculum_service_pb2_grpc,
    operations_service_pb2_grpc,
    teaching_service_pb2_grpc,
    twin_service_pb2_grpc,
)

log = logging.getLogger("server.app")

MiB = 1024 * 1024


@dataclass(frozen=True)
class TlsConfig:
    """Server TLS.

    Attributes:
        cert_chain: PEM certificate chain of the server.
        private_key: PEM private key of the server.
        client_ca: PEM CA bundle; when set, clients must present a certificate it signed.
    """

    cert_chain: Path
    private_key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials from the files."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.private_key.read_bytes(), self.cert_chain.read_bytes())], root_certificates=ca, require_client_auth=ca is not None
        )


@dataclass(frozen=True)
class ServerConfig:
    """How the server listens and whom it lets in.

    Attributes:
        address: ``host:port`` to listen on (port 0: any free port).
        auth: accepted bearer tokens; None only together with ``local_demo``.
        local_demo: run without authentication (loopback addresses only).
        tls: TLS settings (None: plaintext).
        max_workers: threads serving calls (streams hold one each).
        max_receive_bytes: largest request gRPC receives at all (None:
            :func:`receive_ceiling` of the data plane's ``limits.max_request_bytes``); requests
            over ``max_request_bytes`` and up to it are refused by the service unparsed.
        max_send_bytes: largest response sent.
        grace_s: seconds in-flight calls and running operations get at shutdown.
        reflection: serve the reflection service (``grpcurl list``).
        freeze_gc: once the kernels are warm, move every object loaded so far out of the
            garbage collector's sight (``gc.freeze``): the libraries' ~340k objects live as long
            as the server, and a full collection walking them paused calls for up to 0.6 s
            (``twin serve`` turns it on; a server inside a test process leaves it off).
    """

    address: str = "127.0.0.1:50051"
    auth: AuthConfig | None = None
    local_demo: bool = False
    tls: TlsConfig | None = None
    max_workers: int = 32
    max_receive_bytes: int | None = None
    max_send_bytes: int = 64 * MiB
    grace_s: float = 20.0
    reflection: bool = True
    freeze_gc: bool = False

    def __post_init__(self) -> None:
        if self.auth is None and not self.local_demo:
            raise ValueError("authentication is required: configure bearer tokens, or start in local demo mode explicitly")
        if self.auth is not None and not self.auth.principals and not self.local_demo:
            raise ValueError("no bearer tokens configured: every call would be refused")
        if self.local_demo and self.auth is None and not _is_loopback(self.address):
            raise ValueError(f"local demo mode (no authentication) listens on loopback only, not {self.address!r}")
        if self.max_workers < 1 or (self.max_receive_bytes is not None and self.max_receive_bytes < 1) or self.max_send_bytes < 1:
            raise ValueError("max_workers and message size limits must be positive")


def receive_ceiling(max_request_bytes: int) -> int:
    """gRPC's own receive limit for a service limit of ``max_request_bytes``: twice it.

    A request over ``max_request_bytes`` and up to this ceiling reaches the service, which
    refuses it (RESOURCE_EXHAUSTED naming ``max_request_bytes``) without parsing it: within a few
    milliseconds of its arrival. gRPC refuses one over the ceiling itself (its own message, without
    the limit's name), also within milliseconds on the pinned grpcio 1.81; grpcio 1.82-1.85 wrote
    that status only after 100-1000 ms (measured with a bare grpcio server,
    ``bench/oversized_requests.py`` case ``bare_grpcio_over``), which is why grpcio is pinned
    below 1.82. The ceiling bounds what one call buffers.
    """
    return 2 * max_request_bytes


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_plane(
    store_root: str | Path,
    db_url: str | None = None,
    *,
    job_workers: int = 1,
    cache_size: int = 256,
    config: DataPlaneConfig = DataPlaneConfig(),
    lab: LabDefault = LabDefault(),
    propose: ProposeFn | None = None,
    search: CurriculumSearchFn | None = None,
    cohort_fit: CohortFitFn = local_cohort_fit,
    max_pending: int = 1000,
    leftover_min_age_s: float = 300.0,
) -> TwinDataPlane:
    """The data plane over the store in ``store_root`` (SQLite there unless ``db_url``), its
    operations kept in the store's database; what a previous server left is taken over
    (:meth:`~service.dataplane.TwinDataPlane.recover`)."""
    store = TwinStore(store_root, url=db_url)
    jobs = JobManager(max_workers=job_workers, max_pending=max_pending, oplog=OperationLog(store))
    plane = TwinDataPlane(store, SessionStore(store), jobs, TwinCache(store, cache_size), config, lab, propose, search, cohort_fit)
    plane.recover(leftover_min_age_s)
    return plane


#: Longest :meth:`RunningServer.stop` waits for a warm-up still compiling.
WARM_UP_JOIN_S = 120.0


@dataclass
class RunningServer:
    """A started server and what shutting it down needs.

    Attributes:
        server: the gRPC server.
        port: the port it listens on.
        plane: its data plane.
        health: the health servicer.
        state: draining flag and in-flight counter.
        config: how it was started.
        warm_up: the kernels' warm-up thread (None once joined, or when none was started);
            :meth:`stop` waits for it, so no thread of a stopped server is left logging.
    """

    server: grpc.Server
    port: int
    plane: TwinDataPlane
    health: health.HealthServicer
    state: ServerState
    config: ServerConfig
    warm_up: threading.Thread | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def target(self) -> str:
        """``host:port`` a client on this machine connects to."""
        host = self.config.address.rsplit(":", 1)[0]
        return f"{'127.0.0.1' if host in ('0.0.0.0', '[::]', '') else host}:{self.port}"

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse new calls (UNAVAILABLE), let in-flight calls
        and running operations finish within ``grace_s``, then stop. Idempotent."""
        if self._stopped.is_set():
            return
        grace = self.config.grace_s if grace_s is None else grace_s
        t0 = time.monotonic()
        log.info("shutting down", extra={"grace_s": grace, "inflight": self.state.inflight})
        self.health.enter_graceful_shutdown()
        self.state.start_draining()
        idle = self.state.wait_idle(grace)
        self.plane.jobs.shutdown(max(0.0, grace - (time.monotonic() - t0)))
        self.server.stop(max(0.0, grace - (time.monotonic() - t0))).wait()
        if self.warm_up is not None:  # a compile in progress finishes (the first start's takes tens of seconds):
            # a process that exits while numba compiles in a daemon thread can abort
            # ("terminate called without an active exception"; bench/oversized_requests.py's
            # smoke run did, 2 runs in 3, with a 1 s timeout here)
            self.warm_up.join(timeout=WARM_UP_JOIN_S)
        self.plane.store.close()
        self._stopped.set()
        log.info("stopped", extra={"drained": idle, "seconds": round(time.monotonic() - t0, 3)})

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._stopped.wait()


def warm_up_kernels(background: bool = True, freeze_gc: bool = False) -> threading.Thread | None:
    """Compile (or load from numba's on-disk cache) the batch-1 rollout kernels, the trial
    decoder and screen and the task environment's kernels; until they are ready, calls take the torch path and the field-by-field reader, so
    no request waits on a compiler (about a second on a warm cache; the first compile takes tens
    of seconds).

    Args:
        background: warm up in a daemon thread (returned) instead of before returning.
        freeze_gc: then ``gc.freeze()`` (:attr:`ServerConfig.freeze_gc`).
    """
    batch1.defer_until_ready()

    def run() -> None:
        t0 = time.perf_counter()
        try:
            report = batch1.warm_up()
            wire.warm_up()
            trial_screen.warm_up()  # the one-pass shortcut of the trial checks
            sim_warm_up()  # the task environment's kernels (forecasts, teaching)
        except Exception:  # noqa: BLE001 - the torch path keeps serving
            log.exception("kernel warm-up failed; serving on the torch path")
            return
        batch1.mark_ready()
        if freeze_gc:
            gc.freeze()
        log.info("kernels ready", extra={"seconds": round(time.perf_counter() - t0, 2), "fused_rules": list(report.kernels), "fused_error": report.error, "gc_frozen_objects": gc.get_freeze_count()})

    if not background:
        run()
        return None
    thread = threading.Thread(target=run, name="twin-kernel-warm-up", daemon=True)
    thread.start()
    return thread


def start_server(config: ServerConfig, plane: TwinDataPlane) -> RunningServer:
    """Start serving ``plane`` as configured; returns once the port is bound.

    Raises:
        RuntimeError: the address could not be bound.
    """
    state = ServerState()
    limits = plane.config.limits
    max_receive = config.max_receive_bytes or receive_ceiling(limits.max_request_bytes)
    quotas = CallQuotas(limits)
    if quotas.threads_held() >= config.max_workers:
        log.warning(
            "the call quotas can hold every thread",
            extra={"max_workers": config.max_workers, "held": quotas.threads_held(), "hint": "lower the max_concurrent_* limits or raise --max-workers"},
        )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="twin-rpc"),
        interceptors=[ApiInterceptor(config.auth, state, quotas, limits.max_request_bytes)],
        maximum_concurrent_rpcs=limits.max_queued_calls,
        options=[
            ("grpc.max_receive_message_length", max_receive),
            ("grpc.max_send_message_length", config.max_send_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    twin_service_pb2_grpc.add_TwinServiceServicer_to_server(TwinServicer(plane.catalog, plane.predictions, plane.updates, Admission(plane.catalog, plane.jobs)), server)
    curriculum_service_pb2_grpc.add_CurriculumServiceServicer_to_server(CurriculumServicer(plane.curricula, plane.config.max_interval_width), server)
    operations_service_pb2_grpc.add_OperationsServiceServicer_to_server(OperationsServicer(plane.operations, lambda: state.draining, limits), server)
    teaching_service_pb2_grpc.add_TeachingServiceServicer_to_server(TeachingServicer(plane.teaching, limits), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if config.reflection:
        enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    try:
        if config.tls is not None:
            port = server.add_secure_port(config.address, config.tls.credentials())
        else:
            port = server.add_insecure_port(config.address)
    except RuntimeError as exc:
        raise RuntimeError(f"could not listen on {config.address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"could not listen on {config.address}")
    warm_up = warm_up_kernels(freeze_gc=config.freeze_gc)
    server.start()
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        extra={
            "address": config.address,
            "port": port,
            "tls": config.tls is not None,
            "auth": "off (local demo)" if config.auth is None else f"{len(config.auth.principals)} tokens",
            "store": str(plane.store.root),
            "max_request_bytes": limits.max_request_bytes,
            "max_receive_bytes": max_receive,
            "limits": limits.as_dict(),
        },
    )
    return RunningServer(server, port, plane, health_servicer, state, config, warm_up)


def serve(config: ServerConfig, plane: TwinDataPlane, on_started: Callable[[RunningServer], None] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully. Returns the exit status.

    Args:
        config: how to listen.
        plane: what to serve.
        on_started: called once the port is bound (e.g. to write it to a file).
    """
    running = start_server(config, plane)
    if on_started is not None:
        on_started(running)
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop_requested.wait(0.5):
            pass
        running.stop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


__all__ = ["RunningServer", "ServerConfig", "TlsConfig", "build_plane", "receive_ceiling", "serve", "start_server"]
