"""``twin search``: hyperparameter search for a rule (Optuna, or Ray Tune + ASHA with ``--tune``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from twin_cli.commands.common import load_trials_input, trials_args


def cmd_search(args: argparse.Namespace) -> int:
    from twin.models.rules import get_rule

    get_rule(args.rule)
    df, report = load_trials_input(args)
    print(report.summary())
    # search backends are adapters (Optuna, Ray Tune): loaded only here
    from cluster.search import search_optuna, search_tune

    if args.tune or args.ray_address:
        res = search_tune(df, args.rule, args.trials, args.epochs, storage_path=args.out.parent / "tune", seed=args.seed, address=args.ray_address)
    else:
        res = search_optuna(df, args.rule, args.trials, args.epochs, storage=args.storage, study_name=args.study, seed=args.seed)
    res.save(args.out)
    if args.store is not None:
        from twin.persist.store import TwinStore

        stored = TwinStore(args.store, args.db_url).put_result(res.kind, f"{args.rule}:{args.study}", res.summary())
        print(f"stored {stored.kind.value} {stored.name!r} v{stored.version} in {args.store}")
    best, default = res.best.val_ll, res.default.val_ll
    print(f"best {res.best.params.to_dict()}: validation LL {best:.4f} nats/trial (defaults {default:.4f}, {best - default:+.4f}); wrote {args.out}")
    return 0


def add_search(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin search``."""
    se = sub.add_parser("search", help="hyperparameter search for a rule (Optuna; Ray Tune + ASHA with --tune)")
    trials_args(se)
    se.add_argument("--rule", default="dnn")
    se.add_argument("--trials", type=int, default=20, help="candidates to try")
    se.add_argument("--epochs", type=int, default=50, help="maximum epochs per candidate")
    se.add_argument("--storage", default=None, help="Optuna study database URL (e.g. sqlite:///search.db): resumable")
    se.add_argument("--study", default="twin-hparams", help="Optuna study name")
    se.add_argument("--tune", action="store_true", help="run on Ray Tune (local Ray) with OptunaSearch and ASHA")
    se.add_argument("--ray-address", default=None, help="Ray cluster address (implies --tune)")
    se.add_argument("--seed", type=int, default=0)
    se.add_argument("--out", type=Path, default=Path("search.json"), help="result file (JSON)")
    se.add_argument("--store", type=Path, default=None, help="also keep the result in this twin store's database")
    se.add_argument("--db-url", default=None, help="SQLAlchemy URL of the store's metadata database")
    se.set_defaults(func=cmd_search)


__all__ = ["add_search"]
