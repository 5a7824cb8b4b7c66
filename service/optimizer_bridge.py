"""The optimizer plugged into the service: NextSession proposals and SearchCurricula operations.

Adapters only: they turn the data plane's requests into :mod:`optimizer` calls and the results
into the plan and search types of :mod:`optimizer.planning`. ``twin serve`` installs them unless
started with ``--no-optimizer``.
"""

from __future__ import annotations

from dataclasses import replace

from optimizer.objective import CurriculumScore, TwinPool
from optimizer.propose import ProposalConfig, propose_next_session
from optimizer.search import SearchConfig, search_curricula
from optimizer.space import CurriculumSpace
from twin.sim.forecast import Interval
from twin.models.state import TwinState
from twin.persist.store import ResultKind, Twin, TwinStore

from service.jobs import JobContext
from optimizer.planning import (
    CurriculumCandidate,
    CurriculumSearchFn,
    CurriculumSearchOutcome,
    CurriculumSearchRequest,
    PlanConstraints,
    Proposal,
    ProposeFn,
)


def optimizer_proposer(space: CurriculumSpace = CurriculumSpace(), config: ProposalConfig = ProposalConfig()) -> ProposeFn:
    """A NextSession proposer backed by :func:`optimizer.propose.propose_next_session`."""

    def propose(twin: Twin, state: TwinState, constraints: PlanConstraints) -> Proposal | None:
        p = propose_next_session(twin.model, state, space, config)
        g = p.gain
        why = p.explanation if p.changed else f"{p.explanation} (expected {p.expected_remaining.mean:.0f} trials to criterion)"
        if p.changed:
            why += f"; gain {g.mean:.0%} [{g.lo:.0%}, {g.hi:.0%}]"
        return Proposal(p.curriculum, p.n_trials, p.start_phase, why)

    return propose


def _candidate(score: CurriculumScore) -> CurriculumCandidate:
    return CurriculumCandidate(
        protocol=score.curriculum,
        trials_to_criterion=Interval(score.mean_trials.mean, score.mean_trials.lo, score.mean_trials.hi),
        reached_criterion=score.reached,
    )


def optimizer_search(space: CurriculumSpace = CurriculumSpace(), config: SearchConfig = SearchConfig(n_trials=32, batch_size=8)) -> CurriculumSearchFn:
    """A SearchCurricula backend: Optuna search through the serving twins of the requested
    subjects; the outcome is also kept in the store's results."""

    def search(req: CurriculumSearchRequest, store: TwinStore, ctx: JobContext) -> CurriculumSearchOutcome:
        twins = {s: [store.load_twin(s, alias="serving").model] for s in req.subjects}
        pool = TwinPool.from_models(twins)
        cfg = replace(config, seed=req.seed, n_trials=req.n_candidates or config.n_trials)
        if req.horizon_trials:
            lo, hi = space.base.session_trials
            cfg = replace(cfg, max_sessions=max(3, -(-req.horizon_trials // ((lo + hi) // 2))))
        ctx.report(0.0, f"searching {cfg.n_trials} curricula through {len(twins)} twins")
        res = search_curricula(pool, space, cfg, progress=False, on_batch=lambda done, total: ctx.report(0.9 * done / max(total, 1), f"batch {done}/{total}"))
        ctx.report(0.95, "re-scored the best candidates")
        store.put_result(ResultKind.CURRICULUM_SEARCH, f"grpc-{req.seed}", res.summary())
        ranked = sorted(res.rescored[1:], key=lambda s: s.mean_trials.mean)
        return CurriculumSearchOutcome(candidates=tuple(_candidate(s) for s in ranked), baseline=_candidate(res.default))

    return search


__all__ = ["optimizer_proposer", "optimizer_search"]
