"""Next-session plans for rigs, with the lab's default protocol as the fallback, and the hook
through which a curriculum search is plugged in.

:func:`plan_next_session` decides what a subject's next session is:

* no twin → the lab's default protocol, flagged as a fallback (``NO_TWIN``);
* a proposer (the optimizer's next-session proposal, injected) gives a candidate; the twin
  forecasts it; a forecast whose accuracy interval is wider than the constraint allows falls
  back to the default protocol (``LOW_CONFIDENCE``); no candidate from a configured proposer
  falls back too (``NO_PROPOSAL``);
* without a proposer (the optimizer is not part of this build yet) the plan is the default
  protocol with the twin's forecast of it; it is flagged ``LOW_CONFIDENCE`` when that forecast
  is too uncertain.

Plans follow the animal's stage (:mod:`twin.analysis.stage`) and aim at the next stage's
criterion, named in every plan (:attr:`SessionPlan.target`):

* in training (``TRAINING``, ``TRAINED_1A``): the lab's training protocol (or the optimizer's
  proposal) aimed at ``trained_1a``, then ``trained_1b``; the proposer is asked for that target
  and its trials-to-criterion forecast is to it, within its session cap
  (:attr:`SessionPlan.max_sessions`);
* trained (``TRAINED_1B``, on biased blocks): the lab's biased-blocks protocol
  (:data:`twin.protocol.IBL_BIASED`, iblrig biasedChoiceWorld) aimed at
  ``ready_for_recording``; never a training-phase plan. The twins do not simulate that criterion
  (it needs per-block psychometric fits over biased sessions), so no trials-to-criterion figure
  is given and the explanation says so;
* ready for recording: biased blocks again, with no criterion left and no trials-to-criterion
  claim.

It is pure: the twin, its state, the stage, the forecast function and the proposer are passed in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from twin.analysis.criteria import CriterionConfig
from twin.analysis.stage import StageAssessment, TrainingStage, new_animal
from twin.sim.forecast import Interval, SessionForecast
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinStore, TwinVersion
from twin.protocol import IBL_BIASED, IBL_DEFAULT, REWARD_VOLUME_UL, Curriculum, RigProfile
from optimizer.attribution import ChangeEffect
from optimizer.objective import FamilySpeedup


@dataclass(frozen=True)
class LabDefault:
    """The lab's default protocols, used when the twins cannot plan.

    Attributes:
        protocol: the training protocol (IBL ``trainingChoiceWorld``, 3 µL, 2 s, by default).
        biased: the biased-blocks protocol of trained animals (IBL ``biasedChoiceWorld``).
    """

    protocol: Curriculum = IBL_DEFAULT
    biased: Curriculum = IBL_BIASED

    @property
    def n_trials(self) -> int:
        """Trials of a default training session: the middle of the protocol's session range."""
        lo, hi = self.protocol.session_trials
        return (lo + hi) // 2

    def for_stage(self, stage: TrainingStage) -> Curriculum:
        """The protocol of an animal at ``stage``: biased blocks once trained (``trained_1b`` on)."""
        return self.biased if stage.trained else self.protocol


@dataclass(frozen=True)
class PlanConstraints:
    """Limits a plan must respect.

    Attributes:
        min_trials: fewest trials (None: no limit).
        max_trials: most trials (None: no limit).
        max_reward_volume_ul: largest reward volume, at least the smallest a protocol may give
            (None: no limit).
        max_interval_width: widest acceptable interval of the predicted session accuracy.
    """

    min_trials: int | None = None
    max_trials: int | None = None
    max_reward_volume_ul: float | None = None
    max_interval_width: float = 0.3

    def __post_init__(self) -> None:
        if self.min_trials is not None and self.max_trials is not None and self.min_trials > self.max_trials:
            raise ValueError(f"min_trials ({self.min_trials}) exceeds max_trials ({self.max_trials})")
        if not 0.0 < self.max_interval_width <= 1.0:
            raise ValueError(f"max_interval_width must be in (0, 1], got {self.max_interval_width}")
        if self.max_reward_volume_ul is not None and self.max_reward_volume_ul < REWARD_VOLUME_UL[0]:
            raise ValueError(f"max_reward_volume_ul must be at least {REWARD_VOLUME_UL[0]:g} µL")

    def trials(self, n: int) -> int:
        """``n`` moved into the allowed range."""
        if self.max_trials is not None:
            n = min(n, self.max_trials)
        if self.min_trials is not None:
            n = max(n, self.min_trials)
        return max(int(n), 1)

    def capped(self, protocol: Curriculum) -> Curriculum:
        """``protocol`` with the reward volume capped."""
        f = protocol.feedback
        if self.max_reward_volume_ul is not None and f.reward_volume_ul > self.max_reward_volume_ul:
            return replace(protocol, feedback=replace(f, reward_volume_ul=self.max_reward_volume_ul))
        return protocol


