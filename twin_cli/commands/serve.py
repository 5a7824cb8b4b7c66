"""``twin serve``: the gRPC service (``twin.v1``) over a twin store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from twin_cli.commands.common import store_args


def cmd_serve(args: argparse.Namespace) -> int:
    # gRPC is an adapter: loaded only for this command
    import logging

    from server.app import ServerConfig, TlsConfig, build_plane, serve
    from server.auth import TOKENS_ENV, AuthConfig
    from server.logs import configure_logging

    try:
        auth = None
        if not args.local_demo:
            auth = AuthConfig.from_env()
            if args.auth_config is not None:
                auth = AuthConfig.from_yaml(args.auth_config).merged(auth)
            if not auth.principals:
                raise ValueError(f"no bearer tokens: pass --auth-config FILE or set {TOKENS_ENV} (or --local-demo for an unauthenticated loopback demo)")
        tls = None
        if args.tls_cert or args.tls_key:
            if not (args.tls_cert and args.tls_key):
                raise ValueError("--tls-cert and --tls-key go together")
            tls = TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca)
        config = ServerConfig(
            address=args.address,
            auth=auth,
            local_demo=args.local_demo,
            tls=tls,
            max_workers=args.max_workers,
            max_receive_bytes=int(args.max_message_mb * 1024 * 1024),
            grace_s=args.grace,
        )
    except (ValueError, OSError) as exc:
        print(f"twin serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(getattr(logging, args.log_level.upper()))
    propose = search = None
    if not args.no_optimizer:
        from service.optimizer_bridge import optimizer_proposer, optimizer_search

        propose, search = optimizer_proposer(), optimizer_search()
    plane = build_plane(args.store, args.db_url, job_workers=args.job_workers, cache_size=args.cache_size, propose=propose, search=search)
    port_file: Path | None = args.port_file
    return serve(config, plane, on_started=None if port_file is None else lambda running: port_file.write_text(f"{running.port}\n"))


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin serve``."""
    sv = sub.add_parser("serve", help="run the gRPC service (twin.v1) over a twin store")
    sv.add_argument("--address", default="127.0.0.1:50051", help="host:port to listen on (default 127.0.0.1:50051; port 0: any free port)")
    sv.add_argument("--auth-config", type=Path, default=None, help="YAML file of bearer tokens and roles (also read: $TWIN_AUTH_TOKENS)")
    sv.add_argument("--local-demo", action="store_true", help="no authentication (loopback addresses only)")
    sv.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve over TLS")
    sv.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    sv.add_argument("--tls-client-ca", type=Path, default=None, help="PEM CA bundle: require client certificates signed by it")
    sv.add_argument("--max-workers", type=int, default=16, help="threads serving calls")
    sv.add_argument("--job-workers", type=int, default=1, help="long-running operations (fits) run at once")
    sv.add_argument("--cache-size", type=int, default=256, help="twins kept loaded in memory (LRU)")
    sv.add_argument("--max-message-mb", type=float, default=32.0, help="largest request accepted, MiB")
    sv.add_argument("--grace", type=float, default=20.0, help="seconds in-flight calls get at shutdown (SIGTERM)")
    sv.add_argument("--port-file", type=Path, default=None, help="write the bound port to this file once serving")
    sv.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    store_args(sv)
    sv.add_argument("--no-optimizer", action="store_true", help="NextSession serves the lab's default protocol with the twin's forecast; no SearchCurricula")
    sv.set_defaults(func=cmd_serve)


__all__ = ["add_serve"]
