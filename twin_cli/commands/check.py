"""``twin check``: the generative check — twins run free from a cut-off under the protocol their
animals had, scored against what the animals did (trials to ``trained_1a``/``1b``, fraction
trained, per-session accuracy and psychometric, bias drift; CRPS, log score, coverage).

Three sources of twins: a synthetic family (``--family``: simulate, fit ``--rule`` on the fitting
animals, check the held-out ones, the true rule beside it as the oracle), a trials file with a
model file (``--model``: the population rule from each animal's ``--cutoff``, its ``w0`` and rates
inferred from its own sessions before the cut-off unless ``--start population``), or a twin store
(``--store``: each animal's twin from the session it was trained through).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from twin.errors import TwinError
from twin_cli.commands.common import FAMILIES, show_progress
from twin_cli.tables import format_table

SUMMARY_COLUMNS = (
    ("scored_1a", "animals"),
    ("obs_mean_trials_1a", "obs trials 1a"),
    ("pred_mean_trials_1a", "pred trials 1a"),
    ("pred_over_obs_trials_1a", "pred/obs"),
    ("obs_frac_trained_1a", "obs trained 1a"),
    ("pred_frac_trained_1a", "pred trained 1a"),
    ("crps_1a", "CRPS 1a"),
    ("nls_1a", "-log score 1a"),
    ("cov50_1a", "cov50 1a"),
    ("cov80_1a", "cov80 1a"),
    ("cov95_1a", "cov95 1a"),
    ("pred_over_obs_trials_1b", "pred/obs 1b"),
    ("cov95_1b", "cov95 1b"),
    ("cov80_easy_accuracy", "cov80 easy acc"),
    ("cov95_easy_accuracy", "cov95 easy acc"),
    ("crps_easy_accuracy", "CRPS easy acc"),
    ("cov80_bias", "cov80 bias"),
    ("cov80_bias_drift", "cov80 drift"),
)


def _protocol(arg: str | None):  # type: ignore[no-untyped-def]
    from twin.protocol import IBL_DEFAULT, Curriculum

    if arg is None or arg == "replay":
        return None
    if arg == "ibl":
        return IBL_DEFAULT
    return Curriculum.load(arg)


def _checks_from_file(args: argparse.Namespace) -> dict[str, object]:
    from twin.data.readers import load_trials
    from twin.persist.model_files import load_model
    from twin.analysis.generative import generative_check
    from twin.sim.check import run_check, twin_starts

    df, report = load_trials(args.data)
    print(report.summary())
    protocol = _protocol(args.protocol)
    subjects = list(dict.fromkeys(df["subject"]))
    if args.store is not None:
        from twin.persist.store import TwinStore

        store = TwinStore(args.store, url=args.db_url)
        twins, ensembles, cut, keep = [], [], [], []
        for s in subjects:
            if s not in store.subjects():
                continue
            t = store.load_twin(s, alias=args.alias)
            sessions = sorted(df.loc[df["subject"] == s, "session"].unique())
            c = sum(1 for v in sessions if v <= t.meta.trained_through_session)
            if c >= len(sessions):
                continue
            twins.append(t.twin)
            ensembles.append(t.ensemble)
            cut.append(c)
            keep.append(s)
        if not keep:
            raise TwinError(f"no animal of {args.data} has a twin in {args.store} and sessions after the one it was trained through")
        if any(e is not None for e in ensembles):
            return {"store-ensemble": _ensemble_check(ensembles, df[df["subject"].isin(keep)], keep, cut, protocol, args)}
        if len({t.params.rule for t in twins}) > 1:
            raise TwinError("the twins run over different population rules; check one cohort fit at a time")
        population, label = twins[0].population, "store"
    else:
        population = load_model(args.model).model
        twins, keep, cut = _model_twins(population, df, subjects, args.cutoff, args.start)
        label = f"model-cutoff{args.cutoff}" + ("-own-start" if args.cutoff > 0 and args.start == "own" else "-population-start")
    trials = df[df["subject"].isin(keep)]
    try:
        start = twin_starts(twins, trials, keep, cut, protocol)
        run = run_check(population, start, trials, protocol, args.rollouts, seed=args.seed)
    except ValueError as exc:
        raise TwinError(str(exc)) from None
    return {label: generative_check(run.subjects, run.observed, run.predicted, run.cutoff, run.n_rollouts)}


def _model_twins(population: object, df: pd.DataFrame, subjects: list[str], cutoff: int, start: str) -> tuple[list, list[str], list[int]]:  # type: ignore[type-arg]
    """Each animal's twin over a model file's population rule: with ``start == "own"`` and a
    cut-off, its ``w0`` and rate multipliers are inferred from its own sessions before the cut-off
    (:func:`twin.fit.adapt.infer_start`, MAP under a prior whose spread is that of the checked
    animals' own pre-cut-off starts, :func:`twin.fit.adapt.cohort_start_prior`); at cut-off 0 (no
    own data), or with ``start == "population"``, every animal starts from the population's
    ``w0`` and rate, and the check's label says so."""
    from twin.data.batch import make_batch
    from twin.fit.adapt import cohort_start_prior, infer_start
    from twin.models.params import TwinModel

    cut = [cutoff] * len(subjects)
    if cutoff <= 0 or start == "population":
        print("starts: the population's w0 and rate for every animal" + (" (cut-off 0: no own sessions to infer a start from)" if cutoff <= 0 else ""))
        return [TwinModel.of(population)] * len(subjects), subjects, cut  # type: ignore[arg-type]
    first = df[df.groupby("subject")["session"].rank(method="dense") <= cutoff]
    batch = make_batch(first, population.spec.features)  # type: ignore[attr-defined]
    starts = infer_start(population, batch, cohort_start_prior(population, batch), fit_rate=True)  # type: ignore[arg-type]
    print(f"starts: each animal's w0 and rate inferred from its own first {cutoff} session(s) (MAP under the checked animals' prior)")
    return [starts[s] for s in subjects], subjects, cut


