"""``twin health``: one gRPC health check of a ``twin serve`` server, as an exec probe runs it.

Kubelet's own gRPC probes connect in plaintext, so they cannot check a server that serves TLS;
this command checks it the way a client would (TLS with the given CA, the certificate's server
name) and exits 0 when the server reports SERVING, 1 otherwise (not serving, unreachable, a TLS
failure), with one line saying which.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: exit status of a check that failed (the probe's "not ready").
EXIT_UNHEALTHY = 1


def cmd_health(args: argparse.Namespace) -> int:
    import grpc

    from twin_client.client import TwinClient

    tls = args.tls_ca is not None
    options = [("grpc.ssl_target_name_override", args.server_name)] if tls and args.server_name else []
    try:
        ca = args.tls_ca.read_bytes() if tls else None
    except OSError as exc:
        print(f"cannot read the CA bundle: {exc}")
        return EXIT_UNHEALTHY
    with TwinClient(args.address, tls=tls, root_certificates=ca, timeout_s=args.timeout, options=options) as client:
        try:
            status = client.health(args.service)
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
            return EXIT_UNHEALTHY
    print(f"{args.address}: {status}")
    return 0 if status == "SERVING" else EXIT_UNHEALTHY


def add_health(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin health``."""
    h = sub.add_parser("health", help="check a twin server's gRPC health (an exec probe that works with TLS)")
    h.add_argument("--address", default="127.0.0.1:50051", help="host:port of the server (default: 127.0.0.1:50051)")
    h.add_argument("--tls-ca", type=Path, default=None, help="PEM CA bundle to verify the server with (connects over TLS); none: plaintext")
    h.add_argument("--server-name", default=None, help="the name in the server's certificate, when it is not the address's host")
    h.add_argument("--service", default="", help="the service to check (default: the server as a whole)")
    h.add_argument("--timeout", type=float, default=3.0, help="seconds before the check fails (default 3)")
    h.set_defaults(func=cmd_health, uses_torch=False)


__all__ = ["add_health"]
