"""``twin store verify [--repair]``: check a twin store end to end (checksums of weights, rules
and sessions, aliases, cohorts switched whole, orphan and temporary files) and repair what can
be repaired safely. Exit status: 0 clean, 1 problems remain, 2 the store could not be read."""

from __future__ import annotations

import argparse
import sys

from twin_cli.commands.common import store_args


def cmd_store_verify(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from twin.persist.integrity import repair, verify_store
    from twin.persist.store import TwinStore

    if args.min_age < 0:
        print("twin store verify: error: --min-age must be >= 0", file=sys.stderr)
        return 2
    if not args.store.is_dir() and args.db_url is None:
        print(f"twin store verify: error: no store folder {args.store}", file=sys.stderr)
        return 2
    try:
        store = TwinStore(args.store, url=args.db_url)
        report = verify_store(store, args.min_age)
        for line in report.lines():
            print(line)
        if args.repair and not report.clean:
            fixed = repair(store, report)
            print(f"repaired {len(fixed)} problem(s)")
            report = verify_store(store, args.min_age)
            print(report.lines()[-1])
        store.close()
    except SQLAlchemyError as exc:
        print(f"twin store verify: error: the store's database could not be read ({type(exc).__name__})", file=sys.stderr)
        return 2
    return 0 if report.clean else 1


def add_store(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin store``."""
    st = sub.add_parser("store", help="check (and repair) a twin store")
    ss = st.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    v = ss.add_parser("verify", help="check checksums, aliases, cohorts and leftover files; exit 1 on problems")
    v.add_argument("--repair", action="store_true", help="remove orphan and temporary files, finish half-switched cohorts")
    v.add_argument("--min-age", type=float, default=300.0, help="seconds an unnamed file must be old to count as left over (default 300)")
    store_args(v)
    v.set_defaults(func=cmd_store_verify)


__all__ = ["add_store"]
