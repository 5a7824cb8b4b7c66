"""Generative simulation: learners (ground truth or fitted twins) doing the task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.models.learner import LearnerModel
from twin.protocol import Curriculum
from twin.sim.rollout import Carry, Environment, Schedule, Trial, run_trials
from twin.sim.task import TaskEnv, session_schedule


@dataclass(frozen=True)
class Simulation:
    """A simulated cohort.

    Attributes:
        trials: canonical trials table (see :mod:`twin.data.trials`).
        weights: ``[B, T, K]`` the true weights in force on each trial.
        phase: ``[B, T]`` protocol phase on each trial.
    """

    trials: pd.DataFrame
    weights: torch.Tensor
    phase: torch.Tensor


@dataclass(frozen=True)
class Rollout:
    """Tensors of one batched run of learners through a task.

    Attributes:
        contrast_left: ``[B, T]``.
        contrast_right: ``[B, T]``.
        answer: ``[B, T]`` rewarded side (1 = right).
        prob_left: ``[B, T]`` block prior of the trial.
        choice: ``[B, T]`` sampled choice (1 = right).
        reward: ``[B, T]`` 1 rewarded, 0 error.
        p_right: ``[B, T]`` the policy's probability of a right choice.
        phase: ``[B, T]`` protocol phase on each trial.
        weights: ``[B, T, K]`` weights in force on each trial (empty ``[B, 0, K]`` if not recorded).
        final_w: ``[B, K]`` weights after the last update.
        final_h: ``[B, H]`` rule state after the last update.
    """

    contrast_left: torch.Tensor
    contrast_right: torch.Tensor
    answer: torch.Tensor
    prob_left: torch.Tensor
    choice: torch.Tensor
    reward: torch.Tensor
    p_right: torch.Tensor
    phase: torch.Tensor
    weights: torch.Tensor
    final_w: torch.Tensor
    final_h: torch.Tensor


class TrialRecorder:
    """Records every trial of a run (the tensors of a :class:`Rollout`).

    Args:
        n_animals: rows ``B``.
        n_trials: trials ``T``.
        n_weights: policy weights ``K``.
        record_weights: keep the ``[B, T, K]`` weight trajectory.
    """

    def __init__(self, n_animals: int, n_trials: int, n_weights: int, record_weights: bool = True) -> None:
        b, n = n_animals, n_trials
        self.record_weights = record_weights
        self.values = {k: torch.zeros(b, n) for k in ("contrast_left", "contrast_right", "answer", "prob_left", "choice", "reward", "p_right")}
        self.weights = torch.zeros(b, n if record_weights else 0, n_weights)
        self.phase = torch.zeros(b, n, dtype=torch.long)

    def record(self, trial: Trial) -> None:
        t = trial.t
        self.phase[:, t] = trial.phase
        if self.record_weights:
            self.weights[:, t] = trial.w
        for k, v in self.values.items():
            v[:, t] = getattr(trial, k)

    def rollout(self, final: Carry) -> Rollout:
        """The recorded run, ending in ``final``."""
        return Rollout(**self.values, phase=self.phase, weights=self.weights, final_w=final.w, final_h=final.h)


@torch.no_grad()
def run_task(
    model: LearnerModel,
    env: Environment,
    session_start: torch.Tensor,
    generator: torch.Generator,
    w: torch.Tensor,
    h: torch.Tensor,
    log_rate: torch.Tensor | None = None,
    break_after: bool = False,
    record_weights: bool = True,
) -> Rollout:
    """Run ``B`` learners (rows) through ``T`` trials of ``env`` and record every trial (see
    :func:`twin.sim.rollout.run_trials`).

    Args:
        model: the learner (rule and feature coding).
        env: the task, batched over the same ``B`` rows.
        session_start: ``[B, T]`` bool, True on the first trial of each session.
        generator: seeded generator of the choices (the environment has its own).
        w: ``[B, K]`` weights before the first trial.
        h: ``[B, H]`` rule state before the first trial.
        log_rate: optional ``[K]`` or ``[B, K]`` log learning-rate multipliers; default the model's.
        break_after: the trial after the last one opens a new session (the final update carries
            the overnight change), as when a session ends and the state is kept for the next.
        record_weights: keep the ``[B, T, K]`` weight trajectory.

    Returns:
        The run's tensors and the final ``(w, h)``.
    """
    b, n = session_start.shape
    recorder = TrialRecorder(b, n, model.n_weights, record_weights)
    carry = Carry.start(w.expand(b, -1), h)
    final = run_trials(model, env, Schedule.from_starts(session_start, break_after), generator, carry, (recorder,), model.rate(log_rate))
    return recorder.rollout(final)


@torch.no_grad()
def simulate(
    model: LearnerModel,
    protocol: Curriculum,
    n_animals: int,
    n_trials: int,
    seed: int,
    w0: torch.Tensor | None = None,
    subject_prefix: str = "sim",
    log_rate: torch.Tensor | None = None,
) -> Simulation:
    """Run ``n_animals`` copies of a learner through ``n_trials`` of the task, in one batch.

    Choices are sampled from the policy; feedback follows from the choice and the rewarded
    side; the learner's rule updates the weights after every trial (see :func:`run_task`).

    Args:
        model: the learner (its rule and initial weights ``w0``).
        protocol: task mechanics.
        n_animals: batch size ``B``.
        n_trials: trials per animal ``T``.
        seed: seeds the session schedule, the stimuli and the choices.
        w0: optional ``[B, K]`` per-animal starting weights.
        subject_prefix: subjects are named ``{prefix}-{i:03d}``.
        log_rate: optional ``[B, K]`` per-animal log learning-rate multipliers.

    Returns:
        The trials table and the true weight trajectories.
    """
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    starts = torch.from_numpy(session_schedule(n_animals, n_trials, protocol, rng))
    env = TaskEnv(protocol, n_animals, g)
    w, h = model.initial(n_animals, w0)
    run = run_task(model, env, starts, g, w, h, log_rate)
    return Simulation(trials=rollout_table(run, starts, subject_prefix), weights=run.weights, phase=run.phase)


def rollout_table(run: Rollout, session_start: torch.Tensor, subject_prefix: str = "sim", first_session: int = 1) -> pd.DataFrame:
    """The canonical trials table of a run (subjects ``{prefix}-{i:03d}``).

    Args:
        run: the run.
        session_start: ``[B, T]`` bool session starts it was run with.
        subject_prefix: subject name prefix.
        first_session: number of the first session.
    """
    starts = session_start.bool()
    n_animals, n_trials = starts.shape
    session = starts.long().cumsum(1) + (first_session - 1)
    idx = torch.arange(n_trials).expand(n_animals, -1)
    last_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(1).values
    trial = idx - last_start + 1
    return pd.DataFrame(
        {
            "subject": np.repeat([f"{subject_prefix}-{i:03d}" for i in range(n_animals)], n_trials),
            "session": session.reshape(-1).numpy(),
            "trial": trial.reshape(-1).numpy(),
            "contrast_left": np.round(run.contrast_left.reshape(-1).numpy().astype(float), 6),
            "contrast_right": np.round(run.contrast_right.reshape(-1).numpy().astype(float), 6),
            "choice": run.choice.reshape(-1).numpy().astype(np.int64),
            "feedback": (2 * run.reward - 1).reshape(-1).numpy().astype(np.int64),
            "correct_side": run.answer.reshape(-1).numpy().astype(np.int64),
            "prob_left": np.round(run.prob_left.reshape(-1).numpy().astype(float), 6),
        }
    )
