"""The agent–environment loop: learners doing trials of a task, the one loop every simulation runs.

On each trial the environment draws the stimulus, the choice is sampled from the policy
``p = sigmoid(w · x)`` (:func:`twin.models.policy.p_right`), the reward follows from the choice
and the rewarded side, the environment sees the outcome (advancement, debiasing), and the
learner's rule updates ``(w, h)`` (scaled by the learning-rate multiplier). What is kept of each
trial is up to the :class:`Recorder` objects passed in: the trial-by-trial table of
:func:`twin.sim.simulate.run_task`, the per-session counts and criterion checks of
:func:`twin.sim.training.simulate_training`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from twin.cancel import checkpoint
from twin.models.learner import LearnerModel
from twin.models.policy import p_right
from twin.models.rules import UpdateInputs


class Environment(typing.Protocol):
    """What the loop needs of a task: batched stimulus draws and outcome feedback.

    ``active`` (optional ``[B]`` bool) leaves the state of inactive rows unchanged.
    """

    phase: torch.Tensor
    """``[B]`` protocol phase of the trial last drawn (``draw`` may advance it first)."""

    def draw(
        self, session_start: torch.Tensor, active: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(contrast_left, contrast_right, answer, prob_left)`` of the next trial, each ``[B]``."""
        ...

    def observe(self, correct: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Feed the outcome (``[B]`` bool) back to the task's adaptive rules."""
        ...


@dataclass(frozen=True)
class Schedule:
    """Which trials open and close sessions, and which rows run them.

    Attributes:
        start: ``[B, T]`` bool, True on the first trial of a session.
        end: ``[B, T]`` float, 1 where the next trial opens a new session (the rule's overnight
            flag).
        active: optional ``[B, T]`` bool, rows that run each trial (the others keep their
            state); None when every row runs every trial.
    """

    start: torch.Tensor
    end: torch.Tensor
    active: torch.Tensor | None = None

    @classmethod
    def from_starts(cls, session_start: torch.Tensor, break_after: bool = False) -> "Schedule":
        """The schedule of ``[B, T]`` session starts, every row running every trial.

        Args:
            session_start: ``[B, T]`` bool, True on the first trial of each session.
            break_after: the trial after the last one opens a new session.
        """
        starts = session_start.bool()
        b, n = starts.shape
        end = torch.zeros(b, n)
        end[:, :-1] = starts[:, 1:].float()
        if break_after:
            end[:, -1] = 1.0
        return cls(starts, end)

    @classmethod
    def session(cls, lengths: torch.Tensor, live: torch.Tensor) -> "Schedule":
        """One session run in lock step: row ``i`` runs ``lengths[i]`` trials if ``live[i]``.

        Args:
            lengths: ``[B]`` long, trials of each row's session.
            live: ``[B]`` bool, rows that run the session at all.
        """
        n = int(lengths[live].max())
        t = torch.arange(n)
        start = torch.zeros(lengths.shape[0], n, dtype=torch.bool)
        start[:, 0] = True
        end = (t == lengths.unsqueeze(1) - 1).float()
        active = live.unsqueeze(1) & (t < lengths.unsqueeze(1))
        return cls(start, end, active)


@dataclass(frozen=True)
class Carry:
    """The learners' state between trials (and between calls of :func:`run_trials`).

    Attributes:
        w: ``[B, K]`` policy weights for the next trial.
        h: ``[B, H]`` rule state.
        prev_choice: ``[B]`` previous choice in {-1, +1} (0: none).
        prev_reward: ``[B]`` previous reward in {0, 1}.
    """

    w: torch.Tensor
    h: torch.Tensor
    prev_choice: torch.Tensor
    prev_reward: torch.Tensor

    @classmethod
    def start(cls, w: torch.Tensor, h: torch.Tensor) -> "Carry":
        """The state before a first trial: ``w`` ``[B, K]`` (copied), ``h`` ``[B, H]``, no history."""
        b = w.shape[0]
        return cls(w.clone(), h, torch.zeros(b), torch.zeros(b))


@dataclass(frozen=True)
class Trial:
    """One trial of every row, as the loop ran it (each ``[B]`` unless noted).

    Attributes:
        t: index of the trial in the schedule.
        phase: protocol phase the stimulus was drawn in.
        contrast_left: contrast on the left.
        contrast_right: contrast on the right.
        answer: rewarded side (1 = right).
        prob_left: block prior of the trial.
        p_right: the policy's probability of a right choice.
        choice: sampled choice (1 = right).
        reward: 1 rewarded, 0 error.
        w: ``[B, K]`` weights in force on the trial.
        w_next: ``[B, K]`` weights after the update (unchanged on inactive rows).
        active: ``[B]`` bool rows that ran the trial; None when all did.
    """

    t: int
    phase: torch.Tensor
    contrast_left: torch.Tensor
    contrast_right: torch.Tensor
    answer: torch.Tensor
    prob_left: torch.Tensor
    p_right: torch.Tensor
    choice: torch.Tensor
    reward: torch.Tensor
    w: torch.Tensor
    w_next: torch.Tensor
    active: torch.Tensor | None


class Recorder(typing.Protocol):
    """Keeps what it needs of each trial."""

    def record(self, trial: Trial) -> None:
        """Called once per trial, after the rule's update. ``trial.phase`` is the environment's
        own state tensor, which a compiled environment updates in place on the next trial: copy
        what is kept."""
        ...


@torch.no_grad()
def run_trials(
    model: LearnerModel,
    env: Environment,
    schedule: Schedule,
    generator: torch.Generator,
    carry: Carry,
    recorders: Sequence[Recorder] = (),
    rate: torch.Tensor | None = None,
) -> Carry:
    """Run ``B`` learners (rows) through the ``T`` trials of ``schedule`` in ``env``.

    Args:
        model: the learner (rule and feature coding).
        env: the task, batched over the same ``B`` rows.
        schedule: session starts and ends, and the rows that run each trial.
        generator: seeded generator of the choices (drawn after the environment's stimulus draws).
        carry: the learners' state before the first trial.
        recorders: what is kept of each trial.
        rate: ``[K]`` or ``[B, K]`` learning-rate multipliers (``model.rate(log_rate)``); None is 1.

    Returns:
        The learners' state after the last trial.
    """
    b, n = schedule.start.shape
    feats, rule = model.spec.features, model.rule
    history = feats.history
    ctx = rule.context()
    w, h, prev_choice, prev_reward = carry.w, carry.h, carry.prev_choice, carry.prev_reward
    # time-major copies: each trial's [B] (and [B, 1]) slices are contiguous
    starts, ends = schedule.start.t().contiguous(), schedule.end.t().contiguous().unsqueeze(2)
    actives = None if schedule.active is None else schedule.active.t().contiguous()
    masked = [False] * n if actives is None else (~actives.all(1)).tolist()
    work: dict[str, torch.Tensor] = {}  # the rule's buffers, reused trial after trial
    for t in range(n):
        checkpoint()  # a caller's deadline or cancellation stops the loop here
        ss = starts[t]
        active = actives[t] if masked[t] else None  # type: ignore[index]
        cl, cr, ans, pl = env.draw(ss, active)
        phase = env.phase  # the phase this trial was drawn in (advancement is checked before the draw)
        if history:
            prev_choice = torch.where(ss, torch.zeros_like(prev_choice), prev_choice)
        x = feats.compute(cl, cr, prev_choice, prev_reward)
        p = p_right(w, x)
        y = (torch.rand(b, generator=generator) < p).float()
        r = (y == ans).float()
        env.observe(r.bool(), active)
        inp = UpdateInputs(x[:, None], y[:, None], r[:, None], ans[:, None], ends[t])
        w_next, h_next = rule.step_into(w, h, rule.precompute(inp)[0], ctx, work, t % 2)
        if rate is not None:
            w_next = w + rate * (w_next - w)
        if active is not None:
            a = active.unsqueeze(1)
            w_next = torch.where(a, w_next, w)
            h_next = torch.where(a, h_next, h) if h.numel() else h_next
        trial = Trial(t, phase, cl, cr, ans, pl, p, y, r, w, w_next, active)
        for rec in recorders:
            rec.record(trial)
        w, h = w_next, h_next
        if history:
            prev_choice = 2 * y - 1 if active is None else torch.where(active, 2 * y - 1, prev_choice)
            prev_reward = r if active is None else torch.where(active, r, prev_reward)
    return Carry(w, h, prev_choice, prev_reward)


__all__ = ["Carry", "Environment", "Recorder", "Schedule", "Trial", "run_trials"]
