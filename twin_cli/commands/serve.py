"""``twin serve``: the gRPC service (``twin.v1``) over a twin store."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from twin_cli.commands.common import store_args

if TYPE_CHECKING:
    from service.limits import Limits


def cmd_serve(args: argparse.Namespace) -> int:
    # gRPC is an adapter: loaded only for this command
    import logging

    from server.app import ServerConfig, TlsConfig, build_plane, serve
    from server.auth import TOKENS_ENV, AuthConfig
    from server.logs import configure_logging
    from service.config import DataPlaneConfig

    try:
        limits = read_limits(args.limits, args.limit, args.max_message_mb)
        check_queue_flags(args.max_pending, args.leftover_age)
        if args.show_limits:
            import yaml

            print(yaml.safe_dump(limits.as_dict(), sort_keys=False), end="")
            return 0
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
            grace_s=args.grace,
            freeze_gc=True,  # a long-lived process: the libraries' objects out of the collector's sight
        )
    except (ValueError, OSError) as exc:
        print(f"twin serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(getattr(logging, args.log_level.upper()))
    propose = search = None
    if not args.no_optimizer:
        from service.optimizer_bridge import optimizer_proposer, optimizer_search

        propose, search = optimizer_proposer(), optimizer_search()
    plane = build_plane(
        args.store, args.db_url, job_workers=args.job_workers, cache_size=args.cache_size, config=DataPlaneConfig(limits=limits), propose=propose, search=search,
        max_pending=args.max_pending, leftover_min_age_s=args.leftover_age,
    )  # fmt: skip
    port_file: Path | None = args.port_file
    return serve(config, plane, on_started=None if port_file is None else lambda running: port_file.write_text(f"{running.port}\n"))


def check_queue_flags(max_pending: int, leftover_age_s: float) -> None:
    """Validate ``--max-pending`` and ``--leftover-age``.

    Raises:
        ValueError: a value out of range (the message names the flag).
    """
    if max_pending < 1:
        raise ValueError(f"--max-pending must be at least 1 (operations the queue holds), got {max_pending}")
    if not (math.isfinite(leftover_age_s) and leftover_age_s >= 0):
        raise ValueError(f"--leftover-age must be a number of seconds >= 0, got {leftover_age_s}")


def read_limits(path: Path | None, pairs: list[str], max_message_mb: float | None) -> Limits:
    """The service's limits: the defaults, then the YAML file ``path`` (a mapping of limit
    names to values), then ``NAME=VALUE`` pairs, then ``--max-message-mb``.

    Raises:
        ValueError: an unknown limit, a value that is not a positive integer, a bad file.
    """
    import yaml

    from service.limits import Limits

    limits = Limits()
    if path is not None:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML ({exc.__class__.__name__})") from None
        data = data.get("limits", data) if isinstance(data, dict) else data
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of limit names to values")
        limits = limits.replace(data)
    values: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--limit {pair!r}: expected NAME=VALUE")
        values[name.strip().replace("-", "_")] = value
    limits = limits.replace(values)
    if max_message_mb is not None:
        if not max_message_mb > 0:
            raise ValueError("--max-message-mb must be positive")
        limits = limits.replace({"max_request_bytes": int(max_message_mb * 1024 * 1024)})
    return limits


def add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin serve``."""
    sv = sub.add_parser("serve", help="run the gRPC service (twin.v1) over a twin store")
    sv.add_argument("--address", default="127.0.0.1:50051", help="host:port to listen on (default 127.0.0.1:50051; port 0: any free port)")
    sv.add_argument("--auth-config", type=Path, default=None, help="YAML file of bearer tokens and roles (also read: $TWIN_AUTH_TOKENS)")
    sv.add_argument("--local-demo", action="store_true", help="no authentication (loopback addresses only)")
    sv.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve over TLS")
    sv.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    sv.add_argument("--tls-client-ca", type=Path, default=None, help="PEM CA bundle: require client certificates signed by it")
    sv.add_argument("--max-workers", type=int, default=32, help="threads serving calls (each open Teach or Watch stream holds one)")
    sv.add_argument("--job-workers", type=int, default=1, help="long-running operations (fits) run at once")
    sv.add_argument("--cache-size", type=int, default=256, help="twins kept loaded in memory (LRU)")
    sv.add_argument(
        "--max-pending", type=int, default=1000,
        help="operations the queue holds at most, the server's own follow-up updates included (default 1000; requests stop queueing at the limit max_pending_operations)",
    )
    sv.add_argument(
        "--leftover-age", type=float, default=300.0, metavar="SECONDS",
        help="at start, remove temporary and orphan store files older than this (default 300; younger ones may belong to a writer still running)",
    )
    sv.add_argument("--max-message-mb", type=float, default=None, help="largest request accepted, MiB (default 8; the limit max_request_bytes)")
    sv.add_argument(
        "--limits", type=Path, default=None, metavar="FILE",
        help="YAML mapping of limit names to values (max_supplied_trials: 50000, ...); see --show-limits and server/README.md",
    )
    sv.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE", help="set one limit (repeatable; after --limits), e.g. --limit max_rollouts=1000")
    sv.add_argument("--show-limits", action="store_true", help="print the effective limits as YAML and exit")
    sv.add_argument("--grace", type=float, default=20.0, help="seconds in-flight calls get at shutdown (SIGTERM)")
    sv.add_argument("--port-file", type=Path, default=None, help="write the bound port to this file once serving")
    sv.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    store_args(sv)
    sv.add_argument("--no-optimizer", action="store_true", help="NextSession serves the lab's default protocol with the twin's forecast; no SearchCurricula")
    sv.set_defaults(func=cmd_serve)


__all__ = ["add_serve", "check_queue_flags", "read_limits"]
