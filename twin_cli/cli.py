"""``twin``: command-line entry point.

Subcommands:

* ``twin demo``: the main job on embedded defaults: simulate a small synthetic cohort, fit every
  rule, evaluate on held-out animals, write figures and a summary table.
* ``twin simulate``: a cohort of ground-truth learners doing the IBL task → trials file.
* ``twin fit``: fit a learning rule to a trials file → model file (safetensors).
* ``twin evaluate``: score model files on a trials file (all trials, or later sessions only).
* ``twin search``: hyperparameter search (Optuna, or Ray Tune + ASHA).
* ``twin fit-twins`` / ``twin update-twin`` / ``twin twins``: per-animal twins in the versioned
  twin store (SQLite by default, PostgreSQL by URL).
* ``twin report SUBJECT``: one self-contained HTML page on an animal and its twin.
* ``twin serve``: the gRPC service (``twin.v1``) over a twin store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from twin.errors import TwinError

EPILOG = """examples:
  twin demo --out runs/demo
  twin simulate --family asymmetric --animals 40 --trials 6000 --out cohort.parquet
  twin fit cohort.parquet --rule dnn --out dnn.safetensors
  twin evaluate cohort.parquet dnn.safetensors static.safetensors --from-session 10
  twin fit-twins cohort.parquet --rule dnn --store twins && twin twins --store twins
  twin update-twin new_sessions.parquet --subject asymmetric-003 --store twins
  twin serve --store twins --auth-config tokens.yaml --address 0.0.0.0:50051 --tls-cert srv.pem --tls-key srv.key
  twin serve --store twins --local-demo          # no authentication, 127.0.0.1 only