def _ensemble_check(ensembles: list, trials: pd.DataFrame, keep: list[str], cut: list[int], protocol: object, args: argparse.Namespace) -> object:  # type: ignore[type-arg]
    """The generative check of a store's ensemble twins (each rollout draws a component)."""
    from twin.analysis.generative import generative_check
    from twin.sim.check import run_ensemble_check

    if any(e is None for e in ensembles):
        raise TwinError("some twins are ensembles and some are not; check one cohort fit at a time")
    try:
        run = run_ensemble_check(ensembles, trials, keep, cut, protocol, args.rollouts, seed=args.seed)  # type: ignore[arg-type]
    except ValueError as exc:
        raise TwinError(str(exc)) from None
    return generative_check(run.subjects, run.observed, run.predicted, run.cutoff, run.n_rollouts)


def _checks_from_family(args: argparse.Namespace) -> dict[str, object]:
    from twin.fit.family_check import FamilyCheckConfig, check_family
    from twin.fit.train import FitConfig
    from twin.sim.agents import Family

    cfg = FamilyCheckConfig(
        n_animals=args.animals, n_test=args.test, n_trials=args.trials, rule=args.rule,
        fit=FitConfig(epochs=args.epochs, patience=args.patience, seed=args.seed), n_rollouts=args.rollouts, cutoff=args.cutoff, seed=args.seed,
    )
    res = check_family(Family(args.family), cfg, progress=show_progress(args))
    f = res.fit
    print(f"{args.family}: fitted {args.rule} on {args.animals - args.test} animals (best epoch {f.best_epoch}/{len(f.history)}, validation LL {f.best_val_ll:.4f})")
    for message in f.warning_messages:
        print(f"warning: {message}")
    return {f"{args.family}/{k.replace('twin', args.rule)}": v for k, v in res.checks.items()}


def cmd_check(args: argparse.Namespace) -> int:
    from twin_cli.figures import check_figure

    if (args.family is None) == (args.data is None):
        raise TwinError("give either --family or a trials file")
    if args.data is not None and (args.model is None) == (args.store is None):
        raise TwinError("with a trials file, give --model or --store")
    checks = _checks_from_family(args) if args.family is not None else _checks_from_file(args)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, summaries, animals, sessions = [], {}, [], []
    for label, chk in checks.items():
        s = chk.summary  # type: ignore[attr-defined]
        summaries[label] = s
        rows.append({"check": label, **{name: s.get(key, float("nan")) for key, name in SUMMARY_COLUMNS}})
        animals.append(chk.animals.assign(check=label))  # type: ignore[attr-defined]
        sessions.append(chk.sessions.assign(check=label))  # type: ignore[attr-defined]
    print(format_table(pd.DataFrame(rows)))
    pd.concat(animals).to_csv(args.out / "check_animals.csv", index=False)
    pd.concat(sessions).to_csv(args.out / "check_sessions.csv", index=False)
    (args.out / "check_summary.json").write_text(json.dumps(summaries, indent=2))
    for label, chk in checks.items():
        check_figure(chk, args.out / f"check_{label.replace('/', '_')}.png", f"generative check: {label}")  # type: ignore[arg-type]
    print(f"wrote check_animals.csv, check_sessions.csv, check_summary.json and {len(checks)} figure(s) to {args.out}")
    return 0


def add_check(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin check``."""
    c = sub.add_parser("check", help="generative check: run twins free under their animals' protocol and score them against what the animals did")
    c.add_argument("data", type=Path, nargs="?", default=None, help="trials file (with --model or --store)")
    c.add_argument("--model", type=Path, default=None, help="population model file: every animal's twin from --cutoff")
    c.add_argument("--store", type=Path, default=None, help="twin store: each animal's twin from the session it was trained through")
    c.add_argument("--db-url", default=None, help="metadata database URL of the store")
    c.add_argument("--alias", default="serving", help="twin version alias in the store")
    c.add_argument("--protocol", default=None, help="'replay' (default for files: each session's shown contrast set), 'ibl', or a curriculum file")
    c.add_argument("--family", choices=FAMILIES, default=None, help="synthetic family: simulate, fit --rule, check the held-out animals")
    c.add_argument("--rule", default="reinforce", help="rule fitted with --family")
    c.add_argument("--animals", type=int, default=24)
    c.add_argument("--test", type=int, default=8, help="held-out animals (--family)")
    c.add_argument("--trials", type=int, default=4000, help="trials per animal (--family)")
    c.add_argument("--epochs", type=int, default=60)
    c.add_argument("--patience", type=int, default=10)
    c.add_argument("--cutoff", type=int, default=0, help="sessions each animal consumes before running free (0: from scratch)")
    c.add_argument("--rollouts", type=int, default=100, help="free runs per animal")
    c.add_argument(
        "--start", choices=("own", "population"), default="own",
        help="with --model and --cutoff > 0: each animal's w0 and rate inferred from its own sessions before the cut-off (own, the default), or the population's",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, required=True, help="folder for the CSV/JSON tables and the figures")
    c.set_defaults(func=cmd_check)


__all__ = ["add_check"]
