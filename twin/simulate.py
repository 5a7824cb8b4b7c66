"""Generative simulation: learners (ground truth or fitted twins) doing the task."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.model import LearnerModel
from twin.rules import UpdateInputs
from twin.task import TaskEnv, TaskProtocol, session_schedule


@dataclass(frozen=True)
class Simulation:
    """A simulated cohort.

    Attributes:
        trials: canonical trials table (see :mod:`twin.trials`).
        weights: ``[B, T, K]`` the true weights in force on each trial.
        phase: ``[B, T]`` protocol phase on each trial.
    """

    trials: pd.DataFrame
    weights: torch.Tensor
    phase: torch.Tensor


@torch.no_grad()
def simulate(
    model: LearnerModel,
    protocol: TaskProtocol,
    n_animals: int,
    n_trials: int,
    seed: int,
    w0: torch.Tensor | None = None,
    subject_prefix: str = "sim",
) -> Simulation:
    """Run ``n_animals`` copies of a learner through ``n_trials`` of the task, in one batch.

    Choices are sampled from the policy; feedback follows from the choice and the rewarded
    side; the learner's rule updates the weights after every trial.

    Args:
        model: the learner (its rule and initial weights ``w0``).
        protocol: task mechanics.
        n_animals: batch size ``B``.
        n_trials: trials per animal ``T``.
        seed: seeds the session schedule, the stimuli and the choices.
        w0: optional ``[B, K]`` per-animal starting weights.
        subject_prefix: subjects are named ``{prefix}-{i:03d}``.

    Returns:
        The trials table and the true weight trajectories.
    """
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    starts = torch.from_numpy(session_schedule(n_animals, n_trials, protocol, rng))
    next_start = torch.zeros_like(starts, dtype=torch.float32)
    next_start[:, :-1] = starts[:, 1:].float()
    env = TaskEnv(protocol, n_animals, g)
    feats = model.spec.features
    rule = model.rule
    ctx = rule.context()
    w, h = model.initial(n_animals, w0)
    w = w.clone()
    prev_choice = torch.zeros(n_animals)
    prev_reward = torch.zeros(n_animals)
    rec = {k: torch.zeros(n_animals, n_trials) for k in ("cl", "cr", "ans", "pl", "y", "r")}
    ws = torch.zeros(n_animals, n_trials, model.n_weights)
    phases = torch.zeros(n_animals, n_trials, dtype=torch.long)
    for t in range(n_trials):
        ss = starts[:, t]
        phases[:, t] = env.phase
        cl, cr, ans, pl = env.draw(ss)
        pc = torch.where(ss, torch.zeros_like(prev_choice), prev_choice)
        x = feats.compute(cl, cr, pc, prev_reward)
        p = torch.sigmoid((w * x).sum(-1))
        y = (torch.rand(n_animals, generator=g) < p).float()
        r = (y == ans).float()
        env.observe(r.bool())
        ws[:, t] = w
        for k, v in (("cl", cl), ("cr", cr), ("ans", ans), ("pl", pl), ("y", y), ("r", r)):
            rec[k][:, t] = v
        inp = UpdateInputs(x[:, None], y[:, None], r[:, None], ans[:, None], next_start[:, t : t + 1])
        w, h = rule.step(w, h, rule.precompute(inp)[0], ctx)
        prev_choice, prev_reward = 2 * y - 1, r
    session = starts.long().cumsum(1)
    trial = torch.zeros_like(session)
    # trial index within session
    idx = torch.arange(n_trials).expand(n_animals, -1)
    last_start = torch.where(starts, idx, torch.zeros_like(idx)).cummax(1).values
    trial = idx - last_start + 1
    df = pd.DataFrame(
        {
            "subject": np.repeat([f"{subject_prefix}-{i:03d}" for i in range(n_animals)], n_trials),
            "session": session.reshape(-1).numpy(),
            "trial": trial.reshape(-1).numpy(),
            "contrast_left": np.round(rec["cl"].reshape(-1).numpy().astype(float), 6),
            "contrast_right": np.round(rec["cr"].reshape(-1).numpy().astype(float), 6),
            "choice": rec["y"].reshape(-1).numpy().astype(np.int64),
            "feedback": (2 * rec["r"] - 1).reshape(-1).numpy().astype(np.int64),
            "correct_side": rec["ans"].reshape(-1).numpy().astype(np.int64),
            "prob_left": np.round(rec["pl"].reshape(-1).numpy().astype(float), 6),
        }
    )
    return Simulation(trials=df, weights=ws, phase=phases)
