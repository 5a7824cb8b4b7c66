"""Teaching: trial-by-trial stimuli for a rig, chosen through the animal's twin
(:class:`~twin.sim.teaching.TwinTeacher`), with the session protocol's own draw as the fallback.

One :class:`TeachingSession` per stream (one session of one animal): :meth:`TeachingSession.first`
serves trial 0, :meth:`TeachingSession.next` takes the outcome of the trial last served (the
twin's rule step updates the twin with it, the protocol's advancement and debiasing see it) and
serves the next. Every trial the protocol draws first (its phase advancement, and the fallback
stimulus); the twin's decision then replaces that stimulus unless there is no twin, the rig
profile fixes the schedule, the decision raised, or it took longer than the per-decision
budget (a late decision is discarded: the decision is not interrupted, so the budget bounds what
the rig sees, not the server's work).

Latency: the next trial depends on the outcome, but a rig's trial lasts seconds and its outcome
is one of two likely ones (a left or a right choice on the stimulus served). The servicer calls
:meth:`TeachingSession.prepare` right after handing a stimulus to gRPC: it computes the next
trial for both outcomes, each from the same snapshot of the session, and the outcome's arrival
only restores the chosen branch's state (the same stimulus as computing it then: same protocol
state, twin state and generator). Any other outcome (a no-go, a different stimulus shown) is computed on receipt. A decision error never ends the stream; a client's bad
outcome (wrong trial index, a value out of range) does (INVALID_ARGUMENT).
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from twin.persist.store import TwinVersion
from twin.protocol import CUSTOM_TASK, Curriculum, RigProfile
from twin.sim.task import TaskEnv
from twin.sim.teaching import Decision, TeachingConstraints, TwinTeacher

from optimizer.planning import LabDefault
from service.catalog import TwinCatalog, TwinSelector
from service.config import NO_DEADLINE, Deadline
from service.errors import FieldViolation
from service.limits import MAX_SEED, raise_invalid

log = logging.getLogger("service.teaching")

#: Default per-decision time budget (milliseconds).
DEFAULT_DECISION_BUDGET_MS = 3.0


class Choice(enum.Enum):
    """The animal's choice on a trial."""

    LEFT = "left"
    RIGHT = "right"
    NO_GO = "no_go"


class StimulusSource(enum.Enum):
    """Where a trial's stimulus came from."""

    TWIN = "twin"
    FALLBACK = "fallback"


class FallbackReason(enum.Enum):
    """Why a trial's stimulus is the session protocol's draw."""

    NONE = "none"
    NO_TWIN = "no_twin"
    DECISION_ERROR = "decision_error"
    DECISION_TIMEOUT = "decision_timeout"
    RIG_PROFILE = "rig_profile"


