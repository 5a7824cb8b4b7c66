"""The twin's weight updates, read off for one animal: Δw maps on visited weight states and the
history dependence of the update (mean Δw after runs of rewards and of errors).

Pure analyses of a loaded twin and its teacher-forced prediction (:mod:`twin.analysis.predict`);
``twin report`` draws them (:mod:`twin_cli.report`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from twin.analysis.dwmap import SIGNED_CONTRASTS, delta_w, sample_states
from twin.analysis.predict import Prediction
from twin.models.learner import LearnerModel


def run_lengths(outcome: np.ndarray, session_start: np.ndarray) -> np.ndarray:
    """Length of the run of equal outcomes that ends at each trial, restarting at each session.

    Args:
        outcome: ``[T]`` 0/1 (error/reward) per trial.
        session_start: ``[T]`` bool, True on each session's first trial.

    Returns:
        ``[T]`` int: 1 on a trial whose outcome differs from the previous trial's (or that opens
        a session), 2 when it repeats it once, and so on.
    """
    o = np.asarray(outcome)
    s = np.asarray(session_start, dtype=bool)
    out = np.ones(len(o), dtype=np.int64)
    for t in range(1, len(o)):
        if not s[t] and o[t] == o[t - 1]:
            out[t] = out[t - 1] + 1
    return out


def _aligned_updates(weights: np.ndarray, names: Sequence[str], choice: np.ndarray, session_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Within-session updates ``Δw_t = w_{t+1} - w_t`` (``[T-1, K]``) with the bias update signed
    toward the chosen side, and the ``[T-1]`` mask of trials followed by one of the same session."""
    dw = np.diff(weights, axis=0)
    sign = 2.0 * np.asarray(choice[:-1], dtype=float) - 1.0
    for k, name in enumerate(names):
        if name == "bias":
            dw[:, k] = dw[:, k] * sign
    within = ~np.asarray(session_start[1:], dtype=bool)
    return dw, within


def history_dependence(prediction: Prediction, trials: pd.DataFrame, max_run: int = 8) -> pd.DataFrame:
    """Mean within-session update after runs of rewards and after runs of errors.

    For every trial followed by a trial of the same session, ``Δw = w_{t+1} - w_t`` is taken from
    the twin's teacher-forced trajectory and grouped by the trial's outcome and the length of the
    run of that outcome ending at it (:func:`run_lengths`; runs of ``max_run`` and more pooled).
    The bias update is signed toward the chosen side (+ = more likely to repeat the choice);
    other weights are as they are.

    Args:
        prediction: :func:`twin.analysis.predict.predict` of the twin on ``trials``.
        trials: the animal's canonical trials table (same rows as the prediction).
        max_run: pooling threshold of the run length.

    Returns:
        One row per (outcome, run length, weight): ``outcome`` (``reward``/``error``),
        ``run_length``, ``weight``, ``mean_dw``, ``sem``, ``n``.
    """
    reward = (trials["feedback"].to_numpy() > 0).astype(np.int64)
    start = np.r_[True, trials["session"].to_numpy()[1:] != trials["session"].to_numpy()[:-1]]
    runs = np.minimum(run_lengths(reward, start), max_run)[:-1]
    dw, within = _aligned_updates(prediction.weights, prediction.feature_names, trials["choice"].to_numpy(), start)
    rows = []
    for out_value, out_name in ((1, "reward"), (0, "error")):
        for r in range(1, max_run + 1):
            sel = within & (reward[:-1] == out_value) & (runs == r)
            n = int(sel.sum())
            for k, name in enumerate(prediction.feature_names):
                v = dw[sel, k]
                mean = float(v.mean()) if n else float("nan")
                sem = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
                rows.append({"outcome": out_name, "run_length": r, "weight": name, "mean_dw": mean, "sem": sem, "n": n})
    return pd.DataFrame(rows)


@torch.no_grad()
def delta_w_map(model: LearnerModel, weights: np.ndarray, n_states: int = 64, seed: int = 0, contrasts: tuple[float, ...] = SIGNED_CONTRASTS) -> pd.DataFrame:
    """The twin's update after a correct and after an error trial, on visited weight states.

    Args:
        model: the twin (contrast features; its learning-rate multiplier is applied).
        weights: ``[T, K]`` its teacher-forced trajectory, sampled for the weight states.
        n_states: states sampled (uniformly over trials).
        seed: seeds the sampling.
        contrasts: signed contrasts (fractions, right positive; at 0 the right side is rewarded).

    Returns:
        One row per (state, contrast, outcome, weight): ``state``, ``contrast``, ``outcome``
        (``correct``/``error``), ``weight``, ``dw``. A recurrent rule is evaluated from a zero
        recurrent state.
    """
    w = torch.as_tensor(weights, dtype=torch.float32)
    states = sample_states(w.unsqueeze(0), torch.ones(1, w.shape[0], dtype=torch.bool), n_states, seed)
    c = torch.tensor(contrasts)
    rate = model.rate()
    names = model.spec.features.names
    parts = []
    for correct in (True, False):
        d = delta_w(model, states, c, correct)
        if rate is not None:
            d = d * rate.reshape(1, 1, -1)
        n, m, k = d.shape
        parts.append(
            pd.DataFrame(
                {
                    "state": np.repeat(np.arange(n), m * k),
                    "contrast": np.tile(np.repeat(np.asarray(contrasts), k), n),
                    "outcome": "correct" if correct else "error",
                    "weight": np.tile(np.asarray(names), n * m),
                    "dw": d.reshape(-1).numpy().astype(np.float64),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


__all__ = ["delta_w_map", "history_dependence", "run_lengths"]