"""


def _threads(n: int) -> None:
    # the per-trial ops are tiny: one thread is as fast as two, and several processes on
    # few cores with multi-threaded torch slow each other down badly
    torch.set_num_threads(n)


def _table(df: pd.DataFrame) -> str:
    return df.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def cmd_simulate(args: argparse.Namespace) -> int:
    from twin.sim.agents import DEFAULT_TRUTHS, Family
    from twin.data.readers import write_trials
    from twin.sim.simulate import simulate
    from twin.protocol import IBL_DEFAULT

    gt = DEFAULT_TRUTHS[Family(args.family)]
    sim = simulate(gt.build(), IBL_DEFAULT, args.animals, args.trials, seed=args.seed, subject_prefix=args.family)
    path = write_trials(sim.trials, args.out)
    df = sim.trials
    print(f"wrote {len(df)} trials of {args.animals} animals ({df.groupby('subject').session.max().mean():.1f} sessions each) to {path}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from twin.data.batch import make_batch
    from twin.data.readers import load_trials
    from twin.analysis.evaluate import split_last_sessions
    from twin.data.features import FeatureSpec, StimulusCoding
    from twin.fit.train import FitConfig, fit
    from twin.models.learner import ModelSpec
    from twin.models.rules import RuleConfig, get_rule
    from twin.persist.model_files import save_model

    get_rule(args.rule)  # fail early on a bad name
    df, report = load_trials(args.data)
    print(report.summary())
    feats = FeatureSpec(stimulus=StimulusCoding(args.stimulus), bias=not args.no_bias, history=args.history)
    batch = make_batch(df, feats)
    # validation: each animal's last session(s), scored after running through the earlier ones
    train, val = batch, None
    if args.val_sessions:
        try:
            train, val = split_last_sessions(batch, args.val_sessions)
        except TwinError as exc:
            raise TwinError(f"{exc}; use --val-sessions 0") from None
    rule_cfg = RuleConfig(hidden_size=args.hidden, mirror_symmetric=args.mirror_symmetric, within_session_drift=not args.overnight_drift_only)
    spec = ModelSpec(args.rule, feats, rule_cfg)
    cfg = FitConfig(
        epochs=args.epochs, learning_rate=args.lr, tbptt=args.tbptt, patience=args.patience, seed=args.seed, device=args.device,
        lbfgs_rounds=args.lbfgs_rounds,
    )
    res = fit(spec, train, val, cfg, progress=not args.quiet)
    meta = {
        "data": str(args.data),
        "subjects": list(batch.subjects),
        "fit": cfg.__dict__,
        "best_epoch": res.best_epoch,
        "val_ll": res.best_val_ll,
        "seconds": res.seconds,
        "device": res.device,
    }
    path = save_model(res.model, args.out, meta)
    print(f"{args.rule}: best epoch {res.best_epoch}/{len(res.history)}, validation LL {res.best_val_ll:.4f} nats/trial, {res.seconds:.1f} s on {res.device} -> {path}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from twin.data.batch import make_batch
    from twin.data.readers import load_trials
    from twin.analysis.evaluate import score
    from twin.persist.model_files import load_model

    df, report = load_trials(args.data)
    print(report.summary())
    rows = []
    for mpath in args.models:
        stored = load_model(mpath)
        batch = make_batch(df, stored.model.spec.features)
        if args.from_session:
            batch = batch.with_mask(batch.sessions_mask(args.from_session))
        s = score(stored.model, batch)
        rows.append({"model": str(mpath), "rule": stored.model.spec.rule, "trials": s.n_trials, "ll_nats": s.ll, "ll_bits": s.ll_bits, "accuracy": s.accuracy})
    table = pd.DataFrame(rows)
    static = table[table["rule"] == "static"]
    if len(static):
        table["gain_vs_static"] = table["ll_nats"] - float(static["ll_nats"].iloc[0])
    print(_table(table))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from twin.sim.agents import Family
    from twin.data.readers import write_trials
    from twin.fit.train import FitConfig
    from twin.fit.recovery import RecoveryConfig, run_recovery, write_figures
    from twin.persist.model_files import save_model

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = RecoveryConfig(
        n_animals=args.animals,
        n_test=max(2, args.animals // 4),
        val_fraction=0.2,
        n_trials=args.trials,
        fit=FitConfig(epochs=args.epochs, patience=max(5, args.epochs // 4), seed=args.seed),
        seed=args.seed,
    )
    fam = Family(args.family)
    print(f"[1/7] simulating {cfg.n_animals} {fam.value} learners x {cfg.n_trials} trials, fitting {', '.join(cfg.rules)}")
    res = run_recovery(fam, cfg, progress=not args.quiet)
    write_trials(res.simulation.trials, out / "trials.parquet")
    for rule, fr in res.fits.items():
        save_model(fr.model, out / "models" / f"{rule}.safetensors", {"family": fam.value, "best_epoch": fr.best_epoch, "val_ll": fr.best_val_ll})
    print("[2/7] held-out animals:")
    table = res.table
    print(_table(table[["model", "test_ll_nats", "test_ll_bits", "accuracy", "ll_gain_ratio", "dw_corr", "fit_seconds"]]))
    table.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    figs = write_figures(res, out / "figures")
    from twin.data.batch import make_batch
    from twin.analysis.evaluate import forecast_table

    batch = make_batch(res.simulation.trials)
    k = max(2, int(batch.session.max(1).values.min().item()) // 2)
    print(f"[3/7] forecast: fit every rule on sessions 1..{k - 1} of all animals (session {k} for early stopping), predict sessions {k + 1}..")
    fc = forecast_table(batch, cfg.rules, k, cfg.fit, progress=not args.quiet)
    print(_table(fc))
    fc.to_csv(out / "forecast.csv", index=False)
    from twin.fit.cohort import CohortFitConfig, fit_cohort
    from twin.models.learner import ModelSpec
    from twin.persist.sessions import SessionStore
    from twin.persist.store import TwinStore

    print(f"[4/7] twins: DNN population rule adapted per animal, stored with the animals' sessions in {out / 'twins'}")
    store = TwinStore(out / "twins")
    rep = fit_cohort(res.simulation.trials, store, CohortFitConfig(spec=ModelSpec("dnn"), fit=cfg.fit), progress=not args.quiet)
    SessionStore(store).add_table(res.simulation.trials)
    print(f"      {len(rep.versions)} twins ({rep.adaptation.value} adaptation, chosen on held-out future sessions), {rep.seconds:.0f} s")
    from optimizer.objective import FitRange, TwinPool
    from optimizer.propose import ProposalConfig, propose_next_session
    from optimizer.search import SearchConfig, search_curricula
    from optimizer.space import CurriculumSpace

    twins = {v.subject: store.load_twin(v.subject) for v in rep.versions}
    pool = TwinPool.from_models({s: [t.model] for s, t in twins.items()}, FitRange.from_trials({s: t.model for s, t in twins.items()}, res.simulation.trials))
    print(f"[5/7] curriculum search through the {len(twins)} twins (Optuna TPE, {args.curricula} candidates) to trained_1a")
    search = search_curricula(pool, CurriculumSpace(), SearchConfig(n_trials=args.curricula, batch_size=4, n_rollouts=2, rescore_rollouts=4, seed=args.seed), progress=not args.quiet)
    search.save(out / "curriculum")
    d, bst, sp = search.default, search.best, search.predicted_speedup
    print(f"      IBL default: {d.mean_trials.mean:.0f} trials to criterion; proposed: {bst.mean_trials.mean:.0f} (predicted speed-up {sp.mean:.1%}, 95% interval [{sp.lo:.1%}, {sp.hi:.1%}])")
    subject = sorted(twins)[0]
    plan = propose_next_session(twins[subject].model, twins[subject].state, CurriculumSpace(), ProposalConfig(n_candidates=4, n_rollouts=8, horizon_sessions=8, seed=args.seed))
    (out / "curriculum" / f"next_session_{subject}.yaml").write_text(plan.curriculum.to_yaml())
    print(f"[6/7] next session for {subject}: {plan.explanation}; predicted accuracy {plan.forecast.accuracy.mean:.2f} [{plan.forecast.accuracy.lo:.2f}, {plan.forecast.accuracy.hi:.2f}]")
    from twin_cli.service_demo import service_roundtrip
    from service.optimizer_bridge import optimizer_proposer

    print(f"[7/7] the gRPC service (twin.v1) on 127.0.0.1 over a fresh store in {out / 'service'}: Predict, NextSession, UploadSession through the client")
    proposer = optimizer_proposer(config=ProposalConfig(n_candidates=4, n_rollouts=8, horizon_sessions=8, forecast_rollouts=64, seed=args.seed))
    rt = service_roundtrip(res.simulation.trials, out / "service", epochs=max(3, args.epochs // 3), propose=proposer)
    for line in rt.lines():
        print(f"      {line}")
    print(f"wrote {out / 'summary.csv'}, {out / 'forecast.csv'}, {len(figs)} figures in {out / 'figures'}, models in {out / 'models'}, twins in {out / 'twins'}, curricula in {out / 'curriculum'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def cmd_fit_twins(args: argparse.Namespace) -> int:
    from twin.fit.cohort import CohortFitConfig, fit_cohort
    from twin.data.readers import load_trials
    from twin.fit.train import FitConfig
    from twin.models.learner import ModelSpec
    from twin.models.rules import RuleConfig, get_rule
    from twin.persist.store import TwinStore
    from twin.fit.adapt import Adaptation

    get_rule(args.rule)
    df, report = load_trials(args.data)
    print(report.summary())
    store = TwinStore(args.store, url=args.db_url)
    cfg = CohortFitConfig(
        spec=ModelSpec(args.rule, rule_config=RuleConfig(hidden_size=args.hidden)),
        fit=FitConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device),
        adaptation=None if args.adaptation == "auto" else Adaptation(args.adaptation),
    )
    if args.ray or args.ray_address:
        # the CLI is the composition root: the Ray adapter is loaded only when asked for
        from cluster.cohort import fit_cohort_ray

        ray_rep = fit_cohort_ray(df, store, cfg, animals_per_batch=args.animals_per_task, address=args.ray_address, progress=not args.quiet)
        for subject, err in ray_rep.failed.items():
            print(f"FAILED {subject}: {err}", file=sys.stderr)
        rep = ray_rep.report
    else:
        rep = fit_cohort(df, store, cfg, progress=not args.quiet)
    if rep.adaptation_table is not None:
        print("adaptation chosen on held-out future sessions:")
        print(_table(rep.adaptation_table))
    rows = [{"subject": v.subject, "version": v.version, "through_session": v.trained_through_session, "val_ll": v.metrics["val_ll"]} for v in rep.versions]
    print(_table(pd.DataFrame(rows)))
    print(f"stored {len(rep.versions)} twins ({rep.adaptation.value}) in {args.store} in {rep.seconds:.0f} s")
    return 0


def cmd_update_twin(args: argparse.Namespace) -> int:
    from twin.fit.cohort import update_twin
    from twin.data.readers import load_trials
    from twin.persist.store import TwinStore

    df, report = load_trials(args.data)
    print(report.summary())
    v = update_twin(TwinStore(args.store, url=args.db_url), args.subject, df)
    print(f"{v.subject}: stored version {v.version} (through session {v.trained_through_session}, validation LL {v.metrics['val_ll']:.4f})")
    return 0


def cmd_twins(args: argparse.Namespace) -> int:
    from twin.persist.store import TwinStore

    store = TwinStore(args.store, url=args.db_url)
    rows = [
        {"subject": v.subject, "version": v.version, "rule": v.rule, "through_session": v.trained_through_session, "val_ll": v.metrics.get("val_ll"), "aliases": ",".join(v.aliases), "created": v.created_at.isoformat(timespec="seconds")}
        for s in store.subjects()
        for v in store.versions(s)
    ]
    print(_table(pd.DataFrame(rows)) if rows else f"no twins in {args.store}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from twin.analysis.report import ReportConfig, write_report
    from twin.persist.store import TwinStore

    try:
        cfg = ReportConfig(forecast_trials=args.forecast_trials, forecast_rollouts=args.rollouts, seed=args.seed)
    except ValueError as exc:
        raise TwinError(str(exc)) from None
    store = TwinStore(args.store, url=args.db_url)
    path = write_report(store, args.subject, args.out, trials=args.trials, version=args.version, alias=args.alias, config=cfg)
    print(f"wrote {path}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from twin.data.readers import load_trials
    from twin.models.rules import get_rule

    get_rule(args.rule)
    df, report = load_trials(args.data)
    print(report.summary())
    # search backends are adapters (Optuna, Ray Tune): loaded only here
    from cluster.search import search_optuna, search_tune

    if args.tune or args.ray_address:
        res = search_tune(df, args.rule, args.trials, args.epochs, storage_path=args.out.parent / "tune", seed=args.seed, address=args.ray_address)
    else:
        res = search_optuna(df, args.rule, args.trials, args.epochs, storage=args.storage, study_name=args.study, seed=args.seed)
    res.save(args.out)
    if args.store is not None:
        from twin.persist.store import ResultKind, TwinStore

        stored = TwinStore(args.store, args.db_url).put_result(ResultKind.HYPERPARAMETER_SEARCH, f"{args.rule}:{args.study}", json.loads(args.out.read_text()))
        print(f"stored {stored.kind.value} {stored.name!r} v{stored.version} in {args.store}")
    print(f"best {res.best.to_dict()}: validation LL {res.best_val_ll:.4f} nats/trial (defaults {res.default_val_ll:.4f}, {res.best_val_ll - res.default_val_ll:+.4f}); wrote {args.out}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    from twin.models.rules import rule_names

    p = argparse.ArgumentParser(
        prog="twin",
        description="Learning-rule digital twins of animals learning a decision task: simulate, fit, evaluate.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (default 1: the per-trial ops are too small to gain from more)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    families = ["reinforce", "asymmetric", "history"]

    d = sub.add_parser("demo", help="simulate a small cohort, fit every rule, evaluate, fit twins, search curricula, write figures and summaries")
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    d.add_argument("--family", choices=families, default="asymmetric", help="ground-truth learners to simulate")
    d.add_argument("--animals", type=int, default=16, help="cohort size (a quarter held out)")
    d.add_argument("--trials", type=int, default=4000, help="trials per animal")
    d.add_argument("--epochs", type=int, default=30, help="maximum epochs per fit")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--curricula", type=int, default=12, help="candidate curricula the search evaluates")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("simulate", help="simulate ground-truth learners doing the IBL task")
    s.add_argument("--family", choices=families, default="reinforce", help="learning rule of the simulated animals")
    s.add_argument("--animals", type=int, default=40)
    s.add_argument("--trials", type=int, default=6000, help="trials per animal")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help="trials file to write (.parquet or .csv)")
    s.set_defaults(func=cmd_simulate)

    f = sub.add_parser("fit", help="fit a learning rule (population) to a trials file")
    f.add_argument("data", type=Path, help="trials file: canonical, IBL ALF table or IBL export (.parquet/.pqt/.csv[.gz])")
    f.add_argument("--rule", default="dnn", help=f"learning rule: {', '.join(rule_names())} (default dnn)")
    f.add_argument("--out", type=Path, required=True, help="model file to write (.safetensors)")
    f.add_argument("--epochs", type=int, default=300)
    f.add_argument("--patience", type=int, default=30, help="epochs without validation improvement before stopping")
    f.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the rule's own, 3e-3 for dnn/rnn)")
    f.add_argument("--tbptt", type=int, default=500, help="truncated-BPTT chunk length in trials")
    f.add_argument(
        "--lbfgs-rounds", type=int, default=0,
        help="after Adam, rounds of 50 full-batch L-BFGS iterations on the untruncated likelihood (exact ML refinement; "
        "about 2 s per iteration for 30 animals x 6000 trials; default 0)",
    )
    f.add_argument("--hidden", type=int, default=32, help="hidden size (dnn, rnn)")
    f.add_argument(
        "--mirror-symmetric", action="store_true",
        help="dnn_delta: constrain the update to be left/right mirror-equivariant, as REINFORCE and prediction-error rules are",
    )
    f.add_argument(
        "--overnight-drift-only", action="store_true",
        help="dnn_delta: its free drift acts only between sessions; within a session updates are proportional to the inputs",
    )
    f.add_argument("--val-sessions", type=int, default=1, help="last sessions of each animal held out for early stopping")
    f.add_argument("--stimulus", choices=["signed", "split"], default="signed", help="one signed stimulus weight or separate left/right weights")
    f.add_argument("--no-bias", action="store_true", help="drop the bias regressor")
    f.add_argument("--history", action="store_true", help="add previous-choice and previous-reward-side regressors")
    f.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_fit)

    def store_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", type=Path, default=Path("twins"), help="twin store folder (default: ./twins)")
        q.add_argument("--db-url", default=None, help="SQLAlchemy URL of the metadata database (default: SQLite in the store folder)")

    ft = sub.add_parser("fit-twins", help="fit the population rule and one twin per animal into the twin store")
    ft.add_argument("data", type=Path, help="trials file (any supported layout)")
    ft.add_argument("--rule", default="dnn", help=f"learning rule: {', '.join(rule_names())}")
    ft.add_argument("--adaptation", choices=["auto", "none", "w0", "w0+rate", "full"], default="auto", help="per-animal adaptation (auto: chosen on held-out future sessions)")
    ft.add_argument("--epochs", type=int, default=300)
    ft.add_argument("--patience", type=int, default=30)
    ft.add_argument("--hidden", type=int, default=32)
    ft.add_argument("--device", default="cpu")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--quiet", action="store_true")
    ft.add_argument("--ray", action="store_true", help="adapt the twins in Ray tasks on a local Ray (loopback)")
    ft.add_argument("--ray-address", default=None, help="join this Ray cluster instead (implies --ray)")
    ft.add_argument("--animals-per-task", type=int, default=16, help="animals per Ray task (batched fit)")
    store_args(ft)
    ft.set_defaults(func=cmd_fit_twins)

    ut = sub.add_parser("update-twin", help="update one animal's twin with its new sessions (new version)")
    ut.add_argument("data", type=Path, help="the animal's trials, new sessions included")
    ut.add_argument("--subject", required=True)
    store_args(ut)
    ut.set_defaults(func=cmd_update_twin)

    ls = sub.add_parser("twins", help="list the twin store's subjects and versions")
    store_args(ls)
    ls.set_defaults(func=cmd_twins)

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

    from twin_cli.curriculum_cli import add_parser as add_curriculum_parser  # the optimizer's commands (argparse only)

    add_curriculum_parser(sub, store_args)

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

    se = sub.add_parser("search", help="hyperparameter search for a rule (Optuna; Ray Tune + ASHA with --tune)")
    se.add_argument("data", type=Path)
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

    e = sub.add_parser("evaluate", help="score model files on a trials file")
    e.add_argument("data", type=Path)
    e.add_argument("models", type=Path, nargs="+", help="model files (.safetensors)")
    e.add_argument("--from-session", type=int, default=None, help="score only sessions >= this (forecast of later sessions)")
    e.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except TwinError as exc:
        print(f"twin {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
