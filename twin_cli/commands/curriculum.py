"""``twin curriculum ...``: export curricula, search them through a store's twins, propose an
animal's next session. Argument parsing only; the work is in :mod:`optimizer`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml

from twin.protocol import IBL_BIASED, IBL_DEFAULT, IBLRIG_TRAINING, RIG_PROFILES, Curriculum, CurriculumError, RigProfile, rig_profile
from twin_cli.commands.common import open_store, store_args


def _constraints(path: Path | None):  # type: ignore[no-untyped-def]
    from optimizer.space import Constraints

    if path is None:
        return Constraints()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise CurriculumError(str(path), f"cannot read constraints: {exc}") from None
    known = {f.name for f in dataclasses.fields(Constraints)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CurriculumError(f"{path}: {unknown[0]}", f"unknown constraint (known: {sorted(known)})")
    return Constraints(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _is_aind(path: Path) -> bool:
    """Whether ``path`` is an AIND curriculum's JSON (``graph`` and ``pkg_location`` at the top;
    a twin curriculum file has neither)."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return False  # Curriculum.load says what is wrong
    return isinstance(raw, dict) and "graph" in raw and "pkg_location" in raw


#: Curricula named on the command line instead of a file.
PRESETS = {IBL_DEFAULT.name: IBL_DEFAULT, IBL_BIASED.name: IBL_BIASED}


def _base(path: Path | None) -> Curriculum:
    """The IBL default, a preset named (``ibl-default``, ``ibl-biased``), a twin curriculum file
    (JSON/YAML) or an AIND curriculum's JSON."""
    if path is None:
        return IBL_DEFAULT
    if str(path) in PRESETS and not path.exists():
        return PRESETS[str(path)]
    if _is_aind(path):
        from twin_interop.aind import from_aind_json

        return from_aind_json(path.read_text(), source=str(path))
    return Curriculum.load(path)


def iblrig_file(cur: Curriculum, phase: int, n_trials: int | None) -> str:
    """The task-parameter file of stock iblrig v8 trainingChoiceWorld (what its loader reads, with
    the session's arguments in a comment); a curriculum stock iblrig cannot run is refused."""
    try:
        out = cur.to_iblrig(phase, n_trials)
    except CurriculumError as exc:
        if exc.field == "phase":
            raise
        raise CurriculumError(exc.field, f"{exc.reason}; stock iblrig cannot run this curriculum: export it with --format custom-task") from None
    args = " ".join(f"--{k} {v}" for k, v in out["session_arguments"].items())
    run = f"run the session with: {args}" if args else "the task takes no session arguments"
    head = (
        f"# iblrig v8 {out['task']} task parameters (rig profile {out['profile']}), curriculum {cur.name!r}\n"
        f"# pass as the task's task_parameter_file; {run}\n"
    )
    return head + yaml.safe_dump(out["task_parameters"], sort_keys=False)


def custom_task_file(cur: Curriculum, phase: int, n_trials: int | None) -> str:
    """The session as a custom-task document, labelled as such."""
    out = cur.to_custom_task(phase, n_trials)
    head = f"# NOT a stock iblrig file: this curriculum needs {out['requires']}\n"
    return head + yaml.safe_dump(out, sort_keys=False)


def cmd_export(args: argparse.Namespace) -> int:
    cur = _base(args.curriculum)
    if args.format == "iblrig":
        text = iblrig_file(cur, args.phase, args.trials)
    elif args.format == "custom-task":
        text = custom_task_file(cur, args.phase, args.trials)
    elif args.format == "aind":
        from twin_interop.aind import to_aind_json

        text = to_aind_json(cur)
    elif args.format == "yaml":
        text = cur.to_yaml()
    else:
        text = cur.to_json()
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


