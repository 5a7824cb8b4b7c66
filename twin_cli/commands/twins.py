"""``twin fit-twins``, ``twin update-twin``, ``twin twins``, ``twin report``: per-animal twins in
the versioned twin store, and an animal's HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from twin.errors import TwinError
from twin_cli.commands.common import fit_config, load_trials_input, open_store, optimisation_args, show_progress, store_args, trials_args
from twin_cli.commands.models import check_input, check_store_output, max_trials_arg
from twin_cli.tables import format_table

if TYPE_CHECKING:
    from twin.persist.store import TwinStore, TwinVersion


def print_warnings(versions: "list[TwinVersion] | tuple[TwinVersion, ...]") -> None:
    """One line per convergence warning a version records, ``warning: SUBJECT vN: ...``; a
    warning every listed version shares (the population fit's, say) is printed once."""
    shared = set.intersection(*(set(v.metrics.warnings) for v in versions)) if len(versions) > 1 else set()
    for message in dict.fromkeys(m for v in versions for m in v.metrics.warnings if m in shared):
        print(f"warning: every twin: {message}")
    for v in versions:
        for message in v.metrics.warnings:
            if message not in shared:
                print(f"warning: {v.subject} v{v.version}: {message}")


def cmd_fit_twins(args: argparse.Namespace) -> int:
    from twin.fit.cohort import CohortFitConfig, fit_cohort
    from twin.models.learner import ModelSpec
    from twin.models.rules import get_rule, make_config
    from twin.models.params import Adaptation

    from twin.fit.ensemble_cohort import DEFAULT_ENSEMBLE_RULES

    if args.rule is not None and args.ensemble is not None:
        raise TwinError("--rule fits one rule and --ensemble several: give one of them")
    if args.rule is None and args.ensemble is None:  # the default twin is the ensemble
        args.ensemble = ",".join(DEFAULT_ENSEMBLE_RULES)
        print(f"fitting the default twin, an ensemble of {', '.join(DEFAULT_ENSEMBLE_RULES)} stacked on held-out sessions (--rule RULE fits one rule)")
    if args.rule is not None:
        get_rule(args.rule)
    check_store_output(args.store)  # before reading and fitting, not after
    if args.data is not None:
        check_input(args.data, args.max_trials)
    if args.ensemble is not None:
        return fit_ensemble_twins(args)
    df, report = load_trials_input(args)
    print(report.summary())
    store = open_store(args, create=True)
    cfg = CohortFitConfig(
        spec=ModelSpec(args.rule, rule_config=make_config(args.rule, hidden_size=args.hidden)),
        fit=fit_config(args),
        adaptation=None if args.adaptation == "auto" else Adaptation(args.adaptation),
    )
    if args.ray or args.ray_address:
        # the CLI is the composition root: the Ray adapter is loaded only when asked for
        from cluster.cohort import fit_cohort_ray

        ray_rep = fit_cohort_ray(df, store, cfg, animals_per_batch=args.animals_per_task, address=args.ray_address, progress=show_progress(args))
        for subject, err in ray_rep.failed.items():
            print(f"FAILED {subject}: {err}", file=sys.stderr)
        rep = ray_rep.report
    else:
        rep = fit_cohort(df, store, cfg, progress=show_progress(args))
    if rep.adaptation_table is not None:
        print("adaptation chosen on held-out future sessions:")
        print(format_table(rep.adaptation_table))
    rows = [{"subject": v.subject, "version": v.version, "through_session": v.trained_through_session, "val_ll": v.metrics.val_ll, "warnings": len(v.metrics.warnings)} for v in rep.versions]
    print(format_table(pd.DataFrame(rows)))
    print_warnings(rep.versions)
    n_new = store_sessions(store, df)
    print(f"stored {len(rep.versions)} twins ({rep.adaptation.value}) and {n_new} new session(s) in {args.store} in {rep.seconds:.0f} s")
    return 0


def fit_ensemble_twins(args: argparse.Namespace) -> int:
    """``twin fit-twins --ensemble``: several rules (and seeds/bootstraps) stacked per animal."""
    from twin.fit.ensemble_cohort import EnsembleFitConfig, ensemble_components, fit_ensemble_cohort
    from twin.fit.stacking import StackingConfig
    from twin.models.params import Adaptation
    from twin.models.rules import get_rule

    if args.adaptation in ("auto", "full"):
        adaptation = Adaptation.INITIAL_WEIGHTS_AND_RATE
    else:
        adaptation = Adaptation(args.adaptation)
    if args.refit and args.no_refit:
        raise TwinError("--refit and --no-refit: give one of them")
    rules = tuple(r.strip() for r in args.ensemble.split(",") if r.strip())
    for r in rules:
        get_rule(r)
    try:
        cfg = EnsembleFitConfig(
            components=ensemble_components(rules, seeds=args.seeds, bootstraps=args.bootstraps, hidden_size=args.hidden),
            fit=fit_config(args),
            adaptation=adaptation,
            stacking=StackingConfig(shrinkage=None if args.shrinkage < 0 else args.shrinkage),
            refit=args.refit,  # --no-refit is the default; both at once were refused above
        )
    except ValueError as exc:
        raise TwinError(f"--ensemble: {exc}") from None
    df, report = load_trials_input(args)
    print(report.summary())
    store = open_store(args, create=True)
    if args.ray or args.ray_address:  # every component a Ray task: all the cores (or workers) at once
        from cluster.ensemble import fit_components_ray

        run_components = fit_components_ray(args.ray_address)
    else:
        from twin.fit.ensemble_cohort import fit_components_here as run_components
    try:
        res, versions = fit_ensemble_cohort(df, store, cfg, progress=show_progress(args), fit_components=run_components)
    except ValueError as exc:  # e.g. an animal with too few sessions for the stacking split
        raise TwinError(f"--ensemble: {exc}") from None
    print(f"ensemble weights stacked on held-out sessions after {res.choose_at} (cohort; per animal shrunk toward them):")
    print(format_table(res.table()))
    for c in res.components:
        for w in c.warnings:
            print(f"warning: {c.label}: {w}", file=sys.stderr)
    rows = [{"subject": v.subject, "version": v.version, "through_session": v.trained_through_session, "val_ll": v.metrics.val_ll} for v in versions]
    print(format_table(pd.DataFrame(rows)))
    n_new = store_sessions(store, df)
    print(f"stored {len(versions)} ensemble twins ({len(cfg.components)} components, {adaptation.value}) and {n_new} new session(s) in {args.store} in {res.seconds:.0f} s")
    return 0


def store_sessions(store: "TwinStore", df: pd.DataFrame) -> int:
    """Keep the animals' sessions in the store (what ``twin report`` and Predict on stored history
    read): each animal's sessions after those already stored, in order; the number added.

    Raises:
        TwinError: an animal already has more stored sessions than the data holds (a different
            data set than the one its sessions came from).
    """
    from twin.persist.sessions import SessionStore

    sessions = SessionStore(store)
    added = 0
    for subject, part in df.groupby("subject", sort=False):
        have = len(sessions.sessions(str(subject)))
        n = int(part["session"].max())
        if have > n:
            raise TwinError(f"subject {subject!r} has {have} stored sessions but the data holds only {n}; is this its data?")
        new = part[part["session"] > have]
        if len(new):
            added += len(sessions.add_table(new, source=f"sessions of {subject}"))
    return added


def _store_then_trials(args: argparse.Namespace, twin_of: str) -> "tuple[TwinStore, pd.DataFrame]":
    """The store (checked writable) and ``twin_of``'s twin in it, before the trials are read
    (and checked) and their summary printed: a bad store fails before a large file is read."""
    store = open_store(args)
    check_store_output(args.store)
    store.get(twin_of)
    if args.data is not None:
        check_input(args.data, args.max_trials)
    df, report = load_trials_input(args)
    print(report.summary())
    return store, df


def cmd_update_twin(args: argparse.Namespace) -> int:
    from twin.fit.cohort import update_twin

    store, df = _store_then_trials(args, args.subject)
    v = update_twin(store, args.subject, df)
    n_new = store_sessions(store, df[df["subject"] == args.subject])
    if n_new:
        print(f"{v.subject}: stored {n_new} new session(s)")
    print(f"{v.subject}: stored version {v.version} (through session {v.trained_through_session}, validation LL {v.metrics.val_ll:.4f})")
    print_warnings([v])
    return 0


def cmd_join_cohort(args: argparse.Namespace) -> int:
    """``twin join-cohort``: a new animal's first twin from a fitted cohort and its own sessions."""
    from twin.fit.join import join_cohort

    store, df = _store_then_trials(args, args.cohort_of)
    res = join_cohort(store, args.subject, df, args.cohort_of)
    v = res.version
    n_new = store_sessions(store, df[df["subject"] == args.subject])
    print(f"{v.subject}: start inferred from its {v.trained_through_session} session(s) under the prior of {len(res.members)} cohort twins (cohort {res.cohort[:8]})")
    if res.weights is not None:
        print(f"{v.subject}: ensemble weights ({res.weights_source}): " + ", ".join(f"{w:.2f}" for w in res.weights))
    print(f"{v.subject}: stored version {v.version} ({v.rule}, through session {v.trained_through_session}) and {n_new} session(s)")
    return 0


def cmd_twins(args: argparse.Namespace) -> int:
    store = open_store(args)
    versions = [v for s in store.subjects() for v in store.versions(s)]
    rows = [
        {
            "subject": v.subject, "version": v.version, "rule": v.rule, "through_session": v.trained_through_session, "val_ll": v.metrics.val_ll,
            "warnings": len(v.metrics.warnings), "aliases": ",".join(v.aliases), "created": v.created_at.isoformat(timespec="seconds"),
        }
        for v in versions
    ]
    print(format_table(pd.DataFrame(rows)) if rows else f"no twins in {args.store}")
    if versions:
        print_warnings(versions)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from twin_cli.report import ReportConfig, write_report

    try:
        cfg = ReportConfig(forecast_trials=args.forecast_trials, forecast_rollouts=args.rollouts, seed=args.seed)
    except ValueError as exc:
        raise TwinError(str(exc)) from None
    store = open_store(args)
    path = write_report(store, args.subject, args.out, trials=args.trials, version=args.version, alias=args.alias, config=cfg)
    print(f"wrote {path}")
    return 0


def add_fit_twins(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin fit-twins``."""
    from twin.fit.ensemble_cohort import DEFAULT_ENSEMBLE_RULES
    from twin.models.rules import rule_names

    ft = sub.add_parser("fit-twins", help="fit one twin per animal into the twin store (by default an ensemble of rules; --rule RULE for one rule)")
    trials_args(ft)
    ft.add_argument("--rule", default=None, help=f"fit one learning rule instead of the default ensemble: {', '.join(rule_names())}")
    ft.add_argument(
        "--ensemble", nargs="?", const=",".join(DEFAULT_ENSEMBLE_RULES), default=None, metavar="RULES",
        help=f"the ensemble's comma-separated rules (the default twin: {','.join(DEFAULT_ENSEMBLE_RULES)}), "
        "weighted per animal by stacking on held-out future sessions",
    )
    ft.add_argument("--seeds", type=int, default=1, help="ensemble: seeds of each non-static rule")
    ft.add_argument("--bootstraps", type=int, default=0, help="ensemble: bootstraps of the animals for each non-static rule")
    ft.add_argument("--shrinkage", type=float, default=100.0, help="ensemble: pseudo-trials pulling each animal's weights to the cohort's (negative: cohort weights only)")
    ft.add_argument(
        "--refit", action="store_true",
        help="ensemble: stack at half the sessions and refit each rule on all of them (twice the cost; by default the rules are fitted on all but the last sessions and kept)",
    )
    ft.add_argument("--no-refit", action="store_true", help="ensemble: keep the stacking split's rules (the default; kept for old scripts)")
    ft.add_argument("--adaptation", choices=["auto", "none", "w0", "w0+rate", "full"], default="auto", help="per-animal adaptation (auto: chosen on held-out future sessions)")
    optimisation_args(ft)
    ft.add_argument("--hidden", type=int, default=32, help="hidden size (dnn, dnn_delta, rnn)")
    ft.add_argument("--ray", action="store_true", help="adapt the twins in Ray tasks on a local Ray (loopback); for an ensemble, fit each component as a Ray task")
    ft.add_argument("--ray-address", default=None, help="join this Ray cluster instead (implies --ray)")
    ft.add_argument("--animals-per-task", type=int, default=16, help="animals per Ray task (batched fit)")
    max_trials_arg(ft)
    store_args(ft)
    ft.set_defaults(func=cmd_fit_twins)


def add_update_twin(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin update-twin``."""
    ut = sub.add_parser("update-twin", help="update one animal's twin with its new sessions (new version)")
    trials_args(ut, what="the animal's trials, new sessions included")
    ut.add_argument("--subject", required=True)
    max_trials_arg(ut)
    store_args(ut)
    ut.set_defaults(func=cmd_update_twin)


def add_join_cohort(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin join-cohort``."""
    jc = sub.add_parser(
        "join-cohort", help="give a new animal its first twin from a fitted cohort (its rules kept) and its own sessions, without refitting the cohort",
    )
    trials_args(jc, what="the new animal's trials (every session it has)")
    jc.add_argument("--subject", required=True, help="the new animal (it must have no twin yet)")
    jc.add_argument("--cohort-of", required=True, metavar="SUBJECT", help="any animal of the cohort fit to join")
    max_trials_arg(jc)
    store_args(jc)
    jc.set_defaults(func=cmd_join_cohort)


def add_twins(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin twins``."""
    ls = sub.add_parser("twins", help="list the twin store's subjects and versions")
    store_args(ls)
    ls.set_defaults(func=cmd_twins)


def add_report(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin report``."""
    rp = sub.add_parser("report", help="write one self-contained HTML report of an animal and its twin")
    rp.add_argument("subject", help="the animal")
    rp.add_argument("--trials", type=Path, default=None, help="trials file (any supported layout), used when the subject has no stored sessions")
    rp.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write (default: report.html)")
    rp.add_argument("--version", type=int, default=None, help="twin version (default: --alias's, else the latest)")
    rp.add_argument("--alias", default=None, help="alias naming the twin version (e.g. serving)")
    rp.add_argument("--forecast-trials", type=int, default=None, help="trials in the forecast session (default: median of the last 3 sessions)")
    rp.add_argument("--rollouts", type=int, default=200, help="simulated copies of the next session")
    rp.add_argument("--seed", type=int, default=0)
    store_args(rp)
    rp.set_defaults(func=cmd_report)


__all__ = ["add_fit_twins", "add_join_cohort", "add_report", "add_twins", "add_update_twin"]