@dataclass(frozen=True)
class TeachOpen:
    """Opens a teaching session.

    Attributes:
        twin: the animal and its twin version (no version or alias: the one it serves).
        rig_profile: what the rig can run.
        protocol: the session protocol (None: the lab's default).
        start_phase: phase to start in (None: the twin's last phase, 0 without a twin).
        constraints: what keeps the session sane.
        seed: seeds the protocol's draws and the tie-breaks.
        max_trials: most trials served (None: the limit ``max_session_trials``).
    """

    twin: TwinSelector
    rig_profile: RigProfile = CUSTOM_TASK
    protocol: Curriculum | None = None
    start_phase: int | None = None
    constraints: TeachingConstraints = TeachingConstraints()
    seed: int = 0
    max_trials: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened on the trial last served.

    Attributes:
        trial: its index.
        contrast: unsigned contrast shown.
        side: side shown (1 = right).
        choice: the animal's choice.
        rewarded: whether it was rewarded.
    """

    trial: int
    contrast: float
    side: int
    choice: Choice
    rewarded: bool


@dataclass(frozen=True)
class TrialStimulus:
    """The next trial's stimulus.

    Attributes:
        trial: its index (0-based).
        contrast: unsigned contrast; ``side``: 1 = right.
        phase: the protocol's phase of the trial.
        source: where it came from; ``reason``: why it fell back (NONE when it did not).
        p_correct: the twin's predicted p(correct) (None without a twin decision).
        decision_ms: server time spent on the trial (outcome recorded, protocol draw, decision).
        twin: the teaching twin's version (first trial only; None without a twin).
    """

    trial: int
    contrast: float
    side: int
    phase: int
    source: StimulusSource
    reason: FallbackReason
    p_correct: float | None
    decision_ms: float
    twin: TwinVersion | None = None


DecideFn = Callable[[TwinTeacher], Decision]
"""The decision (tests inject failing or slow ones): :meth:`TwinTeacher.decide` by default."""


def _decide(teacher: TwinTeacher) -> Decision:
    return teacher.decide()


@dataclass
class TeachingSession:
    """One stream's session (see the module docstring); not thread-safe (one stream, one thread).

    Attributes:
        env: the session protocol (the teacher's, or a plain one without a twin).
        teacher: the twin's teacher (None: no twin).
        twin: the teaching twin's version.
        max_trials: most trials served.
        budget_s: per-decision time budget.
        blocked: why every trial falls back (None: the twin decides).
    """

    env: TaskEnv
    teacher: TwinTeacher | None
    twin: TwinVersion | None
    max_trials: int
    budget_s: float
    blocked: FallbackReason | None
    decide: DecideFn = _decide
    served: int = 0
    last: TrialStimulus | None = None
    _prepared: dict[tuple[Choice, bool], tuple[tuple[object, ...], TrialStimulus | None]] = field(default_factory=dict)

    def first(self) -> TrialStimulus:
        """Trial 0's stimulus."""
        t0 = time.perf_counter()
        return self._serve(t0, twin=self.twin)

    def prepare(self) -> None:
        """Work out, while the rig runs the trial last served, the next trial for each outcome
        the rig will most likely report (the stimulus served, a left or a right choice, rewarded
        when on the rewarded side): :meth:`next` then only looks it up. Each branch starts from
        the same snapshot of the session (protocol, twin, history, generator), so its result is
        the one :meth:`next` would compute on receipt; any other outcome is computed then."""
        self._prepared = {}
        if self.last is None or self.served >= self.max_trials:
            return
        start = self._snapshot()
        prepared = {}
        try:
            for choice in (Choice.LEFT, Choice.RIGHT):
                rewarded = (choice is Choice.RIGHT) == (self.last.side == 1)
                self._record(Outcome(self.last.trial, self.last.contrast, self.last.side, choice, rewarded))
                stim = None if self.served >= self.max_trials else self._serve(time.perf_counter())
                prepared[(choice, rewarded)] = (self._snapshot(), stim)
                self._restore(start)
        except Exception:  # noqa: BLE001 - nothing prepared: the outcome is computed on receipt
            log.exception("preparing the next trial failed; it is computed when the outcome arrives")
            self._restore(start)
            return
        self._prepared = prepared

    def _snapshot(self) -> tuple[object, ...]:
        proto = self.teacher.snapshot() if self.teacher is not None else (self.env.snapshot(), self.env.g.get_state())
        return (self.served, self.last, self.blocked, proto)

    def _restore(self, snap: tuple[object, ...]) -> None:
        self.served, self.last, self.blocked, proto = snap  # type: ignore[assignment]
        if self.teacher is not None:
            self.teacher.restore(proto)  # type: ignore[arg-type]
        else:
            env_snap, g_state = proto  # type: ignore[misc]
            self.env.restore(env_snap)
            self.env.g.set_state(g_state)

    def next(self, outcome: Outcome, deadline: Deadline = NO_DEADLINE) -> TrialStimulus | None:
        """Record the outcome of the trial last served and serve the next (None: ``max_trials``
        trials were served; the stream ends).

        Raises:
            InvalidArgumentError: the outcome is not of the trial last served, or a value is out
                of range.
        """
        t0 = time.perf_counter()
        deadline.check("teaching")
        want = self.served - 1
        raise_invalid(
            [
                None if outcome.trial == want else FieldViolation("outcome.trial", f"must be {want}, the trial last served"),
                None if 0.0 <= outcome.contrast <= 1.0 else FieldViolation("outcome.contrast", "must be in [0, 1]"),
                None if outcome.side in (0, 1) else FieldViolation("outcome.side", "must be LEFT or RIGHT"),
                None if outcome.choice is not Choice.NO_GO or not outcome.rewarded else FieldViolation("outcome.rewarded", "a NO_GO trial is not rewarded"),
            ]
        )
        last = self.last
        hit = self._prepared.get((outcome.choice, outcome.rewarded))
        self._prepared = {}
        if hit is not None and last is not None and outcome.side == last.side and abs(outcome.contrast - last.contrast) < 1e-9:
            snap, stim = hit
            self._restore(snap)
            if stim is None:
                return None
            stim = replace(stim, decision_ms=(time.perf_counter() - t0) * 1e3)
            self.last = stim
            return stim
        self._record(outcome)
        if self.served >= self.max_trials:
            return None
        return self._serve(t0)

    def _record(self, o: Outcome) -> None:
        contrast = torch.tensor([float(o.contrast)])
        side = torch.tensor([float(o.side)])
        rewarded = torch.tensor([bool(o.rewarded)])
        if self.teacher is None:
            self.env.show(contrast, side)
            self.env.observe(rewarded)
            return
        self.teacher.show(contrast, side)
        self.teacher.record_protocol(rewarded)
        if self.blocked is not None or o.choice is Choice.NO_GO:
            return
        try:
            self.teacher.record_twin(torch.tensor([1.0 if o.choice is Choice.RIGHT else 0.0]), rewarded.float())
        except Exception:  # noqa: BLE001 - a twin that cannot update stops deciding; the session goes on
            log.exception("twin update failed; the session falls back to its protocol")
            self.blocked = FallbackReason.DECISION_ERROR

    def _serve(self, t0: float, twin: TwinVersion | None = None) -> TrialStimulus:
        ss = torch.tensor([self.served == 0])
        if self.teacher is None:
            self.env.draw(ss)
        else:
            self.teacher.fallback_draw(ss)
        phase = int(self.env.phase[0])
        contrast, side = float(self.env.last_contrast[0]), int(self.env.last_side[0])
        source, reason, p = StimulusSource.FALLBACK, self.blocked or FallbackReason.NONE, None
        if self.teacher is not None and self.blocked is None:
            t1 = time.perf_counter()
            try:
                d = self.decide(self.teacher)
                took = time.perf_counter() - t1
                if took > self.budget_s:
                    reason = FallbackReason.DECISION_TIMEOUT
                else:
                    c, s, pc = float(d.contrast[0]), int(d.side[0]), float(d.p_correct[0])
                    if not (0.0 <= c <= 1.0 and s in (0, 1) and math.isfinite(pc)):
                        raise ValueError(f"decision out of range: contrast {c}, side {s}, p {pc}")
                    self.teacher.show(d.contrast, d.side)
                    contrast, side, p = c, s, pc
                    source = StimulusSource.TWIN
            except Exception:  # noqa: BLE001 - any decision error falls back, never ends the stream
                log.exception("teaching decision failed; the trial falls back to the protocol")
                reason = FallbackReason.DECISION_ERROR
        self.served += 1
        ms = (time.perf_counter() - t0) * 1e3
        self.last = TrialStimulus(self.served - 1, contrast, side, phase, source, reason, p, ms, twin)
        return self.last


class Teaching:
    """Opens teaching sessions.

    Args:
        catalog: twin lookups, the stores and the limits.
        lab: the lab's default protocol (the session protocol when a request names none).
        budget_ms: per-decision time budget (milliseconds).
        decide: the decision (tests inject failing or slow ones).
    """

    def __init__(self, catalog: TwinCatalog, lab: LabDefault = LabDefault(), budget_ms: float = DEFAULT_DECISION_BUDGET_MS, decide: DecideFn = _decide) -> None:
        if not budget_ms > 0:
            raise ValueError(f"budget_ms must be > 0, got {budget_ms}")
        self.catalog, self.lab, self.budget_s, self.decide = catalog, lab, budget_ms / 1e3, decide

    def open(self, req: TeachOpen, deadline: Deadline = NO_DEADLINE) -> TeachingSession:
        """Open a session (limits checked before any work).

        Raises:
            InvalidArgumentError: a bad field.
            LimitExceededError: ``max_trials`` over ``max_session_trials``.
            NotFoundError: the named twin version or alias does not exist.
        """
        limits = self.catalog.config.limits
        protocol = req.protocol or self.lab.protocol
        n_phases = len(protocol.stimulus.phases)
        raise_invalid(
            [
                limits.name("open.twin.subject", req.twin.subject),
                None if 0 <= req.seed <= MAX_SEED else FieldViolation("open.seed", f"must be in [0, {MAX_SEED}]"),
                None if req.max_trials is None or req.max_trials >= 1 else FieldViolation("open.max_trials", "must be >= 1 (0: the server's limit)"),
                None if req.start_phase is None or 0 <= req.start_phase < n_phases else FieldViolation("open.start_phase", f"must be in [0, {n_phases - 1}]"),
            ]
        )
        limits.check(limits.over("open.max_trials", req.max_trials or 0, "max_session_trials", "trials"))
        max_trials = req.max_trials or limits.max_session_trials
        with deadline.scope("opening the teaching session"):
            self.catalog.check_selector(req.twin, "open.twin")
            g = torch.Generator().manual_seed(int(req.seed))
            subject = req.twin.subject
            twin = None
            if req.twin.version is not None or req.twin.alias is not None or self.catalog.store.versions(subject):
                twin = self.catalog.resolve(req.twin, "open.twin")
            blocked = FallbackReason.RIG_PROFILE if req.rig_profile.fixed_schedule else None
            if twin is None:
                env = TaskEnv(protocol, 1, g, start_phase=req.start_phase or 0)
                return TeachingSession(env, None, None, max_trials, self.budget_s, FallbackReason.NO_TWIN, self.decide)
            state = self.catalog.state(twin)
            phase = req.start_phase if req.start_phase is not None else min(max(state.phase, 0), n_phases - 1)
            model = twin.model
            try:
                teacher = TwinTeacher(model, state.w.reshape(1, -1), state.h.reshape(1, -1), protocol, g, phase, req.constraints, rate=model.rate())
            except Exception:  # noqa: BLE001 - a twin that cannot teach leaves the protocol to run the session
                log.exception("twin cannot teach; the session falls back to its protocol")
                env = TaskEnv(protocol, 1, g, start_phase=phase)
                return TeachingSession(env, None, twin.meta, max_trials, self.budget_s, FallbackReason.DECISION_ERROR, self.decide)
            return TeachingSession(teacher.env, teacher, twin.meta, max_trials, self.budget_s, blocked, self.decide)


__all__ = ["Choice", "DEFAULT_DECISION_BUDGET_MS", "DecideFn", "FallbackReason", "Outcome", "StimulusSource", "Teaching", "TeachOpen", "TeachingSession", "TrialStimulus"]
