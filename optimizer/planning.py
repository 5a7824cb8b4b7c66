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

It is pure: the twin, its state, the forecast function and the proposer are passed in.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from twin.sim.forecast import Interval, SessionForecast
from twin.models.state import TwinState
from twin.persist.store import Twin, TwinStore, TwinVersion
from twin.protocol import IBL_DEFAULT, REWARD_VOLUME_UL, Curriculum, RigProfile
from optimizer.attribution import ChangeEffect


@dataclass(frozen=True)
class LabDefault:
    """The lab's default training protocol, used when the twins cannot plan.

    Attributes:
        protocol: task mechanics and rig settings (IBL ``trainingChoiceWorld``, 3 µL, 2 s, by default).
    """

    protocol: Curriculum = IBL_DEFAULT

    @property
    def n_trials(self) -> int:
        """Trials of a default session: the middle of the protocol's session range."""
        lo, hi = self.protocol.session_trials
        return (lo + hi) // 2


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
        changes: the changes of the proposal against the lab's base protocol with their
            effects through the twin (the dropped ones too, flagged).
        max_sessions: the sessions cap (horizon) of the simulations behind it (0: none).
    """

    protocol: Curriculum
    n_trials: int
    start_phase: int
    explanation: str = ""
    changes: tuple[ChangeEffect, ...] = ()
    max_sessions: int = 0


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
        changes: an optimizer plan's changes against the lab's base protocol and their effects
            (kept and dropped); empty otherwise.
        max_sessions: an optimizer plan's sessions cap of its simulations (0: none).
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
    changes: tuple[ChangeEffect, ...] = ()
    max_sessions: int = 0

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


#: ``propose(twin, state, constraints)`` → a candidate next session, or None when it has none.
ProposeFn = Callable[[Twin, TwinState, PlanConstraints], Proposal | None]
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
) -> SessionPlan:
    """Plan ``subject``'s next session (see the module docstring for the rules).

    Args:
        subject: the animal.
        twin: its twin, or None when it has none.
        state: the twin's end-of-last-session state (None without a twin).
        constraints: limits of the plan.
        forecast: the twin's forecast of a candidate.
        propose: the optimizer's next-session proposal, when one is configured.
        lab: the lab's default protocol.
        phase_without_twin: phase to start a twin-less subject in (where its last stored
            session left off; 0 for a new animal).
    """
    default_phase = _clip_phase(lab.protocol, state.phase if state is not None else phase_without_twin)
    default = Proposal(constraints.capped(lab.protocol), constraints.trials(lab.n_trials), default_phase, "the lab's default protocol")

    def plan(p: Proposal, source: PlanSource, reason: FallbackReason | None, why: str, fc: SessionForecast | None) -> SessionPlan:
        return SessionPlan(subject, p.protocol, p.start_phase, p.n_trials, source, reason, why, fc, None if twin is None else twin.meta)

    if twin is None or state is None:
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.NO_TWIN, f"subject {subject!r} has no twin yet: the lab's default protocol", None)
    width = constraints.max_interval_width
    if propose is not None:
        candidate = propose(twin, state, constraints)
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
                return replace(plan(candidate, PlanSource.OPTIMIZER, None, f"{why} (twin v{twin.meta.version})", fc), changes=candidate.changes, max_sessions=candidate.max_sessions)
            fd = forecast(twin, state, default)
            acc = fc.accuracy
            why = f"the optimizer's proposal is too uncertain (accuracy interval [{acc.lo:.2f}, {acc.hi:.2f}] wider than {width:.2f}): the lab's default protocol"
            return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.LOW_CONFIDENCE, why, fd)
        fd = forecast(twin, state, default)
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.NO_PROPOSAL, "the optimizer proposed nothing within the constraints: the lab's default protocol", fd)
    fd = forecast(twin, state, default)
    if _too_uncertain(fd, width):
        acc = fd.accuracy
        why = f"the twin's forecast is too uncertain (accuracy interval [{acc.lo:.2f}, {acc.hi:.2f}] wider than {width:.2f}): the lab's default protocol"
        return plan(default, PlanSource.DEFAULT_PROTOCOL, FallbackReason.LOW_CONFIDENCE, why, fd)
    return plan(default, PlanSource.DEFAULT_PROTOCOL, None, f"the lab's default protocol (no curriculum optimizer configured), forecast by twin v{twin.meta.version}", fd)


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
    """A search's result: candidates (best first) and the default protocol scored alike."""

    candidates: tuple[CurriculumCandidate, ...]
    baseline: CurriculumCandidate | None = None


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