class PlanSource(enum.Enum):
    """Where a plan's protocol came from."""

    DEFAULT_PROTOCOL = "default_protocol"
    OPTIMIZER = "optimizer"


class FallbackReason(enum.Enum):
    """Why a plan is the lab's default protocol used as a fallback."""

    NO_TWIN = "no_twin"
    LOW_CONFIDENCE = "low_confidence"
    NO_PROPOSAL = "no_proposal"


@dataclass(frozen=True)
class Proposal:
    """A candidate next session.

    Attributes:
        protocol: task mechanics and rig settings.
        n_trials: trials to run.
        start_phase: phase to start in.
        explanation: why this candidate.
        expected_trials: the proposer's forecast of the trials left to the target criterion under
            it, capped at ``max_sessions`` sessions (None: no such forecast).
        max_sessions: the session cap (horizon) of the simulations behind it: its forecast and
            its changes' effects (None: no simulation).
        changes: the changes of the proposal against the lab's base protocol with their
            effects through the twin (the dropped ones too, flagged).
        family_speedups: the proposal's speed-up against the base as each rule family of the
            twin predicts it, over the same runs as the changes' effects (empty: none).
    """

    protocol: Curriculum
    n_trials: int
    start_phase: int
    explanation: str = ""
    expected_trials: Interval | None = None
    max_sessions: int | None = None
    changes: tuple[ChangeEffect, ...] = ()
    family_speedups: tuple[FamilySpeedup, ...] = ()


@dataclass(frozen=True)
class SessionPlan:
    """A subject's next session, with every field a rig needs.

    Attributes:
        subject: the animal.
        protocol: task mechanics and rig settings (reward volume, error timeout).
        start_phase: phase the session starts in.
        n_trials: trials to run.
        source: where the protocol came from.
        fallback_reason: why the default protocol is used as a fallback (None: no fallback).
        explanation: human-readable reasoning.
        forecast: the twin's forecast of this plan (None without a twin).
        twin: the twin version used (None without a twin).
        stage: the animal's training stage, from its sessions.
        target: the criterion the plan aims at, the next stage's (None: ready for recording,
            no criterion left).
        expected_trials: forecast trials left to ``target``, capped at ``max_sessions`` sessions
            (None: no such forecast, e.g. for the biased-blocks criterion, which the twins do not
            simulate).
        max_sessions: the session cap of the simulations behind the plan: that forecast and the
            changes' effects (None when there are none).
        changes: an optimizer plan's changes against the lab's base protocol and their effects
            (kept and dropped); empty otherwise.
        family_speedups: an optimizer plan's speed-up against the lab's base protocol as each
            rule family of the twin predicts it (within ``max_sessions``); empty otherwise.
    """

    subject: str
    protocol: Curriculum
    start_phase: int
    n_trials: int
    source: PlanSource
    fallback_reason: FallbackReason | None
    explanation: str
    forecast: SessionForecast | None
    twin: TwinVersion | None
    stage: StageAssessment | None = None
    target: CriterionConfig | None = None
    expected_trials: Interval | None = None
    max_sessions: int | None = None
    changes: tuple[ChangeEffect, ...] = ()
    family_speedups: tuple[FamilySpeedup, ...] = ()

    @property
    def fallback(self) -> bool:
        """True when the plan is the default protocol used as a fallback."""
        return self.fallback_reason is not None

    def contrast_proportions(self) -> tuple[tuple[float, float], ...]:
        """``(unsigned contrast, fraction of trials)`` of the starting phase."""
        s = self.protocol.stimulus
        phase = s.phases[self.start_phase]
        weights = s.proportions[self.start_phase] if s.proportions else (1.0,) * len(phase)
        total = float(sum(weights))
        return tuple((float(c), float(w) / total) for c, w in zip(phase, weights))


