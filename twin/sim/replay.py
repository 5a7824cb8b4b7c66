"""A learner run free over one animal's own trial sequence: the stimuli, rewarded sides and block
priors the animal was shown, trial by trial, with the learner's own sampled choices.

This is the environment of the weight bands in ``twin report``: where the twin's weights could
have gone had the animal made the twin's choices on exactly its trials (the spread comes only from
the choices' randomness and what they did to the updates). It runs in the one rollout loop
(:func:`twin.sim.simulate.run_task`); unlike :class:`twin.sim.task.IBLTask` nothing adapts to the
outcomes (the sequence is fixed, as the animal's was).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twin.errors import TrialDataError
from twin.models.learner import LearnerModel
from twin.sim.simulate import run_task


class ReplayedTrials:
    """The :class:`twin.sim.rollout.Environment` that replays one fixed trial sequence to ``B`` rows.

    Args:
        contrast_left: ``[T]`` contrast on the left of each trial.
        contrast_right: ``[T]`` contrast on the right.
        answer: ``[T]`` rewarded side (1 = right).
        prob_left: ``[T]`` block prior.
        n_rows: rows (rollouts) that see the sequence.
    """

    def __init__(self, contrast_left: torch.Tensor, contrast_right: torch.Tensor, answer: torch.Tensor, prob_left: torch.Tensor, n_rows: int) -> None:
        self._seq = (contrast_left, contrast_right, answer, prob_left)
        self._t = 0
        self._b = n_rows
        self.phase = torch.zeros(n_rows, dtype=torch.long)

    def draw(self, session_start: torch.Tensor, active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next trial of the sequence, for every row (``[B]`` each)."""
        t = self._t
        self._t += 1
        cl, cr, ans, pl = (v[t].expand(self._b) for v in self._seq)
        return cl, cr, ans, pl

    def observe(self, correct: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Nothing adapts to the outcome in a replay."""


@dataclass(frozen=True)
class WeightBand:
    """Quantiles of a learner's weights over free runs of one trial sequence.

    Attributes:
        lo: ``[T, K]`` lower quantile of the weights in force on each trial.
        median: ``[T, K]`` median.
        hi: ``[T, K]`` upper quantile.
        level: central coverage of ``lo``..``hi`` (0.9: the 5–95% band).
        n_rollouts: free runs.
    """

    lo: np.ndarray
    median: np.ndarray
    hi: np.ndarray
    level: float
    n_rollouts: int


def free_weight_band(model: LearnerModel, trials: pd.DataFrame, n_rollouts: int = 100, level: float = 0.9, seed: int = 0) -> WeightBand:
    """The learner (its own ``w0`` and learning-rate multipliers) run ``n_rollouts`` times over
    the animal's trial sequence with its own sampled choices, and the central ``level`` band of
    its weights on each trial.

    Args:
        model: the learner (a twin's :attr:`~twin.models.params.TwinModel.model`).
        trials: one animal's canonical trials table, in training order.
        n_rollouts: free runs.
        level: central coverage of the band, in (0, 1).
        seed: seeds the choices.

    Raises:
        TrialDataError: the table is empty or holds more than one subject.
        ValueError: ``n_rollouts < 1`` or ``level`` outside (0, 1).
    """
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if trials.empty:
        raise TrialDataError("no trials to replay")
    if trials["subject"].nunique() != 1:
        raise TrialDataError(f"a replay runs one animal's trials, got {trials['subject'].nunique()} subjects")
    col = {k: torch.as_tensor(trials[k].to_numpy().astype(np.float32)) for k in ("contrast_left", "contrast_right", "correct_side", "prob_left")}
    sess = trials["session"].to_numpy()
    start = torch.as_tensor(np.r_[True, sess[1:] != sess[:-1]]).expand(n_rollouts, -1)
    env = ReplayedTrials(col["contrast_left"], col["contrast_right"], col["correct_side"], col["prob_left"], n_rollouts)
    w, h = model.initial(n_rollouts)
    gen = torch.Generator().manual_seed(seed)
    run = run_task(model, env, start, gen, w, h)
    weights = run.weights.numpy()  # [R, T, K]
    q = (1.0 - level) / 2.0
    lo, med, hi = np.quantile(weights, [q, 0.5, 1.0 - q], axis=0)
    return WeightBand(lo, med, hi, level, n_rollouts)


__all__ = ["ReplayedTrials", "WeightBand", "free_weight_band"]
