"""Curricula: the next session's plan for a rig (with the lab's default protocol as the
fallback) and curriculum searches through the twins, as long-running operations."""

from __future__ import annotations

from dataclasses import dataclass

from twin.fit.cohort import last_phase
from twin.models.state import TwinState
from twin.persist.store import Twin
from twin.sim.forecast import SessionForecast, forecast_session

from optimizer.planning import (
    CurriculumSearchFn,
    CurriculumSearchOutcome,
    CurriculumSearchRequest,
    LabDefault,
    PlanConstraints,
    Proposal,
    ProposeFn,
    SessionPlan,
    plan_next_session,
)
from service.catalog import TwinCatalog, TwinSelector
from service.config import NO_DEADLINE, Deadline
from service.errors import FeatureUnavailableError, FieldViolation, InvalidArgumentError
from service.jobs import JobContext, JobKind, JobManager, JobSnapshot


@dataclass(frozen=True)
class NextSessionRequest:
    """A next-session plan request.

    Attributes:
        subject: the animal.
        constraints: limits of the plan.
        n_rollouts: simulated copies for the forecast (None: the server's default).
        seed: seeds the forecast.
    """

    subject: str
    constraints: PlanConstraints = PlanConstraints()
    n_rollouts: int | None = None
    seed: int = 0


class Curricula:
    """NextSession and SearchCurricula.

    Args:
        catalog: twin lookups, the stores and the limits and defaults.
        jobs: runs curriculum searches.
        lab: the lab's default protocol (the planning fallback).
        propose: the optimizer's next-session proposal (None: not available in this build).
        search: the curriculum search (None: not available in this build).
    """

    def __init__(
        self, catalog: TwinCatalog, jobs: JobManager, lab: LabDefault = LabDefault(), propose: ProposeFn | None = None, search: CurriculumSearchFn | None = None
    ) -> None:
        self.catalog, self.jobs, self.lab, self.propose, self.search = catalog, jobs, lab, propose, search
        self.store, self.sessions = catalog.store, catalog.sessions

    def next_session(self, req: NextSessionRequest, deadline: Deadline = NO_DEADLINE) -> SessionPlan:
        """Plan the subject's next session (see :func:`optimizer.planning.plan_next_session`).

        A subject the server has never seen gets the default protocol from its first phase
        (a new animal), flagged as a fallback for want of a twin.
        """
        if not req.subject:
            raise InvalidArgumentError.field("subject", "required")
        c = self.catalog.config
        n_rollouts = req.n_rollouts or c.default_rollouts
        if n_rollouts > c.max_rollouts:
            raise InvalidArgumentError.field("n_rollouts", f"at most {c.max_rollouts}")
        twin = state = None
        phase0 = 0
        if self.store.versions(req.subject):
            twin = self.catalog.resolve(TwinSelector(req.subject))
            state = self.catalog.state(twin)
        elif self.sessions.sessions(req.subject):
            phase0 = last_phase(self.sessions.trials(req.subject), self.lab.protocol)

        def forecast(tw: Twin, st: TwinState, p: Proposal) -> SessionForecast:
            deadline.check("forecasting the plan")
            return forecast_session(tw.model, st, p.protocol, p.n_trials, n_rollouts, req.seed, start_phase=p.start_phase, interval_level=c.interval_level)

        return plan_next_session(req.subject, twin, state, req.constraints, forecast, self.propose, self.lab, phase_without_twin=phase0)

    def search_curricula(self, req: CurriculumSearchRequest) -> JobSnapshot:
        """Start a curriculum search through the twins (long-running).

        Raises:
            FeatureUnavailableError: no search is configured in this build.
        """
        search = self.search
        if search is None:
            raise FeatureUnavailableError("curriculum_search", "curriculum search not available in this build (the optimizer is not installed or configured)")
        subjects = req.subjects or tuple(self.store.subjects())
        bad = [FieldViolation(f"subjects[{i}]", f"subject {s!r} has no twin") for i, s in enumerate(req.subjects) if not self.store.versions(s)]
        if not subjects:
            bad.append(FieldViolation("subjects", "no subject has a twin"))
        if bad:
            raise InvalidArgumentError(*bad)
        full = CurriculumSearchRequest(tuple(subjects), req.n_candidates, req.horizon_trials, req.seed)

        def run(ctx: JobContext) -> CurriculumSearchOutcome:
            return search(full, self.store, ctx)

        return self.jobs.submit(JobKind.CURRICULUM_SEARCH, run, subject=subjects[0] if len(subjects) == 1 else "")


__all__ = ["Curricula", "NextSessionRequest"]
