"""Generative simulation: learners (ground truth or fitted twins) doing the task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch

from twin.models.learner import LearnerModel
from twin.models.rules import UpdateInputs
from twin.sim.task import TaskEnv, TaskProtocol, session_schedule


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


class Environment(Protocol):
    """What :func:`run_task` needs of a task: batched stimulus draws and outcome feedback."""

    phase: torch.Tensor
    """``[B]`` current protocol phase."""

    def draw(self, session_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(contrast_left, contrast_right, answer, prob_left)`` of the next trial, each ``[B]``."""
        ...

    def observe(self, correct: torch.Tensor) -> None:
        """Feed the outcome (``[B]`` bool) back to the task's adaptive rules."""
        ...


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
    """Run ``B`` learners (rows) through ``T`` trials of ``env``: the core generative loop.

    On each trial the environment draws the stimulus, the choice is sampled from
    ``p = sigmoid(w · x)``, the reward follows from choice and rewarded side, the environment
    sees the outcome, and the rule updates ``(w, h)`` (scaled by ``exp(log_rate)``).

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
    starts = session_start.bool()
    next_start = torch.zeros(b, n)
    next_start[:, :-1] = starts[:, 1:].float()
    if break_after:
        next_start[:, -1] = 1.0
    feats = model.spec.features
    rule = model.rule
    ctx = rule.context()
    rate = model.rate(log_rate)
    w = w.expand(b, -1).clone()
    prev_choice = torch.zeros(b)
    prev_reward = torch.zeros(b)
    rec = {k: torch.zeros(b, n) for k in ("cl", "cr", "ans", "pl", "y", "r", "p")}
    ws = torch.zeros(b, n if record_weights else 0, model.n_weights)
    phases = torch.zeros(b, n, dtype=torch.long)
    for t in range(n):
        ss = starts[:, t]
        phases[:, t] = env.phase
        cl, cr, ans, pl = env.draw(ss)
        pc = torch.where(ss, torch.zeros_like(prev_choice), prev_choice)
        x = feats.compute(cl, cr, pc, prev_reward)
        p = torch.sigmoid((w * x).sum(-1))
        y = (torch.rand(b, generator=generator) < p).float()
        r = (y == ans).float()
        env.observe(r.bool())
        if record_weights:
            ws[:, t] = w
        for k, v in (("cl", cl), ("cr", cr), ("ans", ans), ("pl", pl), ("y", y), ("r", r), ("p", p)):
            rec[k][:, t] = v
        inp = UpdateInputs(x[:, None], y[:, None], r[:, None], ans[:, None], next_start[:, t : t + 1])
        w_next, h = rule.step(w, h, rule.precompute(inp)[0], ctx)
        w = w_next if rate is None else w + rate * (w_next - w)
        prev_choice, prev_reward = 2 * y - 1, r
    return Rollout(
        contrast_left=rec["cl"],
        contrast_right=rec["cr"],
        answer=rec["ans"],
        prob_left=rec["pl"],
        choice=rec["y"],
        reward=rec["r"],
        p_right=rec["p"],
        phase=phases,
        weights=ws,
        final_w=w,
        final_h=h,
    )


@torch.no_grad()
def simulate(
    model: LearnerModel,
    protocol: TaskProtocol,
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