#: ``propose(twin, state, constraints, target)`` → a candidate next session aimed at the
#: training criterion ``target``, or None when it has none.
ProposeFn = Callable[[Twin, TwinState, PlanConstraints, CriterionConfig], Proposal | None]
#: ``forecast(twin, state, proposal)`` → the twin's forecast of that session.
PlanForecastFn = Callable[[Twin, TwinState, Proposal], SessionForecast]


def _too_uncertain(forecast: SessionForecast, max_width: float) -> bool:
    acc = forecast.accuracy
    return not (math.isfinite(acc.lo) and math.isfinite(acc.hi)) or acc.hi - acc.lo > max_width


def _clip_phase(protocol: Curriculum, phase: int) -> int:
    return int(min(max(phase, 0), len(protocol.stimulus.phases) - 1))


def plan_next_session(
    subject: str,
    twin: Twin | None,
    state: TwinState | None,
    constraints: PlanConstraints,
    forecast: PlanForecastFn,
    propose: ProposeFn | None = None,
    lab: LabDefault = LabDefault(),
    phase_without_twin: int = 0,
    stage: StageAssessment | None = None,
) -> SessionPlan:
    """Plan ``subject``'s next session (see the module docstring for the rules).

    Args:
        subject: the animal.
        twin: its twin, or None when it has none.
        state: the twin's end-of-last-session state (None without a twin).
        constraints: limits of the plan.
        forecast: the twin's forecast of a candidate.
        propose: the optimizer's next-session proposal, when one is configured (asked only for
            animals in training, with the target criterion).
        lab: the lab's default protocols.
        phase_without_twin: phase to start a twin-less subject in (where its last stored
            session left off; 0 for a new animal).
        stage: the animal's stage from its sessions (None: a new animal, in training).
    """
    st = stage if stage is not None else new_animal(subject)
    target = st.target
    trained = st.stage.trained
    base = lab.for_stage(st.stage)
    phase = 0 if trained else (state.phase if state is not None else phase_without_twin)
    lo, hi = base.session_trials
    default = Proposal(constraints.capped(base), constraints.trials((lo + hi) // 2), _clip_phase(base, phase), "the lab's default protocol")
    what = f"{subject!r}: {st.summary()}"
    if st.stage is TrainingStage.READY_FOR_RECORDING:
        aim = "ready for recording: keep it on biased blocks (the lab's biased-blocks protocol) until it is recorded; no criterion left, no trials-to-criterion forecast"
    elif trained:
        assert target is not None
        aim = (
            f"a biased-blocks session (the lab's biased-blocks protocol, {base.name}) aimed at {target.label} [{target.describe()}]; "
            "the twins do not simulate that criterion (it needs per-block psychometric fits over biased sessions), so no trials-to-criterion forecast is given"
        )
    else:
        assert target is not None
        aim = f"a training session aimed at {target.label} [{target.describe()}]"

    def plan(p: Proposal, source: PlanSource, reason: FallbackReason | None, why: str, fc: SessionForecast | None) -> SessionPlan:
        return SessionPlan(
            subject, p.protocol, p.start_phase, p.n_trials, source, reason, f"{what}; {aim}. {why}", fc, None if twin is None else twin.meta,
            stage=st, target=target, expected_trials=p.expected_trials, max_sessions=p.max_sessions if p.expected_trials is not None else None,
        )

    if twin is None or state is None:
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.NO_TWIN, "No twin yet: the lab's default protocol", None)
    width = constraints.max_interval_width
    if propose is not None and not trained and target is not None:
        candidate = propose(twin, state, constraints, target)
        if candidate is not None:
            candidate = replace(
                candidate,
                protocol=constraints.capped(candidate.protocol),
                n_trials=constraints.trials(candidate.n_trials),
                start_phase=_clip_phase(candidate.protocol, candidate.start_phase),
            )
            fc = forecast(twin, state, candidate)
            if not _too_uncertain(fc, width):
                why = candidate.explanation or "the optimizer's proposal"
                return replace(plan(candidate, PlanSource.OPTIMIZER, None, f"{why} (twin v{twin.meta.version})", fc), changes=candidate.changes, family_speedups=candidate.family_speedups, max_sessions=candidate.max_sessions or None)
            fd = forecast(twin, state, default)
            acc = fc.accuracy
            why = f"The optimizer's proposal is too uncertain (accuracy interval [{acc.lo:.2f}, {acc.hi:.2f}] wider than {width:.2f}): the lab's default protocol"
            return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.LOW_CONFIDENCE, why, fd)
        fd = forecast(twin, state, default)
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.NO_PROPOSAL, "The optimizer proposed nothing within the constraints: the lab's default protocol", fd)
    fd = forecast(twin, state, default)
    if _too_uncertain(fd, width):
        acc = fd.accuracy
        why = f"The twin's forecast is too uncertain (accuracy interval [{acc.lo:.2f}, {acc.hi:.2f}] wider than {width:.2f}): the lab's default protocol"
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.LOW_CONFIDENCE, why, fd)
    how = "the optimizer plans training sessions only" if trained and propose is not None else "no curriculum optimizer configured"
    return plan(default, PlanSource.DEFAULT_PROTOCOL, None, f"The lab's default protocol ({how}), forecast by twin v{twin.meta.version}", fd)


