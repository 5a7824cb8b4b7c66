"""The optimizer plugged into the service: NextSession proposals and SearchCurricula operations.

Adapters only: they turn the data plane's requests into :mod:`optimizer` calls and the results
into the plan and search types of :mod:`optimizer.planning`. ``twin serve`` installs them unless
started with ``--no-optimizer``.
"""

from __future__ import annotations

from dataclasses import replace

from optimizer.objective import CurriculumScore, TwinPool
from optimizer.propose import ProposalConfig, propose_next_session
from optimizer.search import SearchConfig, local_search, search_store
from optimizer.space import CurriculumSpace
from twin.analysis.criteria import CriterionConfig
from twin.sim.forecast import Interval
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinStore

from optimizer.planning import (
    CurriculumCandidate,
    CurriculumSearchFn,
    CurriculumSearchOutcome,
    CurriculumSearchRequest,
    PlanConstraints,
    Proposal,
    ProposeFn,
    SearchProgress,
)


def optimizer_proposer(space: CurriculumSpace = CurriculumSpace(), config: ProposalConfig = ProposalConfig()) -> ProposeFn:
    """A NextSession proposer backed by :func:`optimizer.propose.propose_next_session`."""

    def propose(twin: Twin, state: TwinState, constraints: PlanConstraints, target: CriterionConfig) -> Proposal | None:
        ens = twin.ensemble if twin.ensemble is not None and twin.ensemble.states is not None else None  # an ensemble twin: every component
        cfg = replace(config, criterion=target)
        p = propose_next_session(twin.model, state, space, cfg, ensemble=ens)
        g, e, cap = p.gain, p.expected_remaining, cfg.horizon_sessions
        why = f"{p.explanation}; expected {e.mean:.0f} trials to {target.label} [{e.lo:.0f}, {e.hi:.0f}], capped at {cap} sessions"
        if p.changed:
            why += f"; gain {g.mean:.0%} [{g.lo:.0%}, {g.hi:.0%}]"
        changes = p.attribution.changes if p.attribution is not None and p.changed else ()
        return Proposal(p.curriculum, p.n_trials, p.start_phase, why, expected_trials=e, max_sessions=p.max_sessions or cap, changes=changes, family_speedups=p.family_speedups)

    return propose


def _candidate(score: CurriculumScore) -> CurriculumCandidate:
    return CurriculumCandidate(
        protocol=score.curriculum,
        trials_to_criterion=Interval(score.mean_trials.mean, score.mean_trials.lo, score.mean_trials.hi),
        reached_criterion=score.reached,
    )


def optimizer_search(space: CurriculumSpace = CurriculumSpace(), config: SearchConfig = SearchConfig(n_trials=32, batch_size=8)) -> CurriculumSearchFn:
    """A SearchCurricula backend: Optuna search through the serving twins of the requested
    subjects, in ``space`` cut to the request's rig profile; the outcome is also kept in the
    store's results.

    Raises (in the search's operation):
        CurriculumError: ``space``'s base curriculum does not run on the request's rig profile.
    """

    def search(req: CurriculumSearchRequest, store: TwinStore, ctx: SearchProgress) -> CurriculumSearchOutcome:
        cut = space if req.rig_profile in (None, space.profile) else replace(space, profile=req.rig_profile)
        cfg = replace(config, seed=req.seed, n_trials=req.n_candidates or config.n_trials)
        if req.horizon_trials:
            lo, hi = cut.base.session_trials
            cfg = replace(cfg, max_sessions=max(3, -(-req.horizon_trials // ((lo + hi) // 2))))

        def started(pool: TwinPool) -> None:
            ctx.report(0.0, f"searching {cfg.n_trials} curricula through {len(pool.subjects)} twins")

        def searched(done: int, total: int) -> None:
            ctx.report(0.9 * done / max(total, 1), f"batch {done}/{total}")

        backend = local_search(progress=False, on_batch=searched)
        res, _ = search_store(store, cut, cfg, subjects=req.subjects, fit_range=False, result_name=f"grpc-{req.seed}", backend=backend, on_pool=started)
        ctx.report(0.95, "re-scored the best candidates")
        ranked = sorted((s for s in res.rescored[1:] if s.curriculum != res.best.curriculum), key=lambda s: s.mean_trials.mean)
        proposed = res.robust is not None and res.attribution is not None and bool(res.attribution.kept) and not res.note  # else the base was kept
        return CurriculumSearchOutcome(
            candidates=tuple(_candidate(s) for s in [res.best, *ranked]),  # the proposal (the minimal set) first
            baseline=_candidate(res.default),
            changes=res.attribution.changes if res.attribution is not None else (),
            criterion=res.criterion.label if res.criterion is not None else "",
            max_sessions=res.max_sessions or 0,
            family_speedups=res.robust.by_family if proposed and res.robust is not None else (),
        )

    return search


__all__ = ["optimizer_proposer", "optimizer_search"]