def _space(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from optimizer.space import CurriculumSpace

    return CurriculumSpace(_constraints(args.constraints), _base(args.base), _profile(args))


def _profile(args: argparse.Namespace) -> RigProfile:
    return rig_profile(args.rig_profile)


def _training_criterion(label: str):  # type: ignore[no-untyped-def]
    """The training criterion called ``label`` (``trained_1a``, ``trained_1b``)."""
    from twin.analysis.criteria import TRAINED_1A, TRAINED_1B

    return {c.label: c for c in (TRAINED_1A, TRAINED_1B)}[label]


def cmd_search(args: argparse.Namespace) -> int:
    from optimizer.search import SamplerKind, SearchConfig, search_store

    store = open_store(args)
    space = _space(args)
    cfg = SearchConfig(
        n_trials=args.trials,
        batch_size=args.batch,
        sampler=SamplerKind(args.sampler),
        n_rollouts=args.rollouts,
        max_sessions=args.max_sessions,
        seed=args.seed,
        criterion=_training_criterion(args.criterion),
        storage=args.storage,
        study_name=args.study,
    )
    backend = None
    if args.tune or args.ray_address:
        from cluster.curricula import tune_search

        backend = tune_search(args.out / "tune", candidates_per_trial=args.batch, address=args.ray_address)
    res, stored = search_store(
        store,
        space,
        cfg,
        subjects=args.subjects,
        alias=args.alias,
        result_name=args.study,
        backend=backend,
        on_pool=lambda pool: print(f"searching curricula through {len(pool.subjects)} twins ({pool.n_models} models)"),
    )
    res.save(args.out)
    assert stored is not None
    b = res.best
    crit = cfg.criterion
    print(f"trials to {crit.label} ({crit.describe()}), each simulated run capped at {cfg.max_sessions} sessions")
    lines = res.lines()
    print("\n".join(lines[:2]))
    print(f"  {b.curriculum.description}")
    print("\n".join(lines[2:]))
    print(f"  rig profile {space.profile.name}: runs on {space.profile.task}" + ("" if space.profile.stock_iblrig else f" (stock iblrig trainingChoiceWorld: {'yes' if IBLRIG_TRAINING.runs(b.curriculum) else 'no'})"))
    for w in b.warnings:
        print(f"  warning: {w}")
    print(f"wrote {args.out}/ and stored {stored.kind.value} {stored.name!r} v{stored.version}")
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    """One animal's next session, for its stage (:mod:`twin.analysis.stage`, from its stored
    sessions): in training, the optimizer's proposal aimed at the next training criterion
    (trials to it forecast within ``--max-sessions`` sessions); trained, a biased-blocks
    (biasedChoiceWorld) session aimed at ``ready_for_recording``, with no trials-to-criterion
    figure (the twins do not simulate that criterion)."""
    from optimizer.propose import ProposalConfig, propose_next_session
    from twin.analysis.stage import assess_stage, new_animal
    from twin.errors import TwinError
    from twin.persist.sessions import SessionStore
    from twin.protocol import IBL_BIASED, IBLRIG_BIASED
    from twin.sim.forecast import forecast_session

    store = open_store(args)
    twin = store.load_twin(args.subject, alias=args.alias)
    if twin.state is None:
        raise TwinError(f"twin {args.subject!r} v{twin.meta.version} has no end-of-session state; refit or update it")
    sessions = SessionStore(store)
    stage = assess_stage(sessions.trials(args.subject), args.subject, source=f"sessions of {args.subject!r}") if sessions.sessions(args.subject) else new_animal(args.subject)
    target = stage.target
    out: dict[str, object] = {
        "subject": args.subject,
        "twin_version": twin.meta.version,
        "stage": stage.stage.value,
        "stage_summary": stage.summary(),
        "target_criterion": target.label if target is not None else None,
        "target_criterion_description": target.describe() if target is not None else None,
    }
    if stage.stage.trained:
        cur = IBL_BIASED
        lo, hi = cur.session_trials
        n_trials = (lo + hi) // 2
        fc = forecast_session(twin.model, twin.state, cur, n_trials, 200, args.seed, start_phase=0)
        asked = _profile(args)
        profile = IBLRIG_BIASED if asked.stock_iblrig else asked  # stock iblrig runs biased blocks as biasedChoiceWorld
        if target is None:
            why = f"{stage.summary()}: ready for recording, keep it on biased blocks ({cur.name}); no criterion left, no trials-to-criterion forecast"
        else:
            why = (
                f"{stage.summary()}: a biased-blocks session ({cur.name}, iblrig biasedChoiceWorld) aimed at {target.label}; "
                "the twins do not simulate that criterion (per-block psychometric fits over biased sessions), so no trials-to-criterion forecast"
            )
        out.update(
            changed=False,
            explanation=why,
            expected_remaining_trials=None,
            default_expected_remaining_trials=None,
            max_sessions=None,
            changes=[],
            predicted_accuracy=dataclasses.asdict(fc.accuracy),
            rig_profile=profile.name,
            rig_export=cur.export(profile, 0, n_trials),
            curriculum=cur.to_dict(),
        )
        explanation = why
    else:
        assert target is not None
        space = _space(args)
        cfg = ProposalConfig(n_candidates=args.candidates, n_rollouts=args.rollouts, seed=args.seed, criterion=target, horizon_sessions=args.max_sessions)
        p = propose_next_session(twin.model, twin.state, space, cfg)
        e = p.expected_remaining
        explanation = f"{stage.summary()}: {p.explanation}; expected {e.mean:.0f} trials to {target.label} [{e.lo:.0f}, {e.hi:.0f}], capped at {cfg.horizon_sessions} sessions"
        out.update(
            changed=p.changed,
            explanation=explanation,
            expected_remaining_trials=dataclasses.asdict(e),
            default_expected_remaining_trials=dataclasses.asdict(p.base_expected_remaining),
            max_sessions=cfg.horizon_sessions,
            changes=[c.to_dict() for c in p.attribution.changes] if p.attribution is not None else [],
            family_speedups=[{"family": f.family, "mean": f.speedup.mean, "lo": f.speedup.lo, "hi": f.speedup.hi, "n_units": f.n_units, "level": f.level} for f in p.family_speedups],
            predicted_accuracy=dataclasses.asdict(p.forecast.accuracy),
            rig_profile=space.profile.name,
            rig_export=p.curriculum.export(space.profile, p.start_phase, p.n_trials),
            curriculum=p.curriculum.to_dict(),
        )
        if not space.profile.stock_iblrig and IBLRIG_TRAINING.runs(p.curriculum):
            out["iblrig"] = p.curriculum.to_iblrig(p.start_phase, p.n_trials)  # also runnable on stock iblrig
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.write_text(text)
        print(f"{explanation}\nwrote {args.out}")
    else:
        print(text)
    return 0


def add_curriculum(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``twin curriculum {export,search,propose}``."""
    cp = sub.add_parser("curriculum", help="training curricula: export, search through twins, propose an animal's next session")
    csub = cp.add_subparsers(dest="curriculum_command", required=True, metavar="ACTION")

    ex = csub.add_parser(
        "export",
        help="write a curriculum as JSON, YAML, iblrig v8 task parameters, a custom-task session or an AIND curriculum (aind-behavior-curriculum JSON)",
        description="Write a curriculum in another format. An AIND curriculum JSON given as --curriculum is read "
        "(imported) too: `--curriculum aind.json --format yaml` turns it into a twin curriculum file.",
    )
    ex.add_argument("--curriculum", type=Path, default=None, help="curriculum file (twin JSON/YAML or an AIND curriculum JSON) or a preset: ibl-default (the default), ibl-biased (biasedChoiceWorld)")
    ex.add_argument(
        "--format",
        choices=["json", "yaml", "iblrig", "custom-task", "aind"],
        default="yaml",
        help="iblrig: the task parameters of stock iblrig v8 trainingChoiceWorld, or biasedChoiceWorld for a biased-blocks curriculum (only for curricula they run); custom-task: any curriculum, labelled as needing a custom task; aind: needs the aind extra (pip install 'learning-twins[aind]')",
    )
    ex.add_argument("--phase", type=int, default=0, help="starting phase (iblrig and custom-task formats)")
    ex.add_argument("--trials", type=int, default=None, help="session trials (iblrig and custom-task formats)")
    ex.add_argument("--out", type=Path, default=None)
    ex.set_defaults(func=cmd_export)

    def common(q: argparse.ArgumentParser) -> None:
        store_args(q)
        q.add_argument("--alias", default="serving", help="twin alias to use (default: serving)")
        q.add_argument("--constraints", type=Path, default=None, help="YAML file of the lab's constraints (optimizer.space.Constraints fields)")
        q.add_argument("--base", type=Path, default=None, help="the lab's base curriculum file, twin JSON/YAML or AIND JSON (default: the IBL default)")
        q.add_argument(
            "--rig-profile",
            choices=[r.name for r in RIG_PROFILES],
            default="custom",
            help="what the rig runs: iblrig-training (stock iblrig v8 trainingChoiceWorld: only debiasing on/off and session length are searched; a trained animal's plan exports for biasedChoiceWorld), iblrig-biased (stock biasedChoiceWorld) or custom (a custom task: any curriculum; the default)",
        )
        q.add_argument("--rollouts", type=int, default=4, help="simulated runs per twin and candidate")
        q.add_argument("--seed", type=int, default=0)

    se = csub.add_parser("search", help="search curricula through the store's twins (Optuna; Ray Tune with --tune)")
    common(se)
    se.add_argument("--subjects", nargs="*", default=None, help="twins to use (default: all)")
    se.add_argument("--trials", type=int, default=48, help="candidates to evaluate")
    se.add_argument("--batch", type=int, default=8, help="candidates simulated together (per Tune trial with --tune)")
    se.add_argument("--sampler", choices=["tpe", "cmaes"], default="tpe")
    se.add_argument("--max-sessions", type=int, default=40, help="sessions cap per simulated run")
    se.add_argument("--criterion", choices=["trained_1a", "trained_1b"], default="trained_1a", help="the training criterion trials are counted to")
    se.add_argument("--storage", default=None, help="Optuna study database URL: resumable")
    se.add_argument("--study", default="curriculum-search", help="study name (also the stored result's name)")
    se.add_argument("--tune", action="store_true", help="run on Ray Tune (local Ray)")
    se.add_argument("--ray-address", default=None, help="Ray cluster address (implies --tune)")
    se.add_argument("--out", type=Path, default=Path("curriculum-search"), help="output folder")
    se.set_defaults(func=cmd_search)

    pr = csub.add_parser("propose", help="propose one animal's next session from its twin")
    pr.add_argument("subject")
    common(pr)
    pr.add_argument("--candidates", type=int, default=12, help="sampled candidates besides the base")
    pr.add_argument("--max-sessions", type=int, default=15, help="session cap of the trials-to-criterion forecast (the proposal's horizon)")
    pr.add_argument("--out", type=Path, default=None, help="write the plan as JSON")
    pr.set_defaults(func=cmd_propose)
