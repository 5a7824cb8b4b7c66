"""Curricula: the next session's plan for a rig (with the lab's default protocol as the
fallback) and curriculum searches through the twins, as long-running operations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from twin.analysis.stage import assess_stage, new_animal
from twin.cancel import cancellable
from twin.fit.cohort import last_phase
from twin.models.state import TwinState
from twin.persist.store import Twin
from twin.protocol import Curriculum
from twin.sim.forecast import Interval, SessionForecast, forecast_session

from optimizer.attribution import ChangeEffect
from optimizer.objective import FamilySpeedup
from optimizer.planning import (
    CurriculumCandidate,
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
from service.jobs import JobContext, JobKind, JobManager, JobSnapshot, JobState
from service.limits import MAX_SEED, raise_invalid


@dataclass(frozen=True)
class NextSessionRequest:
    """A next-session plan request.

    Attributes:
        twin: the animal and which of its twin versions plans (no version or alias: the one it
            serves). A subject without twins is planned without one (the lab default), unless
            the selector names a version or alias, which must then exist.
        constraints: limits of the plan.
        n_rollouts: simulated copies for the forecast (None: the server's default).
        seed: seeds the forecast.
    """

    twin: TwinSelector
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
        (a new animal), flagged as a fallback for want of a twin. The subject's stored sessions
        give its training stage (:func:`twin.analysis.stage.assess_stage`): a trained animal is
        planned on biased blocks, aimed at the next stage's criterion.

        Raises:
            LimitExceededError: more rollouts, a longer session or more rollouts x trials than
                the limits allow (checked before any work, on the longest session the plan can
                have: ``constraints.min_trials`` or the lab protocols' longest session).
            DeadlineExceededError, OperationCancelledError: the client's deadline passed, or
                it went away, while planning.
        """
        c = self.catalog.config
        limits = c.limits
        n_rollouts = req.n_rollouts or c.default_rollouts
        k = req.constraints
        raise_invalid(
            [
                limits.name("twin.subject", req.twin.subject),
                None if n_rollouts >= 1 else FieldViolation("n_rollouts", "must be >= 1"),
                None if 0 <= req.seed <= MAX_SEED else FieldViolation("seed", f"must be in [0, {MAX_SEED}]"),
                None if k.min_trials is None or k.min_trials >= 1 else FieldViolation("constraints.min_trials", "must be >= 1 (0: no limit)"),
                None if k.max_trials is None or k.max_trials >= 1 else FieldViolation("constraints.max_trials", "must be >= 1 (0: no limit)"),
            ]
        )
        limits.check(
            limits.over("constraints.min_trials", k.min_trials or 0, "max_session_trials", "trials"),
            limits.over("constraints.max_trials", k.max_trials or 0, "max_session_trials", "trials"),
        )
        longest = k.trials(max(self.lab.protocol.session_trials[1], self.lab.biased.session_trials[1]))
        by_min = bool(k.min_trials) and longest == k.min_trials
        limits.check_forecast(n_rollouts, longest, "constraints.min_trials" if by_min else "constraints.max_trials", product_field="constraints.min_trials" if by_min else "n_rollouts")
        with deadline.scope("planning the session"):
            twin = state = None
            phase0 = 0
            subject = req.twin.subject
            stage = new_animal(subject)
            if req.twin.version is not None or req.twin.alias is not None or self.store.versions(subject):
                twin = self.catalog.resolve(req.twin)
                state = self.catalog.state(twin)
            if self.sessions.sessions(subject):
                trials = self.sessions.trials(subject)
                stage = assess_stage(trials, subject, source=f"sessions of {subject!r}")
                if twin is None and not stage.stage.trained:
                    phase0 = last_phase(trials, self.lab.protocol)
            deadline.check("assessing the training stage")

            def forecast(tw: Twin, st: TwinState, p: Proposal) -> SessionForecast:
                deadline.check("forecasting the plan")
                limits.check_forecast(n_rollouts, p.n_trials)  # a proposer's session may be longer than the lab's
                return forecast_session(tw.model, st, p.protocol, p.n_trials, n_rollouts, req.seed, start_phase=p.start_phase, interval_level=c.interval_level)

            return plan_next_session(subject, twin, state, req.constraints, forecast, self.propose, self.lab, phase_without_twin=phase0, stage=stage)

    def search_curricula(self, req: CurriculumSearchRequest, request_id: str = "") -> JobSnapshot:
        """Start a curriculum search through the twins (long-running); a request id seen before
        returns that search's operation (nothing new is started).

        Raises:
            FeatureUnavailableError: no search is configured in this build.
            InvalidArgumentError: a bad field, or ``request_id`` used before by a different
                request.
            LimitExceededError: more twins, candidates or simulated trials than the limits
                allow (unset sizes count as the search's defaults, :data:`SEARCH_DEFAULTS`), or
                ``limits.max_pending_operations`` operations already waiting.
        """
        search = self.search
        if search is None:
            raise FeatureUnavailableError("curriculum_search", "curriculum search not available in this build (the optimizer is not installed or configured)")
        limits = self.catalog.config.limits
        raise_invalid([limits.name("request_id", request_id, required=False)])
        as_sent = {"subjects": list(req.subjects), "n_candidates": req.n_candidates or 0, "horizon_trials": req.horizon_trials or 0, "seed": req.seed}
        seen = self.jobs.seen(JobKind.CURRICULUM_SEARCH, request_id, as_sent)
        if seen is not None:  # a retry: the first answer, whatever the queue holds now
            return seen
        raise_invalid(
            [
                *limits.subjects("subjects", req.subjects, "max_search_subjects"),
                None if 0 <= req.seed <= MAX_SEED else FieldViolation("seed", f"must be in [0, {MAX_SEED}]"),
                None if req.n_candidates is None or req.n_candidates >= 1 else FieldViolation("n_candidates", "must be >= 1 (0: the default)"),
                None if req.horizon_trials is None or req.horizon_trials >= 1 else FieldViolation("horizon_trials", "must be >= 1 (0: the default)"),
            ]
        )
        subjects = req.subjects or tuple(self.store.subjects())
        limits.check_search(len(subjects), req.n_candidates or SEARCH_DEFAULTS[0], req.horizon_trials or SEARCH_DEFAULTS[1])
        bad = [FieldViolation(f"subjects[{i}]", f"subject {s!r} has no twin") for i, s in enumerate(req.subjects) if not self.store.versions(s)]
        if not subjects:
            bad.append(FieldViolation("subjects", "no subject has a twin"))
        if bad:
            raise InvalidArgumentError(*bad[:20])
        limits.check_queue(len(self.jobs.list(state=JobState.PENDING)))
        full = CurriculumSearchRequest(tuple(subjects), req.n_candidates, req.horizon_trials, req.seed, req.rig_profile)

        def run(ctx: JobContext) -> CurriculumSearchOutcome:
            with cancellable(ctx.check_cancelled):  # CancelOperation stops the simulations within a trial
                return search(full, self.store, ctx)

        return self.jobs.submit(JobKind.CURRICULUM_SEARCH, run, subject=subjects[0] if len(subjects) == 1 else "", request_id=request_id, request=as_sent)


def _number(x: float) -> float | str:
    """A float as JSON (non-finite ones as their name: PostgreSQL's JSON has no NaN)."""
    return float(x) if math.isfinite(x) else repr(float(x))


def _candidate_json(c: CurriculumCandidate) -> dict[str, object]:
    t = c.trials_to_criterion
    return {"protocol": c.protocol.to_dict(), "trials_to_criterion": [_number(t.mean), _number(t.lo), _number(t.hi)], "reached_criterion": _number(c.reached_criterion)}


def _candidate(d: Mapping[str, object]) -> CurriculumCandidate:
    mean, lo, hi = (float(x) for x in d["trials_to_criterion"])  # type: ignore[union-attr]
    return CurriculumCandidate(Curriculum.from_dict(dict(d["protocol"])), Interval(mean, lo, hi), float(d["reached_criterion"]))  # type: ignore[arg-type, call-overload]


def _interval_json(i: Interval) -> list[float | str]:
    return [_number(i.mean), _number(i.lo), _number(i.hi)]


def _interval(v: object) -> Interval:
    mean, lo, hi = (float(x) for x in v)  # type: ignore[attr-defined]
    return Interval(mean, lo, hi)


def _change_json(c: ChangeEffect) -> dict[str, object]:
    return {
        "axis": c.axis, "base_value": c.base_value, "proposed_value": c.proposed_value, "description": c.description,
        "drop_one": _interval_json(c.drop_one), "add_one": _interval_json(c.add_one), "kept": c.kept, "reason": c.reason,
    }


def _change(d: Mapping[str, object]) -> ChangeEffect:
    return ChangeEffect(
        str(d["axis"]), d["base_value"], d["proposed_value"], str(d["description"]),  # type: ignore[arg-type]
        _interval(d["drop_one"]), _interval(d["add_one"]), bool(d["kept"]), str(d["reason"]),
    )


def _family_json(f: FamilySpeedup) -> dict[str, object]:
    return {"family": f.family, "speedup": _interval_json(f.speedup), "n_units": f.n_units, "level": _number(f.level)}


def _family(d: Mapping[str, object]) -> FamilySpeedup:
    return FamilySpeedup(str(d["family"]), _interval(d["speedup"]), int(d["n_units"]), float(d["level"]))  # type: ignore[call-overload, arg-type]


def search_outcome_json(outcome: object) -> dict[str, object]:
    """A finished search's outcome as JSON, for its operation's row: every candidate (curriculum,
    trials to criterion, fraction reaching it), the baseline, the best candidate's changes, the
    criterion, the sessions cap and the per-family speed-ups ({} for anything else a search
    function returned)."""
    if not isinstance(outcome, CurriculumSearchOutcome):
        return {}
    return {
        "candidates": [_candidate_json(c) for c in outcome.candidates],
        "baseline": None if outcome.baseline is None else _candidate_json(outcome.baseline),
        "changes": [_change_json(c) for c in outcome.changes],
        "criterion": outcome.criterion,
        "max_sessions": outcome.max_sessions,
        "family_speedups": [_family_json(f) for f in outcome.family_speedups],
    }


def search_outcome(d: Mapping[str, object]) -> CurriculumSearchOutcome | None:
    """The outcome :func:`search_outcome_json` wrote (None for {}; rows written before the
    changes, criterion, cap and per-family figures were kept read without them)."""
    if "candidates" not in d:
        return None
    base = d.get("baseline")
    return CurriculumSearchOutcome(
        tuple(_candidate(c) for c in d.get("candidates", ())),  # type: ignore[union-attr]
        None if base is None else _candidate(base),  # type: ignore[arg-type]
        changes=tuple(_change(c) for c in d.get("changes", ())),  # type: ignore[union-attr]
        criterion=str(d.get("criterion", "")),
        max_sessions=int(d.get("max_sessions", 0)),  # type: ignore[call-overload]
        family_speedups=tuple(_family(f) for f in d.get("family_speedups", ())),  # type: ignore[union-attr]
    )


#: What an unset ``n_candidates`` and ``horizon_trials`` cost as: the optimizer search's own
#: defaults (32 candidates; 40 sessions of the IBL default's 550 trials).
SEARCH_DEFAULTS = (32, 40 * 550)


__all__ = ["Curricula", "NextSessionRequest", "SEARCH_DEFAULTS", "search_outcome", "search_outcome_json"]