# -- curriculum search hook ---------------------------------------------------------------------


@dataclass(frozen=True)
class CurriculumSearchRequest:
    """What a curriculum search is asked to do.

    Attributes:
        subjects: twins to search through.
        n_candidates: candidates to evaluate (None: the search's default).
        horizon_trials: simulated trials per animal and candidate (None: the search's default).
        seed: seeds the search.
        rig_profile: what the rig runs: the search space is cut to it and every candidate runs
            on it (None: the profile of the search's own space, a custom task by default).
    """

    subjects: tuple[str, ...]
    n_candidates: int | None
    horizon_trials: int | None
    seed: int
    rig_profile: RigProfile | None = None


@dataclass(frozen=True)
class CurriculumCandidate:
    """One curriculum and how the twins fared under it.

    Attributes:
        protocol: task mechanics and rig settings.
        trials_to_criterion: simulated trials to the training criterion.
        reached_criterion: fraction of simulated animals reaching it within the horizon.
    """

    protocol: Curriculum
    trials_to_criterion: Interval
    reached_criterion: float


@dataclass(frozen=True)
class CurriculumSearchOutcome:
    """A search's result: candidates (best first) and the default protocol scored alike.

    Attributes:
        candidates: the proposal (the minimal set of changes that help robustly) first, then the
            other re-scored candidates.
        baseline: the lab's base protocol, scored alike.
        changes: the search's best candidate's changes against the base protocol and their
            effects (kept and dropped; empty: none).
        criterion: name of the criterion trials are counted to (empty: not stated).
        max_sessions: the sessions cap of every simulation behind the outcome (0: not stated).
        family_speedups: the proposal's speed-up against the base as each rule family of the
            twins predicts it (empty when the base was kept).
    """

    candidates: tuple[CurriculumCandidate, ...]
    baseline: CurriculumCandidate | None = None
    changes: tuple[ChangeEffect, ...] = ()
    criterion: str = ""
    max_sessions: int = 0
    family_speedups: tuple[FamilySpeedup, ...] = ()


class SearchProgress(Protocol):
    """What a curriculum search sees of the long-running operation that runs it."""

    def report(self, progress: float, message: str = "") -> None:
        """Record progress in [0, 1] and a note; raises (to stop the search) once cancelled."""

    def check_cancelled(self) -> None:
        """A checkpoint: raises (to stop the search) once cancellation was requested."""


#: ``search(request, store, progress)``: runs in a long-running operation; reports progress
#: through ``progress`` and checks ``progress.check_cancelled()`` between steps.
CurriculumSearchFn = Callable[[CurriculumSearchRequest, TwinStore, SearchProgress], CurriculumSearchOutcome]


__all__ = [
    "CurriculumCandidate",
    "CurriculumSearchFn",
    "CurriculumSearchOutcome",
    "CurriculumSearchRequest",
    "FallbackReason",
    "LabDefault",
    "PlanConstraints",
    "PlanForecastFn",
    "PlanSource",
    "Proposal",
    "ProposeFn",
    "SearchProgress",
    "SessionPlan",
    "plan_next_session",
]
